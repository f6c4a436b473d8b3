"""Output formats: each format's file read back (stdlib csv and gzip, openpyxl), the CSV
options, the limits of a sheet, and everything that serves an output naming its format."""

import csv
import dataclasses
import gzip
import hashlib
import io
import tracemalloc
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from openpyxl.utils.escape import unescape

from reports.models import Report
from runs.models import RunStatus
from runs.naming import download_file_name
from runs.services.formats import format_of_file, get_format, output_formats
from runs.services.formats import xlsx as xlsx_format
from runs.services.infrastructure import preview as preview_module
from runs.services.runtime.runner import run_report_now
from tests.api_helpers import client_for, make_user
from tests.conftest import ON_POSTGRES, executes_reports, files_under, postgres_only

# Most reports here select constants. Tests that make tables in the data source are
# marked executes_reports: the report connection reads them, and on PostgreSQL the
# writer's SET LOCAL search_path would outlast its savepoint in a rolled-back test.
pytestmark = pytest.mark.django_db(databases="__all__")

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
FORMULAS = [
    "=1+1",
    '=HYPERLINK("http://x","click")',
    "+1",
    "-1",
    "@SUM(A1)",
    "\tleading tab",
    "\rleading carriage return",
]
LONG_TEXT = 'long, "quoted" text\n' * 1_500  # 30,000 characters: fits a cell
# id, label, amount, moment, day, flag, ratio, big
CASES = [
    (1, "plain", "1.25", True, 1.5, 9_007_199_254_740_993),
    (2, "", "-0.000001", False, -2.5, -1),
    (3, None, "12345678901234567890.1234567890", None, None, None),
    (4, "café 😀 日本語", "0", True, 1e20, 0),
    (5, LONG_TEXT, "42", False, 0.1, 2**53),
    *[(6 + index, text, "-1", None, -1.0, -1) for index, text in enumerate(FORMULAS)],
]
MOMENT_UTC = "2026-03-29 01:30:00"  # 03:30 in Berlin: summer time began at 01:00 UTC
DAY = "2024-02-29"

POSTGRES_TABLE = """CREATE TABLE format_cases (
    id integer, label text, amount numeric(38, 10), moment timestamptz, day date,
    flag boolean, ratio double precision, big bigint)"""
SQLITE_TABLE = """CREATE TABLE format_cases (
    id integer, label text, amount text, moment text, day text,
    flag integer, ratio real, big integer)"""
SELECT_CASES = "SELECT * FROM format_cases ORDER BY id"


@pytest.fixture
def format_cases(source_sql, scratch_tables):
    scratch_tables.append("format_cases")
    source_sql(POSTGRES_TABLE if ON_POSTGRES else SQLITE_TABLE)
    for number, label, amount, flag, ratio, big in CASES:
        source_sql(
            "INSERT INTO format_cases VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                number,
                label,
                Decimal(amount) if ON_POSTGRES else amount,
                f"{MOMENT_UTC}+00" if ON_POSTGRES else MOMENT_UTC,
                DAY,
                flag,
                ratio,
                big,
            ],
        )
    return source_sql(SELECT_CASES)


def run_report(slug, sql=SELECT_CASES, **settings):
    settings.setdefault("timezone", "Europe/Berlin")
    report = Report.objects.create(name=slug, slug=slug, sql=sql, **settings)
    run = run_report_now(report)
    run.refresh_from_db()
    return run


def output_bytes(run):
    return Path(run.output.path).read_bytes()


def csv_rows(content):
    return list(csv.reader(io.StringIO(content.decode("utf-8"), newline="")))


def workbook(run):
    return openpyxl.load_workbook(io.BytesIO(output_bytes(run)))


# --- CSV and CSV.gz -----------------------------------------------------------------


@executes_reports
def test_csv_gz_is_the_csv_compressed(format_cases):
    plain = run_report("plain")
    packed = run_report("packed", output_format="csv_gz")
    assert plain.status == packed.status == RunStatus.SUCCEEDED, packed.error
    content = output_bytes(packed)
    assert content[:2] == b"\x1f\x8b"  # gzip's magic number
    assert gzip.decompress(content) == output_bytes(plain)
    assert packed.output_bytes == len(content) < plain.output_bytes
    assert packed.output_sha256 == hashlib.sha256(content).hexdigest()
    assert packed.row_count == plain.row_count == len(CASES)
    assert packed.output.name.endswith(f"_run{packed.pk}.csv.gz")
    # The same rows give the same file: nothing in the gzip header changes.
    again = run_report("packed-again", output_format="csv_gz")
    assert output_bytes(again) == content


@executes_reports
def test_csv_round_trip_keeps_null_empty_unicode_and_long_text(format_cases):
    run = run_report("values")
    assert run.status == RunStatus.SUCCEEDED, run.error
    content = output_bytes(run)
    rows = csv_rows(content)
    assert rows[0] == ["id", "label", "amount", "moment", "day", "flag", "ratio", "big"]
    labels = [row[1] for row in rows[1:]]
    assert labels == ["" if case[1] is None else case[1] for case in CASES]
    assert b'\n2,"",' in content and b"\n3,," in content  # "" apart from NULL
    assert [Decimal(row[2]) for row in rows[1:]] == [Decimal(case[2]) for case in CASES]
    assert all(
        float(row[6]) == case[4] for row, case in zip(rows[1:], CASES, strict=True) if row[6]
    )


@executes_reports
def test_formulas_pass_as_they_are_without_escaping(format_cases):
    run = run_report("raw")
    rows = csv_rows(output_bytes(run))
    assert [row[1] for row in rows[6:]] == FORMULAS


@executes_reports
@pytest.mark.parametrize("output_format", ["csv", "csv_gz"])
def test_escape_formulas_prefixes_text_that_a_spreadsheet_would_run(format_cases, output_format):
    run = run_report("escaped", output_format=output_format, escape_formulas=True)
    assert run.status == RunStatus.SUCCEEDED, run.error
    content = output_bytes(run)
    if output_format == "csv_gz":
        content = gzip.decompress(content)
    rows = csv_rows(content)
    assert [row[1] for row in rows[6:]] == ["'" + text for text in FORMULAS]
    # Numbers are not text: -1 stays a number where the column holds numbers. On SQLite
    # the amounts are stored as text, and escaped as such.
    assert {row[7] for row in rows[6:]} == {"-1"}
    assert {row[6] for row in rows[6:]} == ({"-1"} if ON_POSTGRES else {"-1.0"})
    assert {row[2] for row in rows[6:]} == ({"-1.0000000000"} if ON_POSTGRES else {"'-1"})
    # Everything else is as without the option, NULL and "" included.
    plain = csv_rows(output_bytes(run_report("unescaped")))

    def untouched(row):
        return row[:1] + row[3:]

    assert [untouched(row) for row in rows] == [untouched(row) for row in plain]
    assert [row[1] for row in rows[:6]] == [row[1] for row in plain[:6]]
    assert b'\n2,"",' in content and b"\n3,," in content
    assert b'\n12,"\'\rleading carriage return"' in content  # still quoted, as PostgreSQL does


@executes_reports
def test_escape_formulas_also_covers_column_names(format_cases):
    run = run_report(
        "names",
        sql='SELECT id AS "=cmd", label AS "-x" FROM format_cases WHERE id = 1',
        escape_formulas=True,
    )
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert output_bytes(run) == b"'=cmd,'-x\n1,plain\n"


@executes_reports
@pytest.mark.parametrize("output_format", ["csv", "csv_gz"])
def test_bom_starts_the_file_and_nothing_else_changes(format_cases, output_format):
    with_bom = run_report("bom", output_format=output_format, csv_bom=True)
    without = run_report("nobom", output_format=output_format)
    read = gzip.decompress if output_format == "csv_gz" else (lambda content: content)
    content, plain = read(output_bytes(with_bom)), read(output_bytes(without))
    assert content.startswith(b"\xef\xbb\xbf") and not plain.startswith(b"\xef\xbb\xbf")
    assert content == b"\xef\xbb\xbf" + plain
    assert csv_rows(content[3:]) == csv_rows(plain)
    assert content.decode("utf-8-sig").startswith("id,label")


@executes_reports
@postgres_only
def test_escaping_on_postgres_goes_by_column_type(format_cases):
    sql = (
        "SELECT -1 AS int, -1.5::numeric AS num, '-1'::text AS txt, interval '-1 day' AS iv, "
        "'-$5'::money AS cash, '=a,b'::varchar AS quoted, NULL::text AS nothing, ''::text AS blank"
    )
    run = run_report("types", sql=sql, escape_formulas=True)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert output_bytes(run).split(b"\n")[1] == b'-1,-1.5,\'-1,\'-1 days,-$5.00,"\'=a,b",,""'


# --- XLSX -----------------------------------------------------------------------------


@executes_reports
def test_xlsx_has_a_bold_frozen_header_and_typed_cells(format_cases):
    run = run_report("book", output_format="xlsx")
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.output.name.endswith(f"_run{run.pk}.xlsx")
    assert run.row_count == len(CASES)
    content = output_bytes(run)
    assert run.output_bytes == len(content) and content[:2] == b"PK"
    sheet = workbook(run).active
    assert sheet.freeze_panes == "A2"
    header = next(sheet.iter_rows(max_row=1))
    assert [cell.value for cell in header] == [
        "id",
        "label",
        "amount",
        "moment",
        "day",
        "flag",
        "ratio",
        "big",
    ]
    assert all(cell.font.b for cell in header)
    rows = list(sheet.iter_rows(min_row=2))
    assert [row[0].value for row in rows] == [case[0] for case in CASES]
    labels = [row[1] for row in rows]
    texts = [unescape(cell.value) if cell.value else cell.value for cell in labels]
    assert texts == [case[1] for case in CASES]  # None is NULL
    assert labels[1].value == "" and labels[2].value is None
    # Text is text, never a formula, whatever it starts with.
    assert all(cell.data_type == "s" for cell in labels if cell.value is not None)
    # A carriage return is written as OOXML's escape _x000D_, which spreadsheets read
    # as the character (openpyxl leaves it: unescape here).
    assert [unescape(cell.value) for cell in labels[5:]] == FORMULAS
    assert labels[11].value == "_x000D_leading carriage return"

    moment, day = rows[0][3].value, rows[0][4].value
    assert moment == datetime(2026, 3, 29, 3, 30) if ON_POSTGRES else MOMENT_UTC
    assert rows[0][4].is_date if ON_POSTGRES else day == DAY
    if ON_POSTGRES:
        assert day.date() == date(2024, 2, 29)
        assert [row[5].value for row in rows[:4]] == [True, False, None, True]
        assert rows[0][5].data_type == "b"
        amounts = [row[2].value for row in rows]
        assert amounts[:2] == [1.25, -0.000001] and amounts[3] == 0
        # More digits than a double holds: kept as text, every digit.
        assert amounts[2] == "12345678901234567890.1234567890"
        assert rows[0][7].value == "9007199254740993" and rows[0][7].data_type == "s"
    else:
        assert [row[5].value for row in rows[:4]] == [1, 0, None, 1]
    assert rows[1][7].value == -1 and rows[1][7].data_type == "n"
    assert rows[4][7].value == 2**53 and rows[4][7].data_type == "n"
    assert [row[6].value for row in rows[:2]] == [1.5, -2.5] and rows[3][6].value == 1e20


def test_xlsx_rows_past_a_sheet_fail_the_run_and_leave_no_file(monkeypatch, outputs_dir):
    small = dataclasses.replace(get_format("xlsx"), max_rows=3)
    monkeypatch.setitem(output_formats(), "xlsx", small)
    monkeypatch.setattr(xlsx_format, "SHEET_ROWS", 4)
    sql = "SELECT 1 AS n UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4"
    run = run_report("too-many", sql=sql, output_format="xlsx")
    assert run.status == RunStatus.FAILED
    assert run.error == xlsx_format.TOO_MANY_ROWS
    assert "more than an XLSX sheet holds (1,048,576 rows with the header)" in run.error
    assert "Choose CSV or CSV.gz" in run.error
    assert not run.output and files_under(outputs_dir) == []
    fits = run_report(
        "fits", sql="SELECT 1 AS n UNION ALL SELECT 2 UNION ALL SELECT 3", output_format="xlsx"
    )
    assert fits.status == RunStatus.SUCCEEDED, fits.error


def test_the_sheet_limit_is_excels():
    assert get_format("xlsx").max_rows == 1_048_575
    assert get_format("csv").max_rows is None


def test_a_value_too_long_for_a_cell_fails_the_xlsx_run_with_a_message(outputs_dir):
    big = "repeat('y', 40000)" if ON_POSTGRES else "replace(hex(zeroblob(20000)), '0', 'y')"
    sql = f"SELECT 1 AS id, {big} AS body"
    run = run_report("huge-cell", sql=sql, output_format="xlsx")
    assert run.status == RunStatus.FAILED
    assert run.error == (
        "The value in row 1, column “body” has 40,000 characters; an XLSX cell holds at "
        "most 32,767. Choose CSV or CSV.gz for this report, or shorten the value in the query."
    )
    assert files_under(outputs_dir) == []
    as_csv = run_report("huge-csv", sql=sql)
    assert as_csv.status == RunStatus.SUCCEEDED, as_csv.error
    assert csv_rows(output_bytes(as_csv))[1][1] == "y" * 40_000


def test_xlsx_of_zero_rows_is_the_header_alone():
    run = run_report("empty-book", sql="SELECT 1 AS a, 'x' AS b WHERE 1 = 0", output_format="xlsx")
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.row_count == 0
    assert list(workbook(run).active.iter_rows(values_only=True)) == [("a", "b")]


@executes_reports
def test_xlsx_is_the_same_file_for_the_same_rows(format_cases):
    first = run_report("same-1", output_format="xlsx")
    second = run_report("same-2", output_format="xlsx")
    assert first.output_sha256 == second.output_sha256


@postgres_only
def test_xlsx_on_postgres_keeps_other_types_as_their_text():
    sql = (
        "SELECT interval '1 day 2 hours' AS iv, '{1,2}'::int[] AS arr, "
        "'{\"a\": 1}'::jsonb AS doc, time '13:45:00' AS t, 'NaN'::float8 AS nan, "
        "timestamp '1850-01-01 00:00' AS old, '\\x00ff'::bytea AS bin"
    )
    run = run_report("others", sql=sql, output_format="xlsx")
    assert run.status == RunStatus.SUCCEEDED, run.error
    [row] = workbook(run).active.iter_rows(min_row=2, values_only=True)
    assert row[:3] == ("1 day 02:00:00", "{1,2}", '{"a": 1}')
    assert row[3].hour == 13 and row[3].minute == 45
    assert row[4:] == ("NaN", "1850-01-01 00:00:00", "\\x00ff")


@postgres_only
def test_xlsx_on_postgres_holds_one_row_at_a_time(outputs_dir):
    # 20 rows of 4 MB: the first fails the run (too long for a cell) before the others
    # are even loaded: rows come one by one, not in chunks.
    sql = "SELECT n, repeat('x', 4000000) AS big FROM generate_series(1, 20) AS n"
    report = Report.objects.create(name="big", slug="big", sql=sql, output_format="xlsx")
    # The same failure once, small: what a process loads and caches the first time it
    # writes a workbook or words this error is not what is measured.
    warm_up = Report.objects.create(
        name="warm",
        slug="warm",
        sql="SELECT 1 AS n, repeat('x', 40000) AS big",
        output_format="xlsx",
    )
    assert run_report_now(warm_up).status == RunStatus.FAILED
    tracemalloc.start()
    try:
        run = run_report_now(report)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert run.status == RunStatus.FAILED
    assert "row 1, column “big” has 4,000,000 characters" in run.error
    assert peak < 3 * 4_000_000 + (4 << 20), peak
    assert files_under(outputs_dir) == []


@executes_reports
@postgres_only
def test_xlsx_on_postgres_runs_one_statement_only(source_sql, scratch_tables):
    scratch_tables.append("kept")
    source_sql("CREATE TABLE kept (n integer)")
    smuggled = "SELECT 1 AS n) AS q; DROP TABLE kept; SELECT * FROM (SELECT 1"
    run = run_report("smuggled", sql=smuggled, output_format="xlsx")
    assert run.status == RunStatus.FAILED
    assert source_sql("SELECT count(*) FROM kept") == [(0,)]


# --- Settings ---------------------------------------------------------------------------


def test_csv_options_with_xlsx_are_refused_with_a_message():
    report = Report(
        name="x", slug="x", sql="SELECT 1", output_format="xlsx", escape_formulas=True, csv_bom=True
    )
    with pytest.raises(ValidationError) as error:
        report.full_clean()
    assert error.value.message_dict["escape_formulas"] == [
        "Formula escaping applies to CSV files only; Excel workbook (XLSX) files are not "
        "affected. Clear it, or choose CSV or CSV.gz."
    ]
    assert "The BOM applies to CSV files only" in error.value.message_dict["csv_bom"][0]
    Report(name="y", slug="y", sql="SELECT 1", output_format="csv_gz", csv_bom=True).full_clean()


def test_the_api_takes_output_settings_and_refuses_bad_ones():
    api = client_for(make_user("editor", "editor"))
    created = api.post(
        "/api/reports/",
        {"name": "Book", "slug": "book", "sql": "SELECT 1 AS n", "output_format": "xlsx"},
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["output_format"] == "xlsx" and body["escape_formulas"] is False
    assert body["latest_output_url"].endswith("/api/reports/book/latest.xlsx")
    assert body["latest_csv_url"].endswith("/api/reports/book/latest.csv")
    bad = api.patch("/api/reports/book/", {"output_format": "pdf"}, format="json")
    assert bad.status_code == 400
    assert bad.json() == {"output_format": ['"pdf" is not a valid choice.']}
    mixed = api.patch("/api/reports/book/", {"csv_bom": True}, format="json")
    assert mixed.status_code == 400
    assert "The BOM applies to CSV files only" in mixed.json()["csv_bom"][0]
    assert Report.objects.get(slug="book").csv_bom is False  # nothing saved


def test_the_admin_offers_formats_and_refuses_csv_options_for_xlsx(admin_client):
    page = admin_client.get("/admin/reports/report/add/").content.decode()
    for value in ("csv", "csv_gz", "xlsx"):
        assert f'<option value="{value}"' in page
    data = {
        "name": "Book",
        "slug": "book",
        "description": "",
        "sql": "SELECT 1",
        "data_source": "default",
        "schedule": "",
        "timezone": "UTC",
        "enabled": "on",
        "max_retries": "0",
        "notify_when": "failure",
        "output_format": "xlsx",
        "escape_formulas": "on",
        "timeout_seconds": "",
        "max_rows": "",
        "retention_days": "",
        "notify_emails": "",
        "notify_webhooks": "",
        "alert_condition": "",
        "alert_threshold": "",
    }
    response = admin_client.post("/admin/reports/report/add/", data)
    assert response.status_code == 200
    assert "Formula escaping applies to CSV files only" in response.content.decode()
    assert not Report.objects.exists()


# --- Serving outputs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output_format", "content_type", "extension"),
    [
        ("csv", "text/csv; charset=utf-8", ".csv"),
        ("csv_gz", "application/gzip", ".csv.gz"),
        ("xlsx", XLSX_TYPE, ".xlsx"),
    ],
)
def test_downloads_name_and_type_each_format(output_format, content_type, extension):
    run = run_report("served", sql="SELECT 1 AS n, 'x' AS t", output_format=output_format)
    assert run.status == RunStatus.SUCCEEDED, run.error
    api = client_for(make_user("viewer", "view"))  # may read outputs, not SQL
    for url in (f"/api/runs/{run.pk}/download/", f"/api/reports/served/latest{extension}"):
        response = api.get(url)
        assert response.status_code == 200, response.content
        assert response["Content-Type"] == content_type
        assert "Content-Encoding" not in response
        started = run.started_at
        assert response["Content-Disposition"] == (
            f'attachment; filename="served_{started:%Y-%m-%d_%H%M}_run{run.pk}{extension}"'
        )
        assert b"".join(response.streaming_content) == output_bytes(run)
        binary = api.get(url, HTTP_ACCEPT="application/octet-stream")
        assert binary["Content-Type"] == "application/octet-stream"
    assert format_of_file(run.output.name).name == output_format


def test_latest_of_another_format_points_to_the_right_url():
    run = run_report("sheet", sql="SELECT 1 AS n", output_format="xlsx")
    assert run.status == RunStatus.SUCCEEDED, run.error
    api = client_for(make_user("viewer", "view"))
    for extension in (".csv", ".csv.gz"):
        response = api.get(f"/api/reports/sheet/latest{extension}")
        assert response.status_code == 409
        assert response.json()["detail"] == (
            f"The latest output of report 'sheet' is a .xlsx file, not {extension}: fetch it "
            "from http://testserver/api/reports/sheet/latest.xlsx"
        )
    assert api.get("/api/reports/sheet/latest.xlsx").status_code == 200
    # After a change of format the newest output decides, until a run writes the new one.
    Report.objects.filter(slug="sheet").update(output_format="csv")
    assert api.get("/api/reports/sheet/latest.xlsx").status_code == 200
    assert api.get("/api/reports/sheet/latest.csv").status_code == 409
    assert api.get("/api/reports/nothing/latest.xlsx").status_code == 404


def test_latest_needs_view_report():
    run_report("private", sql="SELECT 1 AS n", output_format="csv_gz")
    assert (
        client_for(make_user("nobody")).get("/api/reports/private/latest.csv.gz").status_code == 403
    )
    assert client_for().get("/api/reports/private/latest.csv.gz").status_code == 401


@pytest.mark.parametrize("output_format", ["csv", "csv_gz", "xlsx"])
def test_emails_attach_the_file_in_its_format(settings, output_format):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    report = Report.objects.create(
        name="Mailed",
        slug="mailed",
        sql="SELECT 1 AS n",
        output_format=output_format,
        notify_when="always",
        notify_emails="ops@example.com",
    )
    run = run_report_now(report)
    assert run.status == RunStatus.SUCCEEDED, run.error
    [message] = mail.outbox
    [(name, content, media_type)] = message.attachments
    output_format = get_format(output_format)
    assert name == download_file_name(run) and name.endswith(output_format.suffix)
    assert media_type == output_format.media_type
    expected = output_bytes(run)
    assert (content.encode() if isinstance(content, str) else content) == expected
    assert f"The file ({output_format.label}) is attached." in message.body
    assert f"Download ({output_format.label}):" in message.body


@pytest.mark.parametrize("output_format", ["csv", "csv_gz", "xlsx"])
def test_the_preview_reads_each_format(admin_client, output_format):
    sql = "SELECT 1 AS n, NULL AS missing, '' AS empty, '=1+1' AS formula"
    run = run_report("shown", sql=sql, output_format=output_format, csv_bom=output_format != "xlsx")
    assert run.status == RunStatus.SUCCEEDED, run.error
    page = admin_client.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert "<th>n</th><th>missing</th><th>empty</th><th>formula</th>" in page  # no BOM
    row = page.split('id="preview-table"')[1].split("<tbody>")[1].split("</tr>")[0]
    assert row.split("<td")[1:] == [
        ">1</td>",
        ' class="rs-null"><span class="rs-null-mark" title="NULL (no value)">NULL</span></td>',
        ' class="rs-empty" title="empty string"></td>',
        ">=1+1</td>",
    ]
    kind = get_format(output_format).extension.upper()
    assert f"⬇ Download {kind}</a>" in page


def test_a_compressed_output_is_previewed_within_the_budget(finished_gz_run):
    # 64 MB of CSV that compresses to a few kB: the preview decompresses only its budget.
    content = io.BytesIO()
    with gzip.GzipFile(fileobj=content, mode="wb", mtime=0) as file:
        file.write(b"id,blob\n1,")
        file.write(b"x" * (64 << 20))
        file.write(b"\n")
    run = finished_gz_run(content.getvalue())
    preview = preview_module.preview_rows(run)
    cell = preview.rows[0][1]
    assert not cell.complete and cell.length == preview_module.PREVIEW_MAX_BYTES - 10
    assert preview.cut_short


def test_a_long_xlsx_is_previewed_from_its_first_rows():
    sql = (
        "SELECT g AS n FROM generate_series(1, 5000) AS g"
        if ON_POSTGRES
        else "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 5000) "
        "SELECT n FROM g"
    )
    run = run_report("long-book", sql=sql, output_format="xlsx")
    preview = preview_module.preview_rows(run, limit=3)
    assert [cell.text for cell in preview.header] == ["n"]
    assert [[cell.text for cell in row] for row in preview.rows] == [["1"], ["2"], ["3"]]
    assert preview.more_rows


def test_a_broken_compressed_output_gives_a_page_that_says_so(admin_client, finished_gz_run):
    run = finished_gz_run(b"\x1f\x8bnot really gzip")
    page = admin_client.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert "The output file could not be read:" in page


@pytest.fixture
def finished_gz_run(outputs_dir):
    run = run_report("gz-out", sql="SELECT 1 AS n", output_format="csv_gz")
    assert run.status == RunStatus.SUCCEEDED, run.error

    def with_output(content):
        Path(outputs_dir, run.output.name).write_bytes(content)
        return run

    return with_output


@postgres_only
def test_xlsx_writes_a_moment_the_report_s_zone_cannot_hold_as_its_text():
    # Year 1 at midnight UTC is still year 0 in New York (and 10000 in Kiritimati).
    sql = (
        "SELECT timestamptz '0001-01-01 00:00:00+00' AS first, "
        "timestamptz '9999-12-31 23:00:00+00' AS last, timestamptz '2026-11-25 12:00+00' AS now"
    )
    for zone, shown in (("America/New_York", 0), ("Pacific/Kiritimati", 1)):
        run = run_report(f"edge-{shown}", sql=sql, output_format="xlsx", timezone=zone)
        assert run.status == RunStatus.SUCCEEDED, run.error
        [row] = workbook(run).active.iter_rows(min_row=2, values_only=True)
        assert row[shown] == ("0001-01-01 00:00:00+00:00", "9999-12-31 23:00:00+00:00")[shown]
        assert row[2].year == 2026
