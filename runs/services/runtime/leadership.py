"""Which worker schedules: the holder of a lease that expires.

One row (SchedulerLease) says who holds the lease, until when, and with which epoch.
The holder renews it every third of SCHEDULE_LEADER_LEASE_SECONDS; every other worker
tries each second to take it, which succeeds once it has expired, and the epoch goes
up. A holder that is frozen, cut off or too slow to renew loses it that way. Expiry is
judged by the database's clock, so workers' clocks may disagree.

Fencing: whatever writes the schedule (fire passes, the repair pass, the scheduler's
own job rows) first proves, in the same transaction, that its holder and epoch still
hold an unexpired lease (``fence``), which locks the lease row until that transaction
ends: a worker taking over waits for it, and a former holder is refused.

The sessions of the leader's threads end any statement and any idle transaction after
a quarter of the lease, on the server (``bound_sessions_of_this_thread``): a frozen
holder's locks (on due reports, on job rows) are gone before its lease can pass to
another worker, so the new leader finds every due report.

SQLite: one worker only. An exclusive lock on a file next to the database refuses a
second worker; the operating system releases it when the holder dies, even by kill -9.
That worker holds the lease too, for /healthz and the admin.
"""

import contextlib
import fcntl
import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.db.backends.signals import connection_created
from django.db.models import F, Q
from django.db.models.functions import Now
from django.dispatch import receiver

from runs.models import SchedulerLease
from runs.services.runtime.heartbeats import worker_name

logger = logging.getLogger(__name__)

LEASE_ID = 1
RENEWALS_PER_LEASE = 3
TAKEOVER_POLL_SECONDS = 1.0


def transaction_limit(lease_seconds=None):
    """How long a leader's statement or idle transaction may last, in seconds."""
    return (lease_seconds or settings.SCHEDULE_LEADER_LEASE_SECONDS) / 4


class LeaseLost(Exception):
    """The lease is no longer this holder's (expired, released, or taken over)."""


@dataclass(frozen=True)
class Lease:
    holder: str
    epoch: int


# --- the lease row ----------------------------------------------------------------------


def acquire_lease(holder, seconds):
    """Take the lease if no one holds it unexpired; the Lease, or None."""
    free = SchedulerLease.objects.filter(pk=LEASE_ID).filter(
        Q(expires_at__isnull=True) | Q(expires_at__lte=Now())
    )
    changes = {
        "holder": holder,
        "epoch": F("epoch") + 1,
        "acquired_at": Now(),
        "expires_at": Now() + timedelta(seconds=seconds),
        "fire_pass_at": None,
    }
    with transaction.atomic():
        taken = free.update(**changes)
        if not taken and not SchedulerLease.objects.filter(pk=LEASE_ID).exists():
            # The first worker ever (or the table was emptied): a free lease, then take it.
            SchedulerLease.objects.bulk_create([SchedulerLease(pk=LEASE_ID)], ignore_conflicts=True)
            taken = free.update(**changes)
        if not taken:
            return None
        epoch = SchedulerLease.objects.values_list("epoch", flat=True).get(pk=LEASE_ID)
    return Lease(holder, epoch)


def renew_lease(lease, seconds):
    """Extend the lease; False if it is another holder's now. An expired lease nobody
    took meanwhile is renewed: no other worker scheduled in between."""
    return bool(_rows_of(lease).update(expires_at=Now() + timedelta(seconds=seconds)))


def release_lease(lease):
    """Let the lease expire now: the next worker takes over within a second."""
    _rows_of(lease).update(expires_at=Now())


def fence(lease, *, fire_pass=False):
    """Raise LeaseLost unless ``lease`` is held and unexpired. Call it first in the
    transaction that writes the schedule: the lease row stays locked until it ends.
    ``fire_pass``: record this moment as the holder's last fire pass."""
    _limit_session(transaction.get_connection(), transaction_limit(), this_transaction=True)
    live = _rows_of(lease).filter(expires_at__gt=Now())
    if fire_pass:
        held = live.update(fire_pass_at=Now())
    else:
        held = list(live.select_for_update(no_key=True).values_list("pk", flat=True))
    if not held:
        raise LeaseLost(f"{lease.holder} no longer holds the scheduler lease (epoch {lease.epoch})")


def _rows_of(lease):
    return SchedulerLease.objects.filter(pk=LEASE_ID, holder=lease.holder, epoch=lease.epoch)


# --- the leader's sessions ---------------------------------------------------------------

_bounded = threading.local()


def bound_sessions_of_this_thread(seconds):
    """Service-database sessions this thread opens from now on end any statement, and
    any transaction left idle, after ``seconds`` (PostgreSQL)."""
    _bounded.seconds = seconds


@receiver(connection_created)
def _bound_the_session(sender, connection, **kwargs):
    seconds = getattr(_bounded, "seconds", None)
    if seconds is not None and connection.alias == "default":
        _limit_session(connection, seconds)


def _limit_session(connection, seconds, *, this_transaction=False):
    """Statements and idle transactions end after ``seconds`` on the server, for the
    session or only for the transaction in progress (PostgreSQL; a no-op elsewhere)."""
    if connection.vendor != "postgresql":
        return
    milliseconds = str(max(1, int(seconds * 1000)))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('statement_timeout', %s, %s), "
            "set_config('idle_in_transaction_session_timeout', %s, %s)",
            [milliseconds, this_transaction, milliseconds, this_transaction],
        )


# --- a worker's hold on the lease ---------------------------------------------------------


def lease_of_this_thread():
    """The lease the current thread schedules under, if it is held now: the scheduler's
    thread carries its worker's LeaseKeeper (``lease_keeper``); other threads, none."""
    keeper = getattr(threading.current_thread(), "lease_keeper", None)
    return keeper.current() if keeper is not None else None


class LeaseKeeper:
    """Takes the lease when it is free and renews it while held, in a thread of its own
    (the worker's main loop may wait on other things)."""

    def __init__(self, holder=None, seconds=None):
        self.holder = holder or worker_name()
        self.seconds = seconds or settings.SCHEDULE_LEADER_LEASE_SECONDS
        self._lease = None
        self._valid_until = 0.0  # monotonic; a renewal sent at t holds until t + seconds
        self._state_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)

    def start(self):
        self._thread.start()

    def current(self):
        with self._state_lock:
            if self._lease is not None and time.monotonic() < self._valid_until:
                return self._lease
            return None

    def stop(self, timeout=2.0):
        """Stop renewing and release the lease if held. Waits ``timeout`` at most: a
        stalled database leaves the lease to expire on its own."""
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("could not release the scheduler lease; it expires on its own")

    def _run(self):
        bound_sessions_of_this_thread(transaction_limit(self.seconds))
        try:
            while not self._stopping.is_set():
                self._keep()
                held = self._lease is not None
                self._stopping.wait(
                    self.seconds / RENEWALS_PER_LEASE
                    if held
                    else min(TAKEOVER_POLL_SECONDS, self.seconds / RENEWALS_PER_LEASE)
                )
            self._release()
        finally:
            connections.close_all()

    def _keep(self):
        sent = time.monotonic()
        try:
            if self._lease is None:
                lease = acquire_lease(self.holder, self.seconds)
                if lease is not None:
                    logger.info("%s holds the scheduler lease (epoch %s)", self.holder, lease.epoch)
                    self._set(lease, sent)
            elif renew_lease(self._lease, self.seconds):
                self._set(self._lease, sent)
            else:
                logger.warning(
                    "%s lost the scheduler lease (epoch %s): another worker took it over",
                    self.holder,
                    self._lease.epoch,
                )
                self._set(None, 0.0)
        except DatabaseError as error:
            # Held until it expires (the main loop stops scheduling then); renewed
            # again if the database answers in time.
            logger.warning("could not renew or take the scheduler lease: %s", error)
            with contextlib.suppress(DatabaseError):
                connections["default"].close()

    def _set(self, lease, sent):
        with self._state_lock:
            self._lease = lease
            self._valid_until = sent + self.seconds if lease is not None else 0.0

    def _release(self):
        lease = self._lease
        self._set(None, 0.0)
        if lease is None:
            return
        try:
            release_lease(lease)
            logger.info("%s released the scheduler lease (epoch %s)", self.holder, lease.epoch)
        except DatabaseError as error:
            logger.warning("could not release the scheduler lease (%s); it expires", error)


# --- SQLite: one worker ------------------------------------------------------------------


class SecondWorkerRefused(Exception):
    pass


class SQLiteWorkerLock:
    """The single-worker lock of a SQLite deployment."""

    def __init__(self, database_path):
        self._path = Path(f"{database_path}.worker.lock")
        self._file = None

    def acquire(self):
        if self._file is not None:
            return
        file = open(self._path, "a+")  # noqa: SIM115 - held open for the process lifetime
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise SecondWorkerRefused(
                f"Another worker ({holder}) is already running on this SQLite database. "
                "SQLite supports one worker; use PostgreSQL (DATABASE_URL) to run several."
            ) from None
        file.truncate(0)
        file.write(f"{worker_name()}\n")
        file.flush()
        self._file = file

    def release(self):
        if self._file is not None:
            self._file.close()
            self._file = None


def refuse_a_second_sqlite_worker(alias="default"):
    """On SQLite, the lock that keeps this the only worker (raises SecondWorkerRefused);
    None elsewhere."""
    connection = connections[alias]
    if connection.vendor == "postgresql":
        return None
    if connection.vendor == "sqlite":
        lock = SQLiteWorkerLock(connection.settings_dict["NAME"])
        lock.acquire()
        return lock
    raise NotImplementedError(f"the worker does not support {connection.vendor}")
