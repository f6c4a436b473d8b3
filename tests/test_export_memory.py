"""An export's memory follows the bytes of one block and one row, not the row count.

PostgreSQL's COPY hands over one row at a time; SQLite's cursor is walked row by row
and written in blocks of FETCH_BATCH_BYTES. The same test runs on whichever database
the suite runs on (the default data source is the service's own database).
"""

import tracemalloc

import pytest

from reports.models import Report
from runs.models import RunStatus
from runs.services.exporter import _byte_batches, _csv_field, _csv_line
from runs.services.runner import run_report_now
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
    cursor = CountingCursor([(index, "x" * size) for index, size in enumerate(sizes)])
    budget = 1000
    fetched_per_block = []
    blocks = []
    for rows, block in _byte_batches(cursor, _csv_field, budget):
        fetched_per_block.append(cursor.fetched)
        blocks.append((rows, block))
    lines = [_csv_line((index, "x" * size), _csv_field) for index, size in enumerate(sizes)]
    assert b"".join(block for _, block in blocks) == b"".join(lines)
    assert sum(rows for rows, _ in blocks) == len(sizes)
    largest_line = max(map(len, lines))
    for _, block in blocks[:-1]:
        assert budget <= len(block) < budget + largest_line
    # A block is handed on as soon as it is full: no row is fetched ahead of it.
    rows_so_far = [sum(rows for rows, _ in blocks[: i + 1]) for i in range(len(blocks))]
    assert fetched_per_block == rows_so_far
    # The block the 5,000-character row fills ends with it.
    assert any(block.endswith(lines[50]) for _, block in blocks)


def test_an_empty_cursor_gives_no_blocks():
    assert list(_byte_batches(iter([]), _csv_field, 1000)) == []
