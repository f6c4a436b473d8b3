"""The REST API: every endpoint, filter and permission, on both databases."""

import hashlib
import re
from datetime import UTC, datetime, timedelta
from datetime import timezone as dt_timezone
from pathlib import Path

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.utils import timezone
from rest_framework.throttling import ScopedRateThrottle

from reports.models import Report
from runs.models import Run, RunStatus, WorkerHeartbeat
from runs.services.domain.intervals import default_interval
from runs.services.domain.transitions import transition_run
from runs.services.runtime.leadership import acquire_lease
from runs.services.runtime.runner import run_report_now
from tests.api_helpers import client_for, make_user
from tests.conftest import enqueue_run, parse_csv_text, record_scheduled_fire

pytestmark = pytest.mark.django_db(databases="__all__")

NUMBERS_SQL = "SELECT 1 AS n UNION ALL SELECT 2 ORDER BY n"


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()


@pytest.fixture
def report():
    return Report.objects.create(
        name="Numbers", slug="numbers", sql=NUMBERS_SQL, schedule="0 6 * * mon-fri"
    )


@pytest.fixture
def viewer():
    return client_for(make_user("viewer", "view"))


@pytest.fixture
def runner():
    return client_for(make_user("runner", "run"))


@pytest.fixture
def staff():
    return client_for(make_user("staff", "editor", staff=True))


@pytest.fixture
def succeeded(report):
    return run_report_now(report)


# --- authentication and permissions ---------------------------------------------------


ENDPOINTS = [
    ("get", "/api/reports/"),
    ("get", "/api/reports/numbers/"),
    ("post", "/api/reports/numbers/run/"),
    ("get", "/api/reports/numbers/latest.csv"),
    ("get", "/api/runs/"),
    ("get", "/api/runs/1/"),
    ("get", "/api/runs/1/download/"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_anonymous_requests_get_401(report, method, path):
    response = getattr(client_for(), method)(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_a_wrong_token_gets_401_and_says_so(report):
    client = client_for()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = client.get("/api/reports/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_users_without_permissions_get_403(report, succeeded, method, path):
    response = getattr(client_for(make_user("nobody")), method)(path)
    assert response.status_code == 403


def test_viewers_read_but_cannot_run_or_write(report, succeeded, viewer):
    assert viewer.get("/api/reports/").status_code == 200
    assert viewer.get(f"/api/runs/{succeeded.pk}/download/").status_code == 200
    response = viewer.post("/api/reports/numbers/run/")
    assert response.status_code == 403
    assert "run_report" in response.json()["detail"]
    assert (
        viewer.post("/api/reports/", {"name": "x", "slug": "x", "sql": "SELECT 1"}).status_code
        == 403
    )
    assert viewer.delete("/api/reports/numbers/").status_code == 403
    assert Run.objects.count() == 1 and Report.objects.count() == 1


def test_session_login_works_too(report):
    user = make_user("browser", "view")
    client = client_for()
    client.force_login(user)
    assert client.get("/api/reports/").status_code == 200


def test_sql_is_shown_to_sql_viewers_only_not_for_being_staff(report, succeeded, viewer, staff):
    assert "sql" not in viewer.get("/api/reports/numbers/").json()
    assert "sql" not in viewer.get(f"/api/runs/{succeeded.pk}/").json()
    assert "sql" not in staff.get("/api/reports/numbers/").json()
    assert "sql" not in staff.get(f"/api/runs/{succeeded.pk}/").json()
    sql_viewer = client_for(make_user("analyst", "sql"))
    assert sql_viewer.get("/api/reports/numbers/").json()["sql"] == NUMBERS_SQL
    assert sql_viewer.get(f"/api/runs/{succeeded.pk}/").json()["sql"] == NUMBERS_SQL


# --- reports --------------------------------------------------------------------------


def test_report_list_shows_schedule_next_and_last_run(report, succeeded, viewer):
    report.next_run_at = timezone.now() + timedelta(hours=1)
    report.save()
    [item] = viewer.get("/api/reports/").json()
    assert item["slug"] == "numbers"
    assert item["schedule"] == "0 6 * * mon-fri"
    assert item["schedule_description"] == "At 06:00, Monday through Friday"
    assert item["next_run_at"] is not None
    assert item["last_run"]["id"] == succeeded.pk
    assert item["last_run"]["status"] == "succeeded"
    assert item["last_run"]["row_count"] == 2
    assert item["last_run"]["download_url"].endswith(f"/api/runs/{succeeded.pk}/download/")
    assert item["latest_csv_url"].endswith("/api/reports/numbers/latest.csv")


def test_report_list_query_count_does_not_grow_with_reports(viewer, django_assert_max_num_queries):
    for index in range(30):
        run_report_now(Report.objects.create(name=f"r{index}", slug=f"r{index}", sql="SELECT 1"))
    with django_assert_max_num_queries(6):
        assert len(viewer.get("/api/reports/").json()) == 30


def test_staff_create_update_and_delete_reports(staff):
    created = staff.post(
        "/api/reports/",
        {
            "name": "Orders",
            "slug": "orders",
            "sql": "SELECT 1",
            "schedule": "*/15 * * * *",
            "timezone": "Europe/Berlin",
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert created.json()["schedule_description"] == "Every 15 minutes"
    patched = staff.patch("/api/reports/orders/", {"enabled": False}, format="json")
    assert patched.status_code == 200 and patched.json()["enabled"] is False
    assert staff.delete("/api/reports/orders/").status_code == 204
    assert not Report.objects.filter(slug="orders").exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("schedule", "0 25 * * *", "Invalid schedule '0 25 * * *': hour: 25 is out of range 0-23."),
        ("timezone", "Mars/Olympus", "Unknown time zone 'Mars/Olympus'"),
        ("data_source", "nowhere", "Unknown data source 'nowhere'"),
        ("sql", "SELECT 1; DROP TABLE reports_report", "A report runs exactly one statement"),
        ("sql", "CREATE TABLE evil (a int)", "Reports can only read data"),
        ("sql", "SELECT * FROM nosuchtable", "The database rejects this SQL"),
        ("sql", "SELECT key FROM authtoken_token", "own tables (authtoken_token)"),
        ("slug", "not a slug", "letters, numbers, underscores or hyphens"),
        ("timeout_seconds", 2147483647, "less than or equal to 86400"),
        ("max_rows", 2**63 - 1, "less than or equal to 9223372036854775806"),
        ("max_retries", 1000, "less than or equal to 10"),
        ("alert_threshold", 2**63, "less than or equal to 9223372036854775806"),
    ],
)
def test_invalid_reports_get_400_with_field_errors(staff, field, value, message):
    body = {"name": "Bad", "slug": "bad", "sql": "SELECT 1", field: value}
    response = staff.post("/api/reports/", body, format="json")
    assert response.status_code == 400
    assert message in response.json()[field][0]
    assert not Report.objects.exists()


def test_the_api_runs_the_model_rules_the_admin_runs(staff):
    body = {"name": "Bad", "slug": "bad", "sql": "SELECT 1", "alert_condition": "rows_above"}
    response = staff.post("/api/reports/", body, format="json")
    assert response.status_code == 400
    assert response.json() == {"alert_threshold": ["Set N for this alert condition."]}
    assert not Report.objects.exists()


def test_an_update_is_checked_against_the_stored_report(report, staff):
    # Only alert_condition changes; the stored report has no threshold.
    response = staff.patch(
        "/api/reports/numbers/", {"alert_condition": "rows_below"}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {"alert_threshold": ["Set N for this alert condition."]}
    report.refresh_from_db()
    assert report.alert_condition == ""


def test_a_schedule_change_moves_the_next_run_at_once_and_other_edits_do_not(report, staff):
    created = staff.post(
        "/api/reports/",
        # next_run_at is the schedule's to say: a client's value is ignored.
        {
            "name": "Orders",
            "slug": "orders",
            "sql": "SELECT 1",
            "schedule": "0 6 * * *",
            "next_run_at": "2000-01-01T00:00:00Z",
        },
        format="json",
    )
    assert created.json()["next_run_at"].endswith("T06:00:00Z")
    assert Report.objects.get(slug="orders").next_run_at > timezone.now()
    patched = staff.patch("/api/reports/orders/", {"schedule": "45 7 * * *"}, format="json")
    assert patched.json()["next_run_at"].endswith("T07:45:00Z")
    # The worker moved it on meanwhile: an edit of something else keeps the worker's.
    moved_on = timezone.now().replace(hour=7, minute=45, second=0, microsecond=0) + timedelta(
        days=3
    )
    Report.objects.filter(slug="orders").update(next_run_at=moved_on)
    staff.patch("/api/reports/orders/", {"description": "by hand"}, format="json")
    assert Report.objects.get(slug="orders").next_run_at == moved_on
    staff.patch("/api/reports/orders/", {"enabled": False}, format="json")
    assert Report.objects.get(slug="orders").next_run_at is None


def test_an_invalid_update_changes_nothing(report, staff):
    response = staff.patch("/api/reports/numbers/", {"schedule": "every day"}, format="json")
    assert response.status_code == 400
    report.refresh_from_db()
    assert report.schedule == "0 6 * * mon-fri"


def test_unknown_report_is_404(viewer):
    response = viewer.get("/api/reports/nope/")
    assert response.status_code == 404
    assert response.json() == {"detail": "No Report matches the given query."}


# --- triggering -----------------------------------------------------------------------


def test_trigger_queues_a_run_and_points_to_it(report, runner):
    response = runner.post("/api/reports/numbers/run/")
    assert response.status_code == 202
    body = response.json()
    run = Run.objects.get()
    assert body["id"] == run.pk
    assert body["status"] == "queued" and body["trigger"] == "api"
    assert body["requested_by"] == "runner"
    assert response["Location"].endswith(f"/api/runs/{run.pk}/")


def test_the_same_idempotency_key_returns_the_same_run(report, runner):
    first = runner.post("/api/reports/numbers/run/", HTTP_IDEMPOTENCY_KEY="abc")
    again = runner.post("/api/reports/numbers/run/", HTTP_IDEMPOTENCY_KEY="abc")
    other = runner.post("/api/reports/numbers/run/", HTTP_IDEMPOTENCY_KEY="def")
    assert first.status_code == again.status_code == other.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert other.json()["id"] != first.json()["id"]
    Report.objects.create(name="Other", slug="other", sql="SELECT 1")
    elsewhere = runner.post("/api/reports/other/run/", HTTP_IDEMPOTENCY_KEY="abc")
    assert elsewhere.json()["id"] not in (first.json()["id"], other.json()["id"])
    assert Run.objects.count() == 3


def test_an_idempotency_key_expires_after_24_hours(report, runner):
    first = runner.post("/api/reports/numbers/run/", HTTP_IDEMPOTENCY_KEY="daily")
    Run.objects.update(queued_at=timezone.now() - timedelta(hours=25))
    again = runner.post("/api/reports/numbers/run/", HTTP_IDEMPOTENCY_KEY="daily")
    assert again.json()["id"] != first.json()["id"]
    assert Run.objects.count() == 2


def test_an_overlong_idempotency_key_is_refused(report, runner):
    response = runner.post("/api/reports/numbers/run/", HTTP_IDEMPOTENCY_KEY="k" * 256)
    assert response.status_code == 400
    assert response.json() == {"Idempotency-Key": ["Use at most 255 characters."]}
    assert not Run.objects.exists()


def test_triggers_are_throttled(report, runner, monkeypatch):
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"report-runs": "2/minute"})
    codes = [runner.post("/api/reports/numbers/run/").status_code for _ in range(3)]
    assert codes == [202, 202, 429]
    assert Run.objects.count() == 2


# --- runs -----------------------------------------------------------------------------


def iso_z(moment):
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def make_runs(report, count, start):
    runs = [enqueue_run(report, "api") for _ in range(count)]
    for index, run in enumerate(runs):
        Run.objects.filter(pk=run.pk).update(queued_at=start + timedelta(minutes=index))
    return runs


def test_runs_are_listed_newest_first_with_every_field(report, succeeded, viewer):
    older = make_runs(report, 2, timezone.now() - timedelta(days=1))
    body = viewer.get("/api/runs/").json()
    assert [item["id"] for item in body["results"]] == [succeeded.pk, older[1].pk, older[0].pk]
    detail = viewer.get(f"/api/runs/{succeeded.pk}/").json()
    assert detail["status"] == "succeeded"
    assert detail["row_count"] == 2
    assert detail["output_bytes"] == Path(succeeded.output.path).stat().st_size
    assert detail["output_sha256"] == succeeded.output_sha256
    assert detail["worker"] == succeeded.worker
    assert detail["duration_seconds"] >= 0
    assert {"scheduled_for", "started_at", "finished_at", "error", "attempt"} <= set(detail)
    # Not a fire: the schedule's latest complete interval when the run was queued.
    start, end = default_interval(report, succeeded.queued_at)
    assert (detail["interval_start"], detail["interval_end"]) == (iso_z(start), iso_z(end))


def test_a_scheduled_run_shows_its_data_interval(report, viewer):
    fire = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)  # a Monday
    run = record_scheduled_fire(report.pk, fire)
    detail = viewer.get(f"/api/runs/{run.pk}/").json()
    assert detail["scheduled_for"] == detail["interval_end"] == "2026-11-30T06:00:00Z"
    assert detail["interval_start"] == "2026-11-27T06:00:00Z"  # the Friday before


def test_run_filters(report, succeeded, viewer):
    other = Report.objects.create(name="Other", slug="other", sql="SELECT * FROM missing")
    failed = run_report_now(other)
    queued = enqueue_run(other, "manual")

    def ids(query):
        response = viewer.get(f"/api/runs/?{query}")
        assert response.status_code == 200, response.json()
        return {item["id"] for item in response.json()["results"]}

    assert ids("report=numbers") == {succeeded.pk}
    assert ids("report=other") == {failed.pk, queued.pk}
    assert ids("status=failed") == {failed.pk}
    assert ids("trigger=manual") == {queued.pk}
    cutoff = timezone.now() + timedelta(seconds=1)
    Run.objects.filter(pk=queued.pk).update(queued_at=cutoff + timedelta(minutes=1))
    stamp = cutoff.isoformat().replace("+00:00", "Z")
    assert ids(f"created_after={stamp}") == {queued.pk}
    assert ids(f"created_before={stamp}") == {succeeded.pk, failed.pk}


def test_time_filters_take_any_offset_iso_8601_allows(report, succeeded, viewer):
    # PostgreSQL itself refuses offsets beyond ±15:59; the filter compares in UTC.
    queued_at = succeeded.queued_at.astimezone(UTC)
    just_before = (queued_at - timedelta(seconds=1)).astimezone(
        dt_timezone(-timedelta(hours=21, minutes=58))
    )
    for query, expected in [
        (f"created_after={just_before.isoformat()}", [succeeded.pk]),
        (f"created_before={just_before.isoformat()}", []),
        ("created_before=7542-06-13T20:04:27-21:58", [succeeded.pk]),
    ]:
        response = viewer.get("/api/runs/", {query.split("=")[0]: query.split("=", 1)[1]})
        assert response.status_code == 200, response.content
        assert [run["id"] for run in response.json()["results"]] == expected
    response = viewer.get("/api/runs/", {"created_after": "9999-12-31T23:00:00-20:00"})
    assert response.status_code == 400
    assert response.json() == {"created_after": ["Out of range."]}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=bogus", "status"),
        ("created_after=yesterday", "created_after"),
    ],
)
def test_invalid_filters_get_400(viewer, query, field):
    response = viewer.get(f"/api/runs/?{query}")
    assert response.status_code == 400
    assert field in response.json()


def test_cursor_pages_stay_stable_while_new_runs_arrive(report, viewer):
    make_runs(report, 5, timezone.now() - timedelta(hours=1))
    first = viewer.get("/api/runs/?page_size=2").json()
    make_runs(report, 3, timezone.now())  # newer than everything listed
    second = viewer.get(first["next"]).json()
    third = viewer.get(second["next"]).json()
    seen = [item["id"] for page in (first, second, third) for item in page["results"]]
    expected = list(
        Run.objects.filter(queued_at__lt=timezone.now() - timedelta(minutes=30))
        .order_by("-queued_at", "-id")
        .values_list("pk", flat=True)
    )
    assert seen == expected
    assert third["next"] is None


def test_unknown_runs_are_404(viewer):
    assert viewer.get("/api/runs/999999/").status_code == 404
    assert viewer.get("/api/runs/999999/download/").status_code == 404
    assert viewer.get("/api/runs/abc/download/").status_code == 404
    assert viewer.get("/api/runs/..%2F..%2Fetc%2Fpasswd/download/").status_code == 404


# --- downloads ------------------------------------------------------------------------


def test_download_streams_the_csv_with_headers(report, succeeded, viewer):
    response = viewer.get(f"/api/runs/{succeeded.pk}/download/", HTTP_ACCEPT="text/csv")
    assert response.status_code == 200
    content = b"".join(response.streaming_content)
    assert parse_csv_text(content.decode()) == [["n"], ["1"], ["2"]]
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Length"] == str(len(content))
    assert response["ETag"] == f'"{hashlib.sha256(content).hexdigest()}"'
    disposition = response["Content-Disposition"]
    assert disposition.startswith('attachment; filename="numbers_')
    assert disposition.endswith(f'_run{succeeded.pk}.csv"')


def test_download_answers_304_to_a_matching_etag(succeeded, viewer):
    etag = f'"{succeeded.output_sha256}"'
    response = viewer.get(f"/api/runs/{succeeded.pk}/download/", HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 304
    assert response["ETag"] == etag
    changed = viewer.get(f"/api/runs/{succeeded.pk}/download/", HTTP_IF_NONE_MATCH='"old"')
    assert changed.status_code == 200


@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [
        ('W/"{sha}"', 304),  # If-None-Match compares weakly (RFC 9110 13.1.2)
        ('"old", W/"{sha}"', 304),
        ('"old",W/"other", "{sha}"', 304),
        ("*", 304),
        ('W/"old", "other"', 200),
        ('W/"{sha}x"', 200),
        ("{sha}", 200),  # not an entity tag: unquoted
        ('w/"{sha}"', 200),  # the weak prefix is case-sensitive
        ('"' + "a" * 10_000 + '"', 200),
    ],
)
def test_if_none_match_uses_the_weak_comparison(succeeded, viewer, if_none_match, status):
    header = if_none_match.replace("{sha}", succeeded.output_sha256)
    response = viewer.get(f"/api/runs/{succeeded.pk}/download/", HTTP_IF_NONE_MATCH=header)
    assert response.status_code == status
    assert response["ETag"] == f'"{succeeded.output_sha256}"'
    if status == 304:
        assert response.content == b""
    latest = viewer.get("/api/reports/numbers/latest.csv", HTTP_IF_NONE_MATCH=header)
    assert latest.status_code == status


def test_download_is_409_while_there_is_no_output(report, viewer):
    queued = enqueue_run(report, "api")
    response = viewer.get(f"/api/runs/{queued.pk}/download/")
    assert response.status_code == 409
    assert response.json() == {"detail": f"Run {queued.pk} is queued; its output is not ready yet."}
    transition_run(queued, RunStatus.FAILED, error="boom")
    response = viewer.get(f"/api/runs/{queued.pk}/download/")
    assert response.json() == {"detail": f"Run {queued.pk} failed and has no output."}


def test_download_of_a_missing_file_is_409_and_changes_nothing(succeeded, viewer):
    Path(succeeded.output.path).unlink()
    response = viewer.get(f"/api/runs/{succeeded.pk}/download/")
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"The output file of run {succeeded.pk} is missing from storage."
    }
    succeeded.refresh_from_db()
    assert succeeded.status == RunStatus.SUCCEEDED


def test_errors_come_as_csv_to_clients_that_only_accept_csv(report, viewer):
    queued = enqueue_run(report, "api")
    response = viewer.get(f"/api/runs/{queued.pk}/download/", HTTP_ACCEPT="text/csv")
    assert response.status_code == 409
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert parse_csv_text(response.content.decode())[0] == ["detail"]


def test_latest_csv_is_the_newest_successful_output(report, viewer):
    response = viewer.get("/api/reports/numbers/latest.csv")
    assert response.status_code == 404
    assert response.json() == {
        "detail": "Report 'numbers' has no successful run with an output yet."
    }
    good = run_report_now(report)
    report.sql = "SELECT * FROM missing_table"
    report.save()
    run_report_now(report)  # newer, failed
    response = viewer.get("/api/reports/numbers/latest.csv")
    assert response.status_code == 200
    assert response["ETag"] == f'"{good.output_sha256}"'
    assert parse_csv_text(b"".join(response.streaming_content).decode()) == [["n"], ["1"], ["2"]]


# --- schema, docs, health ---------------------------------------------------------------


def test_schema_is_valid_and_needs_a_login_like_the_rest_of_the_api(capsys, viewer):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")
    anonymous = client_for().get("/api/schema/")
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"] == "Token"
    assert b"Authentication credentials were not provided." in anonymous.content
    wrong = client_for()
    wrong.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert wrong.get("/api/schema/").status_code == 401
    response = viewer.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {
        "/api/reports/",
        "/api/reports/{slug}/",
        "/api/reports/{slug}/run/",
        "/api/reports/{slug}/latest.csv",
        "/api/runs/",
        "/api/runs/{id}/",
        "/api/runs/{id}/download/",
    } <= set(paths)
    assert "409" in paths["/api/runs/{id}/download/"]["get"]["responses"]


def test_swagger_ui_sends_anonymous_people_to_the_admin_login(client):
    response = client.get("/api/docs/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/api/docs/"
    # A token is for API clients; the page itself is for people with a session.
    token_only = client_for(make_user("api-only", "view")).get("/api/docs/")
    assert token_only.status_code == 302


def test_swagger_ui_and_its_schema_work_with_the_admin_session(client):
    client.force_login(make_user("ops", "view", staff=True))
    assert client.get("/api/schema/").status_code == 200
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "drf_spectacular_sidecar/swagger-ui-dist" in html
    external = re.findall(r'(?:src|href)="((?:https?:)?//[^"]+)"', html)
    assert external == []  # no CDN: every asset is served by the service itself


def test_healthz_needs_a_live_worker_and_tells_no_secrets(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] == "ok"
    acquire_lease("w:1", 60)  # a scheduling worker (tests/test_leadership.py)
    WorkerHeartbeat.objects.create(
        name="w:1",
        host="w",
        pid=1,
        version="x",
        started_at=timezone.now(),
        last_seen_at=timezone.now() - timedelta(seconds=5),
    )
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["workers"]["workers_alive"] == 1
    assert 4 <= body["workers"]["newest_heartbeat_age_seconds"] <= 30
    assert "postgres" not in response.content.decode() and "sqlite" not in response.content.decode()


def test_report_and_summary_keys_match_the_documented_fields(report, succeeded, staff, viewer):
    from reports.serializers import ReportSerializer
    from runs.serializers import RunSummarySerializer

    sql_viewer = client_for(make_user("analyst", "sql"))
    full = sql_viewer.get("/api/reports/numbers/").json()
    assert list(full) == ReportSerializer.Meta.fields  # same names, same order
    assert set(viewer.get("/api/reports/numbers/").json()) == set(full) - {"sql"}
    assert set(staff.get("/api/reports/numbers/").json()) == set(full) - {"sql"}
    assert list(full["last_run"]) == RunSummarySerializer.Meta.fields
    assert sql_viewer.get("/api/reports/").json() == [full]


def _drf_fields_representation(report, user):
    """``report`` as DRF's own fields write ReportSerializer's and RunSummarySerializer's
    fields, with what ``user`` may not see left out or redacted: what the hand-written
    writer of the reports list has to match, key for key and in order."""
    from django.test import RequestFactory
    from rest_framework import serializers

    from reports.serializers import ReportSerializer
    from reports.targets import redacted_emails, redacted_targets, redacted_webhooks
    from reportsvc.web.permissions import visibility_of
    from runs.serializers import RunSummarySerializer

    request = RequestFactory().get("/api/reports/")
    request.user = user
    context = {"request": request}
    data = serializers.ModelSerializer.to_representation(ReportSerializer(context=context), report)
    run = report.runs.order_by("-queued_at", "-id").first()
    data["last_run"] = run and serializers.ModelSerializer.to_representation(
        RunSummarySerializer(context=context), run
    )
    visibility = visibility_of(request)
    if not visibility.sql:
        del data["sql"]
    if not visibility.targets:
        data["notify_emails"] = redacted_emails(report.notify_emails)
        data["notify_webhooks"] = redacted_webhooks(report.notify_webhooks)
        data["targets"] = redacted_targets(report.targets)
    return data


@pytest.mark.parametrize("zone", ["UTC", "America/New_York"])
def test_the_reports_list_writes_what_drfs_own_fields_write(zone, settings):
    """The list writes each report by hand, for speed (bench/api.py): for reports of
    every kind, each user sees in the list, in its pages and in the report's own
    response what DRF's fields would write, in the request's time zone too."""
    settings.TIME_ZONE = zone
    plain = Report.objects.create(
        name="A plain one", slug="plain", sql=NUMBERS_SQL, schedule="0 6 * * mon-fri"
    )
    run_report_now(plain)
    busy = Report.objects.create(
        name="B with everything",
        slug="everything",
        description="Parameters, targets, an expectation, XLSX.",
        sql="SELECT {{ word }} AS w",
        parameters=[
            {"name": "word", "type": "text", "default": "hello"},
            {"name": "size", "type": "choice", "choices": ["s", "m"], "default": "m"},
        ],
        schedule="@daily",
        timezone="Europe/Berlin",
        expect_success_within=timedelta(hours=6, microseconds=5),
        notify_repeat_after=timedelta(days=1, minutes=30),
        notify_emails="alice@example.com, bob@corp.example",
        notify_webhooks="https://hooks.example/secret-path?token=abc",
        output_format="xlsx",
    )
    failed = enqueue_run(busy, "api")
    transition_run(failed, RunStatus.RUNNING, started_at=timezone.now())
    transition_run(failed, RunStatus.FAILED, error="boom")
    never = Report.objects.create(
        name="C never run", slug="never", sql=NUMBERS_SQL, schedule="", enabled=False
    )
    waiting = Report.objects.create(name="D waiting", slug="waiting", sql=NUMBERS_SQL)
    enqueue_run(waiting, "manual")
    reports = [plain, busy, never, waiting]
    superuser = make_user("root")
    superuser.is_superuser = True
    superuser.save()
    for user in [
        make_user("reader", "view"),
        make_user("analyst", "sql"),
        make_user("editor", "editor"),
        superuser,
    ]:
        expected = [
            _drf_fields_representation(Report.objects.get(pk=report.pk), user) for report in reports
        ]
        client = client_for(user)
        listed = client.get("/api/reports/").json()
        assert listed == expected, user.username
        assert [list(item) for item in listed] == [list(item) for item in expected]
        paged = client.get("/api/reports/?page_size=3").json()
        paged += client.get("/api/reports/?page_size=3&cursor=" + _next_cursor(client)).json()
        assert paged == expected
        for item in expected:
            assert client.get(f"/api/reports/{item['slug']}/").json() == item
    assert expected[0]["created_at"].endswith("Z") == (zone == "UTC")
    assert expected[1]["expect_success_within"] == "06:00:00.000005"
    assert expected[1]["last_run"]["status"] == "failed"
    assert expected[0]["last_run"]["download_url"] is not None
    assert expected[2]["last_run"] is None and expected[3]["last_run"]["finished_at"] is None


def _next_cursor(client):
    from urllib.parse import parse_qs, urlsplit

    link = client.get("/api/reports/?page_size=3")["Link"]
    return parse_qs(urlsplit(link.split(">", 1)[0].lstrip("<")).query)["cursor"][0]
