"""Report parameters: placeholders checked at save, values as typed literals at run time,
recorded on the run, hostile values inert, the same values on both backends."""

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from io import StringIO

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import override_settings

from datasources.placeholders import TemplateError, find_placeholders
from reports import parameters as params
from reports.models import Report
from runs.models import Run, RunStatus
from runs.services.notifications.notifier import _email_body, email_attachment, webhook_payload
from tests.api_helpers import client_for, make_user
from tests.conftest import ON_POSTGRES, execute_run, executes_reports, parse_csv_text, read_csv

pytestmark = pytest.mark.django_db(databases="__all__")

DECLARED = [
    {"name": "day", "type": "date", "label": "Day", "default": "interval_start"},
    {"name": "min_amount", "type": "integer", "label": "At least", "default": 0},
    {"name": "region", "type": "choice", "label": "Region", "choices": ["EU", "US"]},
    {"name": "note", "type": "text", "label": "Note", "default": "none"},
    {"name": "paid", "type": "boolean", "label": "Paid only", "default": True},
    {"name": "rate", "type": "decimal", "label": "Rate", "default": "1.50"},
]


@pytest.fixture
def editor():
    return client_for(make_user("editor", "editor", staff=True))


@pytest.fixture
def runner():
    return client_for(make_user("runner", "run"))


def report_body(**changes):
    return {
        "name": "Echo",
        "slug": "echo",
        "sql": "SELECT {{ note }} AS note",
        "parameters": [{"name": "note", "type": "text", "label": "Note", "default": "x"}],
        **changes,
    }


def echo_report(sql, declared=(), **fields):
    fields = {"name": "Echo", "slug": "echo", **fields}
    report = Report(sql=sql, parameters=list(declared), **fields)
    report.full_clean()
    report.save()
    return report


def run_via_api(client, report, parameters=None, **headers):
    body = {} if parameters is None else {"parameters": parameters}
    return client.post(f"/api/reports/{report.slug}/run/", body, format="json", **headers)


def output_rows(run):
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    return read_csv(run.output.path)


# --- placeholders in the template ----------------------------------------------------


def test_placeholders_are_found_with_their_lines():
    sql = "SELECT 1\nWHERE a = {{day}} AND b = {{  region  }}"
    found = find_placeholders(sql)
    assert [(p.name, p.line) for p in found] == [("day", 2), ("region", 2)]
    assert sql[found[1].start : found[1].end] == "{{  region  }}"


@pytest.mark.parametrize(
    "sql",
    ["SELECT {{ day", "SELECT {{ 1day }}", "SELECT {{ a b }}", "SELECT {{{ day }}}", "SELECT {{}}"],
)
def test_a_malformed_placeholder_is_a_template_error(sql):
    with pytest.raises(TemplateError, match="is not a placeholder"):
        find_placeholders(sql)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT {{ nope }} AS x", "Unknown parameter in {{ nope }} (line 1)"),
        ("SELECT '{{ note }}' AS x", "is inside a string literal or a comment"),
        ("SELECT 1 AS x -- {{ note }}", "is inside a string literal or a comment"),
        ("SELECT 1 AS x /* {{ note }} */", "is inside a string literal or a comment"),
        ('SELECT 1 AS "{{ note }}"', "is inside a string literal or a comment"),
        ("SELECT {{ note AS x", "is not a placeholder"),
        ("SELECT {{ note }} AS x; DROP TABLE t", "exactly one statement"),
    ],
)
def test_saving_checks_placeholders_in_the_api(editor, sql, message):
    response = editor.post("/api/reports/", report_body(sql=sql), format="json")
    assert response.status_code == 400, response.json()
    assert message in " ".join(response.json()["sql"])
    assert not Report.objects.exists()


@pytest.mark.skipif(not ON_POSTGRES, reason="dollar quoting is PostgreSQL's")
def test_a_placeholder_in_a_dollar_quoted_string_is_refused(editor):
    response = editor.post(
        "/api/reports/", report_body(sql="SELECT $$ {{ note }} $$ AS x"), format="json"
    )
    assert "inside a string literal" in response.json()["sql"][0]


def test_saving_checks_the_sql_with_sample_values_on_the_database(editor):
    body = report_body(
        sql="SELECT {{ day }} AS d, {{ note }} AS n FROM no_such_table",
        parameters=[{"name": "day", "type": "date"}, {"name": "note", "type": "text"}],
    )
    response = editor.post("/api/reports/", body, format="json")
    assert response.status_code == 400
    assert "The database rejects this SQL" in response.json()["sql"][0]
    assert "no_such_table" in response.json()["sql"][0]
    good = report_body(
        sql="SELECT {{ day }} AS d, {{ interval_end }} AS e, {{ note }} AS n",
        parameters=[{"name": "day", "type": "date"}, {"name": "note", "type": "text"}],
    )
    response = editor.post("/api/reports/", good, format="json")
    assert response.status_code == 201, response.json()
    assert [p["name"] for p in response.json()["parameters"]] == ["day", "note"]


@pytest.mark.skipif(not ON_POSTGRES, reason="SQLite adds a date and a text without complaint")
def test_the_sample_values_reach_the_database_with_their_types(editor):
    body = report_body(
        sql="SELECT {{ day }} - {{ note }} AS x",
        parameters=[{"name": "day", "type": "date"}, {"name": "note", "type": "text"}],
    )
    response = editor.post("/api/reports/", body, format="json")
    assert response.status_code == 400
    assert "operator does not exist: date - text" in response.json()["sql"][0]
    # Typed values are what is checked: a date minus a date is a number of days.
    body["parameters"][1] = {"name": "note", "type": "date", "default": "2026-01-01"}
    assert editor.post("/api/reports/", body, format="json").status_code == 201


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ([{"name": "a b", "type": "text"}], "parameters[0].name: A parameter's name"),
        ([{"name": "x", "type": "money"}], "parameters[0].type: Use one of: date, timestamp"),
        (
            [{"name": "x", "type": "integer", "default": "ten"}],
            "parameters[0].default: 'ten' is not a whole number",
        ),
        ([{"name": "x", "type": "choice", "choices": []}], "parameters[0].choices"),
        ([{"name": "x", "type": "choice", "choices": ["a"], "default": "b"}], "'b' is not allowed"),
        (
            [{"name": "x", "type": "integer", "default": "interval_start"}],
            "Only date and timestamp",
        ),
        ([{"name": "interval_end", "type": "timestamp"}], "is built in"),
        (
            [{"name": "x", "type": "text"}, {"name": "x", "type": "text"}],
            "parameters[1].name: 'x' is declared twice",
        ),
        ([{"name": "x", "type": "text", "colour": "red"}], "parameters[0].colour: Unknown key"),
        ("not a list", "Parameters are a list"),
    ],
)
def test_bad_declarations_are_refused_naming_the_field(editor, declared, message):
    response = editor.post(
        "/api/reports/", report_body(sql="SELECT 1 AS one", parameters=declared), format="json"
    )
    assert response.status_code == 400
    assert message in response.json()["parameters"][0]


def test_a_scheduled_report_needs_a_default_for_every_parameter():
    report = Report(
        name="R",
        slug="r",
        sql="SELECT {{ region }} AS r",
        schedule="0 6 * * *",
        parameters=[{"name": "region", "type": "choice", "choices": ["EU", "US"]}],
    )
    with pytest.raises(ValidationError, match="'region' needs a default"):
        report.full_clean()


def test_the_admin_refuses_a_misplaced_placeholder_next_to_the_sql(admin_client):
    from tests.test_admin import form_data

    data = form_data(
        sql="SELECT '{{ note }}' AS x", parameters=json.dumps([{"name": "note", "type": "text"}])
    )
    response = admin_client.post("/admin/reports/report/add/", data)
    assert response.status_code == 200
    assert "is inside a string literal or a comment" in response.content.decode()
    assert not Report.objects.exists()


# --- running with values ---------------------------------------------------------------


def test_values_render_as_cast_literals_and_are_recorded(runner):
    report = echo_report(
        "SELECT {{ day }} AS day, {{ min_amount }} AS n, {{ region }} AS region, "
        "{{ note }} AS note, {{ rate }} AS rate",
        DECLARED,
    )
    response = run_via_api(
        runner,
        report,
        {"region": "US", "min_amount": "42", "interval_end": "2026-11-26T00:00:00Z"},
    )
    assert response.status_code == 202, response.json()
    run = Run.objects.get(pk=response.json()["id"])
    assert run.parameters == {"min_amount": 42, "region": "US"}  # as given, until it runs
    execute_run(run)
    # SQLite has no decimal type: a decimal is NUMERIC there (1.5), numeric on PostgreSQL.
    rate = "1.50" if ON_POSTGRES else "1.5"
    assert output_rows(run) == [
        ["day", "n", "region", "note", "rate"],
        ["2026-11-25", "42", "US", "none", rate],
    ]
    # Every value used: the interval's start through the default of day, not its end.
    assert run.parameters == {
        "interval_start": "2026-11-25T00:00:00Z",
        "day": "2026-11-25",
        "min_amount": 42,
        "region": "US",
        "note": "none",
        "paid": True,
        "rate": "1.50",
    }
    if ON_POSTGRES:
        assert "('2026-11-25'::date) AS day" in run.sql
        assert "('42'::bigint) AS n" in run.sql
    else:
        assert "CAST('2026-11-25' AS TEXT) AS day" in run.sql
        assert "CAST(42 AS INTEGER) AS n" in run.sql
    detail = runner.get(f"/api/runs/{run.pk}/").json()
    assert detail["parameters"]["region"] == "US"
    assert detail["interval_start"] == "2026-11-25T00:00:00Z"


@pytest.mark.parametrize(
    ("given", "field", "message"),
    [
        ({"colour": "red"}, "parameters.colour", "This report has no parameter 'colour'"),
        ({}, "parameters.region", "A value is required"),
        ({"region": "ASIA"}, "parameters.region", "'ASIA' is not allowed: use one of EU, US"),
        ({"region": "EU", "min_amount": "1.5"}, "parameters.min_amount", "is not a whole number"),
        ({"region": "EU", "min_amount": 2**63}, "parameters.min_amount", "64-bit"),
        ({"region": "EU", "day": "2026-02-30"}, "parameters.day", "not a date in the calendar"),
        ({"region": "EU", "paid": "maybe"}, "parameters.paid", "Give true or false"),
        ({"region": "EU", "rate": "1e9"}, "parameters.rate", "no exponent"),
        ({"region": "EU", "note": 5}, "parameters.note", "Give text"),
        ({"region": "EU", "note": "a\x00b"}, "parameters.note", "cannot contain the NUL"),
        ({"region": "EU", "note": "x" * 10_001}, "parameters.note", "at most 10,000 characters"),
        ({"region": "EU", "interval_end": "yesterday"}, "parameters.interval_end", "ISO 8601"),
        (
            {
                "region": "EU",
                "interval_start": "2026-11-26T00:00Z",
                "interval_end": "2026-11-25T00:00Z",
            },
            "parameters.interval_end",
            "must end after it starts",
        ),
    ],
)
def test_bad_values_get_400_naming_the_parameter_and_queue_nothing(runner, given, field, message):
    report = echo_report("SELECT {{ region }} AS r, {{ note }} AS n", DECLARED)
    response = run_via_api(runner, report, given)
    assert response.status_code == 400
    assert message in response.json()[field][0]
    assert not Run.objects.exists()


def test_parameters_that_are_not_an_object_get_400(runner):
    echo_report("SELECT 1 AS one")
    response = runner.post("/api/reports/echo/run/", {"parameters": ["a"]}, format="json")
    assert response.status_code == 400
    assert "parameters" in response.json()


HOSTILE_TEXTS = [
    "x'); DROP TABLE param_victims; --",
    "{{ note }} {{ interval_start }}",
    "$$ $1 $tag$ :p1 ?1",
    "back\\slash\\' and \\\\",
    "two\nlines\r\nand a tab\t",
    "'; SELECT 1; --\n*/ /*",
    "é ✓ 𝄞",
]


@executes_reports
@pytest.mark.parametrize("text", HOSTILE_TEXTS)
def test_hostile_text_changes_nothing_and_comes_out_exactly(
    runner, source_sql, scratch_tables, text
):
    scratch_tables.append("param_victims")
    source_sql("CREATE TABLE param_victims (id integer)")
    source_sql("INSERT INTO param_victims VALUES (1)")
    report = echo_report(
        "SELECT {{ note }} AS note, count(*) AS n FROM param_victims",
        [{"name": "note", "type": "text"}],
    )
    response = run_via_api(runner, report, {"note": text})
    assert response.status_code == 202
    run = Run.objects.get()
    execute_run(run)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    with open(run.output.path, newline="", encoding="utf-8") as file:
        rows = parse_csv_text(file.read())
    assert rows == [["note", "n"], [text, "1"]]
    assert run.parameters == {"note": text}
    assert source_sql("SELECT count(*) FROM param_victims") == [(1,)]


def test_a_placeholder_in_a_comment_of_sql_saved_without_checks_fails_the_run(runner):
    # Saved past validation (a shell): the run checks the positions again.
    report = Report.objects.create(
        name="Sneaky",
        slug="sneaky",
        sql="SELECT 1 AS one -- {{ note }}",
        parameters=[{"name": "note", "type": "text"}],
    )
    response = run_via_api(runner, report, {"note": "\nUNION SELECT 2"})
    assert response.status_code == 202
    run = Run.objects.get()
    execute_run(run)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "is inside a string literal or a comment" in run.error
    assert not run.output


# Bind parameters the SQL holds itself: SQLite reads :x, @x, $x, ?, ?N; PostgreSQL $N.
# A marker of the SQL's own once stood in for a placeholder's (the example).
POSITION = "is inside a string literal or a comment"
BIND = "The SQL holds a bind parameter"
OWN_PARAMETERS = {
    "sqlite": [
        ("SELECT '{{ note }}' AS y, :p1 AS x", POSITION),
        ("SELECT '{{ note }}' AS y, ?1 AS x", POSITION),
        ("SELECT {{ note }} AS y, :p1 AS x", f"{BIND}, :p1 (or @p1, $p1"),
        ("SELECT {{ note }} AS y, $p1 AS x", f"{BIND}, :p1 (or @p1, $p1"),
        ("SELECT {{ note }} AS y, @who AS x", f"{BIND}, :who (or @who, $who"),
        # SQLite gives ?1 the slot of the marker before it: only a second prepare sees it.
        ("SELECT {{ note }} AS y, ?1 AS x", f"{BIND}, ?1:"),
        ("SELECT {{ note }} AS y, ? AS x", f"{BIND}, ? (or ?N)"),
        ("SELECT ?7 AS x", f"{BIND}, ? (or ?N)"),
        ("SELECT :p1 AS x", f"{BIND}, :p1"),
    ],
    "postgresql": [
        ("SELECT '{{ note }}' AS y, $1 AS x", POSITION),
        ("SELECT {{ note }} AS y,\n  $2 AS x", f"Line 2: {BIND}, $2:"),
        ("SELECT $1 AS x", f"Line 1: {BIND}, $1:"),
    ],
}
VENDOR = "postgresql" if ON_POSTGRES else "sqlite"


@pytest.mark.parametrize(("sql", "message"), OWN_PARAMETERS[VENDOR])
def test_saving_refuses_bind_parameters_of_the_sql_s_own(editor, sql, message):
    response = editor.post("/api/reports/", report_body(sql=sql), format="json")
    assert response.status_code == 400, response.json()
    assert message in response.json()["sql"][0]
    assert not Report.objects.exists()


@executes_reports
@pytest.mark.parametrize(("sql", "message"), OWN_PARAMETERS[VENDOR])
def test_a_run_of_sql_saved_before_the_check_fails_and_runs_no_value_as_sql(
    runner, source_sql, scratch_tables, sql, message
):
    scratch_tables.append("param_secrets")
    source_sql("CREATE TABLE param_secrets (word text)")
    source_sql("INSERT INTO param_secrets VALUES ('hidden')")
    report = Report.objects.create(
        name="Old",
        slug="old",
        sql=sql,
        parameters=[{"name": "note", "type": "text", "default": "x"}],
    )
    # Rendered inside the quotes, this value would close them and read the table.
    value = "|| (SELECT word FROM param_secrets) ||"
    response = run_via_api(runner, report, {"note": value})
    assert response.status_code == 202
    run = Run.objects.get()
    execute_run(run)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert message in run.error
    assert "hidden" not in run.error and not run.output


def test_a_huge_value_is_refused_before_it_reaches_the_database(runner):
    echo_report("SELECT {{ note }} AS n", [{"name": "note", "type": "text"}])
    response = runner.post(
        "/api/reports/echo/run/", {"parameters": {"note": "y" * 2_000_000}}, format="json"
    )
    assert response.status_code == 400
    assert "at most 10,000 characters" in response.json()["parameters.note"][0]


def test_running_needs_the_run_permission(source_sql):
    report = echo_report("SELECT 1 AS one")
    viewer = client_for(make_user("viewer", "view"))
    assert run_via_api(viewer, report, {}).status_code == 403
    assert not Run.objects.exists()


@executes_reports
def test_both_backends_give_the_same_values(runner, source_sql, scratch_tables):
    # The same expected CSV on PostgreSQL (COPY) and on SQLite (cursor): this test runs
    # on both.
    scratch_tables.append("param_orders")
    kind = "timestamptz" if ON_POSTGRES else "text"
    source_sql(f"CREATE TABLE param_orders (id integer, at {kind}, amount integer, region text)")
    rows = [
        (1, "2026-11-24 23:59:59", 10, "EU"),
        (2, "2026-11-25 00:00:00", 20, "EU"),
        (3, "2026-11-25 12:00:00", 5, "EU"),
        (4, "2026-11-25 23:59:59", 30, "US"),
        (5, "2026-11-26 00:00:00", 40, "EU"),
    ]
    for row in rows:
        source_sql(
            "INSERT INTO param_orders VALUES (%s, %s, %s, %s)",
            [row[0], f"{row[1]}+00" if ON_POSTGRES else row[1], row[2], row[3]],
        )
    report = echo_report(
        "SELECT id, amount, {{ day }} AS day, {{ region }} AS region, {{ note }} AS note\n"
        "FROM param_orders\n"
        "WHERE at >= {{ interval_start }} AND at < {{ interval_end }}\n"
        "  AND amount >= {{ min_amount }} AND region = {{ region }}\n"
        "ORDER BY id",
        DECLARED,
    )
    response = run_via_api(
        runner,
        report,
        {
            "region": "EU",
            "min_amount": 6,
            "note": 'a "quoted", text',
            "interval_start": "2026-11-25T00:00:00Z",
            "interval_end": "2026-11-26T00:00:00Z",
        },
    )
    run = Run.objects.get(pk=response.json()["id"])
    execute_run(run)
    run.refresh_from_db()
    with open(run.output.path, "rb") as file:
        assert file.read() == (
            b'id,amount,day,region,note\n2,20,2026-11-25,EU,"a ""quoted"", text"\n'
        )


def test_a_run_without_values_of_an_unscheduled_report_covers_yesterday(runner):
    report = echo_report("SELECT {{ interval_start }} AS s", timezone="Europe/Berlin")
    response = run_via_api(runner, report)
    run = Run.objects.get(pk=response.json()["id"])
    start = run.interval_start.astimezone(UTC)
    end = run.interval_end
    assert (end - start).total_seconds() in (23 * 3600, 24 * 3600, 25 * 3600)
    from zoneinfo import ZoneInfo

    local_end = end.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local_end.hour, local_end.minute) == (0, 0)


# --- output names, notifications, CLI ------------------------------------------------


def test_an_interval_run_is_named_for_its_interval(runner, editor):
    report = echo_report(
        "SELECT {{ interval_start }} AS s",
        name="Daily revenue",
        slug="daily-revenue",
        schedule="0 6 * * *",
        timezone="Europe/Berlin",
    )
    response = run_via_api(runner, report, {"interval_end": "2026-11-26T06:00:00+01:00"})
    run = Run.objects.get(pk=response.json()["id"])
    execute_run(run)
    run.refresh_from_db()
    assert run.output.name == f"daily-revenue/daily-revenue_2026-11-25_run{run.pk}.csv"
    download = runner.get(f"/api/runs/{run.pk}/download/")
    assert 'filename="daily-revenue_2026-11-25.csv"' in download["Content-Disposition"]
    name, _, _ = email_attachment(run, b"")
    assert name == "daily-revenue_2026-11-25.csv"  # mailed under the same name


def test_a_run_whose_sql_ignores_the_interval_keeps_the_time_stamp_name(runner):
    report = echo_report("SELECT 1 AS one", slug="plain", name="Plain")
    run = Run.objects.get(pk=run_via_api(runner, report).json()["id"])
    execute_run(run)
    run.refresh_from_db()
    assert run.parameters == {}
    assert run.output.name.startswith("plain/plain_") and f"_run{run.pk}.csv" in run.output.name


@override_settings(PUBLIC_BASE_URL="http://reports.test")
def test_notifications_carry_the_values_and_the_interval(runner):
    report = echo_report(
        "SELECT {{ region }} AS r", DECLARED, notify_emails="ops@example.com", notify_when="always"
    )
    run = Run.objects.get(pk=run_via_api(runner, report, {"region": "EU"}).json()["id"])
    from runs.services.runtime.runner import notify_safely

    execute_run(run)
    run.refresh_from_db()
    notify_safely(run)
    [message] = mail.outbox
    assert '  region = "EU"' in message.body
    assert "Interval:" in message.body
    payload = webhook_payload(run, "finished")
    assert payload["run"]["parameters"]["region"] == "EU"
    assert payload["run"]["interval_start"] == run.interval_start.isoformat()
    assert "region" in _email_body(run, "finished", {"admin": "", "api": "", "download": None}, "")


def test_runreport_takes_params_and_an_interval_end(source_sql):
    echo_report("SELECT {{ region }} AS r, {{ day }} AS d", DECLARED, slug="cli-echo")
    out = StringIO()
    call_command(
        "runreport",
        "cli-echo",
        "--param",
        "region=US",
        "--interval-end",
        "2026-11-26T00:00:00Z",
        "--json",
        stdout=out,
    )
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert summary["parameters"]["region"] == "US"
    assert summary["interval_end"] == "2026-11-26T00:00:00+00:00"
    assert read_csv(summary["output_path"]) == [["r", "d"], ["US", "2026-11-25"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "region"], "write NAME=VALUE"),
        (["--param", "region=ASIA"], "Parameter region: 'ASIA' is not allowed"),
        (["--param", "region=EU", "--param", "zone=x"], "no parameter 'zone'"),
        (["--param", "region=EU", "--interval-end", "soon"], "Parameter interval_end"),
    ],
)
def test_runreport_refuses_bad_values_with_the_reason(args, message):
    echo_report("SELECT {{ region }} AS r", DECLARED, slug="cli-echo")
    with pytest.raises(CommandError, match=message):
        call_command("runreport", "cli-echo", *args, stdout=StringIO())
    assert not Run.objects.exists()


def test_value_parsing_units():
    text = params.Parameter("t", "timestamp")
    berlin = __import__("zoneinfo").ZoneInfo("Europe/Berlin")
    assert params.parse_value(text, "2026-11-25T06:00", berlin) == datetime(
        2026, 11, 25, 5, tzinfo=UTC
    )
    assert params.parse_value(params.Parameter("d", "decimal"), "-0.50", UTC) == Decimal("-0.50")
    assert params.parse_value(params.Parameter("d", "date"), "2026-11-25", UTC) == date(
        2026, 11, 25
    )
    assert params.parse_value(params.Parameter("b", "boolean"), "off", UTC) is False
