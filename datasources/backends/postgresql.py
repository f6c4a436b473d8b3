"""PostgreSQL data sources.

- Statements are judged by pglast (libpg_query: PostgreSQL's own grammar), so the
  statement count and kind are what the server would see.
- Report text goes to the server only over the extended query protocol
  (``PQsendQueryParams``), which carries exactly one statement: whatever the text does
  to the quoting, nothing after it can run. psycopg's ``execute`` without parameters
  uses the simple protocol, which runs every statement in a string, so report text
  never goes through it.
- CSV outputs are ``COPY (query) TO STDOUT WITH (FORMAT csv, HEADER)``, drained at
  libpq level; other formats get typed rows, one at a time (single-row mode).
- A login is examined by its roles (superuser, replication, the predefined roles that
  reach files, programs and other sessions), its membership in its peers, and the
  service tables it could read; its other sessions come from pg_stat_activity.
- A running statement is stopped by a cancel request.
"""

import contextlib
import hashlib
import hmac
import re
import select
import time
from datetime import datetime

import psycopg
from django.db import DatabaseError
from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.visitors import Visitor
from psycopg import pq

from datasources.backends.base import (
    Backend,
    DemoSource,
    DemoSourceUnavailable,
    Examination,
)
from datasources.placeholders import (
    TemplateError,
    bind_parameter_message,
    original_offset,
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

CONNECT_TIMEOUT_SECONDS = 10
TCP_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
# Past the statement timeout the server itself should have stopped; waiting this much
# longer means the connection has gone silent.
STALL_MARGIN_SECONDS = 30
CLIENT_CHECK_MS = "2000"
QUERY_CANCELED = "57014"
# Types whose values are numbers or booleans: formula escaping leaves them be.
NON_TEXT_TYPES = frozenset(
    {"int2", "int4", "int8", "oid", "numeric", "float4", "float8", "money", "bool"}
)
# The cast of a literal by its parameter type's sql_type (datasources.parameters).
CASTS = {
    "date": "date",
    "timestamp": "timestamptz",
    "integer": "bigint",
    "decimal": "numeric",
    "text": "text",
    "boolean": "boolean",
}
PRIVILEGED_ROLES = (
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_signal_backend",
    # Every session's query text (pg_monitor holds pg_read_all_stats).
    "pg_read_all_stats",
    "pg_monitor",
)
# One round trip: who we are, which dangerous roles we hold (directly or through
# membership, including ones we could SET ROLE to), which other logins of the source we
# are a member of, which service tables we could read.
PRIVILEGES_SQL = """
SELECT r.rolname, r.rolsuper, r.rolreplication,
  ARRAY(SELECT p.rolname::text FROM pg_roles p
        WHERE p.rolname = ANY(%(roles)s) AND pg_has_role(session_user, p.oid, 'MEMBER')
        ORDER BY 1),
  ARRAY(SELECT p.rolname::text FROM pg_roles p
        WHERE p.rolname = ANY(%(peers)s) AND p.rolname <> session_user
          AND pg_has_role(session_user, p.oid, 'MEMBER')
        ORDER BY 1),
  ARRAY(SELECT DISTINCT c.relname::text FROM pg_class c
        WHERE c.relname = ANY(%(tables)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND EXISTS (
            SELECT 1 FROM pg_roles m
            WHERE pg_has_role(session_user, m.oid, 'MEMBER')
              AND has_schema_privilege(m.oid, c.relnamespace, 'USAGE')
              AND (has_table_privilege(m.oid, c.oid, 'SELECT')
                   OR has_any_column_privilege(m.oid, c.oid, 'SELECT')))
        ORDER BY 1)
FROM pg_roles r WHERE r.rolname = session_user
"""
# Every session of the server, with its role, as pg_stat_activity lists it to every
# role; without the view's joins, which cost a fresh session 2 ms of server CPU.
OTHER_SESSIONS_SQL = (
    "SELECT count(*) FROM pg_stat_get_activity(NULL) AS s "
    "WHERE s.usesysid = session_user::regrole AND s.pid <> pg_backend_pid()"
)


class ConnectionStalled(Exception):
    """The server stopped answering past the statement timeout; ``str()`` says so."""


class PostgreSQLBackend(Backend):
    vendor = "postgresql"
    label = "PostgreSQL"
    engine = "django.db.backends.postgresql"
    url_schemes = ("postgres", "postgresql", "pgsql")
    has_server_sessions = True

    @property
    def errors(self):
        return (psycopg.Error, ConnectionStalled)

    # --- connection options --------------------------------------------------------

    def database_settings(self, config):
        options = config["OPTIONS"]
        options.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
        # Notice a silently dropped connection instead of waiting on it forever.
        for option, value in TCP_KEEPALIVES.items():
            options.setdefault(option, value)
        # The zone Django sets on every new connection, given at connect: each run
        # connects anew, and this saves it a round trip.
        given = options.get("options", "")
        if "TimeZone" not in given:
            options["options"] = f"{given} -c TimeZone=UTC".strip()
        return config

    # --- safety examination ----------------------------------------------------------

    def examine(self, connection, *, service_tables, peer_logins):
        """Roles are judged from the session user, whose memberships include every role
        a report could ``SET ROLE`` to."""
        with connection.cursor() as cursor:
            cursor.execute(
                PRIVILEGES_SQL,
                {
                    "roles": list(PRIVILEGED_ROLES),
                    "peers": list(peer_logins),
                    "tables": sorted(service_tables),
                },
            )
            role, is_superuser, can_replicate, roles, peers, readable = cursor.fetchone()
        powers = (["superuser"] if is_superuser else []) + (
            ["REPLICATION"] if can_replicate else []
        )
        powers += [] if is_superuser else roles
        return Examination(
            login=role,
            account=f"PostgreSQL role '{role}'",
            powers=powers,
            # A superuser has every role's privileges: its powers say it all.
            peers=[] if is_superuser else peers,
            readable_tables=readable,
        )

    def other_sessions(self, connection):
        with connection.cursor() as cursor:
            cursor.execute(OTHER_SESSIONS_SQL)
            return cursor.fetchone()[0]

    # --- statements ------------------------------------------------------------------

    def read_only_statement(self, sql):
        require_sql(sql)
        try:
            statements = parse_sql(sql)
        except ParseError as error:
            raise ReportSQLError(f"PostgreSQL cannot parse this SQL: {error}.") from None
        if not statements:
            raise ReportSQLError("The SQL is empty: write one SELECT statement.")
        if len(statements) > 1:
            raise ReportSQLError(
                f"A report runs exactly one statement, but PostgreSQL reads {len(statements)} "
                "statements in this SQL. Keep only the query."
            )
        raw = statements[0]
        node = raw.stmt
        if not isinstance(node, ast.SelectStmt):
            kind = _statement_kind(node)
            raise ReportSQLError(
                f"Reports can only read data, but this is {_article(kind)} {kind} statement. "
                "Write a SELECT (or WITH … SELECT, VALUES, TABLE)."
            )
        problem = _ReadOnlyQuery.problem(node)
        if problem:
            raise ReportSQLError(problem)
        touched = _relation_names(node) & service_table_names()
        if touched:
            raise ReportSQLError(service_tables_message(touched))
        # The statement as the parser delimited it: no trailing ';' or comment after it.
        end = len(sql) if raw.stmt_len == 0 else raw.stmt_location + raw.stmt_len
        return sql[raw.stmt_location : end].strip()

    def marker(self, index):
        # The space keeps a digit after the placeholder from joining the number.
        return f"${index + 1} "

    def check_positions(self, sql, placeholders, connection=None):
        """PostgreSQL's parser must read every placeholder as a parameter, and no other
        parameter (a ``$2`` written in the SQL itself); needs no connection."""
        marked, offsets = substitute(sql, placeholders, lambda index, _: self.marker(index))
        try:
            statements = parse_sql(marked)
        except ParseError:
            return
        found = set()

        class ParameterReferences(Visitor):
            def visit_ParamRef(self, ancestors, node):
                found.add((node.number, node.location))

        ParameterReferences()(statements)
        ours = {(index + 1, offsets[index]) for index in range(len(placeholders))}
        for index, placeholder in enumerate(placeholders):
            if (index + 1, offsets[index]) not in found:
                raise TemplateError(outside_parameter_message(placeholder))
        foreign = sorted(found - ours, key=lambda reference: reference[1])
        if foreign:
            number, location = foreign[0]
            lengths = [len(self.marker(index)) for index in range(len(placeholders))]
            where = original_offset(placeholders, offsets, lengths, location)
            line = sql.count("\n", 0, where) + 1
            raise TemplateError(f"Line {line}: {bind_parameter_message(f'${number}')}")

    def quoter(self, connection):
        """psycopg's ``Literal`` of the value's text, with an explicit cast:
        ``('2026-11-25'::date)``."""
        from psycopg import sql

        connection.ensure_connection()
        psycopg_connection = connection.connection

        def quote(kind, value):
            literal = sql.Literal(_literal_text(kind.literal(value)))
            return f"({literal.as_string(psycopg_connection).strip()}::{CASTS[kind.sql_type]})"

        return quote

    # --- execution ---------------------------------------------------------------------

    def export(self, connection, statement, writer, output_format, timeout_seconds, limit):
        """CSV formats: ``COPY (query) TO STDOUT WITH (FORMAT csv, HEADER)``, drained at
        libpq level. Others: the query's rows, typed, over the extended protocol.

        psycopg's ``Copy`` iterator costs a generator round-trip per row; reading with
        ``PGconn.get_copy_data`` directly halves the client's CPU per row, which is what
        keeps the export as fast as ``psql \\copy`` (see bench/export.py).
        """
        # LIMIT rows + 1 lets the database stop early and tells us the cap was hit.
        # Newlines keep a trailing "-- comment" in the report from swallowing the ")".
        query = f"SELECT * FROM (\n{statement}\n) AS report_query LIMIT {limit.rows + 1}"
        copy_sql = f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER)"
        assert_copy_of_one_query(copy_sql)  # and so ``query`` is one query too
        # One round trip before the COPY and one after it (see _reset_session): a
        # short report's run is mostly these round trips. Read-only, the statement
        # timeout and (PostgreSQL 14+) a periodic check, so a killed worker's query does
        # not run on; SET LOCAL ends with the transaction. The values are integers.
        begin = f"BEGIN READ ONLY; SET LOCAL statement_timeout = {int(timeout_seconds) * 1000}"
        if connection.pg_version >= 140000:
            begin += f"; SET LOCAL client_connection_check_interval = {CLIENT_CHECK_MS}"
        connection.reportsvc_cancelled = False
        try:
            with connection.cursor() as cursor:
                cursor.execute(begin)
                # Past the statement timeout the server itself should have stopped;
                # waiting longer means the connection is gone silent.
                deadline = time.monotonic() + timeout_seconds + STALL_MARGIN_SECONDS
                raw = connection.connection
                if output_format.reads_csv_copy:
                    text_columns = None
                    if writer.needs_column_types:
                        text_columns = _text_columns(raw.pgconn, query, deadline)
                    write = writer.copy_writer(text_columns)
                    row_count = _copy_out(raw, copy_sql, write, deadline)
                else:
                    row_count = _stream_typed_rows(raw, query, writer, limit, deadline)
        except ConnectionStalled as error:
            raise ExportFailed(str(error)) from error
        except (psycopg.Error, DatabaseError) as error:
            cause = error.__cause__ if isinstance(error, DatabaseError) else error
            if getattr(cause, "sqlstate", None) == QUERY_CANCELED:
                if getattr(connection, "reportsvc_cancelled", False):
                    raise StatementCancelled(
                        f"The query was cancelled: {database_message(cause)}"
                    ) from error
                raise QueryTimedOut(
                    timeout_message(timeout_seconds, database_message(cause))
                ) from error
            raise ExportFailed(database_message(error)) from error
        finally:
            _reset_session(connection)
        if row_count > limit.rows:
            raise RowLimitExceeded(limit.message)
        return row_count

    def explain(self, connection, statement, timeout_seconds):
        timeout_ms = int(timeout_seconds * 1000)
        with connection.cursor() as cursor:  # constants only: nothing of the report's text
            cursor.execute(f"BEGIN READ ONLY; SET LOCAL statement_timeout = {timeout_ms}")
        try:
            deadline = time.monotonic() + timeout_seconds + 5
            execute_one_statement(connection.connection, f"EXPLAIN {statement}", deadline)
        except ConnectionStalled:
            connection.close()
            raise
        finally:
            if connection.connection is not None:
                with connection.cursor() as cursor:
                    cursor.execute("ROLLBACK")

    def cancel(self, connection):
        """A cancel request over a connection of its own (libpq's ``PQcancel``): safe
        from any thread; the server stops the statement with query_canceled."""
        raw = connection.connection
        if raw is None or raw.closed:
            return
        connection.reportsvc_cancelled = True
        with contextlib.suppress(psycopg.Error):
            raw.cancel_safe(timeout=CONNECT_TIMEOUT_SECONDS)


def _literal_text(value):
    """A parameter type's canonical literal value as the text PostgreSQL casts."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# --- statement analysis (pglast) -------------------------------------------------------

WRITE_STATEMENTS = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)


def _article(word):
    return "an" if word[:1] in "AEIOU" else "a"


def _statement_kind(node):
    name = type(node).__name__
    return name[: -len("Stmt")].upper() if name.endswith("Stmt") else name


class _ReadOnlyQuery(Visitor):
    """Finds what makes a SELECT write or lock: data-modifying WITH, INTO, FOR UPDATE."""

    def __init__(self):
        super().__init__()
        self.found = None

    @classmethod
    def problem(cls, node):
        visitor = cls()
        visitor(node)
        return visitor.found

    def _note(self, message):
        if self.found is None:
            self.found = message

    def visit_SelectStmt(self, ancestors, node):
        if node.intoClause is not None:
            self._note("Reports can only read data: SELECT … INTO creates a table.")
        if node.lockingClause:
            self._note("Reports can only read data: FOR UPDATE/SHARE locks rows.")

    def visit_CommonTableExpr(self, ancestors, node):
        if isinstance(node.ctequery, WRITE_STATEMENTS):
            kind = _statement_kind(node.ctequery)
            self._note(
                f"Reports can only read data, but a WITH part of this query is {_article(kind)} "
                f"{kind} statement."
            )


class _Relations(Visitor):
    def __init__(self):
        super().__init__()
        self.names = set()

    def visit_RangeVar(self, ancestors, node):
        self.names.add(node.relname)


def _relation_names(node):
    visitor = _Relations()
    visitor(node)
    return visitor.names


def assert_copy_of_one_query(copy_sql):
    """Fail unless ``copy_sql`` is one ``COPY (query) TO STDOUT``: the exporter's own
    wrapper, checked by the parser so report text can never reshape it."""
    try:
        statements = parse_sql(copy_sql)
    except ParseError:
        statements = []
    copy = statements[0].stmt if len(statements) == 1 else None
    if not (
        isinstance(copy, ast.CopyStmt)
        and not copy.is_from
        and not copy.is_program
        and copy.filename is None
        and isinstance(copy.query, ast.SelectStmt)
    ):
        raise ReportSQLError("The report's SQL does not fit in one COPY statement.")


# --- one statement over the extended protocol ----------------------------------------


def send_one_statement(pgconn, sql):
    pgconn.send_query_params(sql.encode(), None)
    while pgconn.flush():
        pass


def wait_readable(pgconn, deadline):
    # poll() releases the GIL, so other threads run while the database works.
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    while not poller.poll(1000):
        if time.monotonic() > deadline:
            raise ConnectionStalled(
                "The database stopped answering (no data past the statement timeout); "
                "the connection was closed."
            )
    pgconn.consume_input()


def next_result(pgconn, deadline):
    while pgconn.is_busy():
        wait_readable(pgconn, deadline)
    return pgconn.get_result()


def drain_results(pgconn, deadline):
    """Consume every pending result; the first error among them, if any."""
    first_error = None
    while (result := next_result(pgconn, deadline)) is not None:
        if result.status == pq.ExecStatus.COPY_OUT:  # never expected: one statement only
            raise ConnectionStalled("Unexpected second COPY from the database.")
        if first_error is None and result.status == pq.ExecStatus.FATAL_ERROR:
            first_error = result
    return first_error


def execute_one_statement(psycopg_connection, sql, deadline):
    """Run ``sql`` as one statement and discard its rows; raise the database's error."""
    pgconn = psycopg_connection.pgconn
    send_one_statement(pgconn, sql)
    error = drain_results(pgconn, deadline)
    if error is not None:
        raise psycopg.errors.error_from_result(error)


# --- the export ------------------------------------------------------------------------


def _reset_session(connection):
    """End the export's transaction and undo what a report may have done to its session
    (set_config(..., false), advisory locks), so the next report on this connection
    starts clean. One round trip; the transaction only read, so ROLLBACK loses nothing.

    Cheaper than a new connection per run, which cost the worker a third of its
    throughput; a connection that cannot be reset is closed instead. A connection made
    for one leased login's holder (reports.services.logins) is closed after it instead.
    """
    if connection.connection is None or getattr(connection, "reportsvc_closes_after_use", False):
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "ROLLBACK; RESET ALL; SELECT pg_advisory_unlock_all(); "
                "SELECT set_config('TimeZone', %s, false)",
                [connection.timezone_name],
            )
        connection.ensure_timezone()  # a no-op unless the server names the zone otherwise
    except Exception:
        connection.close()


def _raise_result_error(result):
    raise psycopg.errors.error_from_result(result)


def _text_columns(pgconn, query, deadline):
    """Positions of the query's columns that are not numbers or booleans, from a
    Describe of the unnamed prepared statement: parsed, not run (extended protocol)."""
    from psycopg.postgres import types

    pgconn.send_prepare(b"", query.encode())
    while pgconn.flush():
        pass
    error = drain_results(pgconn, deadline)
    if error is not None:
        _raise_result_error(error)
    pgconn.send_describe_prepared(b"")
    while pgconn.flush():
        pass
    description = next_result(pgconn, deadline)
    error = drain_results(pgconn, deadline)
    if description.status == pq.ExecStatus.FATAL_ERROR:
        error = description
    if error is not None:
        _raise_result_error(error)
    non_text = {types.get(name).oid for name in NON_TEXT_TYPES}
    return [
        index for index in range(description.nfields) if description.ftype(index) not in non_text
    ]


def _copy_out(psycopg_connection, copy_sql, write, deadline):
    """Send a ``COPY … TO STDOUT`` and pass each row's bytes to ``write``; rows copied."""
    pgconn = psycopg_connection.pgconn
    send_one_statement(pgconn, copy_sql)
    result = next_result(pgconn, deadline)
    if result.status != pq.ExecStatus.COPY_OUT:
        drain_results(pgconn, deadline)
        _raise_result_error(result)
    read_row = pgconn.get_copy_data
    try:
        while True:
            size, data = read_row(1)
            if size > 0:
                write(data)
            elif size == 0:
                wait_readable(pgconn, deadline)
            else:
                break
    except ConnectionStalled:
        raise  # nothing more will come; the caller closes the connection
    except BaseException:
        # Stop the server and swallow the rest of the COPY before the caller goes on.
        psycopg_connection.cancel_safe()
        with contextlib.suppress(ConnectionStalled):
            while True:
                size, _ = read_row(1)
                if size < 0:
                    break
                if size == 0:
                    wait_readable(pgconn, deadline)
            drain_results(pgconn, deadline)
        raise
    final = next_result(pgconn, deadline)
    error = drain_results(pgconn, deadline)
    if final.status != pq.ExecStatus.COMMAND_OK:
        error = final
    if error is not None:
        _raise_result_error(error)
    return int(final.command_tuples)


def _typed_loaders():
    """psycopg's loaders for the types typed formats show as such (numbers, booleans,
    dates and times); every other type loads as the text PostgreSQL writes for it, as
    in CSV."""
    from psycopg.adapt import AdaptersMap
    from psycopg.postgres import types
    from psycopg.types import bool as bools
    from psycopg.types import datetime as datetimes
    from psycopg.types import numeric, string

    loaders = {
        "int2": numeric.IntLoader,
        "int4": numeric.IntLoader,
        "int8": numeric.IntLoader,
        "oid": numeric.IntLoader,
        "numeric": numeric.NumericLoader,
        "float4": numeric.FloatLoader,
        "float8": numeric.FloatLoader,
        "bool": bools.BoolLoader,
        "date": datetimes.DateLoader,
        "time": datetimes.TimeLoader,
        "timestamp": datetimes.TimestampLoader,
        "timestamptz": datetimes.TimestamptzLoader,
    }
    adapters = AdaptersMap()
    adapters.register_loader(0, string.TextLoader)  # any type without a loader below
    for type_name, loader in loaders.items():
        adapters.register_loader(types.get(type_name).oid, loader)
    return adapters


def _stream_typed_rows(psycopg_connection, query, writer, limit, deadline):
    """Send ``query`` (one statement: extended protocol), pass the column names and
    then the rows, typed, one by one, to ``writer``; rows received."""
    from psycopg.adapt import Transformer

    pgconn = psycopg_connection.pgconn
    pgconn.send_query_params(query.encode(), None)
    # One row per result, as COPY hands them over: memory holds one row, however large
    # (chunks of rows would hold a chunk of 60 MB values). A result per row costs a few
    # microseconds, little beside writing an XLSX row.
    pgconn.set_single_row_mode()
    while pgconn.flush():
        pass
    transformer = Transformer(_typed_loaders())
    statuses = pq.ExecStatus
    row_count, header_written = 0, False
    try:
        while (result := next_result(pgconn, deadline)) is not None:
            if result.status == statuses.FATAL_ERROR:
                drain_results(pgconn, deadline)
                _raise_result_error(result)
            if result.status not in (
                statuses.TUPLES_CHUNK,
                statuses.SINGLE_TUPLE,
                statuses.TUPLES_OK,
            ):
                raise ExportFailed("The statement returned no result set.")
            if not header_written:
                names = [result.fname(index).decode() for index in range(result.nfields)]
                writer.write_header(names)
                header_written = True
            if not result.ntuples:
                continue
            transformer.set_pgresult(result)
            rows = transformer.load_rows(0, result.ntuples, tuple)
            row_count += len(rows)
            if row_count > limit.rows:
                raise RowLimitExceeded(limit.message)
            writer.write_rows(rows)
    except ConnectionStalled:
        raise
    except BaseException:
        if pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
            psycopg_connection.cancel_safe()
            with contextlib.suppress(ConnectionStalled, psycopg.Error):
                drain_results(pgconn, deadline)
        raise
    return row_count


# --- the built-in demo source --------------------------------------------------------

DEMO_SCHEMA = "demo"
DEMO_ROLE_SUFFIX = "_demo_reader"
# Logins of the demo source: runs of it at once (make run's worker runs two).
DEMO_LOGINS = 4
# Connection parameters the demo source shares with the service's connection (TLS,
# application name, ...); never a role the service would switch to.
SHARED_CONNECTION_OPTIONS = (
    "application_name",
    "connect_timeout",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "target_session_attrs",
)


def demo_role_name(service_database):
    """The demo source's group role: it holds the read grants, its logins inherit them."""
    # From the service's user, not its database name: the test database and worker
    # processes started against it use the same role.
    return f"{service_database.get('USER') or 'reportsvc'}{DEMO_ROLE_SUFFIX}"[:63]


def demo_login_names(service_database):
    """The demo source's logins, members of the group role and of nothing else."""
    group = demo_role_name(service_database)[:60]
    return [f"{group}_{number}" for number in range(1, DEMO_LOGINS + 1)]


def demo_role_password(secret_key, login):
    """Derived from SECRET_KEY: nothing to store, the same in the web and the worker."""
    message = f"reportsvc demo reader {login}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


ROLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What a role the demo source uses may never have. Only a superuser may set or clear
# these on an existing role, so ALTER ROLE leaves them out and they are checked instead.
NEVER = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


def _create_or_alter(cursor, role, options, params=()):
    cursor.execute(
        "SELECT rolsuper OR rolreplication OR rolbypassrls FROM pg_roles WHERE rolname = %s",
        [role],
    )
    existing = cursor.fetchone()
    if existing is None:
        cursor.execute(f'CREATE ROLE "{role}" WITH {options} {NEVER}', list(params))
        return
    if existing[0]:
        raise DemoSourceUnavailable(
            f"The role '{role}' exists with superuser, replication or bypassrls powers, "
            "which the demo source never gives its roles: drop it, then migrate again."
        )
    cursor.execute(f'ALTER ROLE "{role}" WITH {options} NOCREATEDB NOCREATEROLE', list(params))


def create_demo_schema_and_roles(cursor, group, logins):
    """With ``cursor`` of the schema's owner (a superuser, or a role with CREATEROLE):
    the demo schema, ``group`` holding SELECT on it, and ``logins`` (name, password)
    that are members of ``group`` and of nothing else."""
    # Never more than reading: nothing granted outside the demo schema. Before the
    # logins, the group was the one login role: it logs in no longer.
    _create_or_alter(cursor, group, "NOLOGIN NOINHERIT")
    cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{DEMO_SCHEMA}"')
    cursor.execute(f'GRANT USAGE ON SCHEMA "{DEMO_SCHEMA}" TO "{group}"')
    cursor.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{DEMO_SCHEMA}" TO "{group}"')
    cursor.execute(
        f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{DEMO_SCHEMA}" GRANT SELECT ON TABLES TO "{group}"'
    )
    for login, password in logins:
        _create_or_alter(cursor, login, "LOGIN INHERIT PASSWORD %s", [password])
        cursor.execute(
            "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s AND r.rolname <> %s",
            [login, group],
        )
        for (other,) in cursor.fetchall():  # a login is a member of the group only
            cursor.execute(f'REVOKE "{other}" FROM "{login}"')
        cursor.execute(f'GRANT "{group}" TO "{login}"')


class PostgreSQLDemo(DemoSource):
    """The schema ``demo`` of the service's database, read by roles of its own: a group
    role (no login) holds SELECT on ``demo`` and nothing else, and DEMO_LOGINS login
    roles are members of it and of nothing else, so runs can use them side by side
    without reaching each other's sessions. ``migrate`` creates them (a database user
    with CREATEROLE is enough); demo data is written through the service's own
    connection, which owns the schema."""

    tables = (
        """CREATE TABLE IF NOT EXISTS demo_customers (
            id integer PRIMARY KEY, name text NOT NULL, email text NOT NULL,
            country char(2) NOT NULL, signed_up_at timestamptz NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS demo_orders (
            id integer PRIMARY KEY, customer_id integer NOT NULL REFERENCES demo_customers,
            ordered_at timestamptz NOT NULL, currency char(3) NOT NULL,
            amount_cents integer NOT NULL, status text NOT NULL, refunded_at timestamptz)""",
    )
    queries = {
        "daily-revenue": """SELECT {{ day }} AS day, currency,
       count(*) AS orders, round(sum(amount_cents) / 100.0, 2) AS revenue
FROM demo_orders
WHERE ordered_at >= {{ interval_start }} AND ordered_at < {{ interval_end }}
  AND status = {{ status }} AND amount_cents >= {{ min_amount_cents }}
GROUP BY currency
ORDER BY currency""",
        "daily-revenue-by-currency": """SELECT ordered_at::date AS day, currency,
       count(*) AS orders, round(sum(amount_cents) / 100.0, 2) AS revenue
FROM demo_orders
WHERE status = 'paid' AND ordered_at >= current_date - 30
GROUP BY 1, 2
ORDER BY 1, 2""",
        "top-customers-this-week": """SELECT c.name, c.email, c.country, count(*) AS orders,
       round(sum(o.amount_cents) / 100.0, 2) AS spent
FROM demo_orders o JOIN demo_customers c ON c.id = o.customer_id
WHERE o.status = 'paid' AND o.ordered_at >= now() - interval '7 days'
GROUP BY c.id
ORDER BY spent DESC, c.name
LIMIT 20""",
        "refunds-yesterday": """SELECT o.id AS order_id, c.email, o.currency,
       round(o.amount_cents / 100.0, 2) AS amount, o.refunded_at
FROM demo_orders o JOIN demo_customers c ON c.id = o.customer_id
WHERE o.status = 'refunded'
  AND o.refunded_at >= current_date - 1 AND o.refunded_at < current_date
ORDER BY o.refunded_at""",
        "new-customers-by-country": """SELECT country, count(*) AS new_customers
FROM demo_customers
WHERE signed_up_at >= now() - interval '90 days'
GROUP BY country
ORDER BY new_customers DESC, country""",
    }

    def database(self, service_database, var_dir, secret_key):
        first, *others = demo_login_names(service_database)
        settings = {
            **{key: service_database[key] for key in ("ENGINE", "NAME", "HOST", "PORT")},
            "USER": first,
            "PASSWORD": demo_role_password(secret_key, first),
            "OPTIONS": {
                **{
                    key: value
                    for key, value in service_database.get("OPTIONS", {}).items()
                    if key in SHARED_CONNECTION_OPTIONS
                },
                "options": f"-c search_path={DEMO_SCHEMA}",
            },
            # Tests: the same test database as the service, reached as the demo role.
            "TEST": {"MIRROR": "default"},
        }
        return settings, [(login, demo_role_password(secret_key, login)) for login in others]

    def provision(self, service_connection):
        from django.db import DatabaseError, transaction

        group, logins = self._roles(service_connection)
        # Roles are cluster-wide: two processes migrating side by side (parallel tests,
        # two deploys) may race to create or alter the same role. The loser tries again.
        for attempt in range(3):
            try:
                with (
                    transaction.atomic(using=service_connection.alias),
                    service_connection.cursor() as cursor,
                ):
                    create_demo_schema_and_roles(cursor, group, logins)
                break
            except DatabaseError as error:
                if attempt == 2:
                    raise DemoSourceUnavailable(
                        f"Could not create the demo source's roles '{group}' and its logins "
                        f"({error}). Set REPORTING_DATABASE_URL to a read-only role (README: "
                        "Security), or let the service's database user create roles."
                    ) from error
                time.sleep(0.2 * (attempt + 1))
        return True

    @staticmethod
    def _roles(service_connection):
        """The group role, and each login with its password."""
        from django.db import connections

        from datasources.registry import DEFAULT_SOURCE, login_aliases

        group = demo_role_name(service_connection.settings_dict)
        logins = [
            (connections[alias].settings_dict["USER"], connections[alias].settings_dict["PASSWORD"])
            for alias in login_aliases(DEFAULT_SOURCE)
        ]
        for role in [group, *(login for login, _ in logins)]:
            if not ROLE_NAME.match(role):
                raise DemoSourceUnavailable(f"'{role}' cannot be a role name: rename the database.")
        return group, logins

    @contextlib.contextmanager
    def writer(self, source_connection):
        from django.db import connections, transaction

        writer = connections["default"]  # owns the demo schema; the demo role only reads
        with transaction.atomic(using=writer.alias), writer.cursor() as cursor:
            cursor.execute(f'SET LOCAL search_path TO "{DEMO_SCHEMA}"')
            yield cursor


PostgreSQLBackend.demo = PostgreSQLDemo()
BACKEND = PostgreSQLBackend()
