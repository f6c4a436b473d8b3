"""The first rows of a run's output for its admin page: a bounded read, never an error page.

CSV (and gzip-compressed CSV, decompressed as it is read): the preview reads at most
``PREVIEW_MAX_BYTES`` of CSV text from the start of the file, whatever the file holds:
a 500 MB value costs what 2 MB do. It parses the CSV dialect the exporters write
(PostgreSQL's ``FORMAT csv``) itself, because ``csv.reader`` refuses fields over 128 KiB
and cannot tell NULL (an empty unquoted field) from the empty string (``""``). Other
formats (XLSX) are read row by row through their format's ``read_rows``, only as far as
the preview goes. Each value keeps its first ``PREVIEW_CELL_CHARS`` characters and
counts the rest.
"""

import codecs
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime

from runs.services.formats import format_of_file
from runs.services.infrastructure.output_storage import StorageUnavailable, output_for_people

logger = logging.getLogger(__name__)

PREVIEW_ROWS = 50
PREVIEW_MAX_BYTES = 2 << 20
PREVIEW_CELL_CHARS = 200
PREVIEW_COLUMNS = 100
READ_CHUNK_BYTES = 64 << 10

_UNQUOTED_END = re.compile(r"[,\n]").search


@dataclass(frozen=True)
class PreviewCell:
    text: str  # the first PREVIEW_CELL_CHARS characters of the value
    length: int  # characters of the value that were read
    is_null: bool = False
    complete: bool = True  # False: the value goes on past what the preview read

    @property
    def truncated(self):
        return not self.complete or self.length > len(self.text)


@dataclass
class Preview:
    header: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    more_rows: bool = False  # the file goes on past the rows shown
    hidden_columns: int = 0  # columns past PREVIEW_COLUMNS, not shown
    cut_short: bool = False  # the read budget ran out before PREVIEW_ROWS rows
    budget_bytes: int = PREVIEW_MAX_BYTES  # the most the preview reads of the file
    problem: str = ""  # why there is nothing to show (no file, unreadable file)


class _Value:
    """Collects one value: its first characters and its length."""

    __slots__ = ("kept", "length", "parts")

    def __init__(self):
        self.parts, self.kept, self.length = [], 0, 0

    def add(self, text):
        self.length += len(text)
        if self.kept < PREVIEW_CELL_CHARS and text:
            part = text[: PREVIEW_CELL_CHARS - self.kept]
            self.parts.append(part)
            self.kept += len(part)

    def cell(self, *, quoted, complete):
        return PreviewCell(
            "".join(self.parts),
            self.length,
            is_null=not quoted and self.length == 0 and complete,
            complete=complete,
        )


class _CSVScanner:
    """Reads the file in chunks, up to a byte budget, and splits it into values."""

    def __init__(self, file, budget):
        self._file = file
        self._left = budget
        # utf-8-sig: a byte order mark (the csv_bom option) is not part of the header.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self.buffer = ""
        self.position = 0
        self.ended = False  # the file has no more bytes
        self.exhausted = False  # the budget ran out and the file goes on

    def _fill(self):
        """Read more text into the buffer; False when nothing more will be read."""
        while not (self.ended or self.exhausted):
            if self._left <= 0:
                if self._file.read(1):
                    self.exhausted = True
                    return False
                self.ended = True
                text = self._decoder.decode(b"", final=True)
            else:
                data = self._file.read(min(READ_CHUNK_BYTES, self._left))
                self._left -= len(data)
                self.ended = not data
                text = self._decoder.decode(data, final=self.ended)
            if text:
                self.buffer = self.buffer[self.position :] + text
                self.position = 0
                return True
        return False

    def _available(self):
        return self.position < len(self.buffer) or self._fill()

    def has_more(self):
        return self._available()

    def next_value(self):
        """``(cell, end)`` for the next value, ``end`` being "," or "\\n" or "" (no more
        input); None at the end of the input."""
        if not self._available():
            return None
        value = _Value()
        quoted = self.buffer[self.position] == '"'
        if quoted:
            self.position += 1
            if not self._read_quoted(value):
                return value.cell(quoted=True, complete=False), ""
        while True:  # unquoted text, or (malformed) text after a closing quote
            found = _UNQUOTED_END(self.buffer, self.position)
            if found is None:
                value.add(self.buffer[self.position :])
                self.position = len(self.buffer)
                if not self._fill():
                    return value.cell(quoted=quoted, complete=self.ended), ""
                continue
            value.add(self.buffer[self.position : found.start()])
            self.position = found.end()
            return value.cell(quoted=quoted, complete=True), found.group()

    def _read_quoted(self, value):
        """Read up to the closing quote (``""`` is a quote); False if input ran out."""
        while True:
            quote = self.buffer.find('"', self.position)
            if quote < 0:
                value.add(self.buffer[self.position :])
                self.position = len(self.buffer)
                if not self._fill():
                    return False
                continue
            value.add(self.buffer[self.position : quote])
            self.position = quote + 1
            if not self._available():
                return self.ended
            if self.buffer[self.position] != '"':
                return True
            value.add('"')
            self.position += 1

    def next_row(self):
        """``(cells, hidden_columns)`` of the next line, or None at the end."""
        cells, hidden = [], 0
        while (item := self.next_value()) is not None:
            cell, end = item
            if len(cells) < PREVIEW_COLUMNS:
                cells.append(cell)
            else:
                hidden += 1
            if end != ",":
                return cells, hidden
        return (cells, hidden) if cells else None


def read_preview(file, *, limit=PREVIEW_ROWS, budget=PREVIEW_MAX_BYTES):
    """The header and first ``limit`` rows of the CSV in the binary ``file``."""
    scanner = _CSVScanner(file, budget)
    preview = Preview(budget_bytes=budget)
    first = scanner.next_row()
    if first is None:
        return preview
    preview.header, preview.hidden_columns = first
    while len(preview.rows) < limit and (row := scanner.next_row()) is not None:
        preview.rows.append(row[0])
    preview.cut_short = scanner.exhausted and len(preview.rows) < limit
    preview.more_rows = scanner.exhausted or scanner.has_more()
    return preview


def _shown(value):
    """A typed value as the preview shows it (as the CSV of the same rows would)."""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _cell(value):
    if value is None:
        return PreviewCell("", 0, is_null=True)
    text = _shown(value)
    return PreviewCell(text[:PREVIEW_CELL_CHARS], len(text))


def read_rows_preview(rows, *, limit=PREVIEW_ROWS):
    """The header and first ``limit`` rows of an iterator of typed rows."""
    preview = Preview()
    rows = iter(rows)
    header = next(rows, None)
    if header is None:
        return preview
    preview.header = [_cell(value) for value in header[:PREVIEW_COLUMNS]]
    preview.hidden_columns = max(0, len(header) - PREVIEW_COLUMNS)
    for row in rows:
        if len(preview.rows) == limit:
            preview.more_rows = True
            break
        preview.rows.append([_cell(value) for value in row[:PREVIEW_COLUMNS]])
    return preview


def read_output_preview(file, output_format, *, limit=PREVIEW_ROWS):
    """A :class:`Preview` of ``file``, a file of ``output_format``."""
    if output_format.csv_text is not None:
        return read_preview(output_format.csv_text(file), limit=limit)
    rows = output_format.read_rows(file)
    try:
        return read_rows_preview(rows, limit=limit)
    finally:
        rows.close()


def preview_rows(run, limit=PREVIEW_ROWS):
    """A :class:`Preview` of the run's output; ``problem`` says why when there is none.

    Never raises: the run page must open whatever became of the file.
    """
    if not run.output:
        return Preview(problem="This run has no output file.")
    try:
        output_format = format_of_file(run.output.name)
        if output_format.csv_text is None:
            # A workbook is a zip, read from its end: the whole file, seekable.
            file = output_for_people(run.output.name, seekable=True)
        else:
            # The budget plus one byte: that byte tells whether the file goes on.
            file = output_for_people(run.output.name, head_bytes=PREVIEW_MAX_BYTES + 1)
        with file as stream:
            return read_output_preview(stream, output_format, limit=limit)
    except FileNotFoundError:
        return Preview(
            problem=f"The output file {run.output.name} is missing from storage "
            "(deleted or moved); the run's record is all that is left."
        )
    except StorageUnavailable as error:
        logger.warning("preview of run %s: %s", run.pk, error)
        return Preview(problem=f"The output file cannot be read now: {error}.")
    except Exception as error:
        logger.exception("preview of run %s failed", run.pk)
        return Preview(problem=f"The output file could not be read: {error}")
