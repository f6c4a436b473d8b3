"""Keep APScheduler jobs in step with the Report table and turn fires into runs.

Only the leader worker runs a ``ReportScheduler``. Its jobs live in django-apscheduler's
DjangoJobStore, so a fire time missed while no leader ran is still known to the next
leader: APScheduler coalesces the missed fires into one and drops it when the newest is
older than SCHEDULE_MISFIRE_GRACE_SECONDS.
"""

import logging
import pickle
import queue
import threading
import time

from apscheduler import events
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections
from django_apscheduler import util as apscheduler_util
from django_apscheduler.jobstores import DjangoJobStore
from django_apscheduler.models import DjangoJob

from reports.cron import CronError
from reports.models import Report
from runs.services.housekeeping import run_housekeeping
from runs.services.queue import record_scheduled_fires
from runs.services.triggers import CrontabTrigger

logger = logging.getLogger(__name__)

JOB_PREFIX = "report-"
PASS_RETRY_SECONDS = 5
HOUSEKEEPING_JOB = "housekeeping"


def job_id_for(report_id):
    return f"{JOB_PREFIX}{report_id}"


def fire_report(report_id, scheduled_for=None):
    """APScheduler job: record the fire at ``scheduled_for`` as a run.

    Inside a running ReportScheduler the fire is handed to its FireRecorder, which
    records fires in batches: a thousand reports due the same minute become a few bulk
    queries instead of a thousand transactions.
    """
    if _active_recorder is not None:
        _active_recorder.submit(report_id, scheduled_for)
        return
    close_old_connections()
    try:
        record_scheduled_fires([(report_id, scheduled_for)])
    finally:
        close_old_connections()


_active_recorder = None


class FireRecorder:
    """One thread that records queued-up fires in batches."""

    MAX_BATCH = 2000
    RETRY_SECONDS = 1.0
    MAX_RETRY_SECONDS = 30.0
    ATTEMPTS_WHEN_STOPPING = 3

    def __init__(self):
        self._stopping = False
        self._fires = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._record_forever, name="fire-recorder")

    def start(self):
        self._thread.start()

    def submit(self, report_id, scheduled_for):
        self._fires.put((report_id, scheduled_for))

    def stop(self):
        """Record what is pending, then end the thread."""
        self._stopping = True
        self._fires.put(None)
        self._thread.join()

    def _record_forever(self):
        stopping = False
        try:
            while not stopping:
                batch = [self._fires.get()]
                while len(batch) < self.MAX_BATCH and not self._fires.empty():
                    batch.append(self._fires.get())
                stopping = None in batch
                fires = [fire for fire in batch if fire is not None]
                if fires:
                    self._record(fires)
        finally:
            connections.close_all()

    def _record(self, fires):
        """Record, retrying through a database outage (the fires wait in memory)."""
        attempt = 0
        while True:
            close_old_connections()
            try:
                record_scheduled_fires(fires)
                return
            except DatabaseError as error:
                attempt += 1
                if self._stopping and attempt >= self.ATTEMPTS_WHEN_STOPPING:
                    logger.error("stopping: %s fires not recorded: %s", len(fires), fires)
                    return
                delay = min(self.MAX_RETRY_SECONDS, self.RETRY_SECONDS * attempt)
                logger.warning(
                    "could not record %s fires (%s); retry in %s s", len(fires), error, delay
                )
                connections.close_all()
                time.sleep(delay)


def housekeeping_job():
    close_old_connections()
    try:
        run_housekeeping()
    finally:
        close_old_connections()


class FireTimeExecutor(ThreadPoolExecutor):
    """Passes the scheduled fire time to report jobs as ``scheduled_for``.

    APScheduler 3 does not tell a job which fire it is running for; the run needs it
    (it is half of the run's unique key). Report jobs coalesce, so there is one time.
    """

    def _do_submit_job(self, job, run_times):
        if job.id.startswith(JOB_PREFIX):
            job = _JobWithFireTime(job, run_times[-1])
        super()._do_submit_job(job, run_times)

    # The job store records each execution from the pool thread after the job returned.
    def _run_job_success(self, job_id, events):
        try:
            super()._run_job_success(job_id, events)
        finally:
            close_old_connections()

    def _run_job_error(self, job_id, exc, traceback=None):
        try:
            super()._run_job_error(job_id, exc, traceback)
        finally:
            close_old_connections()


class _JobWithFireTime:
    """A job seen through a proxy whose kwargs carry ``scheduled_for``."""

    def __init__(self, job, scheduled_for):
        self._job = job
        self.kwargs = {**job.kwargs, "scheduled_for": scheduled_for}

    def __getattr__(self, name):
        return getattr(self._job, name)

    def __str__(self):
        return str(self._job)


class _BackgroundScheduler(BackgroundScheduler):
    def _process_jobs(self):
        # APScheduler 3 makes one more pass after shutdown(); a job due then would be
        # handed to the stopped executor and its fire lost. The next leader fires it.
        if self.state == STATE_STOPPED:
            return None
        try:
            close_old_connections()  # survive a database restart between passes
            return super()._process_jobs()
        except Exception:
            # An exception here would end the scheduler thread for good.
            logger.exception("scheduler pass failed; retrying in %s s", PASS_RETRY_SECONDS)
            connections.close_all()
            return PASS_RETRY_SECONDS

    def _main_loop(self):
        try:
            super()._main_loop()
        finally:
            connections.close_all()


class ReportJobStore(DjangoJobStore):
    """DjangoJobStore, lean enough for a thousand reports firing in the same second.

    Report fires are recorded as runs already, so they skip DjangoJobExecution (which
    keeps the history of the other jobs). New job states are collected during a
    scheduler pass and written in bulk before anything reads the store again: one
    statement per 500 jobs instead of a transaction per job. (APScheduler calls a job
    store under its own lock, so the buffer needs none.)
    """

    FLUSH_BATCH = 500

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending = {}

    def register_event_listeners(self):
        self._scheduler.add_listener(
            _unless_report_job(self.handle_submission_event),
            events.EVENT_JOB_SUBMITTED | events.EVENT_JOB_MAX_INSTANCES,
        )
        self._scheduler.add_listener(
            _unless_report_job(self.handle_execution_event), events.EVENT_JOB_EXECUTED
        )
        self._scheduler.add_listener(
            _unless_report_job(self.handle_error_event),
            events.EVENT_JOB_ERROR | events.EVENT_JOB_MISSED,
        )

    def update_job(self, job):
        self._pending[job.id] = DjangoJob(
            id=job.id,
            next_run_time=apscheduler_util.get_django_internal_datetime(job.next_run_time),
            job_state=pickle.dumps(job.__getstate__(), self.pickle_protocol),
        )

    @apscheduler_util.retry_on_db_operational_error
    def flush(self):
        if self._pending:
            DjangoJob.objects.bulk_update(
                list(self._pending.values()),
                ["next_run_time", "job_state"],
                batch_size=self.FLUSH_BATCH,
            )
            self._pending.clear()

    # Every read or removal sees the buffered states first.
    def get_due_jobs(self, now):
        self.flush()
        return super().get_due_jobs(now)

    def get_next_run_time(self):
        self.flush()
        return super().get_next_run_time()

    def lookup_job(self, job_id):
        self.flush()
        return super().lookup_job(job_id)

    def get_all_jobs(self):
        self.flush()
        return super().get_all_jobs()

    def remove_job(self, job_id):
        self._pending.pop(job_id, None)
        super().remove_job(job_id)

    def remove_all_jobs(self):
        self._pending.clear()
        super().remove_all_jobs()

    def shutdown(self):
        self.flush()
        super().shutdown()


def _unless_report_job(handler):
    def handle(event):
        if not event.job_id.startswith(JOB_PREFIX):
            handler(event)

    return handle


def scheduled_reports():
    """Report id -> (crontab, timezone) for every report the worker should schedule."""
    return {
        pk: (schedule, zone)
        for pk, schedule, zone in Report.objects.filter(enabled=True)
        .exclude(schedule="")
        .values_list("pk", "schedule", "timezone")
    }


class ReportScheduler:
    def __init__(self):
        self.recorder = None
        self.scheduler = _BackgroundScheduler(
            jobstores={"default": ReportJobStore()},
            executors={"default": FireTimeExecutor(max_workers=8)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": settings.SCHEDULE_MISFIRE_GRACE_SECONDS,
            },
            timezone="UTC",
        )

    def start(self):
        global _active_recorder
        self.recorder = FireRecorder()
        self.recorder.start()
        _active_recorder = self.recorder
        # Paused until the jobs match the reports, then due (missed) jobs are processed.
        self.scheduler.start(paused=True)
        self.sync()
        if self.scheduler.get_job(HOUSEKEEPING_JOB) is None:
            # Only if missing: re-adding would push it an interval away at every new
            # leader, and frequent restarts would then postpone retention forever.
            self.scheduler.add_job(
                housekeeping_job,
                "interval",
                seconds=settings.HOUSEKEEPING_INTERVAL_SECONDS,
                id=HOUSEKEEPING_JOB,
            )
        self.scheduler.resume()

    def is_alive(self):
        # APScheduler keeps running == True even if its thread died; check the thread.
        thread = getattr(self.scheduler, "_thread", None)
        return self.scheduler.running and thread is not None and thread.is_alive()

    def stop(self):
        global _active_recorder
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.recorder is not None:
            _active_recorder = None
            self.recorder.stop()
            self.recorder = None

    def sync(self):
        """Add, change and remove jobs to match the reports; store next run times."""
        wanted = {}
        for report_id, (expression, zone) in scheduled_reports().items():
            try:
                CrontabTrigger(expression, zone)
            except (CronError, ValueError, KeyError) as error:
                # Saved without validation (e.g. in a shell): skip it, keep the others.
                logger.error(
                    "report %s not scheduled: %r in %r: %s", report_id, expression, zone, error
                )
                continue
            wanted[report_id] = (expression, zone)
        jobs = {job.id: job for job in self.scheduler.get_jobs() if job.id.startswith(JOB_PREFIX)}
        for job_id, job in jobs.items():
            report_id = int(job_id[len(JOB_PREFIX) :])
            if report_id not in wanted:
                self.scheduler.remove_job(job_id)
                logger.info("unscheduled report %s", report_id)
            elif (job.trigger.expression, job.trigger.timezone) != wanted[report_id]:
                self.scheduler.reschedule_job(job_id, trigger=CrontabTrigger(*wanted[report_id]))
                logger.info("rescheduled report %s: %s", report_id, wanted[report_id])
        for report_id, (expression, zone) in wanted.items():
            if job_id_for(report_id) not in jobs:
                self.scheduler.add_job(
                    fire_report,
                    trigger=CrontabTrigger(expression, zone),
                    id=job_id_for(report_id),
                    kwargs={"report_id": report_id},
                )
                logger.info("scheduled report %s: %s %s", report_id, expression, zone)
        self.store_next_run_times()

    def store_next_run_times(self):
        next_runs = {
            int(job.id[len(JOB_PREFIX) :]): job.next_run_time
            for job in self.scheduler.get_jobs()
            if job.id.startswith(JOB_PREFIX)
        }
        changed = [
            Report(pk=report_id, next_run_at=next_runs.get(report_id))
            for report_id, stored in Report.objects.values_list("pk", "next_run_at")
            if stored != next_runs.get(report_id)
        ]
        # One statement per 500 reports: after a minute where 1,000 reports fired,
        # the worker's main loop must not stall on a thousand single updates.
        Report.objects.bulk_update(changed, ["next_run_at"], batch_size=500)
