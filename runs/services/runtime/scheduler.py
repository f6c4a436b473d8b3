"""The leader's APScheduler: three jobs, kept in django-apscheduler's job store.

- ``fire_due_reports_job``, every second on the second: due reports become runs and
  their ``next_run_at`` moves on (runs.services.runtime.fires). The reports table is the
  schedule, so a leader that takes over knows every missed fire from it.
- ``repair_next_runs_job``, every SCHEDULE_SYNC_SECONDS: ``next_run_at`` follows
  reports changed other than through the admin or the API.
- ``housekeeping_job``, every HOUSEKEEPING_INTERVAL_SECONDS, in a thread of its own so
  a long retention pass never holds up a fire.

Only public APScheduler and django-apscheduler API is used: a BlockingScheduler runs in
a thread this module starts (so it knows whether the thread is alive), and the jobs are
plain functions that keep nothing between calls.

The passes write the schedule only under the scheduler lease of the worker that started
the scheduler (runs.services.runtime.leadership; its thread carries the worker's LeaseKeeper),
fenced in their own transactions: a scheduler left running by a worker that lost the
lease records nothing. The scheduler thread's sessions end
any statement or idle transaction within a quarter of the lease, so a frozen leader's
locks on job rows never hold up the next one.
"""

import logging
import threading
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_SCHEDULER_STARTED
from apscheduler.executors.debug import DebugExecutor
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
from django.conf import settings
from django.db import connections, transaction
from django_apscheduler.jobstores import DjangoJobStore
from django_apscheduler.models import DjangoJob
from django_apscheduler.util import close_old_connections

from runs.services.runtime.fires import fire_due_reports, repair_next_runs
from runs.services.runtime.housekeeping import run_housekeeping
from runs.services.runtime.leadership import (
    LeaseLost,
    bound_sessions_of_this_thread,
    fence,
    lease_of_this_thread,
    transaction_limit,
)

logger = logging.getLogger(__name__)

FIRE_JOB = "fire-pass"
REPAIR_JOB = "repair-pass"
HOUSEKEEPING_JOB = "housekeeping"
# The passes' ids before leadership was a lease. A worker of that version pauses them
# when it stops, even while a newer worker leads: the ids must differ, and the newer
# leader removes the old rows.
RETIRED_JOBS = ("fire-due-reports", "repair-next-runs")
FIRE_PASS_SECONDS = 1
# A pass starts no new batch after this, so the scheduler gets to its other jobs (and to
# a stop) between batches; an overrunning pass is followed by the next one at once.
FIRE_PASS_BUDGET_SECONDS = 2


@close_old_connections
def fire_due_reports_job():
    if (lease := lease_of_this_thread()) is None:
        return  # the worker stops this scheduler at its next step
    try:
        fired = fire_due_reports(lease, time_budget=FIRE_PASS_BUDGET_SECONDS)
    except LeaseLost as refused:
        logger.warning("fire pass refused: %s", refused)
        return
    if fired:
        logger.info("recorded %s scheduled fire(s) (lease epoch %s)", fired, lease.epoch)


@close_old_connections
def repair_next_runs_job():
    if (lease := lease_of_this_thread()) is None:
        return
    try:
        repaired = repair_next_runs(lease)
    except LeaseLost as refused:
        logger.warning("repair pass refused: %s", refused)
        return
    if repaired:
        logger.info("next run times of %s report(s) follow their schedules again", repaired)


@close_old_connections
def housekeeping_job():
    # The passes run 90,000 times a day: an hour of their history is plenty.
    run_housekeeping(brief_history_jobs=(FIRE_JOB, REPAIR_JOB))


class ReportScheduler:
    def __init__(self, lease_keeper):
        self.scheduler = BlockingScheduler(
            jobstores={"default": DjangoJobStore()},
            # The passes run in the scheduler's own thread, one after the other, right
            # when due; housekeeping gets a thread of its own.
            executors={"default": DebugExecutor(), "housekeeping": ThreadPoolExecutor(1)},
            # A late pass runs once, however late: it reads what is due from the table.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        self.started = threading.Event()
        self.scheduler.add_listener(lambda event: self.started.set(), EVENT_SCHEDULER_STARTED)
        self.thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        # The passes run in this thread and schedule under this keeper's lease.
        self.thread.lease_keeper = lease_keeper

    def start(self):
        """Add the jobs (they wait in the scheduler until it runs), then run it."""
        next_second = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        self.scheduler.add_job(
            fire_due_reports_job,
            IntervalTrigger(seconds=FIRE_PASS_SECONDS, start_date=next_second),
            id=FIRE_JOB,
            replace_existing=True,
        )
        self.scheduler.add_job(
            repair_next_runs_job,
            IntervalTrigger(seconds=settings.SCHEDULE_SYNC_SECONDS),
            id=REPAIR_JOB,
            next_run_time=datetime.now(UTC),  # a new leader checks at once
            replace_existing=True,
        )
        # Only if missing: re-adding would push it an interval away at every new leader,
        # and frequent restarts would then postpone retention forever.
        if not DjangoJob.objects.filter(id=HOUSEKEEPING_JOB).exists():
            self.scheduler.add_job(
                housekeeping_job,
                IntervalTrigger(seconds=settings.HOUSEKEEPING_INTERVAL_SECONDS),
                id=HOUSEKEEPING_JOB,
                executor="housekeeping",
            )
        self.thread.start()

    def _run(self):
        bound_sessions_of_this_thread(transaction_limit())
        try:
            self._remove_retired_jobs()
            self.scheduler.start()
        except LeaseLost as lost:
            logger.warning("the scheduler stopped: %s", lost)
        except Exception:
            logger.exception("the scheduler stopped")
        finally:
            connections.close_all()  # this thread's, which the passes used too

    def _remove_retired_jobs(self):
        if (lease := lease_of_this_thread()) is None:
            raise LeaseLost("this worker does not hold the scheduler lease")
        with transaction.atomic():
            fence(lease)
            DjangoJob.objects.filter(id__in=RETIRED_JOBS).delete()

    def is_alive(self):
        return self.thread.is_alive()

    def stop(self):
        """Stop after the pass in progress, if any (passes take no new batch after
        FIRE_PASS_BUDGET_SECONDS).

        The jobs' rows stay as they are: the next leader replaces them. (APScheduler
        makes one last pass as it shuts down; a pass writes nothing without the lease.)
        """
        while self.thread.is_alive() and not self.started.wait(0.1):
            pass  # still starting: stopping it now would let it start after all
        if not self.scheduler.running:
            return
        self.scheduler.shutdown(wait=False)
        self.thread.join(timeout=5)
