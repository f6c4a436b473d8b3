"""The CSV writer's fast paths against its value-by-value definition, the formula
escaping of COPY's rows and the buffering of what reaches the file, without a database."""

import errno
import hashlib
import io
import random

import pytest

from runs.services.formats.csv import (
    FormulaEscapingCopy,
    csv_field,
    encode_csv_rows,
)
from runs.services.infrastructure.exporter import DIRECT_WRITE_BYTES, DigestingWriter

VALUES = [
    None,
    "",
    "plain",
    "a,b",
    'q"uote',
    "line\nbreak",
    "cr\ronly",
    "\\.",
    " spaced ",
    "x\x00y",
    "=1+1",
    "+1",
    "-1",
    "@SUM(A1)",
    "\tt",
    "\rr",
    "café 😀 日本語",
    0,
    -1,
    2**70,
    1.5,
    -0.0,
    float("inf"),
    b"\x00\xff",
    b"",
]


def slow_lines(rows, escape_formulas=False):
    """What the writer must produce: each value by csv_field, PostgreSQL's rules."""

    def field(value):
        if len(rows[0]) == 1 and value == "\\.":
            return '"\\."'
        return csv_field(value, escape_formulas)

    return "".join(",".join(map(field, row)) + "\n" for row in rows).encode()


@pytest.mark.parametrize("escape_formulas", [False, True])
@pytest.mark.parametrize("width", [1, 2, 5])
def test_blocks_of_mixed_values_match_the_value_by_value_rules(escape_formulas, width):
    chooser = random.Random(width * 2 + escape_formulas)
    for _ in range(300):
        kind = chooser.choice(["mixed", "uniform"])
        if kind == "uniform":
            columns = [chooser.sample(VALUES, 1) * 5 for _ in range(width)]
            rows = list(zip(*columns, strict=True))
        else:
            rows = [tuple(chooser.choice(VALUES) for _ in range(width)) for _ in range(5)]
        assert encode_csv_rows(rows, escape_formulas) == slow_lines(rows, escape_formulas), rows


def test_columns_of_one_type_take_the_fast_paths_and_stay_exact():
    rows = [(n, n / 7, f"text {n}", f"needs, quotes {n}", f'and "these" {n}') for n in range(50)]
    assert encode_csv_rows(rows) == slow_lines(rows)
    assert encode_csv_rows([("", None), (None, "")]) == b'"",\n,""\n'


def escape_copy(rows, text_columns):
    written = []
    copy = FormulaEscapingCopy(written.append, text_columns)
    for row in rows:
        copy.write(memoryview(row))
    return written


def test_copy_rows_are_escaped_by_field_and_column_type():
    rows = [
        b"=name,-num,note\n",
        b"-1,-2,plain\n",
        b'=x,-3,"a,=b"\n',
        b'"=a,b",4,"-c"\n',
        b'"",,\n',
        b'@x,5,"multi\nline ""=q"""\n',
        b'\tt,6,"\rr"\n',
    ]
    assert escape_copy(rows, text_columns=[0, 2]) == [
        b"'=name,'-num,note\n",  # the header: all text
        b"'-1,-2,plain\n",  # column 0 is text: escaped; column 1 is a number: kept
        b'\'=x,-3,"a,=b"\n',  # a comma inside quotes starts no field
        b'"\'=a,b",4,"\'-c"\n',
        b'"",,\n',  # the empty string and NULL stay as they are
        b'\'@x,5,"multi\nline ""=q"""\n',
        b"'\tt,6,\"'\rr\"\n",
    ]


def test_small_and_large_writes_reach_the_file_in_order_and_hashed():
    file = io.BytesIO()
    writer = DigestingWriter(file, buffer_bytes=100)
    pieces = [b"a" * 10, b"b" * DIRECT_WRITE_BYTES, b"c" * 5, b"d" * 150, b"e" * 40]
    pieces += [b"f" * (DIRECT_WRITE_BYTES + 1), b"g"]
    for piece in pieces:
        writer.write(piece)
    writer.flush()
    expected = b"".join(pieces)
    assert file.getvalue() == expected
    assert writer.bytes_written == len(expected)
    assert writer.hexdigest() == hashlib.sha256(expected).hexdigest()


class ShortWrites(io.RawIOBase):
    """A raw file that takes at most ``limit`` bytes a write, as one on a disk filling
    up does, until it takes none and says the disk is full."""

    def __init__(self, limit, room):
        self.data, self.limit, self.room = bytearray(), limit, room

    def writable(self):
        return True

    def write(self, data):
        if self.room == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        taken = min(len(data), self.limit, self.room)
        self.data += bytes(data[:taken])
        self.room -= taken
        return taken


def test_a_write_the_file_takes_in_part_is_finished_or_fails():
    expected = bytes(range(256)) * 1000
    file = ShortWrites(limit=4096, room=len(expected))
    writer = DigestingWriter(file)
    writer.write(expected)
    writer.flush()
    assert bytes(file.data) == expected and writer.bytes_written == len(expected)
    full = DigestingWriter(ShortWrites(limit=4096, room=10_000))
    with pytest.raises(OSError) as error:
        full.write(expected)
    assert error.value.errno == errno.ENOSPC
