"""The Django admin as the ops UI: lists, filters, run-now, report and run pages."""

import html as html_module
import json
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from reports.models import Report
from reportsvc.web.display import moment
from runs.models import Run, RunStatus, SchedulerLease, WorkerHeartbeat
from runs.selectors import latest_successful_run
from runs.services.domain.transitions import transition_run
from runs.services.runtime.leadership import acquire_lease
from runs.services.runtime.runner import run_report_now
from tests.api_helpers import client_for, make_user
from tests.conftest import ON_POSTGRES, enqueue_run, execute_run, record_scheduled_fire

pytestmark = pytest.mark.django_db(databases="__all__")

TRICKY_SQL = (
    "SELECT 'say \"hi\", then leave' AS quote, 'line one' || char(10) || 'line two' AS lines"
)


@pytest.fixture
def admin_client(client):
    user = make_user("ops", staff=True)
    user.is_superuser = True
    user.save()
    client.force_login(user)
    return client


def staff_client(client, *codenames):
    user = make_user("staff-limited", staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return client


@pytest.fixture
def reports():
    daily = Report.objects.create(
        name="Daily revenue",
        slug="daily",
        sql="SELECT 1 AS n",
        schedule="0 6 * * mon-fri",
        timezone="Europe/Berlin",
    )
    broken = Report.objects.create(name="Broken", slug="broken", sql="SELECT * FROM nope")
    run_report_now(daily)
    run_report_now(broken)
    daily.next_run_at = timezone.now() + timedelta(hours=3)
    daily.save()
    return daily, broken


def test_reports_list_shows_schedule_next_and_last_run(admin_client, reports):
    daily, _ = reports
    html = admin_client.get("/admin/reports/report/").content.decode()
    assert "At 06:00, Monday through Friday (Europe/Berlin)" in html
    assert "<code>0 6 * * mon-fri</code>" in html
    assert 'class="rs-badge rs-succeeded"' in html and 'class="rs-badge rs-failed"' in html
    assert "manual only" in html
    success = daily.runs.get()
    assert f'href="/api/runs/{success.pk}/download/"' in html


@pytest.mark.parametrize(
    ("query", "shown", "hidden"),
    [
        ("last_status=failed", "Broken", "Daily revenue"),
        ("last_status=succeeded", "Daily revenue", "Broken"),
        ("q=nope", "Broken", "Daily revenue"),  # search in the SQL text
        ("enabled__exact=1&q=daily", "Daily revenue", "Broken"),
    ],
)
def test_reports_list_filters_and_search(admin_client, reports, query, shown, hidden):
    html = admin_client.get(f"/admin/reports/report/?{query}").content.decode()
    assert f">{shown}</a>" in html
    assert f">{hidden}</a>" not in html


def test_run_now_action_queues_runs_and_links_them(admin_client, reports):
    daily, broken = reports
    response = admin_client.post(
        "/admin/reports/report/",
        {"action": "run_now", "_selected_action": [daily.pk, broken.pk]},
        follow=True,
    )
    queued = Run.objects.filter(status=RunStatus.QUEUED, trigger="manual")
    assert queued.count() == 2
    html = response.content.decode()
    for run in queued:
        assert f'<a href="/admin/runs/run/{run.pk}/change/">run {run.pk}</a>' in html


def test_run_now_button_queues_a_run(admin_client, reports):
    daily, _ = reports
    page = admin_client.get(f"/admin/reports/report/{daily.pk}/change/").content.decode()
    assert 'id="run-now"' in page
    response = admin_client.post(f"/admin/reports/report/{daily.pk}/run/", follow=True)
    run = Run.objects.get(report=daily, status=RunStatus.QUEUED)
    assert run.requested_by.username == "ops"
    assert f'Queued <a href="/admin/runs/run/{run.pk}/change/">run {run.pk}</a>' in (
        response.content.decode()
    )


def test_run_now_needs_the_run_permission(client, reports):
    daily, _ = reports
    viewer = staff_client(client, "view_report", "view_run")
    page = viewer.get(f"/admin/reports/report/{daily.pk}/change/").content.decode()
    assert 'id="run-now"' not in page
    assert 'name="_save"' not in page  # read-only without change_report
    listing = viewer.get("/admin/reports/report/").content.decode()
    assert "run_now" not in listing
    response = viewer.post(f"/admin/reports/report/{daily.pk}/run/", follow=True)
    assert "You are not allowed to run reports." in response.content.decode()
    assert not Run.objects.filter(status=RunStatus.QUEUED).exists()


def test_runner_staff_see_the_controls(client, reports):
    daily, _ = reports
    runner = staff_client(client, "view_report", "run_report", "view_run")
    page = runner.get(f"/admin/reports/report/{daily.pk}/change/").content.decode()
    assert 'id="run-now"' in page


def test_report_page_shows_next_fires_and_recent_runs(admin_client, reports):
    daily, _ = reports
    page = admin_client.get(f"/admin/reports/report/{daily.pk}/change/").content.decode()
    assert (page.count("<li>") >= 5 and "CET" in page) or "CEST" in page
    assert 'id="recent-runs"' in page
    assert f'href="/admin/runs/run/{daily.runs.get().pk}/change/"' in page
    assert 'class="rs-sql"' in page  # monospace SQL box


def form_data(**changes):
    data = {
        "name": "Orders",
        "slug": "orders",
        "description": "",
        "sql": "SELECT 1",
        "data_source": "default",
        "schedule": "",
        "timezone": "UTC",
        "enabled": "on",
        "timeout_seconds": "",
        "max_rows": "",
        "max_retries": "0",
        "retention_days": "",
        "targets": "[]",
        "notify_emails": "",
        "notify_webhooks": "",
        "notify_when": "failure",
        "inline_rows": "0",
        "alert_condition": "",
        "alert_threshold": "",
        "output_format": "csv",
    }
    return {**data, **changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sql": "SELECT * FROM no_such_table"}, "The database rejects this SQL:"),
        ({"sql": "SELECT 1 FROM WHERE"}, "syntax error"),
        ({"schedule": "61 * * * *"}, "minute: 61 is out of range 0-59"),
        ({"timezone": "Nowhere/City"}, "Unknown time zone"),
        ({"sql": "CREATE TABLE evil (a int)"}, "Reports can only read data"),
        ({"sql": "SELECT * FROM authtoken_token"}, "own tables (authtoken_token)"),
    ],
)
def test_invalid_reports_are_refused_inline(admin_client, changes, message):
    response = admin_client.post("/admin/reports/report/add/", form_data(**changes))
    assert response.status_code == 200  # the form again, with errors
    assert message in response.content.decode()
    assert not Report.objects.exists()


def test_a_valid_report_saves(admin_client):
    response = admin_client.post("/admin/reports/report/add/", form_data(schedule="*/5 * * * *"))
    assert response.status_code == 302
    assert Report.objects.get().schedule == "*/5 * * * *"


def test_saving_a_schedule_in_the_admin_moves_the_next_run_at_once(admin_client):
    admin_client.post("/admin/reports/report/add/", form_data(schedule="0 6 * * *"))
    report = Report.objects.get()
    assert (report.next_run_at.hour, report.next_run_at.minute) == (6, 0)
    url = f"/admin/reports/report/{report.pk}/change/"
    response = admin_client.post(url, form_data(schedule="45 7 * * *"))
    assert response.status_code == 302
    report.refresh_from_db()
    assert (report.next_run_at.hour, report.next_run_at.minute) == (7, 45)
    admin_client.post(url, form_data(schedule="45 7 * * *", enabled=""))
    report.refresh_from_db()
    assert report.next_run_at is None


def test_run_page_shows_the_data_interval(admin_client):
    report = Report.objects.create(
        name="Hourly", slug="hourly", sql="SELECT 1", schedule="0 * * * *"
    )
    fire = timezone.now().replace(minute=0, second=0, microsecond=0)
    run = record_scheduled_fire(report.pk, fire)
    page = admin_client.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert "Interval start:" in page and "Interval end:" in page
    assert run.interval_start == fire - timedelta(hours=1) and run.interval_end == fire


def test_runs_list_filters_and_badges(admin_client, reports):
    html = admin_client.get("/admin/runs/run/?status__exact=failed").content.decode()
    assert "rs-badge rs-failed" in html and "rs-badge rs-succeeded" not in html
    html = admin_client.get("/admin/runs/run/?trigger__exact=cli").content.decode()
    assert html.count('class="rs-badge') == 2


def test_run_page_previews_quotes_and_newlines(admin_client):
    sql = TRICKY_SQL.replace("char(10)", "chr(10)") if ON_POSTGRES else TRICKY_SQL
    report = Report.objects.create(name="Tricky", slug="tricky", sql=sql)
    run = run_report_now(report)
    assert run.status == RunStatus.SUCCEEDED, run.error
    page = admin_client.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert 'id="preview-table"' in page
    assert "<td>say &quot;hi&quot;, then leave</td>" in page
    assert "<td>line one\nline two</td>" in page
    assert f'href="/api/runs/{run.pk}/download/"' in page


def test_run_page_preview_is_limited_to_50_rows(admin_client):
    report = Report.objects.create(
        name="Many",
        slug="many",
        sql="WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 500) "
        "SELECT x FROM n",
    )
    run = run_report_now(report)
    page = admin_client.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert "first 50 rows (more in the file)" in page
    assert "<td>50</td>" in page and "<td>51</td>" not in page


def test_run_page_of_an_empty_result_and_of_a_failure(admin_client, reports):
    empty = run_report_now(
        Report.objects.create(name="E", slug="e", sql="SELECT 1 AS n WHERE 1 = 0")
    )
    page = admin_client.get(f"/admin/runs/run/{empty.pk}/change/").content.decode()
    assert "No rows (header only)." in page
    _, broken = reports
    failed = broken.runs.get()
    page = admin_client.get(f"/admin/runs/run/{failed.pk}/change/").content.decode()
    assert '<pre class="rs-error">' in page and "nope" in page
    assert "This run has no output file." in page


def test_runs_are_never_editable_and_only_superusers_delete(client, reports):
    daily, _ = reports
    run = daily.runs.get()
    staff = staff_client(client, "view_report", "view_run", "change_run", "delete_run")
    page = staff.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert 'name="_save"' not in page
    assert staff.post(f"/admin/runs/run/{run.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Run.objects.filter(pk=run.pk).exists()


def test_admin_index_shows_worker_status(admin_client, reports):
    enqueue_run(reports[0], "manual")
    for name in ("box:42", "box:7"):
        WorkerHeartbeat.objects.create(
            name=name,
            host="box",
            pid=int(name.split(":")[1]),
            version="1",
            started_at=timezone.now(),
            last_seen_at=timezone.now(),
        )
    # box:7 led until it stopped renewing; box:42 holds the lease now.
    acquire_lease("box:7", 60)
    SchedulerLease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    acquire_lease("box:42", 60)
    html = admin_client.get("/admin/").content.decode()
    assert 'id="worker-status"' in html
    assert '<th scope="row">Queued runs</th><td>1</td>' in html
    assert 'box:42 <span class="rs-badge rs-running">scheduler</span>' in html
    assert "box:7 <span" not in html
    assert re.search(r'id="scheduler-status"><th scope="row">Scheduler</th>\s*<td>box:42<', html)
    # The broken report failed today: the count links to the last 24 hours' failures.
    assert '?status__exact=failed&amp;finished=24h">1</a>' in html
    beats = admin_client.get("/admin/runs/workerheartbeat/").content.decode()
    assert beats.count('alt="True"') == 1  # the Schedules column: box:42 only

    # No holder for longer than the lease: the panel says so, and why.
    SchedulerLease.objects.update(expires_at=timezone.now() - timedelta(seconds=40))
    html = admin_client.get("/admin/").content.decode()
    assert '<span class="rs-badge rs-failed">not scheduling</span> No worker has held' in html
    assert "scheduler</span>" not in html


def failed_at(report, finished_at, error):
    run = enqueue_run(report, "manual")
    transition_run(run, RunStatus.FAILED, error=error, finished_at=finished_at)
    return run


def test_admin_index_lists_the_last_24_hours_failures_and_links_to_just_those(
    admin_client, reports
):
    _, broken = reports
    now = timezone.now()
    recent = failed_at(
        broken,
        now - timedelta(hours=23),
        '\nrelation "orders" does not exist\nLINE 1: SELECT * FROM orders',
    )
    old = failed_at(broken, now - timedelta(hours=25), "an old failure, out of the window")
    html = admin_client.get("/admin/").content.decode()
    panel = html[html.index('id="recent-failures"') : html.index('id="recent-failures"') + 4000]
    panel = panel[: panel.index("</table>")]
    assert "Failed in the last 24 hours" in panel
    newest, older = broken.runs.filter(status="failed").exclude(pk=old.pk).order_by("-finished_at")
    assert panel.index(f'/admin/runs/run/{newest.pk}/change/">Broken</a>') < panel.index(
        f'/admin/runs/run/{recent.pk}/change/">Broken</a>'
    )
    assert "relation &quot;orders&quot; does not exist" in panel and "LINE 1" not in panel
    other_reason = newest.error.splitlines()[0]  # each database words it its own way
    assert "nope" in other_reason and html_module.escape(other_reason) in panel
    assert "an old failure" not in html
    assert '?status__exact=failed&amp;finished=24h">2</a>' in html
    listed = admin_client.get("/admin/runs/run/?status__exact=failed&finished=24h").content
    listed = listed.decode()
    assert f"/admin/runs/run/{recent.pk}/change/" in listed
    assert f"/admin/runs/run/{older.pk}/change/" in listed
    assert f"/admin/runs/run/{old.pk}/change/" not in listed
    everything = admin_client.get("/admin/runs/run/?status__exact=failed").content.decode()
    assert f"/admin/runs/run/{old.pk}/change/" in everything


def test_the_index_lists_at_most_ten_failures_and_links_to_the_rest(admin_client, reports):
    _, broken = reports
    for minutes in range(12):
        failed_at(broken, timezone.now() - timedelta(minutes=minutes), f"failure {minutes}")
    html = admin_client.get("/admin/").content.decode()
    panel = html[html.index('id="recent-failures"') :]
    panel = panel[: panel.index("</table>")]
    assert panel.count('<td class="rs-failure-reason">') == 10
    assert "failure 0<" in panel and "failure 11<" not in panel
    assert "All 13 failed runs of the last 24 hours</a>" in panel


def test_the_index_shows_failures_as_each_user_may_see_them(client, reports):
    _, broken = reports
    failed_at(broken, timezone.now(), "LINE 1: SELECT secret_column FROM t\n")
    staff_client(client, "view_run")
    html = client.get("/admin/").content.decode()
    assert 'id="recent-failures"' in html and "secret_column" not in html
    # Without runs.view_run: the count, no list, no link to pages they cannot open.
    viewer = make_user("report-viewer", staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_report"))
    staff = Client()
    staff.force_login(viewer)
    html = staff.get("/admin/").content.decode()
    assert 'id="recent-failures"' not in html and "finished=24h" not in html
    assert '<th scope="row">Failed (24 h)</th>\n        <td>2</td>' in html


def test_a_failed_runs_page_shows_the_error_first_above_the_timings(admin_client, reports):
    daily, broken = reports
    failed = broken.runs.get()
    page = admin_client.get(f"/admin/runs/run/{failed.pk}/change/").content.decode()
    assert (
        page.index('<pre class="rs-error">') < page.index("Queued at") < page.index("SQL executed")
    )
    assert page.index("Why it failed") < page.index("Report version")
    succeeded = daily.runs.get()
    page = admin_client.get(f"/admin/runs/run/{succeeded.pk}/change/").content.decode()
    assert "Why it failed" not in page and page.index("Queued at") < page.index("Error")


def test_admin_index_keeps_recent_actions_in_the_sidebar_and_hides_scheduler_internals(
    admin_client,
):
    html = admin_client.get("/admin/").content.decode()
    main = html.index('<div id="content-main">')
    related = html.index('<div id="content-related">')
    assert main < html.index('id="worker-status"') < related  # heads the main column
    assert related < html.index('id="recent-actions-module"')
    # django-apscheduler's job store is internal: no Add/Change links to it.
    assert "Django job" not in html and "django_apscheduler" not in html
    for path in (
        "/admin/django_apscheduler/djangojob/",
        "/admin/django_apscheduler/djangojob/add/",
    ):
        assert admin_client.get(path).status_code == 404


def test_runs_are_named_after_their_report(admin_client, reports):
    daily, _ = reports
    run = daily.runs.get()
    assert str(run) == f"Run {run.pk} of Daily revenue (succeeded)"
    page = admin_client.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert (
        f"<title>Run {run.pk} of Daily revenue (succeeded) | View run | reportsvc</title>" in page
    )
    assert f"of {daily.pk} (" not in page


def failed_run(report, error):
    run = enqueue_run(report, "manual")
    transition_run(run, RunStatus.FAILED, error=error)
    return run


def test_runs_list_shows_the_first_line_of_a_failure(admin_client, reports):
    daily, _ = reports
    failed_run(daily, '\n  relation "orders" does not exist\nLINE 1: SELECT * FROM orders\n')
    failed_run(daily, "<script>alert(1)</script> " + "x" * 10_000)
    html = admin_client.get("/admin/runs/run/").content.decode()
    assert ">relation &quot;orders&quot; does not exist</span>" in html
    assert "LINE 1" not in html
    assert "<script>alert(1)" not in html
    shown = re.search(
        r'class="rs-error-line" title="([^"]*)">([^<]*)</span>',
        html[html.index("alert(1)") - 200 :],
    )
    cell, title = html_module.unescape(shown.group(2)), html_module.unescape(shown.group(1))
    assert len(cell) == 100 and cell.startswith("<script>alert(1)</script> xx") and cell[-1] == "…"
    assert len(title) == 500
    assert html.count('class="rs-error-line"') == 3  # and the broken report's own failure


def test_runs_list_names_the_trigger_and_fire_time_under_the_report(admin_client):
    report = Report.objects.create(name="Nightly", slug="nightly", sql="SELECT 1")
    fire = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    enqueue_run(report, "schedule", scheduled_for=fire)
    html = admin_client.get("/admin/runs/run/").content.decode()
    assert (
        'Nightly<br><span class="rs-muted">Schedule · <span class="rs-when">2026-11-26</span> '
        '<span class="rs-when">06:00:00 UTC</span></span>'
    ) in html


MOMENT = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (?:UTC|CET|CEST)"


def test_one_time_format_with_seconds_and_zone_across_the_admin(admin_client, reports):
    daily, _ = reports
    fire = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)  # 06:00 in Berlin
    scheduled = enqueue_run(daily, "schedule", scheduled_for=fire)
    WorkerHeartbeat.objects.create(
        name="box:1",
        host="box",
        pid=1,
        version="1",
        started_at=timezone.now(),
        last_seen_at=timezone.now(),
    )
    page = admin_client.get(f"/admin/runs/run/{scheduled.pk}/change/").content.decode()
    assert (
        '2026-11-26 05:00:00 UTC <span class="rs-muted">'
        "(2026-11-26 06:00:00 CET in Europe/Berlin)</span>"
    ) in page
    finished = daily.runs.filter(status=RunStatus.SUCCEEDED).get()
    page = admin_client.get(f"/admin/runs/run/{finished.pk}/change/").content.decode()
    for label in ("Queued at", "Started at", "Finished at", "Heartbeat at"):
        value = re.search(rf"<label>{label}:</label>\s*<div class=\"readonly\">([^<]*)<", page)
        assert value and re.fullmatch(MOMENT, value.group(1)), (label, value)
    pages = [
        page,
        admin_client.get("/admin/runs/run/").content.decode(),
        admin_client.get("/admin/reports/report/").content.decode(),
        admin_client.get(f"/admin/reports/report/{daily.pk}/change/").content.decode(),
        admin_client.get("/admin/runs/workerheartbeat/").content.decode(),
    ]
    for html in pages:
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))
        assert not re.search(r"\b(?:a\.m\.|p\.m\.|noon|midnight)", text)
        assert not re.search(r"\b(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\.? \d", text)
        schedule_words = re.sub(r"At \d\d:\d\d", "", text)  # "At 06:00, Monday…"
        times = re.findall(r"(?<![\d:])\d{1,2}:\d\d(?::\d\d)?(?![\d:])", schedule_words)
        assert times and all(time.count(":") == 2 for time in times), times
        assert re.search(MOMENT, text)


def test_moments_carry_their_zone_in_the_hour_that_repeats():
    berlin = ZoneInfo("Europe/Berlin")
    first = moment(datetime(2026, 10, 25, 0, 30, tzinfo=UTC), berlin)
    second = moment(datetime(2026, 10, 25, 1, 30, tzinfo=UTC), berlin)
    assert (first, second) == ("2026-10-25 02:30:00 CEST", "2026-10-25 02:30:00 CET")
    assert moment(None) == "—"


def test_admin_and_api_agree_on_the_latest_successful_run(admin_client):
    """A retry finishing after a later manual run holds the newest output for both."""
    report = Report.objects.create(
        name="Retried",
        slug="retried",
        sql="SELECT * FROM missing_table",
        schedule="0 6 * * *",
        max_retries=1,
    )
    first = enqueue_run(report, "schedule", scheduled_for=timezone.now())
    execute_run(first)
    retry = Run.objects.get(retry_of=first, status=RunStatus.QUEUED)
    report.sql = "SELECT 'manual' AS made_by"
    report.save()
    manual = enqueue_run(report, "manual")  # queued after the retry...
    execute_run(manual)
    report.sql = "SELECT 'retry' AS made_by"
    report.save()
    execute_run(Run.objects.get(pk=retry.pk))  # ...which finishes last
    manual.refresh_from_db()
    retry.refresh_from_db()
    assert manual.status == retry.status == RunStatus.SUCCEEDED, (manual.error, retry.error)
    assert manual.queued_at > retry.queued_at and retry.finished_at > manual.finished_at
    assert manual.output_sha256 != retry.output_sha256

    assert latest_successful_run(report) == retry
    html = admin_client.get("/admin/reports/report/?q=retried").content.decode()
    assert f'href="/api/runs/{retry.pk}/download/"' in html
    assert f'href="/api/runs/{manual.pk}/download/"' not in html
    api = client_for(make_user("reader", "view"))
    response = api.get("/api/reports/retried/latest.csv")
    assert response["ETag"] == f'"{retry.output_sha256}"'
    assert b"".join(response.streaming_content) == b"made_by\nretry\n"


def test_migrations_match_the_models():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_the_admin_and_the_api_agree_on_each_report_s_last_run(admin_client):
    """The run queued last, the higher id among runs queued at one moment; not the one
    that started or finished last."""
    tie, late, _ = (
        Report.objects.create(name=name, slug=name, sql="SELECT 1")
        for name in ("tie", "late", "never")
    )
    moment = timezone.now() - timedelta(hours=1)
    first, second = (
        Run.objects.create(report=tie, trigger="api", queued_at=moment) for _ in range(2)
    )
    newest = Run.objects.create(report=late, trigger="api", queued_at=moment)
    Run.objects.create(
        report=late,
        trigger="api",
        status=RunStatus.SUCCEEDED,
        queued_at=moment - timedelta(minutes=5),
        started_at=moment + timedelta(minutes=1),
        finished_at=moment + timedelta(minutes=2),
    )  # queued earlier, finished later
    expected = {"tie": second.pk, "late": newest.pk, "never": None}
    api = admin_client.get("/api/reports/").json()
    assert {report["slug"]: (report["last_run"] or {}).get("id") for report in api} == expected
    for slug, run_id in expected.items():
        one = admin_client.get(f"/api/reports/{slug}/").json()
        assert (one["last_run"] or {}).get("id") == run_id
    page = admin_client.get("/admin/reports/report/").content.decode()
    for run_id in (second.pk, newest.pk):
        assert f"/admin/runs/run/{run_id}/change/" in page
    assert f"/admin/runs/run/{first.pk}/change/" not in page
    never_run = admin_client.get("/admin/reports/report/?last_status=never").content.decode()
    assert ">never<" in never_run and ">tie<" not in never_run and ">late<" not in never_run


DAY_WITHOUT_DEFAULT = '[{"name": "day", "type": "date", "label": "Day"}]'


@pytest.mark.parametrize(
    "changes",
    [
        {"sql": "SELECT * FROM no_such_table"},  # the database's verdict
        {"sql": "SELECT 1; SELECT 2"},  # the parser's
        {"sql": "SELECT {{ nope }}"},  # a placeholder naming no parameter
        {"schedule": "0 6 * * *", "parameters": DAY_WITHOUT_DEFAULT, "sql": "SELECT {{ day }}"},
        {"output_format": "xlsx", "csv_bom": "on"},  # a CSV option on another format
        {"alert_condition": "rows_above"},  # without its threshold
    ],
)
def test_the_admin_and_the_api_refuse_a_report_with_the_same_words(admin_client, changes):
    form = form_data(**changes)
    page = admin_client.post("/admin/reports/report/add/", form)
    assert page.status_code == 200
    shown = {
        name: [str(message) for message in messages]
        for name, messages in page.context["adminform"].form.errors.items()
    }
    body = {name: value for name, value in form.items() if value != ""}
    body = {**body, "enabled": True, "max_retries": 0}
    if "csv_bom" in body:
        body["csv_bom"] = True
    for json_field in ("parameters", "targets"):  # JSON text in the form, JSON in the API
        if json_field in body:
            body[json_field] = json.loads(body[json_field])
    response = admin_client.post("/api/reports/", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == shown
    assert not Report.objects.exists()
