"""Leased logins: the report SQL of a run reaches no session but its own.

PostgreSQL lets a role see the query text of, and end, only its own sessions (and
those of roles whose privileges it has). Runs that all connected as one role could end
or watch each other. So a server data source has a pool of logins
(datasources.registry: the URL's user and ``REPORTING_DATABASE_LOGINS[_<NAME>]``), and
whatever sends a report's text to it (a run, the save-time check) or examines it holds
one login alone for as long as it needs it:

- A lease is a row per (source, login) in the service's database (reports.models.
  LoginLease), taken with one conditional update of a row whose lease ran out, renewed
  by the run's heartbeat, given back at the end. A dead or frozen holder's lease runs
  out and can be taken over. The source never coordinates: report SQL could release a
  lock there.
- The holder connects as its login once it holds the lease and closes the connection
  before it gives the lease back: no idle session of the login outlives its holder.
- Right after connecting it asks the source whether its login has any other session (a
  frozen former holder still connected, another program on the same login). If so the
  login counts as busy for a few seconds and the holder tries another.

SQLite sources have no server sessions: no leases there.
"""

import contextlib
import logging
import random
import secrets
import time
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connections
from django.utils import timezone

from datasources.backends import backend_for
from datasources.registry import (
    is_demo_source,
    login_aliases,
    logins_variable,
)
from datasources.safety import ensure_source_is_safe
from reports.models import LoginLease

logger = logging.getLogger(__name__)

# A login with a session reportsvc did not open is left alone this long.
BUSY_SECONDS = 2
FIRST_POLL_SECONDS = 0.05
MAX_POLL_SECONDS = 1.0
# Holders that do not renew (a save-time check, an examination) finish well within it.
ONE_SHOT_LEASE_SECONDS = 60


class SourceUnavailable(Exception):
    """No connection to the data source for this holder; ``str()`` says why and what to do."""


class NoFreeLogin(SourceUnavailable):
    """Every login of the source stayed in use while the holder waited."""

    def __init__(self, message, logins):
        super().__init__(message)
        self.logins = logins


def run_holder(run_id):
    return f"run:{run_id}"


def one_shot_holder(purpose):
    return f"{purpose}:{secrets.token_hex(6)}"


def run_lease_seconds():
    """How long a run's lease lasts without a heartbeat: as long as the run itself."""
    return max(settings.WORKER_LOST_AFTER_SECONDS, 3 * settings.WORKER_HEARTBEAT_SECONDS)


# --- the lease rows --------------------------------------------------------------------


# One statement: pick the login free longest and take it. PostgreSQL skips rows another
# transaction has locked (a save-time check inside the admin's transaction) instead of
# waiting for them; SQLite runs one writer at a time.
TAKE_LOGIN_SQL = """
UPDATE reports_loginlease SET holder = %s, expires_at = %s
WHERE id = (
    SELECT id FROM reports_loginlease
    WHERE source = %s AND login IN ({logins}) AND expires_at <= %s
    ORDER BY expires_at, id LIMIT 1 {lock}
)
RETURNING login
"""


def take_login(source, logins, holder, seconds):
    """One of ``logins`` of ``source`` whose lease ran out, leased to ``holder`` for
    ``seconds`` (the one free longest); None when all are held."""
    connection = connections["default"]
    lock = "FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    sql = TAKE_LOGIN_SQL.format(logins=", ".join(["%s"] * len(logins)), lock=lock)
    for attempt in range(2):
        now = timezone.now()
        until = now + timedelta(seconds=seconds)
        adapt = connection.ops.adapt_datetimefield_value
        with connection.cursor() as cursor:
            cursor.execute(sql, [holder, adapt(until), source, *logins, adapt(now)])
            row = cursor.fetchone()
        if row is not None:
            return row[0]
        if attempt or not _add_missing_rows(source, logins, now):
            return None
    return None


def _add_missing_rows(source, logins, now):
    """Rows for logins that have none yet (new logins); whether any were missing."""
    known = set(
        LoginLease.objects.filter(source=source, login__in=logins).values_list("login", flat=True)
    )
    missing = [login for login in logins if login not in known]
    if missing:
        LoginLease.objects.bulk_create(
            [LoginLease(source=source, login=login, expires_at=now) for login in missing],
            ignore_conflicts=True,
        )
    return bool(missing)


def give_back(source, login, holder):
    """End ``holder``'s lease of ``login`` (a no-op if it ran out and was taken over)."""
    connection = connections["default"]
    with connection.cursor() as cursor:  # once per run: no ORM query to build
        cursor.execute(
            "UPDATE reports_loginlease SET holder = '', expires_at = %s "
            "WHERE source = %s AND login = %s AND holder = %s",
            [connection.ops.adapt_datetimefield_value(timezone.now()), source, login, holder],
        )


def set_aside(source, login, holder):
    """Mark ``login`` busy for BUSY_SECONDS: a session reportsvc did not open uses it."""
    LoginLease.objects.filter(source=source, login=login, holder=holder).update(
        holder="busy:another session",
        expires_at=timezone.now() + timedelta(seconds=BUSY_SECONDS),
    )


def renew_leases(holders, seconds=None):
    """Extend the leases ``holders`` still hold (a run's heartbeat)."""
    if holders:
        LoginLease.objects.filter(holder__in=holders).update(
            expires_at=timezone.now() + timedelta(seconds=seconds or run_lease_seconds())
        )


# --- a connection of one's own ---------------------------------------------------------


def _logins_of(source):
    """Login name -> alias for every login of ``source`` (KeyError if unknown)."""
    return {connections[alias].settings_dict["USER"]: alias for alias in login_aliases(source)}


def no_free_login_message(source, count, waited, saw_other_sessions):
    users = "runs and save-time checks"
    if saw_other_sessions:
        users += (
            ", or by sessions reportsvc did not open (another program on the same login, or "
            "a frozen former holder)"
        )
    if is_demo_source(source):
        fix = (
            f"The built-in demo source has {count}: run fewer reports at once (WORKER_CONCURRENCY)."
        )
    else:
        fix = (
            f"Add logins ({logins_variable(source)}: README, Security) or run fewer "
            "reports at once."
        )
    return (
        f"Data source '{source}' had no free login for {waited:g} s: its {count} "
        f"login{'s were all' if count != 1 else ' was'} in use by other {users}. {fix}"
    )


def _wait_for_login(source, logins, holder, *, seconds, wait_seconds, deadline, stop, saw):
    delay = FIRST_POLL_SECONDS
    while True:
        login = take_login(source, list(logins), holder, seconds)
        if login is not None:
            return login
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (stop is not None and stop.is_set()):
            message = no_free_login_message(source, len(logins), wait_seconds, saw)
            raise NoFreeLogin(message, len(logins))
        pause = min(delay, remaining) * random.uniform(0.5, 1.0)  # peers do not poll in step
        if stop is not None:
            stop.wait(pause)
        else:
            time.sleep(pause)
        delay = min(delay * 2, MAX_POLL_SECONDS)


def _close(connection):
    with contextlib.suppress(Exception):
        connection.close()


def _end_lease(connection, source, login, holder):
    """Close the login's connection first, then give the login back."""
    _close(connection)
    try:
        give_back(source, login, holder)
    except DatabaseError as error:  # it runs out by itself
        logger.warning("could not give back login %s of %s: %s", login, source, error)


def _connect_alone(connection, source, login):
    """Connect ``connection`` afresh, examine it, and say whether its login has no other
    session on the server. Raises SourceUnavailable or DataSourceRefused."""
    connection.close()  # a session opened before the lease is not this holder's
    try:
        assessment = ensure_source_is_safe(connection)
        if assessment.powers:
            return True  # allowed by the opt-in: it reaches every session anyway
        return backend_for(connection).other_sessions(connection) == 0
    except DatabaseError as error:
        raise SourceUnavailable(
            f"Data source '{source}' (login '{login}'): {str(error).strip()}"
        ) from error


@contextlib.contextmanager
def leased_connection(source, holder, *, wait_seconds, stop=None, seconds=None):
    """The connection for report SQL of ``holder`` on data source ``source``.

    On a server source: a login leased for the block (for ``seconds``, the run's lease
    by default; renewed by ``renew_leases``), connected for it alone and closed at the
    end. Waits up to ``wait_seconds`` for a free login, or until ``stop`` (an Event) is
    set, then raises NoFreeLogin. On SQLite: the source's connection, as it is.

    Raises KeyError for unknown sources, DataSourceRefused when a login may not run
    reports, SourceUnavailable when it cannot connect.
    """
    logins = _logins_of(source)
    first = connections[next(iter(logins.values()))]
    if not backend_for(first).has_server_sessions:
        yield first
        return
    seconds = seconds or run_lease_seconds()
    deadline = time.monotonic() + wait_seconds
    saw_other_sessions = False
    while True:
        login = _wait_for_login(
            source,
            logins,
            holder,
            seconds=seconds,
            wait_seconds=wait_seconds,
            deadline=deadline,
            stop=stop,
            saw=saw_other_sessions,
        )
        connection = connections[logins[login]]
        try:
            alone = _connect_alone(connection, source, login)
        except BaseException:
            _end_lease(connection, source, login, holder)
            raise
        if alone:
            break
        logger.warning(
            "login %s of data source %s has a session reportsvc did not open; trying another",
            login,
            source,
        )
        saw_other_sessions = True
        _close(connection)
        set_aside(source, login, holder)
    connection.reportsvc_closes_after_use = True  # nothing need be reset for a next user
    try:
        yield connection
    finally:
        connection.reportsvc_closes_after_use = False
        _end_lease(connection, source, login, holder)


def examine_logins(source, assess):
    """``(login, outcome)`` for every login of ``source``: ``assess(connection)``'s
    result, the DatabaseError that kept it from connecting, or None when the login is in
    use (whoever uses it examined it when it connected).

    Each login of a server source is leased for the examination when it is free;
    without the lease table (before ``migrate`` made it) the examination goes ahead
    without one.
    """
    for login, alias in _logins_of(source).items():
        connection = connections[alias]
        holder = one_shot_holder("examination")
        leased = None
        if backend_for(connection).has_server_sessions:
            with contextlib.suppress(DatabaseError):  # no lease table yet: no lease
                leased = take_login(source, [login], holder, ONE_SHOT_LEASE_SECONDS) is not None
        if leased is False:
            yield login, None
            continue
        try:
            if leased:
                connection.close()  # a session from before the lease is not this one's
            outcome = assess(connection)
        except DatabaseError as error:
            outcome = error
        finally:
            if leased:
                _end_lease(connection, source, login, holder)
            else:
                _close(connection)
        yield login, outcome
