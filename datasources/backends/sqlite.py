"""SQLite data sources.

- Report text is judged by the sqlite3 driver itself when it is prepared: ``execute``
  prepares exactly one statement and refuses a second, and an authorizer
  (:class:`SQLiteGuard`) refuses anything but reading, with ``PRAGMA query_only`` on.
- A statement ends by the report's timeout: a progress handler between VM steps, and a
  watchdog thread that interrupts one huge function call; values are capped in size.
- Rows are walked with a cursor and handed on in blocks of ``FETCH_BATCH_BYTES`` of
  values (memory holds one block and one row, however many rows).
- Placeholders are checked where they stand by SQLite's own prepare.
- A running statement is stopped by ``interrupt()``. "Sessions" are file handles of
  this process: no logins to lease, no other sessions to see.
"""

import contextlib
import operator
import secrets
import sqlite3
import threading
import time
from datetime import datetime

from django.db import DatabaseError, transaction

from datasources.backends.base import Backend, DemoSource, Examination
from datasources.placeholders import (
    TemplateError,
    bind_parameter_message,
    outside_parameter_message,
    substitute,
)
from datasources.sandbox import (
    ExportFailed,
    QueryTimedOut,
    ReportSQLError,
    RowLimitExceeded,
    StatementCancelled,
    database_message,
    require_sql,
    service_table_names,
    service_tables_message,
    timeout_message,
)

# Seconds a connection waits for a lock the service's writers hold.
BUSY_TIMEOUT_SECONDS = 20
MAX_VALUE_BYTES = 64 << 20
PROGRESS_STEPS = 10_000
# Bytes of values per block, whatever the row count. Small enough that a block's rows
# and their CSV stay in the CPU cache and die young (1 MiB blocks took a fifth longer).
FETCH_BATCH_BYTES = 64 << 10
NUMBER_BYTES = 8  # what a value without a length (a number, NULL) counts for
# The cast of a literal by its parameter type's sql_type (datasources.parameters).
CASTS = {
    "date": "TEXT",
    "timestamp": "TEXT",
    "integer": "INTEGER",
    "decimal": "NUMERIC",
    "text": "TEXT",
    "boolean": "INTEGER",
}


class SQLiteBackend(Backend):
    vendor = "sqlite"
    label = "SQLite"
    engine = "django.db.backends.sqlite3"
    url_schemes = ("sqlite",)
    has_server_sessions = False

    @property
    def errors(self):
        return (sqlite3.Error,)

    # --- connection options --------------------------------------------------------

    def database_settings(self, config):
        config["OPTIONS"].setdefault("timeout", BUSY_TIMEOUT_SECONDS)
        return config

    # --- safety examination ----------------------------------------------------------

    def examine(self, connection, *, service_tables, peer_logins):
        """A file has no logins or powers: only which service tables it holds."""
        tables = sorted(service_tables)
        with connection.cursor() as cursor:
            marks = ", ".join(["%s"] * len(tables))
            cursor.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                f"AND name IN ({marks}) ORDER BY name",
                tables,
            )
            readable = [row[0] for row in cursor.fetchall()]
        return Examination(login="", account="SQLite file", readable_tables=readable)

    def other_sessions(self, connection):
        return 0  # no server: nothing outside this process shares the connection

    # --- statements ------------------------------------------------------------------

    def read_only_statement(self, sql):
        """Judged by the driver when the statement is prepared (export, explain); here
        only whether the text is complete. A complete statement's last ';' is its
        terminator, never part of a literal."""
        require_sql(sql)
        if not sqlite3.complete_statement(sql.rstrip() + "\n;"):
            raise ReportSQLError(
                "The SQL is incomplete: a string, identifier or comment is not closed."
            )
        return sql.strip().rstrip("; \t\r\n\f\v")

    def marker(self, index):
        return f":p{index + 1} "

    def check_positions(self, sql, placeholders, connection=None):
        """SQLite's prepare decides, on ``connection``; without one, nothing to check."""
        if connection is None:
            return
        connection.ensure_connection()
        check_sqlite_positions(connection.connection, sql, placeholders)

    def quoter(self, connection):
        """SQLite's own ``quote()`` of the value, with an explicit cast:
        ``CAST('2026-11-25' AS TEXT)``."""
        connection.ensure_connection()
        raw_connection = connection.connection

        def quote(kind, value):
            text = _literal_value(kind.literal(value))
            (quoted,) = raw_connection.execute("SELECT quote(?)", (text,)).fetchone()
            return f"CAST({quoted} AS {CASTS[kind.sql_type]})"

        return quote

    # --- execution ---------------------------------------------------------------------

    def export(self, connection, statement, writer, output_format, timeout_seconds, limit):
        """A streaming cursor with ``PRAGMA query_only`` and a progress-handler deadline."""
        connection.ensure_connection()
        raw_connection = connection.connection
        connection.reportsvc_cancelled = False
        deadline = time.monotonic() + timeout_seconds
        raw_connection.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_STEPS)
        # The progress handler runs between VM steps; one huge function call (a giant
        # zeroblob or replace) is stopped by the watchdog and the value-size cap.
        watchdog = threading.Timer(timeout_seconds, raw_connection.interrupt)
        watchdog.daemon = True
        watchdog.start()
        length_limit = raw_connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        raw_connection.execute("PRAGMA query_only = ON")
        guard = SQLiteGuard()
        row_count = 0
        try:
            with transaction.atomic(using=connection.alias), _authorized(raw_connection, guard):
                cursor = raw_connection.cursor()
                cursor.execute(statement)
                if cursor.description is None:
                    raise ExportFailed("The statement returned no result set.")
                writer.write_header([column[0] for column in cursor.description])
                for rows in _row_blocks(cursor, FETCH_BATCH_BYTES):
                    row_count += len(rows)
                    if row_count > limit.rows:
                        raise RowLimitExceeded(limit.message)
                    writer.write_rows(rows)
        except (sqlite3.Error, DatabaseError) as error:
            if getattr(connection, "reportsvc_cancelled", False):
                raise StatementCancelled(
                    f"The query was cancelled: {database_message(error)}"
                ) from error
            if time.monotonic() > deadline:
                raise QueryTimedOut(
                    timeout_message(timeout_seconds, database_message(error))
                ) from error
            raise ExportFailed(guard.message(error.__cause__ or error)) from error
        finally:
            watchdog.cancel()
            # An interrupt that lands during the rollback makes Django close the
            # connection: then there is nothing left to restore.
            with contextlib.suppress(sqlite3.ProgrammingError):
                raw_connection.set_progress_handler(None, 0)
                raw_connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, length_limit)
                raw_connection.execute("PRAGMA query_only = OFF")
        return row_count

    def explain(self, connection, statement, timeout_seconds):
        connection.ensure_connection()
        raw_connection = connection.connection
        deadline = time.monotonic() + timeout_seconds
        raw_connection.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_STEPS)
        try:
            with sqlite_read_only(raw_connection):
                raw_connection.execute(f"EXPLAIN QUERY PLAN {statement}")
        finally:
            with contextlib.suppress(sqlite3.ProgrammingError):
                raw_connection.set_progress_handler(None, 0)

    def cancel(self, connection):
        """``interrupt()``: safe from any thread; the running statement stops with
        "interrupted" at its next VM step."""
        raw_connection = connection.connection
        if raw_connection is None:
            return
        connection.reportsvc_cancelled = True
        with contextlib.suppress(sqlite3.ProgrammingError):  # closed meanwhile
            raw_connection.interrupt()


def _literal_value(value):
    """A parameter type's canonical literal value as SQLite quotes it: booleans and
    integers as numbers, time stamps as Django and SQLite's datetime() store them
    (UTC), so text comparisons work."""
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, datetime):
        # isoformat() pads the year to four digits (strftime writes year 1 as "1").
        return value.replace(tzinfo=None).isoformat(sep=" ")
    return value


# --- the guard: the driver prepares the statement; the authorizer decides what it may do

_READ_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}
_ACTION_WORDS = {
    sqlite3.SQLITE_INSERT: "INSERT",
    sqlite3.SQLITE_UPDATE: "UPDATE",
    sqlite3.SQLITE_DELETE: "DELETE",
    sqlite3.SQLITE_PRAGMA: "PRAGMA",
    sqlite3.SQLITE_ATTACH: "ATTACH",
    sqlite3.SQLITE_DETACH: "DETACH",
    sqlite3.SQLITE_TRANSACTION: "a transaction",
    sqlite3.SQLITE_SAVEPOINT: "a savepoint",
    sqlite3.SQLITE_ANALYZE: "ANALYZE",
    sqlite3.SQLITE_REINDEX: "REINDEX",
}


class SQLiteGuard:
    """An authorizer that lets a statement read and nothing else, remembering why not."""

    def __init__(self):
        self.refused = None

    def __call__(self, action, first, second, database, trigger):
        if action in _READ_ACTIONS:
            return sqlite3.SQLITE_OK
        if self.refused is None:
            schema_table = first in ("sqlite_master", "sqlite_temp_master", "sqlite_schema")
            word = None if schema_table else _ACTION_WORDS.get(action)
            self.refused = word or "a schema change"
        return sqlite3.SQLITE_DENY

    def policy_message(self, error):
        """Why the guard refused the statement behind ``error``, or None."""
        if isinstance(error, sqlite3.ProgrammingError) and "one statement" in str(error):
            return (
                "A report runs exactly one statement, but SQLite found more than one in "
                "this SQL. Keep only the query."
            )
        if self.refused:
            return f"Reports can only read data, but this statement would use {self.refused}."
        text = str(error).strip()
        missing = text.removeprefix("no such table: ")
        if missing != text and missing.rsplit(".", 1)[-1] in service_table_names():
            return service_tables_message({missing})
        return None

    def message(self, error):
        """The user's message for a driver error raised while the guard was on."""
        return self.policy_message(error) or str(error).strip()


@contextlib.contextmanager
def sqlite_read_only(raw_connection):
    """Prepare or explain report text on SQLite only under the guard, query_only on: a
    refusal by the guard comes out as ReportSQLError with its message, other driver
    errors as they are."""
    guard = SQLiteGuard()
    raw_connection.execute("PRAGMA query_only = ON")
    raw_connection.set_authorizer(guard)
    try:
        yield
    except sqlite3.Error as error:
        refusal = guard.policy_message(error)
        if refusal:
            raise ReportSQLError(refusal) from error
        raise
    finally:
        raw_connection.set_authorizer(None)
        raw_connection.execute("PRAGMA query_only = OFF")


@contextlib.contextmanager
def _authorized(raw_connection, guard):
    """The driver prepares one statement only; the guard lets it read and nothing else
    (set inside the transaction: BEGIN and COMMIT are not the report's)."""
    raw_connection.set_authorizer(guard)
    try:
        yield
    finally:
        with contextlib.suppress(sqlite3.ProgrammingError):  # closed after an interrupt
            raw_connection.set_authorizer(None)


def _row_blocks(cursor, budget):
    """The cursor's rows in lists holding ``budget`` bytes of values or more (the last
    may hold less).

    Rows are fetched one at a time and a block is handed on as soon as it reaches the
    budget, so memory holds ``budget`` bytes plus one row: 20 rows of 60 MB cost what
    one does, where ``fetchmany(2000)`` would hold them all at once. A row's size is
    its text and blob lengths (``length_hint``: C speed, no per-value Python call) and
    ``NUMBER_BYTES`` a value.
    """
    rows, size = [], 0
    append, length = rows.append, operator.length_hint
    per_row = None
    for row in cursor:
        if per_row is None:
            per_row = NUMBER_BYTES * len(row)
        append(row)
        size += sum(map(length, row)) + per_row
        if size >= budget:
            yield rows
            rows, size = [], 0
            append = rows.append
    if rows:
        yield rows


# --- placeholders: where they stand, by SQLite's own prepare --------------------------


class _RecordingBindings(dict):
    """Bindings for sqlite3 that note which names the prepared statement asked for."""

    def __init__(self):
        super().__init__()
        self.asked = set()

    def __getitem__(self, key):
        self.asked.add(key)
        return None


class _NamelessParameter(Exception):
    """The statement has a parameter without a name (``?``, or a gap ``?5`` leaves)."""


def _parameters_asked(raw_connection, sql):
    """The names of the parameters SQLite's prepare of ``sql`` asks for (never stepped
    past EXPLAIN); _NamelessParameter when one has no name."""
    bindings = _RecordingBindings()
    try:
        raw_connection.execute(f"EXPLAIN {sql}", bindings).close()
    except sqlite3.ProgrammingError as error:
        # The driver binds a mapping by name: a parameter without one cannot be bound.
        if "has no name" in str(error):
            raise _NamelessParameter() from error
        raise
    return bindings.asked


def _written(name):
    if name.isdigit():
        return f"?{name}"
    return f":{name} (or @{name}, ${name}: the same to SQLite)"


def check_sqlite_positions(raw_connection, sql, placeholders):
    """Raise TemplateError unless SQLite, preparing the statement, binds every
    placeholder as a parameter, and binds no other one (``:p1``, ``$x``, ``@x``, ``?``,
    ``?3`` written in the SQL itself).

    Each placeholder becomes a marker whose name holds a random nonce, so no text the
    report's author wrote can stand in for it; the statement is prepared again with the
    placeholders as plain values, where any parameter asked for is one the author
    wrote (SQLite gives ``?1`` and a marker before it the same slot). Prepared under the
    read-only guard and never stepped past EXPLAIN; errors from preparing it are raised
    as they are (sqlite3.Error).
    """
    nonce = secrets.token_hex(8)
    ours = [f"rsvc_{nonce}_{index + 1}" for index in range(len(placeholders))]
    marked, _ = substitute(sql, placeholders, lambda index, placeholder: f":{ours[index]} ")
    as_values, _ = substitute(sql, placeholders, lambda index, placeholder: "NULL ")
    with sqlite_read_only(raw_connection):
        try:
            asked = _parameters_asked(raw_connection, marked) if placeholders else set()
            for name, placeholder in zip(ours, placeholders, strict=True):
                if name not in asked:
                    raise TemplateError(outside_parameter_message(placeholder))
            foreign = sorted(asked - set(ours)) or sorted(
                _parameters_asked(raw_connection, as_values)
            )
        except _NamelessParameter:
            raise TemplateError(bind_parameter_message("? (or ?N)")) from None
    if foreign:
        raise TemplateError(bind_parameter_message(_written(foreign[0])))


# --- the built-in demo source --------------------------------------------------------


class SQLiteDemo(DemoSource):
    """A file of its own beside the service's database: it holds nothing else."""

    tables = (
        """CREATE TABLE IF NOT EXISTS demo_customers (
            id integer PRIMARY KEY, name text NOT NULL, email text NOT NULL,
            country text NOT NULL, signed_up_at text NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS demo_orders (
            id integer PRIMARY KEY, customer_id integer NOT NULL REFERENCES demo_customers,
            ordered_at text NOT NULL, currency text NOT NULL,
            amount_cents integer NOT NULL, status text NOT NULL, refunded_at text)""",
    )
    queries = {
        "daily-revenue": """SELECT {{ day }} AS day, currency,
       count(*) AS orders, round(sum(amount_cents) / 100.0, 2) AS revenue
FROM demo_orders
WHERE ordered_at >= {{ interval_start }} AND ordered_at < {{ interval_end }}
  AND status = {{ status }} AND amount_cents >= {{ min_amount_cents }}
GROUP BY currency
ORDER BY currency""",
        "daily-revenue-by-currency": """SELECT date(ordered_at) AS day, currency,
       count(*) AS orders, round(sum(amount_cents) / 100.0, 2) AS revenue
FROM demo_orders
WHERE status = 'paid' AND ordered_at >= date('now', '-30 days')
GROUP BY 1, 2
ORDER BY 1, 2""",
        "top-customers-this-week": """SELECT c.name, c.email, c.country, count(*) AS orders,
       round(sum(o.amount_cents) / 100.0, 2) AS spent
FROM demo_orders o JOIN demo_customers c ON c.id = o.customer_id
WHERE o.status = 'paid' AND o.ordered_at >= datetime('now', '-7 days')
GROUP BY c.id
ORDER BY spent DESC, c.name
LIMIT 20""",
        "refunds-yesterday": """SELECT o.id AS order_id, c.email, o.currency,
       round(o.amount_cents / 100.0, 2) AS amount, o.refunded_at
FROM demo_orders o JOIN demo_customers c ON c.id = o.customer_id
WHERE o.status = 'refunded'
  AND o.refunded_at >= date('now', '-1 day') AND o.refunded_at < date('now')
ORDER BY o.refunded_at""",
        "new-customers-by-country": """SELECT country, count(*) AS new_customers
FROM demo_customers
WHERE signed_up_at >= datetime('now', '-90 days')
GROUP BY country
ORDER BY new_customers DESC, country""",
    }

    def database(self, service_database, var_dir, secret_key):
        settings = {
            "ENGINE": service_database["ENGINE"],
            "NAME": str(var_dir / "demo.sqlite3"),
            "TEST": {"NAME": str(var_dir / "test-demo.sqlite3")},
        }
        return settings, []

    @contextlib.contextmanager
    def writer(self, source_connection):
        from django.db import transaction

        with (
            transaction.atomic(using=source_connection.alias),
            source_connection.cursor() as cursor,
        ):
            yield cursor

    def timestamp(self, moment):
        return moment.strftime("%Y-%m-%d %H:%M:%S")


SQLiteBackend.demo = SQLiteDemo()
BACKEND = SQLiteBackend()
