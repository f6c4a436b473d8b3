"""The worker process: schedule (if leader), claim and execute runs, keep heartbeats.

One main loop does the bookkeeping; a thread pool of WORKER_CONCURRENCY executes runs.
Every step survives a lost database connection: it logs, backs off and tries again.
The loop runs in a thread of its own: the process's main thread only waits for a stop
and makes sure it happens in time, whatever the database does (``Worker.run``).
"""

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections

from runs.services.domain.cancelling import (
    CANCEL_POLL_SECONDS,
    SHUTDOWN,
    RunControl,
    stop_cancelled_runs,
)
from runs.services.domain.queue import claim_runs
from runs.services.infrastructure import output_storage
from runs.services.notifications.lanes import NotificationLanes
from runs.services.runtime import heartbeats
from runs.services.runtime.freshness import check_freshness
from runs.services.runtime.guard import execute_claimed_run
from runs.services.runtime.leadership import LeaseKeeper, LeaseLost, refuse_a_second_sqlite_worker
from runs.services.runtime.recovery import abandon_runs, fail_lost_runs
from runs.services.runtime.runner import touch_runs
from runs.services.runtime.scheduler import ReportScheduler

logger = logging.getLogger("runs.worker")

MAX_BACKOFF_SECONDS = 10
# A stop waits WORKER_SHUTDOWN_GRACE_SECONDS for runs and notifications, then this long
# at most for the database (failing the runs left, removing the heartbeat row).
STOP_MARGIN_SECONDS = 5
# Of that margin: how long runs whose statements the stop cancelled have to record it.
CANCELLED_RECORD_SECONDS = 3
# The leader looks for reports gone stale (or fresh again) this often: an alert goes out
# within a minute of the moment.
FRESHNESS_CHECK_SECONDS = 30


class StopTimedOut(Exception):
    """The worker did not finish stopping in time: the database did not answer."""


class Periodic:
    """Says when a task is due, every ``interval`` seconds (due at once the first time)."""

    def __init__(self, interval):
        self.interval = interval
        self._next = 0.0

    def due(self, now):
        if now >= self._next:
            self._next = now + self.interval
            return True
        return False

    def postpone(self, until):
        """Not due before ``until``."""
        self._next = max(self._next, until)


class Worker:
    def __init__(self, *, concurrency=None):
        self.concurrency = concurrency or settings.WORKER_CONCURRENCY
        self.host = socket.gethostname()
        self.name = heartbeats.worker_name()
        self._stop = threading.Event()
        self._giving_up = threading.Event()  # past the shutdown grace time
        self._wake = threading.Event()
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="run")
        # Notifications wait on mail servers and webhooks: never in the run slots, and
        # one report's slow receiver never holds up another report's notifications.
        self._notifier = NotificationLanes()
        self.unsent_notifications = 0  # runs whose notifications the stop cut short
        self._active = {}  # run id -> run, for every run this worker is executing
        self._controls = {}  # run id -> its RunControl (runs.services.domain.cancelling)
        self._busy_slots = 0  # slots taken; a slot runs queued runs until none is left
        self._active_lock = threading.Lock()
        self._sqlite_lock = None
        self._lease = LeaseKeeper(self.name)
        self._scheduler = None
        self._scheduler_epoch = None  # of the lease the scheduler was started under
        self._stop_requested_at = None
        self._heartbeat = Periodic(settings.WORKER_HEARTBEAT_SECONDS)
        self._recovery = Periodic(max(1.0, settings.WORKER_LOST_AFTER_SECONDS / 4))
        self._cancels = Periodic(CANCEL_POLL_SECONDS)
        self._freshness = Periodic(FRESHNESS_CHECK_SECONDS)

    # --- lifecycle -------------------------------------------------------------------

    def request_stop(self, reason="stop requested"):
        if not self._stop.is_set():
            self._stop_requested_at = time.monotonic()
            logger.info("worker %s stopping: %s", self.name, reason)
        self._stop.set()
        self._wake.set()

    def run(self):
        """Work until asked to stop; return the number of runs abandoned at the end.

        The work happens in a thread of its own. This thread waits for the stop (signal
        handlers run here, even while the work waits on a stalled database), then for
        the work to wind down: WORKER_SHUTDOWN_GRACE_SECONDS plus STOP_MARGIN_SECONDS
        at most, else StopTimedOut. Errors at start (SecondWorkerRefused, an
        unreachable database) are raised here.
        """
        outcome = {}
        work = threading.Thread(target=self._work, args=(outcome,), name="worker")
        work.start()
        while work.is_alive() and not self._stop.wait(0.5):
            pass
        allowed = settings.WORKER_SHUTDOWN_GRACE_SECONDS + STOP_MARGIN_SECONDS
        deadline = (self._stop_requested_at or time.monotonic()) + allowed
        work.join(max(0.0, deadline - time.monotonic()))
        if work.is_alive():
            raise StopTimedOut(
                f"Worker {self.name} did not stop within {allowed:g} s: the database does "
                "not answer. Its runs are failed as lost by the next worker; its "
                "scheduler lease expires on its own."
            )
        if "error" in outcome:
            raise outcome["error"]
        return outcome["abandoned"]

    def _work(self, outcome):
        try:
            outcome["abandoned"] = self._work_until_stopped()
        except BaseException as error:  # handed to run(), in the main thread
            outcome["error"] = error
        finally:
            connections.close_all()

    def _work_until_stopped(self):
        self._sqlite_lock = refuse_a_second_sqlite_worker()
        heartbeats.register_worker(self.name, self.host, os.getpid())
        self._lease.start()
        removed = output_storage.remove_local_partial_files()
        if removed:
            logger.info("removed temp files of runs that ended elsewhere: %s", removed)
        logger.info(
            "worker %s started: concurrency %s, %s database",
            self.name,
            self.concurrency,
            connections["default"].vendor,
        )
        backoff = 0.0
        while not self._stop.is_set():
            try:
                close_old_connections()
                claimed = self._step()
                backoff = 0.0
            except DatabaseError as error:
                backoff = min(MAX_BACKOFF_SECONDS, backoff * 2 or 0.5)
                logger.warning("database unavailable (%s); retrying in %.1f s", error, backoff)
                # Every worker's heartbeats went stale with the database: call none
                # lost before they have had WORKER_LOST_AFTER_SECONDS to beat again.
                self._recovery.postpone(
                    time.monotonic() + backoff + settings.WORKER_LOST_AFTER_SECONDS
                )
                connections.close_all()
                self._stop.wait(backoff)
                continue
            except Exception:
                # One bad step must not end the worker; the next one starts afresh.
                backoff = min(MAX_BACKOFF_SECONDS, backoff * 2 or 0.5)
                logger.exception("worker step failed; retrying in %.1f s", backoff)
                self._stop.wait(backoff)
                continue
            if not claimed:
                self._wake.wait(settings.WORKER_POLL_SECONDS)
                self._wake.clear()
        return self._shutdown()

    def _step(self):
        now = time.monotonic()
        if self._heartbeat.due(now):
            self._beat()
        if self._cancels.due(now):
            self._stop_cancelled_runs()
        if self._recovery.due(now):
            own = [run.pk for run in self._running_runs()]  # alive: this worker runs them
            for run in fail_lost_runs(settings.WORKER_LOST_AFTER_SECONDS, exclude_ids=own):
                self._notifier.submit(run)
        self._lead()
        self._check_freshness(now)
        return self._dispatch()

    def _shutdown(self):
        # One grace for everything: running runs, then their notifications.
        deadline = time.monotonic() + settings.WORKER_SHUTDOWN_GRACE_SECONDS
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None
        # First: another worker takes over scheduling while this one finishes.
        self._lease.stop()
        while self._running_runs() and time.monotonic() < deadline:
            self._touch_active_runs()
            if self._cancels.due(time.monotonic()):  # people may still cancel meanwhile
                self._stop_cancelled_runs()
            time.sleep(min(0.2, settings.WORKER_HEARTBEAT_SECONDS))
        left = self._stop_left_runs()
        self._giving_up.set()  # a slot still waiting for the database stops waiting
        if left:
            abandon_runs(left, self._shutdown_message())
        self._pool.shutdown(wait=not left, cancel_futures=True)
        unsent = self._notifier.close(deadline - time.monotonic())
        if unsent:
            logger.warning(
                "worker %s stopped before the notifications of %s run(s) were sent: %s",
                self.name,
                len(unsent),
                ", ".join(
                    f"run {run.pk} ({run.report.slug})" if run.pk is not None else str(run)
                    for run in unsent
                ),
            )
        self.unsent_notifications = len(unsent)
        try:
            heartbeats.unregister_worker(self.name)
        except DatabaseError:
            logger.warning("could not remove the heartbeat row of %s", self.name)
        if self._sqlite_lock is not None:
            self._sqlite_lock.release()
        logger.info("worker %s stopped", self.name)
        return len(left)

    def _shutdown_message(self):
        return (
            f"Worker {self.name} stopped by shutdown before the run finished (waited "
            f"{settings.WORKER_SHUTDOWN_GRACE_SECONDS:g} s); its statement was cancelled "
            "on the database server."
        )

    def _stop_left_runs(self):
        """Past the grace: cancel the statements of the runs still going, on the server
        (never left running there), and give their slots a moment to record the
        failure; return the runs that did not."""
        left = self._running_runs()
        if not left:
            return []
        message = self._shutdown_message()
        with self._active_lock:
            controls = [self._controls[run.pk] for run in left if run.pk in self._controls]
        for control in controls:
            control.stop(SHUTDOWN, message)
        until = time.monotonic() + CANCELLED_RECORD_SECONDS
        while self._running_runs() and time.monotonic() < until:
            time.sleep(0.05)
        return self._running_runs()

    def _stop_cancelled_runs(self):
        with self._active_lock:
            controls = dict(self._controls)
        try:
            stop_cancelled_runs(controls)
        except DatabaseError as error:  # asked again at the next poll
            logger.warning("could not look for cancelled runs (%s)", error)
            connections["default"].close()

    # --- leadership and scheduling ---------------------------------------------------

    def _lead(self):
        """Run the scheduler exactly while this worker holds the lease (its LeaseKeeper
        takes and renews it); no database work unless that changes."""
        lease = self._lease.current()
        if self._scheduler is not None:
            same_lease = lease is not None and lease.epoch == self._scheduler_epoch
            if same_lease and self._scheduler.is_alive():
                return
            if lease is None:
                logger.warning("worker %s no longer holds the scheduler lease", self.name)
            elif same_lease:
                logger.error("the scheduler thread of %s died; restarting it", self.name)
            self._scheduler.stop()
            self._scheduler = None
        if lease is not None:
            scheduler = ReportScheduler(self._lease)
            scheduler.start()
            self._scheduler, self._scheduler_epoch = scheduler, lease.epoch
            logger.info("worker %s is the scheduler now (lease epoch %s)", self.name, lease.epoch)

    def _check_freshness(self, now):
        """While leading: freshness alerts go out on the reports' notification lanes."""
        lease = self._lease.current()
        if lease is None or not self._freshness.due(now):
            return
        try:
            events = check_freshness(lease)
        except LeaseLost as refused:
            logger.warning("freshness check refused: %s", refused)
            return
        for event in events:
            logger.info("report %s is %s", event.report.slug, event.notice.kind)
            self._notifier.submit(event)

    # --- executing runs --------------------------------------------------------------

    def _dispatch(self):
        with self._active_lock:
            free = self.concurrency - self._busy_slots
        if free <= 0 or self._stop.is_set():
            return 0
        runs = claim_runs(free, self.name)
        for run in runs:
            with self._active_lock:
                self._busy_slots += 1
                self._active[run.pk] = run
                self._controls[run.pk] = RunControl()
            self._pool.submit(self._work_slot, run)
        return len(runs)

    def _work_slot(self, run):
        """Execute ``run``, then claim and execute the next queued run, until none is left.

        A slot that claims its own next run never sits idle waiting for the main loop.
        """
        try:
            while run is not None:
                # Stale connections (a database restart) are replaced before the run.
                close_old_connections()
                self._execute(run)
                run = self._claim_next()
        finally:
            close_old_connections()
            with self._active_lock:
                self._busy_slots -= 1
            self._wake.set()  # a slot is free: the main loop claims for it

    def _claim_next(self):
        if self._stop.is_set():
            return None
        try:
            runs = claim_runs(1, self.name)
        except DatabaseError as error:
            logger.warning("could not claim the next run (%s); the main loop will", error)
            return None
        except Exception:
            logger.exception("claiming the next run failed; the main loop will")
            return None
        if not runs:
            return None
        with self._active_lock:
            self._active[runs[0].pk] = runs[0]
            self._controls[runs[0].pk] = RunControl()
        return runs[0]

    def _execute(self, run):
        with self._active_lock:
            control = self._controls.setdefault(run.pk, RunControl())
        try:
            execute_claimed_run(
                run, stop_waiting=self._giving_up, notify=self._notifier.submit, control=control
            )
        finally:
            with self._active_lock:
                self._active.pop(run.pk, None)
                self._controls.pop(run.pk, None)

    def _running_runs(self):
        with self._active_lock:
            return list(self._active.values())

    def _touch_active_runs(self):
        touch_runs([run.pk for run in self._running_runs()])

    def _beat(self):
        self._touch_active_runs()
        alive = heartbeats.beat(self.name, running_runs=len(self._running_runs()))
        if not alive:  # removed by housekeeping after a long outage
            heartbeats.register_worker(self.name, self.host, os.getpid())
        removed = output_storage.remove_local_partial_files()
        if removed:
            logger.info("removed temp files of runs that ended elsewhere: %s", removed)
