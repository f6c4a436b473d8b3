"""The one guard that ends every claimed run.

``perform_run`` fails a run for the reasons it knows: a bad value, the SQL, the
database's own error, the export. Anything else that raises while a run is prepared,
named, stored or recorded would leave it ``running`` under a live worker until
recovery called that worker lost. Every executor (the worker's slots, ``runreport``)
therefore runs a claimed run through :func:`execute_claimed_run`, which ends it
``failed`` with a message naming the step and the error, then hands it to the
notifications, and returns: the executor goes on with the next run.

A run that had ended already keeps its status; notifying comes after the end and its
failures are logged, never recorded on the run. "Worker lost" stays recovery's, for
workers that really stopped.
"""

import logging
import threading
import traceback

from reportsvc.text import shown
from runs.models import RunStatus
from runs.services.runtime.runner import fail_run, perform_run

logger = logging.getLogger(__name__)

# Where an error was raised -> the step of the run it broke, for the message. The
# innermost frame of these modules names it.
STEPS = {
    "datasources.parameters": "preparing its statement",
    "datasources.placeholders": "preparing its statement",
    "reports.parameters": "preparing its statement",
    "reports.services.statements": "preparing its statement",
    "runs.services.domain.intervals": "working out its data interval",
    "runs.naming": "naming its output file",
    "runs.services.infrastructure.exporter": "writing its output",
    "runs.services.formats": "writing its output",
    "runs.services.infrastructure.output_storage": "storing its output",
    "runs.services.domain.transitions": "recording its outcome",
    "runs.services.domain.queue": "recording its outcome",
}
# What is kept of the run when the failure is recorded, if it can be stored.
KNOWN_FIELDS = ("sql", "parameters", "interval_start", "interval_end")


def execute_claimed_run(run, *, stop_waiting=None, notify=None, control=None):
    """Perform ``run`` (claimed: ``running`` for this process) until it has ended, then
    pass it to ``notify``. Never raises an ``Exception``; returns whether it succeeded.

    ``stop_waiting``: see ``perform_run`` (how long recording waits for a database that
    went away; without one, until it is back). ``control``: the RunControl through which
    another thread stops the run (runs.services.domain.cancelling).
    """
    stop_waiting = stop_waiting or threading.Event()
    try:
        perform_run(run, stop_waiting=stop_waiting, control=control)
    except Exception as error:
        _end_failed(run, error, stop_waiting)
    if notify is not None:
        try:
            notify(run)
        except Exception:
            logger.exception("notifications for run %s failed", run.pk)
    return run.status == RunStatus.SUCCEEDED


def failure_message(run, error):
    """What a user reads on a run that broke in the service rather than in its SQL."""
    detail = shown(str(error).strip().partition("\n")[0], 300)
    cause = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
    return (
        f"The run failed inside reportsvc while {step_of(error)} ({cause}); its SQL was "
        "not at fault. Run it again; if it fails the same way, tell the operators: the "
        f"log of the worker {run.worker} has the details of run {run.pk}."
    )


def step_of(error):
    """The step of the run that ``error`` broke (see STEPS)."""
    frames = [frame for frame, _ in traceback.walk_tb(error.__traceback__)]
    for frame in reversed(frames):
        module = frame.f_globals.get("__name__", "")
        for prefix, step in STEPS.items():
            if module == prefix or module.startswith(f"{prefix}."):
                return step
    return "running it"


def _end_failed(run, error, stop_waiting):
    logger.exception("run %s broke while %s", run.pk, step_of(error))
    message = failure_message(run, error)
    known = {name: getattr(run, name) for name in KNOWN_FIELDS}
    # The values the run knew may be what broke it: then the failure alone is recorded.
    for fields in (known, {}):
        try:
            fail_run(run, message, stop_waiting=stop_waiting, **fields)
            return
        except Exception:
            if run.status != RunStatus.RUNNING:  # recorded; only what follows (a retry) broke
                logger.exception("run %s failed; queuing its retry broke", run.pk)
                return
            logger.exception("run %s: recording its failure broke", run.pk)
