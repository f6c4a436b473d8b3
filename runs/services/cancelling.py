"""Cancelling runs: what a person or a client asks for, and how the process executing a
run stops its statement on the database server.

The request is recorded by ``runs.services.transitions.cancel_run`` (a queued run ends
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

from datasources.backends import backend_for
from runs.models import Run, RunStatus
from runs.services.transitions import RunNotCancellable, cancel_run, runs_to_stop

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


@dataclass
class CancelOutcome:
    """What cancelling several runs did, for a message."""

    cancelled: list = field(default_factory=list)  # queued runs, cancelled now
    stopping: list = field(default_factory=list)  # running runs, being stopped
    already: list = field(default_factory=list)  # cancelled (or asked) before
    ended: list = field(default_factory=list)  # (run, why) that ended otherwise

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
        for _, why in self.ended:
            parts.append(why)
        return " ".join(parts) or "No runs were selected."


def _runs(runs):
    ids = ", ".join(str(run.pk) for run in runs[:20])
    more = f" and {len(runs) - 20} more" if len(runs) > 20 else ""
    return f"run{'s' if len(runs) != 1 else ''} {ids}{more}"


def cancel_runs(runs, user):
    """Cancel each of ``runs`` for ``user`` (see cancel_run); a CancelOutcome."""
    outcome = CancelOutcome()
    for run in runs:
        try:
            asked = cancel_run(run, user)
        except RunNotCancellable as error:
            outcome.ended.append((run, str(error)))
            continue
        if not asked:
            outcome.already.append(run)
        elif run.status == RunStatus.CANCELLED:
            outcome.cancelled.append(run)
        else:
            outcome.stopping.append(run)
    return outcome


def unfinished_backfill_runs(report, backfill_id):
    """The runs of one backfill of ``report`` that have not ended, oldest first."""
    return list(
        Run.objects.filter(
            report=report,
            backfill_id=backfill_id,
            status__in=(RunStatus.QUEUED, RunStatus.RUNNING),
        ).order_by("queued_at", "id")
    )


def cancel_backfill(report, backfill_id, user):
    """Cancel every run of a backfill that has not ended: the waiting ones at once, the
    one running (if any) stopped on the server. A CancelOutcome."""
    return cancel_runs(unfinished_backfill_runs(report, backfill_id), user)
