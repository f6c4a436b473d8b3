"""CSV as PostgreSQL's ``COPY … (FORMAT csv, HEADER)`` writes it, the default format.

Comma-separated, ``"``-quoted where a value holds a comma, a quote, CR or LF (and the
empty string, which is ``""``, so that NULL, an empty unquoted field, stays apart),
UTF-8, ``\\n`` line ends. On PostgreSQL the file is COPY's own output, byte for byte;
rows from other databases are written in the same dialect here.

Options for spreadsheet users: ``escape_formulas`` prefixes text values starting with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return with ``'`` (OWASP's rule against
CSV injection), so a spreadsheet shows them as text instead of running them; column
names count as text. ``csv_bom`` starts the file with a UTF-8 byte order mark.
"""

import re
from itertools import chain

from runs.services.formats import OutputFormat

BOM = "\ufeff".encode()
FORMULA_STARTS = "=+-@\t\r"
_NEEDS_QUOTES = re.compile(r'[,"\r\n]').search
_FORMULA_START = re.compile(r"(?:^|\x00)[=+\-@\t\r]").search
_SEPARATOR = "\x00"  # joins a column's values for one search; a NUL in a value is checked for


def text_field(text, escape_formulas=False):
    """One text value as a CSV field."""
    if escape_formulas and text and text[0] in FORMULA_STARTS:
        text = "'" + text
    if not text or _NEEDS_QUOTES(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_field(value, escape_formulas=False):
    """One value as PostgreSQL's CSV output writes it; only text is escaped."""
    if value is None:
        return ""
    if isinstance(value, str):
        return text_field(value, escape_formulas)
    if isinstance(value, bytes):
        return "\\x" + value.hex()  # bytea's hex output: no quoting needed
    return repr(value) if isinstance(value, float) else str(value)


def _single_column_field(value, escape_formulas=False):
    # Like PostgreSQL: a lone \. on a line would read as end-of-data, so quote it.
    return '"\\."' if value == "\\." else csv_field(value, escape_formulas)


def _needs_quotes_somewhere(text):
    # Four substring tests (memchr speed) beat one regex scan of a long text.
    return "," in text or '"' in text or "\n" in text or "\r" in text


def _every_value_needs_quotes(values):
    # Substring tests in a comprehension: about a seventh of a regex search per value.
    bare = [v for v in values if "," not in v and '"' not in v and "\n" not in v and "\r" not in v]
    return not bare


def _text_column(values, escape_formulas):
    """How a column of str values goes into the block's format: ``(spec, fields)``,
    with one look at the whole column for the usual cases (no value needs quotes;
    every value does). TypeError if one is not str."""
    joined = _SEPARATOR.join(values)
    if escape_formulas and _FORMULA_START(joined):
        return "%s", [text_field(value, True) for value in values]
    if not _needs_quotes_somewhere(joined) and "" not in values:
        return "%s", values
    if _every_value_needs_quotes(values):
        # The format adds the quotes around each value; only the ones inside double.
        if '"' not in joined:
            return '"%s"', values
        fields = joined.replace('"', '""').split(_SEPARATOR)
        if len(fields) == len(values):  # no value holds the separator
            return '"%s"', fields
    return "%s", [text_field(value) for value in values]


def _column_format(values, escape_formulas):
    """How a column goes into the block's format: ``(spec, fields)``, the column's
    %-conversion and what it converts. Columns usually hold one type: that type's
    check runs on the whole column at C speed, value by value only if it fails.

    ``%s`` of a number is its ``str``, for an int or a float its ``repr``, as
    :func:`csv_field` writes it: numbers go into the format as they are.
    """
    kind = type(values[0])
    if kind is str:
        try:
            return _text_column(values, escape_formulas)
        except TypeError:  # a value of another type (or NULL) in the column
            return "%s", [csv_field(value, escape_formulas) for value in values]
    try:
        # sum() refuses anything but numbers (NULL, text, bytes, dates) at C speed;
        # OverflowError: an int too large to add to a float.
        total = sum(values)
    except (TypeError, OverflowError):
        return "%s", [csv_field(value, escape_formulas) for value in values]
    if kind is int and type(total) is int:
        # %d writes what int.__repr__ does (a bool among ints as 1 or 0, as before),
        # without making a str first.
        return "%d", values
    return "%s", values


def encode_csv_rows(rows, escape_formulas=False):
    """A non-empty block of rows (tuples of one width) as CSV lines, UTF-8.

    The block is one %-format of all its values, a line's specs repeated per row: a
    value costs no Python-level operation of its own, and numbers become text inside
    the format. The values are one flat list, each column a slice of it (no iterator
    per row, as ``zip(*rows)`` would make: objects the garbage collector tracks).
    """
    width = len(rows[0])
    if width == 1:
        lines = [_single_column_field(row[0], escape_formulas) for row in rows]
        return ("\n".join(lines) + "\n").encode()
    values = list(chain.from_iterable(rows))
    if len(values) != width * len(rows):
        raise ValueError("The rows of a block differ in width.")
    specs = []
    for index in range(width):
        column = values[index::width]
        spec, fields = _column_format(column, escape_formulas)
        if fields is not column:
            values[index::width] = fields
        specs.append(spec)
    line = ",".join(specs) + "\n"
    return ((line * len(rows)) % tuple(values)).encode()


# PostgreSQL's COPY CSV output, one row at a time: fields are quoted ("…", "" for a
# quote) or hold none of , " CR LF.
_COPY_FIELD = re.compile(rb'("(?:[^"]|"")*"|[^,"\r\n]*)([,\n])')
_FORMULA_START_BYTES = frozenset(FORMULA_STARTS.encode())


def _formula_marks():
    """A bytes.translate table: formula characters become 1, a quote a comma (and 1
    itself 0), so ",\x01" in a translated row finds every field that may start a
    formula, quoted or not, in one pass at C speed (a regex took twice as long)."""
    table = bytearray(range(256))
    table[1] = 0
    for character in _FORMULA_START_BYTES:
        table[character] = 1
    table[ord('"')] = ord(",")
    return bytes(table)


_FORMULA_MARKS = _formula_marks()


class FormulaEscapingCopy:
    """Escapes the text fields of COPY's CSV rows as they pass to ``write``.

    A row with no field starting with a formula character (one search) passes as it
    is; only rows where one might are split into fields. ``text_columns`` holds the
    positions of text columns: numbers keep their minus sign. The first row is the
    header, all text.
    """

    def __init__(self, write, text_columns):
        self._write = write
        self._text_columns = frozenset(text_columns)
        self._header_done = False

    def write(self, row):
        row = bytes(row)  # COPY hands over memoryviews
        if not self._header_done:
            self._header_done = True
            row = self._escaped(row, None)
        else:
            marked = row.translate(_FORMULA_MARKS)
            if b",\x01" in marked or marked[0] == 1:
                row = self._escaped(row, self._text_columns)
        self._write(row)

    def _escaped(self, row, text_columns):
        parts = []
        for index, match in enumerate(_COPY_FIELD.finditer(row)):
            field, end = match.groups()
            if text_columns is None or index in text_columns:
                quoted = field[:1] == b'"'
                first = field[1:2] if quoted else field[:1]
                if first and first[0] in _FORMULA_START_BYTES:
                    field = b"\"'" + field[1:] if quoted else b"'" + field
            parts.append(field)
            parts.append(end)
        return b"".join(parts)


class CSVWriter:
    def __init__(self, sink, options):
        self._out = self.open_output(sink)
        self._escape_formulas = options.escape_formulas
        if options.csv_bom:
            self._out.write(BOM)

    def open_output(self, sink):
        """Where the CSV bytes go: the file itself (csv_gz compresses on the way)."""
        return sink

    def write_header(self, names):
        self._out.write(encode_csv_rows([tuple(names)], self._escape_formulas))

    def write_rows(self, rows):
        if rows:
            self._out.write(encode_csv_rows(rows, self._escape_formulas))

    def copy_writer(self, text_columns):
        """What COPY's rows are passed to: straight to the output unless formulas are
        escaped (then ``text_columns`` says which fields are text)."""
        if not self._escape_formulas:
            return self._out.write
        return FormulaEscapingCopy(self._out.write, text_columns).write

    @property
    def needs_column_types(self):
        return self._escape_formulas

    def close(self):
        pass


FORMAT = OutputFormat(
    name="csv",
    label="CSV",
    media_type="text/csv",
    extension="csv",
    writer_class=CSVWriter,
    csv_options=True,
    reads_csv_copy=True,
    csv_text=lambda file: file,
)
