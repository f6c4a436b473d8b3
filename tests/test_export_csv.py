"""The CSV a run produces, parsed back and compared with what the database returns."""

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from reports.models import Report
from runs.models import RunStatus
from runs.services.runtime.runner import run_report_now
from tests.conftest import ON_POSTGRES, read_csv

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

TEXTS = [
    "plain",
    "comma, inside",
    'double "quotes" inside',
    "embedded\nnewline and\r\ncarriage return",
    "  leading and trailing spaces  ",
    "unicode: café, 日本語, emoji 😀🚀, right-to-left שלום עליכם مرحبا",
    "",  # empty string: must stay distinguishable from NULL
    None,
    "\\.",  # PostgreSQL quotes a lone \. so a reader never takes it for end-of-data
]

POSTGRES_TABLE = """CREATE TABLE csv_cases (
    id integer, label text, big bigint, amount numeric(24, 6), day date,
    moment timestamptz, flag boolean, ratio double precision)"""
SQLITE_TABLE = """CREATE TABLE csv_cases (
    id integer, label text, big integer, amount text, day text,
    moment text, flag integer, ratio real)"""

NUMBERS = [
    (9223372036854775807, Decimal("123456789012345678.123456"), 1.5),
    (-9223372036854775808, Decimal("-0.000001"), 1e20),
    (0, Decimal("0"), None),
]


@pytest.fixture
def csv_cases(source_sql, scratch_tables):
    scratch_tables.append("csv_cases")
    source_sql(POSTGRES_TABLE if ON_POSTGRES else SQLITE_TABLE)
    for index, text in enumerate(TEXTS):
        big, amount, ratio = NUMBERS[index % len(NUMBERS)]
        moment = "2026-03-29 01:30:00+00" if ON_POSTGRES else "2026-03-29 01:30:00"
        source_sql(
            "INSERT INTO csv_cases VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                index,
                text,
                big,
                amount if ON_POSTGRES else str(amount),
                "2024-02-29",
                moment,
                [True, False, None][index % 3],
                ratio,
            ],
        )


def run_query(sql, slug="csv-cases"):
    report = Report.objects.create(name=slug, slug=slug, sql=sql)
    run = run_report_now(report)
    run.refresh_from_db()
    return run


def as_python(text, expected):
    """Read a CSV field back as the type the database returned for it."""
    if expected is None:
        return None if text == "" else text
    if isinstance(expected, bool):
        return {"t": True, "f": False}[text]
    if isinstance(expected, int):
        return int(text)
    if isinstance(expected, Decimal):
        return Decimal(text)
    if isinstance(expected, float):
        return float(text)
    if isinstance(expected, datetime):
        return datetime.fromisoformat(text)
    if isinstance(expected, date):
        return date.fromisoformat(text)
    return text


def test_every_value_survives_the_round_trip(csv_cases, source_sql, outputs_dir):
    sql = "SELECT * FROM csv_cases ORDER BY id"
    run = run_query(sql)
    assert run.status == RunStatus.SUCCEEDED, run.error
    expected = source_sql(sql)
    rows = read_csv(run.output.path)

    assert rows[0] == ["id", "label", "big", "amount", "day", "moment", "flag", "ratio"]
    assert len(rows) - 1 == len(expected) == run.row_count == len(TEXTS)
    for csv_row, db_row in zip(rows[1:], expected, strict=True):
        assert [as_python(t, v) for t, v in zip(csv_row, db_row, strict=True)] == list(db_row)
    assert [row[1] for row in rows[1:]] == ["" if t is None else t for t in TEXTS]


def test_null_is_empty_and_empty_string_is_quoted(csv_cases):
    run = run_query("SELECT label FROM csv_cases WHERE label = '' OR label IS NULL ORDER BY id")
    assert run.status == RunStatus.SUCCEEDED, run.error
    with open(run.output.path, "rb") as file:
        assert file.read() == b'label\n""\n\n'


def test_quoting_matches_postgres_csv(csv_cases):
    run = run_query("SELECT id, label FROM csv_cases WHERE id IN (1, 2, 3, 4, 8) ORDER BY id")
    assert run.status == RunStatus.SUCCEEDED, run.error
    with open(run.output.path, "rb") as file:
        assert file.read() == (
            b"id,label\n"
            b'1,"comma, inside"\n'
            b'2,"double ""quotes"" inside"\n'
            b'3,"embedded\nnewline and\r\ncarriage return"\n'
            b"4,  leading and trailing spaces  \n"
            b"8,\\.\n"
        )


def test_a_lone_end_of_data_marker_is_quoted_in_single_column_output(csv_cases):
    run = run_query("SELECT label FROM csv_cases WHERE id = 8")
    assert run.status == RunStatus.SUCCEEDED, run.error
    with open(run.output.path, "rb") as file:
        assert file.read() == b'label\n"\\."\n'


def test_zero_rows_give_the_header_only(csv_cases):
    run = run_query("SELECT id, label AS name FROM csv_cases WHERE id < 0")
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.row_count == 0
    assert read_csv(run.output.path) == [["id", "name"]]


def test_run_records_size_checksum_and_what_ran(csv_cases):
    import hashlib

    run = run_query("SELECT * FROM csv_cases ;")
    assert run.status == RunStatus.SUCCEEDED, run.error
    content = Path(run.output.path).read_bytes()
    assert run.output_bytes == len(content)
    assert run.output_sha256 == hashlib.sha256(content).hexdigest()
    assert run.sql == "SELECT * FROM csv_cases"
    assert run.trigger == "cli"
    assert run.worker.endswith(f":{__import__('os').getpid()}")
    assert run.started_at <= run.finished_at
    assert run.error == ""
    assert run.output.name.startswith("csv-cases/csv-cases_")
    assert run.output.name.endswith(f"_run{run.pk}.csv")


def test_a_trailing_line_comment_does_not_break_the_query(csv_cases):
    run = run_query("SELECT id FROM csv_cases WHERE id = 0 -- only the first row")
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert read_csv(run.output.path) == [["id"], ["0"]]
