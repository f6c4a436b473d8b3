"""Hostile values at every entry (API, admin, runreport, backfill): time stamps past the
report's zone's calendar, lone surrogates, NUL, exponents, huge values. Each is refused
where it enters with a message naming the value and what is allowed (never a 500, never
a run left running), and every value that passes reaches the database as given."""

import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command

from reports import parameters as params
from reports.models import Report
from reportsvc.moments import zone_bounds
from runs.models import Run, RunStatus
from tests.api_helpers import client_for, make_user
from tests.conftest import ON_POSTGRES, execute_run, executes_reports, read_csv

pytestmark = pytest.mark.django_db(databases="__all__")

SURROGATE = "a\ud800b"


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()


@pytest.fixture
def runner():
    return client_for(make_user("runner", "run"))


@pytest.fixture
def editor():
    return client_for(make_user("editor", "editor", staff=True))


@pytest.fixture
def admin_client(client):
    user = make_user("ops", staff=True)
    user.is_superuser = True
    user.save()
    client.force_login(user)
    return client


def interval_report(zone="America/New_York", schedule="", slug="span", **fields):
    report = Report(
        name="Span",
        slug=slug,
        sql="SELECT {{ interval_start }} AS s, {{ interval_end }} AS e",
        schedule=schedule,
        timezone=zone,
        **fields,
    )
    report.full_clean()
    report.save()
    return report


def text_report(slug="echo", declared=None, **fields):
    report = Report(
        name="Echo",
        slug=slug,
        sql="SELECT {{ note }} AS note",
        parameters=declared or [{"name": "note", "type": "text", "label": "Note"}],
        **fields,
    )
    report.full_clean()
    report.save()
    return report


def post_json(client, url, body):
    """POST ``body`` as JSON a client sends it: ASCII, lone surrogates as "\\ud800"."""
    return client.post(url, json.dumps(body), content_type="application/json")


def run_via_api(client, report, parameters):
    return post_json(client, f"/api/reports/{report.slug}/run/", {"parameters": parameters})


def first_error(response, field):
    assert response.status_code == 400, response.content
    return response.json()[field][0]


# --- time stamps the report's zone cannot hold ------------------------------------------


def test_each_zone_holds_year_1_to_9999_in_utc_and_locally():
    for name in ("America/New_York", "Pacific/Kiritimati", "America/St_Johns", "Asia/Tokyo"):
        zone = ZoneInfo(name)
        earliest, latest = zone_bounds(zone)
        for moment in (earliest, latest):
            assert moment.astimezone(zone).astimezone(UTC) == moment  # there and back
    assert zone_bounds(ZoneInfo("America/New_York"))[0] == datetime(1, 1, 1, 4, 56, 2, tzinfo=UTC)
    assert zone_bounds(ZoneInfo("Pacific/Kiritimati"))[1] == datetime(
        9999, 12, 31, 9, 59, 59, 999999, tzinfo=UTC
    )


OUT_OF_ZONE = [
    # zone, given interval, field named, the range the message gives
    (
        "America/New_York",
        {"interval_start": "0001-01-01T00:00:00Z", "interval_end": "0001-01-02T00:00:00Z"},
        "interval_start",
        "0001-01-01T04:56:02Z to 9999-12-31T23:59:59Z",
    ),
    (
        "Pacific/Kiritimati",
        {"interval_start": "9999-12-30T00:00:00Z", "interval_end": "9999-12-31T12:00:00Z"},
        "interval_end",
        "0001-01-01T10:29:20Z to 9999-12-31T09:59:59Z",
    ),
    (
        "America/St_Johns",
        {"interval_start": "0001-01-01T03:00:00Z", "interval_end": "0001-01-02T00:00:00Z"},
        "interval_start",
        "0001-01-01T03:30:52Z to",
    ),
    (  # naive: read in the zone, where year 1 begins before UTC's does
        "Asia/Tokyo",
        {"interval_start": "0001-01-01T00:00:00", "interval_end": "0001-01-02T00:00:00"},
        "interval_start",
        "0001-01-01T00:00:00Z to 9999-12-31T14:59:59Z",
    ),
    (  # only the end: its partner (a day earlier) is before year 1
        "America/New_York",
        {"interval_end": "0001-01-01T12:00:00Z"},
        "interval_end",
        "would fall outside the calendar",
    ),
    (  # only the start, on the last day: its partner is after year 9999
        "Pacific/Kiritimati",
        {"interval_start": "9999-12-31T00:00:00Z"},
        "interval_start",
        "would fall outside the calendar",
    ),
]


@pytest.mark.parametrize(("zone", "given", "field", "message"), OUT_OF_ZONE)
def test_the_api_refuses_an_interval_the_zone_cannot_hold(runner, zone, given, field, message):
    report = interval_report(zone)
    error = first_error(run_via_api(runner, report, given), f"parameters.{field}")
    assert message in error
    assert zone in error
    assert not Run.objects.exists()


def test_the_message_names_the_value_given(runner):
    report = interval_report("America/New_York")
    given = {"interval_start": "0001-01-01T00:00:00Z", "interval_end": "0001-01-02T00:00:00Z"}
    assert first_error(run_via_api(runner, report, given), "parameters.interval_start") == (
        "'0001-01-01T00:00:00Z' is out of range: in the report's time zone "
        "(America/New_York) time stamps run from 0001-01-01T04:56:02Z to 9999-12-31T23:59:59Z."
    )


@pytest.mark.parametrize(("zone", "given", "field", "message"), OUT_OF_ZONE[:4])  # both bounds
def test_the_admin_form_refuses_it_next_to_the_field(admin_client, zone, given, field, message):
    report = interval_report(zone)
    url = f"/admin/reports/report/{report.pk}/run-with-parameters/"
    response = admin_client.post(
        url,
        {name: given.get(name, "") for name in ("interval_start", "interval_end")},
    )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Run.objects.exists()


@pytest.mark.parametrize(("zone", "given", "field", "message"), OUT_OF_ZONE)
def test_runreport_refuses_it_with_the_reason(zone, given, field, message):
    interval_report(zone)
    arguments = [f"--param={name}={value}" for name, value in given.items()]
    with pytest.raises(CommandError) as error:
        call_command("runreport", "span", *arguments, stdout=StringIO())
    assert str(error.value).startswith(f"Parameter {field}: ")
    assert message in str(error.value)
    assert not Run.objects.exists()


def test_a_scheduled_report_near_the_calendar_s_ends(runner):
    # Daily at 06:00 in New York: no fire before 0001-01-01T06:00Z, none after
    # 9999-12-31T12:00Z, and a day before or after either is off the calendar.
    daily = interval_report("America/New_York", schedule="0 6 * * *")
    early = run_via_api(runner, daily, {"interval_end": "0001-01-01T06:00:00Z"})
    assert "would fall outside the calendar" in first_error(early, "parameters.interval_end")
    late = run_via_api(runner, daily, {"interval_start": "9999-12-31T12:00:00Z"})
    assert "would fall outside the calendar" in first_error(late, "parameters.interval_start")
    # Feb 29: the fire after 9996 would be in year 10000; the partner is then a day.
    leap = interval_report("America/New_York", schedule="0 0 29 2 *", slug="leap")
    ending = run_via_api(runner, leap, {"interval_end": "9996-02-29T05:00:00Z"})
    assert ending.status_code == 202, ending.json()
    assert ending.json()["interval_start"] == "9992-02-29T05:00:00Z"
    starting = run_via_api(runner, leap, {"interval_start": "9996-02-29T05:00:00Z"})
    assert starting.status_code == 202, starting.json()
    assert starting.json()["interval_end"] == "9996-03-01T05:00:00Z"


def test_a_timestamp_parameter_and_its_default_are_checked_in_the_zone(runner, editor):
    declared = [{"name": "at", "type": "timestamp", "label": "At", "default": "0001-01-01T00:00"}]
    body = {"name": "At", "slug": "at", "sql": "SELECT {{ at }} AS at", "timezone": "Asia/Tokyo"}
    created = editor.post("/api/reports/", {**body, "parameters": declared}, format="json")
    assert "parameters[0].default: '0001-01-01T00:00' is out of range" in (
        first_error(created, "parameters")
    )
    report = Report(
        name="At",
        slug="at",
        sql="SELECT {{ at }} AS at",
        parameters=[{"name": "at", "type": "timestamp", "label": "At"}],
        timezone="America/New_York",
    )
    report.full_clean()
    report.save()
    response = run_via_api(runner, report, {"at": "0001-01-01T01:00:00Z"})
    error = first_error(response, "parameters.at")
    assert "out of range" in error and "America/New_York" in error


@executes_reports
@pytest.mark.parametrize(
    ("zone", "start", "end", "label"),
    [
        ("America/New_York", "0001-01-01T04:56:02Z", "0001-01-02T04:56:02Z", "0001-01-01"),
        ("Pacific/Kiritimati", "9999-12-30T09:59:59Z", "9999-12-31T09:59:59Z", "9999-12-30"),
        ("America/St_Johns", "9999-12-30T23:59:59Z", "9999-12-31T23:59:59Z", "9999-12-30"),
        ("Asia/Tokyo", "0001-01-01T00:00:00Z", "0001-01-01T12:00:00Z", "0001-01-01T0918"),
    ],
)
def test_the_calendar_s_last_moments_reach_the_database_and_name_the_file(
    runner, zone, start, end, label
):
    report = interval_report(zone)
    response = run_via_api(runner, report, {"interval_start": start, "interval_end": end})
    assert response.status_code == 202, response.json()
    run = Run.objects.get()
    execute_run(run)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.output.name.endswith(f"span_{label}_run{run.pk}.csv")
    row = read_csv(run.output.path)[1]
    if ON_POSTGRES:  # timestamptz, in the session's zone (UTC)
        assert row == [
            start.replace("T", " ").replace("Z", "+00"),
            end.replace("T", " ").replace("Z", "+00"),
        ]
    else:  # the text Django and SQLite store, year padded to four digits
        assert row == [start.replace("T", " ")[:-1], end.replace("T", " ")[:-1]]
    assert runner.get(f"/api/runs/{run.pk}/download/").status_code == 200


# --- backfill ranges ------------------------------------------------------------------------


def backfill(client, report, **body):
    return post_json(client, f"/api/reports/{report.slug}/backfill/", body)


def test_a_backfill_range_the_zone_cannot_hold_is_refused(runner):
    report = interval_report("America/New_York", schedule="0 6 * * *")
    early = backfill(runner, report, start="0001-01-01T00:00:00Z", end="0001-01-09T00:00:00Z")
    assert "'0001-01-01T00:00:00Z' is out of range" in first_error(early, "start")
    kiritimati = interval_report("Pacific/Kiritimati", schedule="0 6 * * *", slug="k")
    late = backfill(runner, kiritimati, start="9999-12-25T00:00:00Z", end="9999-12-31T23:59:59Z")
    assert "0001-01-01T10:29:20Z to 9999-12-31T09:59:59Z" in first_error(late, "end")
    offset = backfill(runner, report, start="0001-01-01T00:00:00+05:00", end="0002-01-01T00:00Z")
    assert first_error(offset, "start") == (
        "'0001-01-01T00:00:00+05:00' is out of range: time stamps run from "
        "0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z."
    )
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    ("schedule", "zone", "start", "end", "queued"),
    [
        ("0 0 29 2 *", "UTC", "9990-01-01T00:00:00Z", "9999-12-31T23:59:59Z", 2),
        ("0 0 29 2 *", "America/New_York", "9990-01-01T00:00:00Z", "9999-12-31T23:59:59Z", 2),
        ("0 6 * * *", "Pacific/Kiritimati", "9999-12-20T00:00:00Z", "9999-12-31T09:59:59Z", 11),
        ("", "America/St_Johns", "9999-12-25T00:00:00Z", "9999-12-31T23:59:59Z", 7),
        ("", "America/New_York", "0001-01-01T04:56:02Z", "0001-01-05T00:00:00Z", 3),
        ("0 0 29 2 *", "UTC", "0001-01-01T00:00:00Z", "0013-01-01T00:00:00Z", 2),
    ],
)
def test_a_backfill_up_to_the_calendar_s_ends_queues_what_fits(
    runner, schedule, zone, start, end, queued
):
    report = interval_report(zone, schedule=schedule)
    response = backfill(runner, report, start=start, end=end)
    assert response.status_code == 202, response.json()
    assert response.json()["queued"] == queued
    for run in response.json()["runs"]:
        assert run["interval_start"] < run["interval_end"]


@pytest.mark.parametrize(
    ("schedule", "zone"),
    [("*/15 * * * *", "America/New_York"), ("0 6 * * *", "Europe/Berlin"), ("", "UTC")],
)
def test_planning_a_huge_backfill_costs_little_cpu(runner, schedule, zone):
    report = interval_report(zone, schedule=schedule)
    started = time.process_time()
    response = backfill(runner, report, start="2000-01-01T00:00:00Z", end="9999-12-31T00:00:00Z")
    assert time.process_time() - started < 1.5  # counting to 36,600 fire times took 2-8 s
    error = first_error(response, "end")
    assert error.startswith("The range holds more than 3,660 fire times; a backfill queues at")
    assert "Split it into shorter ranges: the first 366 end with the fire time 2" in error


def test_the_admin_backfill_form_refuses_a_range_the_zone_cannot_hold(admin_client):
    report = interval_report("Asia/Tokyo", schedule="0 6 * * *")
    url = f"/admin/reports/report/{report.pk}/backfill/"
    page = admin_client.post(url, {"start": "0001-01-01 00:00", "end": "0001-02-01 00:00"})
    assert page.status_code == 200
    assert "&#x27;0001-01-01T00:00:00+09:18:59&#x27; is out of range" in page.content.decode()
    new_york = interval_report("America/New_York", schedule="0 6 * * *", slug="ny")
    url = f"/admin/reports/report/{new_york.pk}/backfill/"
    page = admin_client.post(url, {"start": "9999-12-01 00:00", "end": "9999-12-31 23:59"})
    assert "to 9999-12-31T23:59:59Z." in page.content.decode()
    assert not Run.objects.exists()


def test_the_admin_backfill_form_shares_the_api_s_throttle(admin_client, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"report-runs": "3/minute"})
    report = interval_report("UTC", schedule="*/15 * * * *")
    url = f"/admin/reports/report/{report.pk}/backfill/"
    huge = {"start": "2000-01-01 00:00", "end": "9999-12-31 00:00"}
    codes = [admin_client.post(url, huge).status_code for _ in range(3)]
    assert codes == [200, 200, 200]  # the plan, refused with how many fire times
    throttled = admin_client.post(url, huge)
    assert throttled.status_code == 429
    assert "Too many run requests from you: try again in" in throttled.content.decode()
    # The same user's API triggers count in the same budget.
    api = client_for(throttled.wsgi_request.user)
    assert api.post(f"/api/reports/{report.slug}/run/").status_code == 429


# --- text: lone surrogates, NUL, length -------------------------------------------------


@pytest.mark.parametrize(
    ("given", "field", "message"),
    [
        ({"note": SURROGATE}, "parameters.note", "character 2 is a lone surrogate (\\ud800)"),
        ({"note": "\udfff"}, "parameters.note", "character 1 is a lone surrogate (\\udfff)"),
        ({"note": "x\x00"}, "parameters.note", "cannot contain the NUL character"),
        ({"note": "ok", SURROGATE: "x"}, "parameters.a\\ud800b", "no parameter 'a\\ud800b'"),
        ({"note": "ok", "n" * 100_000: 1}, f"parameters.{'n' * 100}", "no parameter 'nnn"),
    ],
)
def test_the_api_refuses_text_no_database_stores(runner, given, field, message):
    report = text_report()
    response = run_via_api(runner, report, given)
    assert message in first_error(response, field)
    assert not Run.objects.exists()


ADMIN_FORM = {
    "description": "",
    "data_source": "default",
    "schedule": "",
    "timezone": "UTC",
    "enabled": "on",
    "max_retries": "0",
    "notify_when": "failure",
    "output_format": "csv",
}


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ([{"name": "note", "type": "text", "label": SURROGATE}], "parameters[0].label: Text must"),
        ([{"name": "note", "type": "text", "default": SURROGATE}], "parameters[0].default: Text"),
        (
            [{"name": "note", "type": "choice", "choices": ["x", SURROGATE]}],
            "parameters[0].choices: Text must be valid Unicode",
        ),
        ([{"name": "n\ud800", "type": "text"}], "parameters[0].name: A parameter's name is"),
        ([{"name": "note", "type": "text", "\ud800": 1}], "parameters[0].\\ud800: Unknown key"),
        ([{"name": "note", "type": "text", "label": "x\x00"}], "parameters[0].label: Text cannot"),
        ([{"name": "note", "type": "text", "label": "x" * 201}], "at most 200 characters"),
    ],
)
def test_declarations_with_such_text_are_refused_in_the_api_and_the_admin(
    editor, admin_client, declared, message
):
    body = {"name": "Echo", "slug": "echo", "sql": "SELECT {{ note }} AS note"}
    response = post_json(editor, "/api/reports/", {**body, "parameters": declared})
    assert message in first_error(response, "parameters")
    form = {
        **ADMIN_FORM,
        **body,
        "parameters": json.dumps(declared),  # a JSON escape: the browser sends ASCII
    }
    page = admin_client.post("/admin/reports/report/add/", form)
    assert page.status_code == 200
    assert message.replace("'", "&#x27;") in page.content.decode()
    assert not Report.objects.exists()


@pytest.mark.parametrize("key", ["k\x00", "k\ud800"])
def test_an_idempotency_key_no_database_stores_is_refused(runner, key):
    report = text_report(declared=[{"name": "note", "type": "text", "default": "x"}])
    response = runner.post(f"/api/reports/{report.slug}/run/", HTTP_IDEMPOTENCY_KEY=key)
    assert "Text " in first_error(response, "Idempotency-Key")
    assert not Run.objects.exists()


def test_runreport_refuses_undecodable_arguments():
    # A terminal's bytes that are not UTF-8 reach Python as lone surrogates.
    text_report()
    with pytest.raises(CommandError, match=r"Parameter note: Text must be valid Unicode.*\\udcff"):
        call_command("runreport", "echo", "--param", "note=a\udcffb", stdout=StringIO())
    with pytest.raises(CommandError, match=r"No report with slug 'echo\\udcff'"):
        call_command("runreport", "echo\udcff", stdout=StringIO())
    with pytest.raises(CommandError, match=r"no parameter 'n\\udcff'"):
        call_command("runreport", "echo", "--param", "n\udcff=1", stdout=StringIO())
    assert not Run.objects.exists()


def test_a_backfill_refuses_such_text_too(runner):
    report = text_report(declared=[{"name": "note", "type": "text", "default": "x"}])
    body = {"start": "2026-11-01T00:00Z", "end": "2026-11-03T00:00Z"}
    response = backfill(runner, report, **body, parameters={"note": SURROGATE})
    assert "lone surrogate" in first_error(response, "parameters.note")
    assert not Run.objects.exists()


# --- decimals, and every value that passes reaches the database ---------------------------


@executes_reports
def test_a_tiny_decimal_goes_to_the_database_in_plain_notation(runner, editor):
    declared = [{"name": "rate", "type": "decimal", "label": "Rate", "default": "0.0000001"}]
    created = editor.post(
        "/api/reports/",
        {
            "name": "Rate",
            "slug": "rate",
            "sql": "SELECT {{ rate }} AS rate",
            "parameters": declared,
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert created.json()["parameters"][0]["default"] == "0.0000001"
    report = Report.objects.get()
    response = run_via_api(runner, report, {"rate": "-0.00000000000000000001"})
    assert response.status_code == 202, response.json()
    run = Run.objects.get()
    execute_run(run)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.parameters == {"rate": "-0.00000000000000000001"}
    if ON_POSTGRES:
        assert "('-0.00000000000000000001'::numeric)" in run.sql
        assert read_csv(run.output.path)[1] == ["-0.00000000000000000001"]
    else:  # SQLite's NUMERIC holds it as a double
        assert "CAST('-0.00000000000000000001' AS NUMERIC)" in run.sql
        assert read_csv(run.output.path)[1] == ["-1e-20"]
    assert params.json_value(params.Parameter("r", "decimal"), Decimal("1E-7")) == ("0.0000001")


@executes_reports
def test_the_extremes_that_pass_validation_reach_the_database(runner):
    declared = [
        {"name": "low", "type": "integer"},
        {"name": "high", "type": "integer"},
        {"name": "first", "type": "date"},
        {"name": "last", "type": "date"},
        {"name": "long", "type": "text"},
        {"name": "big", "type": "decimal"},
    ]
    sql = (
        "SELECT {{ low }} AS low, {{ high }} AS high, {{ first }} AS first, {{ last }} AS last, "
        "{{ long }} AS long, {{ big }} AS big, {{ interval_start }} AS s"
    )
    report = Report(name="Edges", slug="edges", sql=sql, parameters=declared, timezone="UTC")
    report.full_clean()
    report.save()
    long_text = "𝄞'\\" * 3333 + "x"
    given = {
        "low": str(-(2**63)),
        "high": 2**63 - 1,
        "first": "0001-01-01",
        "last": "9999-12-31",
        "long": long_text,
        "big": "9" * 50 + "." + "9" * 49,
        "interval_start": "0001-01-01T00:00:00Z",
        "interval_end": "0001-01-01T00:00:01Z",
    }
    response = run_via_api(runner, report, given)
    assert response.status_code == 202, response.json()
    run = Run.objects.get()
    execute_run(run)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    row = read_csv(run.output.path)[1]
    assert row[:5] == [str(-(2**63)), str(2**63 - 1), "0001-01-01", "9999-12-31", long_text]
    assert row[5] == given["big"] if ON_POSTGRES else float(row[5]) == 1e50
    assert row[6] == ("0001-01-01 00:00:00+00" if ON_POSTGRES else "0001-01-01 00:00:00")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (1e-07, "0.0000001"),  # a JSON number 0.0000001 reads as this float
        ("0.0000001", "0.0000001"),
        (1e20, "100000000000000000000"),
        (-0.5, "-0.5"),
        ("1E-7", "'1E-7' is not a decimal number such as 12.50 (no exponent)."),
        (float("inf"), "'Infinity' is not a decimal number"),
        (1e-300, "A decimal is at most 100 characters written out; this is 302."),
    ],
)
def test_decimals_are_taken_and_recorded_in_plain_notation(given, expected):
    rate = params.Parameter("rate", "decimal")
    try:
        recorded = params.json_value(rate, params.parse_value(rate, given, UTC))
    except params.ParameterError as error:
        recorded = error.message
    assert recorded.startswith(expected)
