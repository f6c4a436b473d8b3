"""Stream one query's result into a file of the report's format, read-only and time-limited.

The data source's backend (datasources.backends, chosen by its connection) runs the one
statement and fetches its rows; the format's writer (runs.services.formats) turns them
into the file, through a writer that counts and hashes what reaches it.
"""

import contextlib
import hashlib
from dataclasses import dataclass

from django.db import DatabaseError

from datasources.backends import UnsupportedVendor, backend_for
from datasources.safety import DataSourceRefused, ensure_source_is_safe
from datasources.sandbox import (
    ExportFailed,
    ReportSQLError,
    RowLimit,
    database_message,
)
from runs.services.formats import DEFAULT_FORMAT, FormatError, WriterOptions, get_format

WRITE_BUFFER_BYTES = 1 << 20
DIRECT_WRITE_BYTES = 32 << 10  # a write at least this large skips the buffer


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
    try:
        backend = backend_for(connection)
    except UnsupportedVendor as error:
        raise ExportFailed(str(error)) from error
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
        row_count = backend.export(
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
