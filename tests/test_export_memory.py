"""An export's memory follows the bytes of one block and one row, not the row count.

PostgreSQL's COPY hands over one row at a time; SQLite's cursor is walked row by row
and handed on in blocks of FETCH_BATCH_BYTES of values. The same test runs on whichever database
the suite runs on (the default data source is the service's own database).
"""

import tracemalloc

import pytest

from datasources.backends.sqlite import NUMBER_BYTES, _row_blocks
from reports.models import Report
from runs.models import RunStatus
from runs.services.formats.csv import encode_csv_rows
from runs.services.runtime.runner import run_report_now
from tests.conftest import ON_POSTGRES

pytestmark = pytest.mark.django_db(databases="__all__")

VALUE_CHARS = 4_000_000


def big_rows_sql(rows):
    """``rows`` rows, each with a 4 MB text value the database makes itself."""
    if ON_POSTGRES:
        return (
            f"SELECT n, repeat('x', {VALUE_CHARS}) AS big "
            f"FROM generate_series(1, {rows}) AS n ORDER BY n"
        )
    return (
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n "
        f"WHERE x < {rows}) SELECT x AS n, replace(hex(zeroblob({VALUE_CHARS // 2})), '0', 'x') "
        "AS big FROM n"
    )


def peak_memory_of_run(rows):
    report = Report.objects.create(name=f"Big {rows}", slug=f"big-{rows}", sql=big_rows_sql(rows))
    tracemalloc.start()
    try:
        run = run_report_now(report)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.row_count == rows
    assert run.output_bytes > rows * VALUE_CHARS
    return peak


def test_twenty_large_rows_cost_what_two_do():
    two = peak_memory_of_run(2)
    twenty = peak_memory_of_run(20)  # 80 MB of values
    # Holding the batch would take 20 values (80 MB) plus their CSV lines at once.
    assert twenty < 8 * VALUE_CHARS, f"{twenty / 1e6:.1f} MB"
    assert twenty < two * 1.5 + (1 << 20), (two, twenty)


class CountingCursor:
    """A cursor stand-in that records how many rows were fetched."""

    def __init__(self, rows):
        self._rows = iter(rows)
        self.fetched = 0

    def __iter__(self):
        return self

    def __next__(self):
        row = next(self._rows)
        self.fetched += 1
        return row


def test_sqlite_blocks_follow_a_byte_budget_and_fetch_rows_only_as_needed():
    sizes = [10] * 50 + [5000, 10, 10, 3000] + [10] * 50
    rows = [(index, "x" * size) for index, size in enumerate(sizes)]
    cursor = CountingCursor(rows)
    budget = 1000
    fetched_per_block = []
    blocks = []
    for block in _row_blocks(cursor, budget):
        fetched_per_block.append(cursor.fetched)
        blocks.append(list(block))
    assert [row for block in blocks for row in block] == rows

    def value_bytes(block):
        return sum(len(text) + 2 * NUMBER_BYTES for _, text in block)

    largest_row = max(sizes) + 2 * NUMBER_BYTES
    for block in blocks[:-1]:
        assert budget <= value_bytes(block) < budget + largest_row
    # A block is handed on as soon as it is full: no row is fetched ahead of it.
    rows_so_far = [sum(map(len, blocks[: i + 1])) for i in range(len(blocks))]
    assert fetched_per_block == rows_so_far
    # The block the 5,000-character row fills ends with it.
    assert any(block[-1] == rows[50] for block in blocks)
    # The blocks, written, are the rows' CSV.
    written = b"".join(encode_csv_rows(block) for block in blocks)
    expected = (f"{index},{'x' * size}\n".encode() for index, size in enumerate(sizes))
    assert written == b"".join(expected)


def test_an_empty_cursor_gives_no_blocks():
    assert list(_row_blocks(iter([]), 1000)) == []
