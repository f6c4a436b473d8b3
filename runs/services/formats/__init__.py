"""Output formats of report runs: what a run's file is, and how rows get into it.

Each format is a module of this package defining ``FORMAT``, an :class:`OutputFormat`
(name, label, media type, file extension, writer); ``FORMAT_MODULES`` below lists them.
Adding a format means adding its module and its name there, nothing else: reports
offer it, runs write it, downloads and emails name it.

The data source's backend (datasources.backends, through runs.services.infrastructure.exporter)
fetches rows and hands them to the format's writer; a writer never talks to a
database. A writer is made with the file to write (``sink``: an object with
``write(bytes)``) and :class:`WriterOptions`, and offers:

- ``write_header(names)``: the column names, first;
- ``write_rows(rows)``: a block of rows, each a tuple of Python values;
- ``close()``: finish the file (a gzip trailer, an XLSX archive);
- optionally ``discard()``: the export failed; let go of temp files and handles now;
- for formats with ``reads_csv_copy``, ``copy_writer(text_columns)``: the function
  PostgreSQL's ``COPY … (FORMAT csv, HEADER)`` output is passed to, row by row,
  instead of ``write_header`` and ``write_rows``.

Reading a file back (the admin's preview) goes through ``csv_text`` or ``read_rows``.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from importlib import import_module
from os import PathLike

FORMAT_MODULES = ("csv", "csv_gz", "xlsx")
DEFAULT_FORMAT = "csv"
# What any file may be served as, to clients that prefer it (the bytes are the same).
OCTET_STREAM = "application/octet-stream"


class FormatError(Exception):
    """The rows cannot be written in this format; ``str()`` is the message for the user."""


@dataclass(frozen=True)
class WriterOptions:
    escape_formulas: bool = False  # CSV: prefix text starting with = + - @ tab CR with '
    csv_bom: bool = False  # CSV: start with a UTF-8 byte order mark
    timezone: tzinfo = field(default=UTC)  # where zoned time stamps are shown (XLSX)
    # Where the writer keeps temp files (the run's scratch directory); None: the system's.
    scratch_dir: str | PathLike | None = None


@dataclass(frozen=True)
class OutputFormat:
    name: str  # stored on reports
    label: str  # shown to people
    media_type: str  # Content-Type of downloads and attachments
    extension: str  # of file names, without the dot: "csv.gz"
    writer_class: type
    csv_options: bool = False  # escape_formulas and csv_bom apply
    max_rows: int | None = None  # data rows one file holds (the header not counted)
    reads_csv_copy: bool = False  # can take PostgreSQL's COPY (FORMAT csv) output
    too_many_rows: str = ""  # why a result past max_rows cannot be written
    # How to read a file back (the admin's preview): as CSV bytes (a binary file object
    # over the CSV text), or, for other formats, as rows of Python values.
    csv_text: Callable | None = None
    read_rows: Callable | None = None

    @property
    def suffix(self):
        return f".{self.extension}"

    def open_writer(self, sink, options=None):
        return self.writer_class(sink, options or WriterOptions())


@functools.cache
def output_formats():
    """Every format by name, in FORMAT_MODULES order."""
    formats = {}
    for module_name in FORMAT_MODULES:
        output_format = import_module(f"{__name__}.{module_name}").FORMAT
        formats[output_format.name] = output_format
    return formats


def get_format(name):
    """The format called ``name``, or None."""
    return output_formats().get(name)


def format_choices():
    """(name, label) pairs for the report's output_format field."""
    return [(each.name, each.label) for each in output_formats().values()]


def output_media_type(output_format):
    """The Content-Type of a file of this format (text says its encoding)."""
    if output_format.media_type.startswith("text/"):
        return f"{output_format.media_type}; charset=utf-8"
    return output_format.media_type


def report_format(report):
    """The format a report's runs write (CSV for a name no longer offered)."""
    return get_format(report.output_format) or output_formats()[DEFAULT_FORMAT]


def format_of_file(name):
    """The format of a stored output, by its name's extension (``.csv.gz`` before
    ``.csv``); CSV for a name with none of them (outputs of older runs)."""
    by_length = sorted(output_formats().values(), key=lambda f: -len(f.suffix))
    for output_format in by_length:
        if name.endswith(output_format.suffix):
            return output_format
    return output_formats()[DEFAULT_FORMAT]
