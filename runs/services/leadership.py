"""Which worker schedules: one leader at a time.

PostgreSQL: the leader holds a session-level advisory lock on a connection of its own.
If the leader dies its connection closes, the lock is free, and the next worker that
tries (every SCHEDULE_SYNC_SECONDS) takes over. Every worker executes runs either way.

SQLite: one worker only. An exclusive lock on a file next to the database refuses a
second worker; the operating system releases it when the holder dies, even by kill -9.
"""

import contextlib
import fcntl
import logging
from pathlib import Path

from django.db import DatabaseError, connections

from runs.services.heartbeats import worker_name

logger = logging.getLogger(__name__)

# Any fixed 64-bit number; only reportsvc workers take this advisory lock.
LEADER_LOCK_KEY = 0x7265706F72747376  # "reportsv"


class SecondWorkerRefused(Exception):
    pass


class PostgresLeaderLock:
    def __init__(self, alias="default"):
        self._alias = alias
        self._connection = None

    def try_acquire(self):
        """True if this process holds the lock now (it may have held it already)."""
        if self._connection is not None and self.still_held():
            return True
        self.release()
        connection = connections.create_connection(self._alias)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [LEADER_LOCK_KEY])
                acquired = cursor.fetchone()[0]
        except DatabaseError:
            connection.close()
            raise
        if acquired:
            self._connection = connection
        else:
            connection.close()
        return acquired

    def still_held(self):
        """False once the lock's connection is gone (server restart, network)."""
        if self._connection is None:
            return False
        try:
            with self._connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return True
        except DatabaseError:
            logger.warning("lost the scheduler lock's database connection")
            self.release()
            return False

    def release(self):
        if self._connection is not None:
            with contextlib.suppress(DatabaseError):
                self._connection.close()
            self._connection = None


class SQLiteWorkerLock:
    """The single-worker lock of a SQLite deployment; the holder is always leader."""

    def __init__(self, database_path):
        self._path = Path(f"{database_path}.worker.lock")
        self._file = None

    def try_acquire(self):
        if self._file is not None:
            return True
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
        return True

    def still_held(self):
        return self._file is not None

    def release(self):
        if self._file is not None:
            self._file.close()
            self._file = None


def leader_lock_for(alias="default"):
    connection = connections[alias]
    if connection.vendor == "postgresql":
        return PostgresLeaderLock(alias)
    if connection.vendor == "sqlite":
        return SQLiteWorkerLock(connection.settings_dict["NAME"])
    raise NotImplementedError(f"the worker does not support {connection.vendor}")
