"""Stream one query's result into a CSV file, read-only and time-limited.

One exporter class per database vendor, chosen by the data source's connection:
PostgreSQL streams ``COPY … TO STDOUT`` straight into the file (memory stays flat in
row count); SQLite walks a cursor row by row, in blocks of ``FETCH_BATCH_BYTES``
(memory holds one block and one row, however many rows). Both write the same CSV dialect
as PostgreSQL's ``FORMAT csv, HEADER``: comma-separated, ``"``-quoted where needed,
NULL as an empty unquoted field and the empty string as ``""``, UTF-8, ``\\n`` endings.
"""

import contextlib
import hashlib
import re
import threading
import time
from dataclasses import dataclass

from django.db import DatabaseError, transaction
from psycopg import pq

from reports.extended_protocol import (
    ConnectionStalled,
    drain_results,
    next_result,
    send_one_statement,
    wait_readable,
)
from reports.services.source_safety import DataSourceRefused, ensure_source_is_safe
from reports.sql import ReportSQLError, SQLiteGuard, assert_copy_of_one_query

WRITE_BUFFER_BYTES = 1 << 20
STALL_MARGIN_SECONDS = 30
SQLITE_MAX_VALUE_BYTES = 64 << 20
CLIENT_CHECK_MS = "2000"
FETCH_BATCH_BYTES = 1 << 20  # SQLite: CSV bytes per write, whatever the row count


class ExportFailed(Exception):
    """The export did not produce a result; ``str()`` is the message for the user."""


class QueryTimedOut(ExportFailed):
    pass


class RowLimitExceeded(ExportFailed):
    pass


@dataclass(frozen=True)
class ExportResult:
    row_count: int
    output_bytes: int
    output_sha256: str


class DigestingWriter:
    """Buffers writes into large blocks, counting and hashing what reaches the file."""

    def __init__(self, file, buffer_bytes=WRITE_BUFFER_BYTES):
        self._file = file
        self._buffer = bytearray()
        self._buffer_bytes = buffer_bytes
        self._digest = hashlib.sha256()
        self.bytes_written = 0

    def write(self, data):
        self._buffer += data
        if len(self._buffer) >= self._buffer_bytes:
            self.flush()

    def flush(self):
        if self._buffer:
            self._digest.update(self._buffer)
            self._file.write(self._buffer)
            self.bytes_written += len(self._buffer)
            self._buffer.clear()

    def hexdigest(self):
        return self._digest.hexdigest()


def _timeout_message(timeout_seconds, detail):
    return f"Query timed out after {timeout_seconds} s (the report's timeout): {detail}"


def _row_limit_message(max_rows):
    return (
        f"The result has more than {max_rows:,} rows, the report's row limit. "
        "Narrow the query or raise the report's max rows."
    )


def _database_message(error):
    """The database's own message, without Python's exception decoration."""
    return str(error).strip() or error.__class__.__name__


class PostgresCopyExporter:
    """``COPY (query) TO STDOUT WITH (FORMAT csv, HEADER)``, drained at libpq level.

    psycopg's ``Copy`` iterator costs a generator round-trip per row; reading with
    ``PGconn.get_copy_data`` directly halves the client's CPU per row, which is what
    keeps the export as fast as ``psql \\copy`` (see bench/export.py).
    """

    def export(self, connection, statement, writer, timeout_seconds, max_rows):
        import psycopg

        # LIMIT max_rows + 1 lets the database stop early and tells us the cap was hit.
        # Newlines keep a trailing "-- comment" in the report from swallowing the ")".
        copy_sql = (
            f"COPY (SELECT * FROM (\n{statement}\n) AS report_query LIMIT {max_rows + 1}) "
            "TO STDOUT WITH (FORMAT csv, HEADER)"
        )
        assert_copy_of_one_query(copy_sql)
        # One round trip before the COPY and one after it (see _reset_session): a
        # short report's run is mostly these round trips. Read-only, the statement
        # timeout and (PostgreSQL 14+) a periodic check, so a killed worker's query does
        # not run on; SET LOCAL ends with the transaction. The values are integers.
        begin = f"BEGIN READ ONLY; SET LOCAL statement_timeout = {int(timeout_seconds) * 1000}"
        if connection.pg_version >= 140000:
            begin += f"; SET LOCAL client_connection_check_interval = {CLIENT_CHECK_MS}"
        try:
            with connection.cursor() as cursor:
                cursor.execute(begin)
                # Past the statement timeout the server itself should have stopped;
                # waiting longer means the connection is gone silent.
                deadline = time.monotonic() + timeout_seconds + STALL_MARGIN_SECONDS
                row_count = _copy_out(connection.connection, copy_sql, writer.write, deadline)
        except ConnectionStalled as error:
            raise ExportFailed(str(error)) from error
        except (psycopg.Error, DatabaseError) as error:
            cause = error.__cause__ if isinstance(error, DatabaseError) else error
            if getattr(cause, "sqlstate", None) == "57014":  # query_canceled
                raise QueryTimedOut(
                    _timeout_message(timeout_seconds, _database_message(cause))
                ) from error
            raise ExportFailed(_database_message(error)) from error
        finally:
            _reset_session(connection)
        if row_count > max_rows:
            raise RowLimitExceeded(_row_limit_message(max_rows))
        return row_count


def _reset_session(connection):
    """End the export's transaction and undo what a report may have done to its session
    (set_config(..., false), advisory locks), so the next report on this connection
    starts clean. One round trip; the transaction only read, so ROLLBACK loses nothing.

    Cheaper than a new connection per run, which cost the worker a third of its
    throughput; a connection that cannot be reset is closed instead.
    """
    if connection.connection is None:
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


def _copy_out(psycopg_connection, copy_sql, write, deadline):
    """Send a ``COPY … TO STDOUT`` and pass each row's bytes to ``write``; rows copied."""
    import psycopg

    pgconn = psycopg_connection.pgconn
    send_one_statement(pgconn, copy_sql)
    result = next_result(pgconn, deadline)
    if result.status != pq.ExecStatus.COPY_OUT:
        drain_results(pgconn, deadline)
        raise psycopg.errors.error_from_result(result)
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
        raise psycopg.errors.error_from_result(error)
    return int(final.command_tuples)


_NEEDS_QUOTES = re.compile(r'[,"\r\n]').search


def _csv_field(value):
    """One value as PostgreSQL's CSV output writes it."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bytes):
        text = "\\x" + value.hex()
    else:
        text = str(value) if not isinstance(value, float) else repr(value)
    if not text or _NEEDS_QUOTES(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def _single_column_csv_field(value):
    # Like PostgreSQL: a lone \. on a line would read as end-of-data, so quote it.
    return '"\\."' if value == "\\." else _csv_field(value)


class SQLiteCursorExporter:
    """A streaming cursor with ``PRAGMA query_only`` and a progress-handler deadline."""

    PROGRESS_STEPS = 10_000

    def export(self, connection, statement, writer, timeout_seconds, max_rows):
        import sqlite3

        connection.ensure_connection()
        raw_connection = connection.connection
        deadline = time.monotonic() + timeout_seconds
        raw_connection.set_progress_handler(
            lambda: time.monotonic() > deadline, self.PROGRESS_STEPS
        )
        # The progress handler runs between VM steps; one huge function call (a giant
        # zeroblob or replace) is stopped by the watchdog and the value-size cap.
        watchdog = threading.Timer(timeout_seconds, raw_connection.interrupt)
        watchdog.daemon = True
        watchdog.start()
        length_limit = raw_connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, SQLITE_MAX_VALUE_BYTES)
        raw_connection.execute("PRAGMA query_only = ON")
        guard = SQLiteGuard()
        row_count = 0
        try:
            with transaction.atomic(using=connection.alias), _authorized(raw_connection, guard):
                cursor = raw_connection.cursor()
                cursor.execute(statement)
                if cursor.description is None:
                    raise ExportFailed("The statement returned no result set.")
                field = _single_column_csv_field if len(cursor.description) == 1 else _csv_field
                writer.write(_csv_line([column[0] for column in cursor.description], field))
                for rows, block in _byte_batches(cursor, field, FETCH_BATCH_BYTES):
                    row_count += rows
                    if row_count > max_rows:
                        raise RowLimitExceeded(_row_limit_message(max_rows))
                    writer.write(block)
        except (sqlite3.Error, DatabaseError) as error:
            if time.monotonic() > deadline:
                raise QueryTimedOut(
                    _timeout_message(timeout_seconds, _database_message(error))
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


@contextlib.contextmanager
def _authorized(raw_connection, guard):
    """The driver prepares one statement only; the guard lets it read and nothing else
    (set inside the transaction: BEGIN and COMMIT are not the report's)."""
    import sqlite3

    raw_connection.set_authorizer(guard)
    try:
        yield
    finally:
        with contextlib.suppress(sqlite3.ProgrammingError):  # closed after an interrupt
            raw_connection.set_authorizer(None)


def _csv_line(values, field):
    return (",".join(map(field, values)) + "\n").encode()


def _byte_batches(cursor, field, budget):
    """The cursor's rows as CSV blocks of ``budget`` bytes or more (the last may be
    smaller), as ``(rows, block)`` pairs.

    Rows are fetched one at a time and a block is handed on as soon as it reaches the
    budget, so memory holds ``budget`` bytes plus one row: 20 rows of 60 MB cost what
    one does, where ``fetchmany(2000)`` would hold them all at once.
    """
    lines, size = [], 0
    for row in cursor:
        line = _csv_line(row, field)
        lines.append(line)
        size += len(line)
        if size >= budget:
            yield len(lines), b"".join(lines)
            lines, size = [], 0
    if lines:
        yield len(lines), b"".join(lines)


EXPORTERS = {
    "postgresql": PostgresCopyExporter,
    "sqlite": SQLiteCursorExporter,
}


def export_query_to_csv(connection, statement, file, *, timeout_seconds, max_rows):
    """Run ``statement`` on ``connection`` (read-only) and write its CSV to ``file``.

    Raises :class:`ExportFailed` (or a subclass) with a message for the user.
    """
    exporter_class = EXPORTERS.get(connection.vendor)
    if exporter_class is None:
        raise ExportFailed(
            f"Data sources on {connection.vendor} are not supported; "
            f"use one of: {', '.join(EXPORTERS)}."
        )
    try:
        ensure_source_is_safe(connection)
    except DataSourceRefused as error:
        raise ExportFailed(str(error)) from error
    except DatabaseError as error:
        raise ExportFailed(_database_message(error)) from error
    writer = DigestingWriter(file)
    try:
        row_count = exporter_class().export(
            connection, statement, writer, timeout_seconds, max_rows
        )
    except ReportSQLError as error:
        raise ExportFailed(str(error)) from error
    writer.flush()
    return ExportResult(row_count, writer.bytes_written, writer.hexdigest())
