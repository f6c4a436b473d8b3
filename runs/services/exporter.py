"""Stream one query's result into a file of the report's format, read-only and time-limited.

One exporter class per database vendor, chosen by the data source's connection; the
format's writer (runs.services.formats) turns what it fetches into the file. PostgreSQL
streams ``COPY … TO STDOUT WITH (FORMAT csv, HEADER)`` straight into CSV files (memory
stays flat in row count), and typed rows (extended protocol, one row at a time) into other
formats; SQLite walks a cursor row by row, handing rows on in blocks of
``FETCH_BATCH_BYTES`` of values (memory holds one block and one row, however many rows).
"""

import contextlib
import hashlib
import operator
import threading
import time
from dataclasses import dataclass

from django.db import DatabaseError, transaction
from psycopg import pq

from datasources.sandbox import (
    ExportFailed,
    QueryTimedOut,
    RowLimit,
    RowLimitExceeded,
    database_message,
    timeout_message,
)
from reports.extended_protocol import (
    ConnectionStalled,
    drain_results,
    next_result,
    send_one_statement,
    wait_readable,
)
from reports.services.source_safety import DataSourceRefused, ensure_source_is_safe
from reports.sql import ReportSQLError, SQLiteGuard, assert_copy_of_one_query
from runs.services.formats import DEFAULT_FORMAT, FormatError, WriterOptions, get_format

WRITE_BUFFER_BYTES = 1 << 20
DIRECT_WRITE_BYTES = 32 << 10  # a write at least this large skips the buffer
STALL_MARGIN_SECONDS = 30
SQLITE_MAX_VALUE_BYTES = 64 << 20
CLIENT_CHECK_MS = "2000"
# SQLite: bytes of values per block, whatever the row count. Small enough that a block's
# rows and their CSV stay in the CPU cache and die young (1 MiB blocks took a fifth longer).
FETCH_BATCH_BYTES = 64 << 10
# PostgreSQL types whose values are numbers or booleans: formula escaping leaves them be.
NON_TEXT_TYPES = frozenset(
    {"int2", "int4", "int8", "oid", "numeric", "float4", "float8", "money", "bool"}
)


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
        if len(data) >= DIRECT_WRITE_BYTES:
            # Large enough to go out as it is (a SQLite block's CSV): copied into the
            # buffer, which grows again after every flush, it cost more than the
            # system calls it saves.
            self.flush()
            self._write_out(data)
            return
        self._buffer += data
        if len(self._buffer) >= self._buffer_bytes:
            self.flush()

    def flush(self):
        if self._buffer:
            self._write_out(self._buffer)
            self._buffer.clear()

    def _write_out(self, data):
        self._digest.update(data)
        written = self._file.write(data)
        if written is not None and written < len(data):
            self._write_rest(memoryview(data)[written:])
        self.bytes_written += len(data)

    def _write_rest(self, rest):
        """An unbuffered file may take only part of a write (a disk filling up): write
        the rest until it is all out, or the file says why not (ENOSPC)."""
        while rest:
            rest = rest[self._file.write(rest) :]

    def hexdigest(self):
        return self._digest.hexdigest()


def _row_limit_message(max_rows):
    return (
        f"The result has more than {max_rows:,} rows, the report's row limit. "
        "Narrow the query or raise the report's max rows."
    )


def row_limit(max_rows, output_format):
    """The report's row cap, or the format's where that is lower (an XLSX sheet)."""
    if output_format.max_rows is not None and output_format.max_rows < max_rows:
        return RowLimit(output_format.max_rows, output_format.too_many_rows)
    return RowLimit(max_rows, _row_limit_message(max_rows))


class PostgresExporter:
    """CSV formats: ``COPY (query) TO STDOUT WITH (FORMAT csv, HEADER)``, drained at
    libpq level. Others: the query's rows, typed, over the extended protocol.

    psycopg's ``Copy`` iterator costs a generator round-trip per row; reading with
    ``PGconn.get_copy_data`` directly halves the client's CPU per row, which is what
    keeps the export as fast as ``psql \\copy`` (see bench/export.py).
    """

    def export(self, connection, statement, writer, output_format, timeout_seconds, limit):
        import psycopg

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
            if getattr(cause, "sqlstate", None) == "57014":  # query_canceled
                raise QueryTimedOut(
                    timeout_message(timeout_seconds, database_message(cause))
                ) from error
            raise ExportFailed(database_message(error)) from error
        finally:
            _reset_session(connection)
        if row_count > limit.rows:
            raise RowLimitExceeded(limit.message)
        return row_count


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
    import psycopg

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
    import psycopg
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


class SQLiteCursorExporter:
    """A streaming cursor with ``PRAGMA query_only`` and a progress-handler deadline."""

    PROGRESS_STEPS = 10_000

    def export(self, connection, statement, writer, output_format, timeout_seconds, limit):
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
                writer.write_header([column[0] for column in cursor.description])
                for rows in _row_blocks(cursor, FETCH_BATCH_BYTES):
                    row_count += len(rows)
                    if row_count > limit.rows:
                        raise RowLimitExceeded(limit.message)
                    writer.write_rows(rows)
        except (sqlite3.Error, DatabaseError) as error:
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


NUMBER_BYTES = 8  # what a value without a length (a number, NULL) counts for


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


EXPORTERS = {
    "postgresql": PostgresExporter,
    "sqlite": SQLiteCursorExporter,
}


def export_query(
    connection,
    statement,
    file,
    *,
    timeout_seconds,
    max_rows,
    output_format=None,
    options=None,
):
    """Run ``statement`` on ``connection`` (read-only) and write its result to ``file``
    in ``output_format`` (a runs.services.formats format; CSV by default).

    Raises :class:`ExportFailed` (or a subclass) with a message for the user.
    """
    output_format = output_format or get_format(DEFAULT_FORMAT)
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
        raise ExportFailed(database_message(error)) from error
    sink = DigestingWriter(file)
    writer = None
    try:
        writer = output_format.open_writer(sink, options or WriterOptions())
        row_count = exporter_class().export(
            connection,
            statement,
            writer,
            output_format,
            timeout_seconds,
            row_limit(max_rows, output_format),
        )
        writer.close()
    except BaseException as error:
        if writer is not None and hasattr(writer, "discard"):
            with contextlib.suppress(Exception):
                writer.discard()
        if isinstance(error, (ReportSQLError, FormatError)):
            raise ExportFailed(str(error)) from error
        raise
    sink.flush()
    return ExportResult(row_count, sink.bytes_written, sink.hexdigest())


def export_query_to_csv(connection, statement, file, *, timeout_seconds, max_rows):
    """:func:`export_query` in plain CSV."""
    return export_query(
        connection, statement, file, timeout_seconds=timeout_seconds, max_rows=max_rows
    )
