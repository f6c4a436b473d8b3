"""Cancelling runs: what a person or a client asks for, and how the process executing a
run stops its statement on the database server.

The request is recorded by ``runs.services.domain.transitions.cancel_run`` (a queued run ends
there and then). A running run's executor looks for requests every
``CANCEL_POLL_SECONDS`` (the worker's main loop, or ``runreport``'s heartbeat thread)
and stops the run through its :class:`RunControl`: the backend's ``cancel`` (a
PostgreSQL cancel request, SQLite's interrupt, ...) ends the statement on the server,
the export raises, and the run ends cancelled, keeping no file or object. A worker
that stops uses the same control at the end of its grace time, and the run fails
instead ("stopped by shutdown"), eligible for its report's retries.
"""

import contextlib
import logging
import threading
from dataclasses import dataclass, field

from django.utils import timezone

from datasources.backends import backend_for
from runs.models import Run, RunStatus
from runs.services.domain.transitions import (
    RunNotCancellable,
    cancel_queued_runs,
    cancel_run,
    not_cancellable_message,
    runs_to_stop,
)

logger = logging.getLogger(__name__)

# How often an executor asks whether someone cancelled one of its runs: a cancelled
# run ends within this plus the backend's cancel (well within 5 s).
CANCEL_POLL_SECONDS = 1.0

CANCEL = "cancel"
SHUTDOWN = "shutdown"


class RunControl:
    """Stops one run this process executes, from another thread.

    The executing thread names the connection its statements go to
    (:meth:`statements_on`); :meth:`stop` cancels what runs there and keeps the
    reason. It may be called again and again: a statement that started after an
    earlier call is stopped by the next one.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._connection = None
        self.stopping = threading.Event()  # set by the first stop(); waits end early
        self.reason = None  # CANCEL or SHUTDOWN, the first given
        self.message = ""  # what a failed run records (SHUTDOWN)

    @contextlib.contextmanager
    def statements_on(self, connection):
        with self._lock:
            self._connection = connection
        try:
            yield
        finally:
            with self._lock:
                self._connection = None

    def stop(self, reason, message=""):
        with self._lock:
            if self.reason is None:
                self.reason, self.message = reason, message
            self.stopping.set()
            connection = self._connection
            if connection is not None:  # under the lock: never a connection given back
                backend_for(connection).cancel(connection)

    @property
    def shutting_down(self):
        return self.reason == SHUTDOWN


def stop_cancelled_runs(controls):
    """Stop the runs of ``controls`` (run id -> RunControl) someone asked to cancel."""
    stopped = []
    for run_id in runs_to_stop(list(controls)):
        control = controls.get(run_id)
        if control is not None:
            if control.reason is None:
                logger.info("run %s: cancelled; stopping its statement", run_id)
            control.stop(CANCEL)
            stopped.append(run_id)
    return stopped


# At most this many runs are named in a message.
NAMED = 20
ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)
ENDED_OTHERWISE = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SKIPPED)


@dataclass
class CancelOutcome:
    """What cancelling several runs did, for a message: run ids in each list."""

    cancelled: list = field(default_factory=list)  # queued runs, cancelled now
    stopping: list = field(default_factory=list)  # running runs, being stopped
    already: list = field(default_factory=list)  # cancelled (or asked) before
    ended: list = field(default_factory=list)  # ended otherwise (first NAMED + 1)
    ended_reason: str = ""  # why, when only one ended otherwise

    def message(self):
        parts = []
        if self.cancelled:
            parts.append(f"Cancelled {_runs(self.cancelled)}.")
        if self.stopping:
            parts.append(
                f"Stopping {_runs(self.stopping)} on the database server; "
                f"{'it ends' if len(self.stopping) == 1 else 'they end'} cancelled "
                "within seconds."
            )
        if self.already:
            parts.append(f"{_runs(self.already).capitalize()} had been cancelled already.")
        if len(self.ended) == 1 and self.ended_reason:
            parts.append(self.ended_reason)
        elif self.ended:
            parts.append(
                f"{_runs(self.ended).capitalize()} had already ended (succeeded, failed or "
                "skipped) and were left as they were."
            )
        return " ".join(parts) or "Nothing to cancel: no runs were selected."


def _runs(ids):
    named = ", ".join(str(pk) for pk in ids[:NAMED])
    more = " and more" if len(ids) > NAMED else ""
    return f"run{'s' if len(ids) != 1 else ''} {named}{more}"


def cancel_runs(runs, user):
    """Cancel ``runs`` (a queryset) for ``user``: the queued ones at once, in one
    statement; each running one stopped on the database server by its worker. Runs
    that ended otherwise are left as they were. A CancelOutcome."""
    now = timezone.now()
    outcome = CancelOutcome(cancelled=cancel_queued_runs(runs, user, now))
    for run in runs.filter(status__in=ACTIVE).order_by("id"):  # running, or just claimed
        try:
            asked = cancel_run(run, user, now)
        except RunNotCancellable as error:  # it ended meanwhile
            outcome.ended.append(run.pk)
            outcome.ended_reason = str(error)
            continue
        (outcome.stopping if asked else outcome.already).append(run.pk)
    before = runs.filter(status=RunStatus.CANCELLED).exclude(cancelled_at=now).order_by("id")
    outcome.already += list(before.values_list("pk", flat=True)[: NAMED + 1])
    ended = runs.filter(status__in=ENDED_OTHERWISE).order_by("id")
    outcome.ended += list(ended.values_list("pk", flat=True)[: NAMED + 1])
    if len(outcome.ended) == 1 and not outcome.ended_reason:
        outcome.ended_reason = not_cancellable_message(Run.objects.get(pk=outcome.ended[0]))
    return outcome


def backfill_runs(report, backfill_id):
    """The runs of one backfill of ``report``."""
    return Run.objects.filter(report=report, backfill_id=backfill_id)


def unfinished_backfill_runs(report, backfill_id):
    """How many runs of one backfill of ``report`` have not ended."""
    return backfill_runs(report, backfill_id).filter(status__in=ACTIVE).count()


def cancel_backfill(report, backfill_id, user):
    """Cancel every run of a backfill that has not ended: the waiting ones at once, the
    one running (if any) stopped on the server. A CancelOutcome of those only."""
    return cancel_runs(backfill_runs(report, backfill_id).filter(status__in=ACTIVE), user)
