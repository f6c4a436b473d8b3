"""An Excel workbook: one sheet, a bold frozen header row, typed cells.

Written by XlsxWriter in its constant-memory mode (each row goes to disk as soon as the
next starts; chosen over openpyxl's write-only mode by measurement, see bench/export.py).

Cells: integers and decimals are numbers while a double holds them exactly (integers up
to 2^53, decimals of up to 15 significant digits), text beyond that, so no digit is
lost; dates and time stamps are dates; a time stamp with a time zone is shown in the
report's time zone, as Excel has none; booleans are booleans; NULL is an empty cell;
text is always text, never a formula, whatever it starts with. A value Excel cannot
hold (over 32,767 characters in a cell) fails the run with a message.
"""

import contextlib
import math
import os
from datetime import UTC, date, datetime, time
from decimal import Decimal

from runs.services.formats import FormatError, OutputFormat

SHEET_ROWS = 1_048_576  # Excel's limit, the header row included
CELL_CHARS = 32_767  # Excel's limit, in UTF-16 code units
EXACT_INTEGER = 2**53
EXACT_DECIMAL_DIGITS = 15
SHEET_NAME = "Report"
# A fixed creation time in the file's properties: the same rows give the same bytes.
CREATED = datetime(2000, 1, 1, tzinfo=UTC)
FIRST_EXCEL_YEAR = 1900
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _utf16_length(text):
    return len(text.encode("utf-16-le")) // 2


class _ZipTarget:
    """The file as zipfile wants it when it cannot seek: write() says how much it wrote."""

    def __init__(self, sink):
        self._sink = sink

    def write(self, data):
        self._sink.write(data)
        return len(data)

    def flush(self):
        pass


class XLSXWriter:
    def __init__(self, sink, options):
        import xlsxwriter

        workbook_options = {"constant_memory": True}
        if options.scratch_dir is not None:
            # Its temp files (the rows as XML, then each part) go with the run's own.
            workbook_options["tmpdir"] = str(options.scratch_dir)
        self._workbook = xlsxwriter.Workbook(_ZipTarget(sink), workbook_options)
        self._workbook.set_properties({"created": CREATED})
        self._sheet = self._workbook.add_worksheet(SHEET_NAME)
        self._zone = options.timezone
        self._names = []
        self._row = 0
        add_format = self._workbook.add_format
        self._bold = add_format({"bold": True})
        self._date_format = add_format({"num_format": "yyyy-mm-dd"})
        self._datetime_format = add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        self._time_format = add_format({"num_format": "hh:mm:ss"})
        self._cell_writers = {
            bool: self._write_boolean,
            int: self._write_integer,
            float: self._write_float,
            Decimal: self._write_decimal,
            str: self._write_text,
            bytes: self._write_bytes,
            datetime: self._write_datetime,
            date: self._write_date,
            time: self._write_time,
        }

    def write_header(self, names):
        self._names = list(names)
        for column, name in enumerate(self._names):
            self._write_text(0, column, name, self._bold)
        self._sheet.freeze_panes(1, 0)
        self._row = 1

    def write_rows(self, rows):
        writers, fallback = self._cell_writers, self._write_other
        row_number = self._row
        for row in rows:
            if row_number >= SHEET_ROWS:
                raise FormatError(TOO_MANY_ROWS)
            for column, value in enumerate(row):
                if value is not None:
                    writers.get(type(value), fallback)(row_number, column, value)
            row_number += 1
        self._row = row_number

    def close(self):
        self._workbook.close()

    def discard(self):
        """Close the sheet's temp file of rows: a failed export must not hold its disk
        space until the writer is garbage."""
        if not self._workbook.fileclosed:
            for sheet in self._workbook.worksheets():
                sheet._opt_close()  # XlsxWriter's own close of that file
                with contextlib.suppress(OSError, TypeError):
                    os.unlink(sheet.row_data_filename)

    # --- one cell ------------------------------------------------------------------

    def _write_text(self, row, column, text, cell_format=None):
        # Half the limit in characters cannot be over it in UTF-16 units.
        if len(text) > CELL_CHARS // 2 and _utf16_length(text) > CELL_CHARS:
            raise FormatError(self._too_long(row, column, len(text)))
        self._sheet.write_string(row, column, text, cell_format)

    def _too_long(self, row, column, length):
        name = self._names[column] if column < len(self._names) else f"#{column + 1}"
        where = f"row {row:,}, column “{name}”" if row else f"the name of column {column + 1}"
        return (
            f"The value in {where} has {length:,} characters; an XLSX cell holds at most "
            f"{CELL_CHARS:,}. Choose CSV or CSV.gz for this report, or shorten the value "
            "in the query."
        )

    def _write_boolean(self, row, column, value):
        self._sheet.write_boolean(row, column, value)

    def _write_integer(self, row, column, value):
        if -EXACT_INTEGER <= value <= EXACT_INTEGER:
            self._sheet.write_number(row, column, value)
        else:
            self._write_text(row, column, str(value))

    def _write_float(self, row, column, value):
        if math.isfinite(value):
            self._sheet.write_number(row, column, value)
        else:
            self._write_text(row, column, NON_FINITE[repr(value)])

    def _write_decimal(self, row, column, value):
        if value.is_finite() and len(value.as_tuple().digits) <= EXACT_DECIMAL_DIGITS:
            self._sheet.write_number(row, column, float(value))
        else:
            self._write_text(row, column, str(value))

    def _write_bytes(self, row, column, value):
        self._write_text(row, column, "\\x" + value.hex())

    def _write_datetime(self, row, column, value):
        if value.tzinfo is not None:
            try:
                value = value.astimezone(self._zone).replace(tzinfo=None)
            except OverflowError:  # before year 1 or after 9999 in the report's zone
                self._write_text(row, column, value.isoformat(sep=" "))
                return
        if value.year < FIRST_EXCEL_YEAR:
            self._write_text(row, column, value.isoformat(sep=" "))
        else:
            self._sheet.write_datetime(row, column, value, self._datetime_format)

    def _write_date(self, row, column, value):
        if value.year < FIRST_EXCEL_YEAR:
            self._write_text(row, column, value.isoformat())
        else:
            self._sheet.write_datetime(row, column, value, self._date_format)

    def _write_time(self, row, column, value):
        if value.tzinfo is not None:
            self._write_text(row, column, value.isoformat())
        else:
            self._sheet.write_datetime(row, column, value, self._time_format)

    def _write_other(self, row, column, value):
        self._write_text(row, column, str(value))


def read_rows(file):
    """The first sheet's rows, as Python values, read as they are needed (openpyxl's
    read-only mode streams the sheet); dates shown as dates, time stamps as such."""
    import openpyxl

    workbook = openpyxl.load_workbook(file, read_only=True, data_only=True)
    try:
        for row in workbook.worksheets[0].iter_rows():
            yield tuple(_cell_value(cell) for cell in row)
    finally:
        workbook.close()


def _cell_value(cell):
    from openpyxl.utils.escape import unescape

    value = cell.value
    if isinstance(value, str):
        return unescape(value)  # _x000D_ and the like: OOXML's escapes of control characters
    if isinstance(value, datetime) and getattr(cell, "number_format", "") == "yyyy-mm-dd":
        return value.date()
    return value


TOO_MANY_ROWS = (
    f"The result has more than {SHEET_ROWS - 1:,} rows, more than an XLSX sheet holds "
    f"({SHEET_ROWS:,} rows with the header). Choose CSV or CSV.gz for this report, or "
    "narrow the query."
)

FORMAT = OutputFormat(
    name="xlsx",
    label="Excel workbook (XLSX)",
    media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    extension="xlsx",
    writer_class=XLSXWriter,
    max_rows=SHEET_ROWS - 1,
    too_many_rows=TOO_MANY_ROWS,
    read_rows=read_rows,
)
