"""Send finished runs' notifications off the worker's run slots, one lane per report.

A report's notifications go out one after another, in the order its runs finished; a
slow or dead receiver holds up only its own report. Each lane is a daemon thread, at
most ``MAX_LANES`` at once; a report waiting for a free lane gets the next one (first
come, first served), and a lane goes back to the end of the line after each run, so
one busy report cannot keep a thread from the others.

``close(timeout)`` gives pending notifications until the timeout, then stops: no new
attempt starts, retries are abandoned, and the worker exits without waiting for a
receiver (the threads are daemons).
"""

import logging
import threading
import time
from collections import deque

from django.db import close_old_connections, connections

from runs.services.notifications.notifier import notify

logger = logging.getLogger(__name__)

MAX_LANES = 64


class NotificationLanes:
    def __init__(self, max_lanes=MAX_LANES):
        self.max_lanes = max_lanes
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = {}  # report id -> deque of runs; present while its lane has work
        self._line = deque()  # report ids with runs to send and no thread on them
        self._sending = {}  # report id -> the run a thread is notifying about
        self._threads = 0

    def submit(self, run):
        """Notify about ``run`` (a finished run, report loaded; or a report-level
        alerting.ReportEvent) on its report's lane."""
        with self._lock:
            if self.stopping.is_set():
                logger.warning("notifications of %s not sent: the worker stopped", run)
                return
            key = run.report_id
            if key in self._pending:
                self._pending[key].append(run)  # its lane is in line or sending
                return
            self._pending[key] = deque([run])
            self._line.append(key)
            if self._threads < self.max_lanes:
                self._threads += 1
                threading.Thread(target=self._serve, name="notify", daemon=True).start()

    def _serve(self):
        try:
            while True:
                with self._lock:
                    if self.stopping.is_set() or not self._line:
                        self._threads -= 1
                        self._idle.notify_all()
                        return
                    key = self._line.popleft()
                    run = self._pending[key].popleft()
                    self._sending[key] = run
                self._notify(run)
                with self._lock:
                    del self._sending[key]
                    if self._pending[key]:
                        self._line.append(key)  # the end of the line: others go first
                    else:
                        del self._pending[key]
                        self._idle.notify_all()
        finally:
            connections.close_all()  # this thread's connections end with it

    def _notify(self, run):
        try:
            close_old_connections()
            notify(run, stopping=self.stopping)  # or a report-level event (freshness)
        except Exception:
            logger.exception("notifications for %s failed", run)
        finally:
            close_old_connections()

    def close(self, timeout):
        """Wait up to ``timeout`` seconds for pending notifications, then stop.

        Returns the runs whose notifications were not (all) sent.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._idle.wait(left)
            self.stopping.set()
            unsent = list(self._sending.values())
            unsent += [run for runs in self._pending.values() for run in runs]
        return unsent
