"""Data intervals, backfills and reruns: a run means the same period whenever it runs."""

import hashlib
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.core.cache import cache
from django.utils import timezone

from reports.models import Report
from runs.models import Run, RunStatus, RunTrigger
from runs.services.domain.backfill import plan_backfill
from runs.services.domain.intervals import default_interval, intervals_in_range
from runs.services.domain.queue import claim_runs
from runs.services.domain.transitions import transition_run
from tests.api_helpers import client_for, make_user
from tests.conftest import execute_run, record_scheduled_fire

pytestmark = pytest.mark.django_db(databases="__all__")

BERLIN = ZoneInfo("Europe/Berlin")
DAILY_SQL = (
    "SELECT {{ interval_start }} AS interval_start, {{ interval_end }} AS interval_end, "
    "{{ day }} AS day"
)
DAY = [{"name": "day", "type": "date", "label": "Day", "default": "interval_start"}]


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()


@pytest.fixture
def runner():
    return client_for(make_user("runner", "run"))


@pytest.fixture
def daily():
    report = Report(
        name="Daily revenue",
        slug="daily-revenue",
        sql=DAILY_SQL,
        parameters=DAY,
        schedule="0 6 * * *",
        timezone="Europe/Berlin",
    )
    report.full_clean()
    report.save()
    return report


def berlin(*args):
    return datetime(*args, tzinfo=BERLIN)


# --- intervals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "long_one", "hours"),
    [
        (berlin(2026, 3, 26), berlin(2026, 4, 2), berlin(2026, 3, 29, 6), 23),
        (berlin(2026, 10, 22), berlin(2026, 10, 29), berlin(2026, 10, 25, 6), 25),
    ],
)
def test_daily_berlin_intervals_around_dst_are_23_and_25_hours_and_contiguous(
    daily, start, end, long_one, hours
):
    intervals, total = intervals_in_range(daily, start, end, 366)
    assert total == len(intervals) == 7
    for (_, previous_end), (next_start, _) in itertools.pairwise(intervals):
        assert previous_end == next_start  # no gap, no overlap
    lengths = {
        interval_end: interval_end - interval_start for interval_start, interval_end in intervals
    }
    assert lengths[long_one] == timedelta(hours=hours)
    assert all(
        length == timedelta(hours=24) for fire, length in lengths.items() if fire != long_one
    )
    assert all(fire.astimezone(BERLIN).hour == 6 for _, fire in intervals)


def test_a_scheduled_fire_covers_previous_fire_to_its_own(daily):
    fire = berlin(2026, 3, 29, 6).astimezone(UTC)
    run = record_scheduled_fire(daily.pk, fire)
    assert (run.interval_start, run.interval_end) == (berlin(2026, 3, 28, 6), fire)


def test_a_manual_run_covers_the_latest_complete_interval(daily):
    now = berlin(2026, 11, 26, 11, 0)  # the 06:00 run failed; someone runs it at 11:00
    assert default_interval(daily, now) == (berlin(2026, 11, 25, 6), berlin(2026, 11, 26, 6))
    # ... and a retry after midnight still covers the same day, when the run says so.
    assert default_interval(daily, berlin(2026, 11, 26, 6)) == (
        berlin(2026, 11, 25, 6),
        berlin(2026, 11, 26, 6),
    )


def test_a_report_without_a_schedule_covers_the_previous_calendar_day_in_its_zone():
    report = Report.objects.create(name="R", slug="r", sql="SELECT 1", timezone="Europe/Berlin")
    assert default_interval(report, berlin(2026, 3, 30, 0, 30)) == (
        berlin(2026, 3, 29),
        berlin(2026, 3, 30),
    )  # 23 hours: the day the clocks went forward


# --- backfill ------------------------------------------------------------------------


def backfill(client, report, **body):
    return client.post(f"/api/reports/{report.slug}/backfill/", body, format="json")


LAST_WEEK = {"start": "2026-11-16T00:00:00+01:00", "end": "2026-11-23T00:00:00+01:00"}


def test_backfill_queues_one_run_per_fire_oldest_first_with_its_interval(runner, daily):
    response = backfill(runner, daily, **LAST_WEEK)
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["queued"] == 7 and body["skipped"] == 0
    ends = [run["interval_end"] for run in body["runs"]]
    assert ends == [f"2026-11-{day}T05:00:00Z" for day in range(16, 23)]
    assert body["runs"][0]["interval_start"] == "2026-11-15T05:00:00Z"
    assert body["runs"][0]["trigger"] == "backfill"
    assert response["Location"].endswith(
        f"/api/runs/?report=daily-revenue&backfill={body['backfill_id']}"
    )
    listed = runner.get(response["Location"]).json()["results"]
    assert sorted(run["id"] for run in listed) == [run["id"] for run in body["runs"]]


def test_backfill_is_idempotent_and_skips_succeeded_fires_unless_asked(runner, daily):
    first = backfill(runner, daily, **LAST_WEEK).json()
    again = backfill(runner, daily, **LAST_WEEK).json()
    assert (again["queued"], again["skipped"], again["runs"]) == (0, 7, [])
    assert Run.objects.count() == 7
    for run in Run.objects.order_by("id")[:3]:
        execute_run(run)
    Run.objects.filter(status=RunStatus.QUEUED).delete()
    after = backfill(runner, daily, **LAST_WEEK).json()
    assert (after["queued"], after["skipped"]) == (4, 3)
    rerun = backfill(runner, daily, **LAST_WEEK, rerun=True).json()
    assert (rerun["queued"], rerun["skipped"]) == (3, 4)  # the 4 waiting are still skipped
    assert first["backfill_id"] != rerun["backfill_id"]


def test_backfill_with_an_idempotency_key_replays_its_runs(runner, daily):
    first = runner.post(
        "/api/reports/daily-revenue/backfill/", LAST_WEEK, format="json", HTTP_IDEMPOTENCY_KEY="k1"
    )
    replay = runner.post(
        "/api/reports/daily-revenue/backfill/", LAST_WEEK, format="json", HTTP_IDEMPOTENCY_KEY="k1"
    )
    assert replay.status_code == 202
    assert replay["Idempotent-Replayed"] == "true"
    assert [r["id"] for r in replay.json()["runs"]] == [r["id"] for r in first.json()["runs"]]
    assert Run.objects.count() == 7


def test_a_backfill_key_is_free_again_after_24_hours(runner, daily):
    def with_key():
        path = "/api/reports/daily-revenue/backfill/"
        return runner.post(path, LAST_WEEK, format="json", HTTP_IDEMPOTENCY_KEY="k")

    first = with_key().json()
    Run.objects.update(status=RunStatus.FAILED, queued_at=timezone.now() - timedelta(hours=25))
    again = with_key()
    assert again.status_code == 202 and "Idempotent-Replayed" not in again
    assert again.json()["backfill_id"] != first["backfill_id"]
    assert again.json()["queued"] == 7 and Run.objects.count() == 14


def test_a_key_that_queued_a_single_run_is_refused_for_a_backfill(runner, daily):
    run = runner.post("/api/reports/daily-revenue/run/", HTTP_IDEMPOTENCY_KEY="k")
    assert run.status_code == 202
    response = runner.post(
        "/api/reports/daily-revenue/backfill/", LAST_WEEK, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert response.status_code == 400
    assert response.json() == {
        "Idempotency-Key": [
            "This key was used for a run of this report that is not a backfill; use a new key."
        ]
    }
    assert Run.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"start": "2026-11-23T00:00Z", "end": "2026-11-16T00:00Z"}, "end", "must end after"),
        (
            {"start": "2020-01-01T00:00Z", "end": "2026-01-01T00:00Z"},
            "end",
            "holds 2,192 fire times",
        ),
        ({"start": "last week", "end": "2026-01-01T00:00Z"}, "start", "Datetime has wrong format"),
        ({**LAST_WEEK, "parameters": {"day": "soon"}}, "parameters.day", "YYYY-MM-DD"),
        ({**LAST_WEEK, "parameters": {"colour": 1}}, "parameters.colour", "no parameter"),
    ],
)
def test_bad_backfills_get_400_and_queue_nothing(runner, daily, body, field, message):
    response = backfill(runner, daily, **body)
    assert response.status_code == 400
    assert message in response.json()[field][0]
    assert not Run.objects.exists()


def test_backfill_respects_its_cap_on_waiting_runs(runner, daily, settings):
    settings.BACKFILL_MAX_RUNS = 10
    assert backfill(runner, daily, **LAST_WEEK).status_code == 202
    more = backfill(runner, daily, start="2026-11-01T00:00Z", end="2026-11-08T00:00Z")
    assert more.status_code == 409
    assert "BACKFILL_MAX_RUNS" in more.json()["detail"]
    assert Run.objects.count() == 7


def test_backfill_needs_the_run_permission(daily):
    viewer = client_for(make_user("viewer", "view"))
    assert backfill(viewer, daily, **LAST_WEEK).status_code == 403
    assert not Run.objects.exists()


def test_backfilled_runs_do_not_make_fires_skip_or_fill_the_run_now_queue(runner, daily, settings):
    settings.REPORT_MAX_QUEUED_RUNS = 2
    backfill(runner, daily, **LAST_WEEK)
    fire = record_scheduled_fire(daily.pk, berlin(2026, 11, 26, 6).astimezone(UTC))
    assert fire.status == RunStatus.QUEUED
    assert runner.post("/api/reports/daily-revenue/run/").status_code == 202


def test_the_worker_runs_a_backfill_in_order_one_at_a_time(runner, daily):
    other = Report.objects.create(name="Other", slug="other", sql="SELECT 1 AS one")
    backfill(runner, daily, start="2026-11-16T00:00+01:00", end="2026-11-19T00:00+01:00")
    runner.post("/api/reports/other/run/")
    order = []
    while True:
        claimed = claim_runs(5, "test-worker")
        if not claimed:
            break
        reports = [run.report_id for run in claimed]
        assert len(reports) == len(set(reports))  # never two of one report at once
        for run in claimed:
            order.append((run.report.slug, run.interval_end))
            transition_run(run, RunStatus.SUCCEEDED)
    daily_ends = [end for slug, end in order if slug == "daily-revenue"]
    assert daily_ends == sorted(daily_ends) and len(daily_ends) == 3
    assert ("other", Run.objects.get(report=other).interval_end) in order


def test_a_report_without_a_schedule_backfills_one_run_per_calendar_day(runner):
    report = Report.objects.create(
        name="Days", slug="days", sql="SELECT {{ interval_start }} AS s", timezone="Europe/Berlin"
    )
    plan = plan_backfill(report, berlin(2026, 3, 28), berlin(2026, 3, 31))
    # In UTC: Python subtracts two times of one zone by their wall clocks. The "fire" of
    # a day is its end (midnight): the days 27, 28 and 29 March, the last of 23 hours.
    assert [end.astimezone(UTC) - start.astimezone(UTC) for start, end in plan.to_queue] == [
        timedelta(hours=24),
        timedelta(hours=24),
        timedelta(hours=23),
    ]


# --- rerun ---------------------------------------------------------------------------


def test_a_rerun_repeats_values_and_interval_and_gives_the_same_bytes(runner, daily):
    body = backfill(runner, daily, start="2026-11-25T00:00+01:00", end="2026-11-26T00:00+01:00")
    original = Run.objects.get(pk=body.json()["runs"][0]["id"])
    execute_run(original)
    original.refresh_from_db()
    assert original.status == RunStatus.SUCCEEDED, original.error
    # The fire of 25 November 06:00 covers the day from 24 November 06:00: named for that.
    assert original.output.name == f"daily-revenue/daily-revenue_2026-11-24_run{original.pk}.csv"
    response = runner.post(f"/api/runs/{original.pk}/rerun/", HTTP_IDEMPOTENCY_KEY="again")
    assert response.status_code == 202
    rerun = Run.objects.get(pk=response.json()["id"])
    assert response["Location"].endswith(f"/api/runs/{rerun.pk}/")
    assert response.json()["rerun_of"] == original.pk
    assert (rerun.interval_start, rerun.interval_end) == (
        original.interval_start,
        original.interval_end,
    )
    replay = runner.post(f"/api/runs/{original.pk}/rerun/", HTTP_IDEMPOTENCY_KEY="again")
    assert replay.json()["id"] == rerun.pk and replay["Idempotent-Replayed"] == "true"
    execute_run(rerun)
    rerun.refresh_from_db()
    assert rerun.output_sha256 == original.output_sha256
    assert hashlib.sha256(Path(rerun.output.path).read_bytes()).hexdigest() == rerun.output_sha256
    assert rerun.sql == original.sql and rerun.parameters == original.parameters


def test_a_rerun_whose_values_no_longer_fit_is_refused(runner, daily):
    body = backfill(runner, daily, start="2026-11-25T00:00+01:00", end="2026-11-26T00:00+01:00")
    original = Run.objects.get(pk=body.json()["runs"][0]["id"])
    execute_run(original)
    Report.objects.filter(pk=daily.pk).update(sql="SELECT 1 AS one", parameters=[])
    response = runner.post(f"/api/runs/{original.pk}/rerun/")
    assert response.status_code == 400
    assert "no parameter 'day'" in response.json()["parameters.day"][0]
    assert Run.objects.count() == 1


def test_rerun_needs_the_run_permission_and_respects_the_queue(daily, runner, settings):
    original = Run.objects.create(report=daily, trigger=RunTrigger.API)
    viewer = client_for(make_user("viewer", "view"))
    assert viewer.post(f"/api/runs/{original.pk}/rerun/").status_code == 403
    settings.REPORT_MAX_QUEUED_RUNS = 1
    assert runner.post(f"/api/runs/{original.pk}/rerun/").status_code == 409


# --- admin ---------------------------------------------------------------------------


def test_admin_run_with_parameters_form_has_defaults_and_queues_the_values(admin_client):
    report = Report(
        name="Regional",
        slug="regional",
        sql="SELECT {{ region }} AS region, {{ day }} AS day",
        parameters=[
            {
                "name": "region",
                "type": "choice",
                "label": "Region",
                "choices": ["EU", "US"],
                "default": "EU",
            },
            *DAY,
        ],
    )
    report.full_clean()
    report.save()
    url = f"/admin/reports/report/{report.pk}/run-with-parameters/"
    page = admin_client.get(url).content.decode()
    assert 'name="region"' in page and '<option value="EU" selected>' in page
    assert "Interval start" in page
    response = admin_client.post(
        url,
        {
            "region": "US",
            "day": "",
            "interval_start": "2026-11-24T00:00:00Z",
            "interval_end": "2026-11-25T00:00:00Z",
        },
    )
    assert response.status_code == 302
    run = Run.objects.get()
    assert run.parameters == {"region": "US"} and run.trigger == "manual"
    assert run.interval_end == datetime(2026, 11, 25, tzinfo=UTC)
    bad = admin_client.post(
        url, {"region": "US", "day": "2026-13-01", "interval_start": "", "interval_end": ""}
    )
    assert bad.status_code == 200 and "YYYY-MM-DD" in bad.content.decode()
    assert Run.objects.count() == 1


def test_admin_backfill_shows_the_count_before_it_queues(admin_client, daily):
    url = f"/admin/reports/report/{daily.pk}/backfill/"
    preview = admin_client.post(url, {"start": "2026-11-16 00:00", "end": "2026-11-23 00:00"})
    assert "This will queue 7 runs" in preview.content.decode()
    assert not Run.objects.exists()
    confirmed = admin_client.post(
        url, {"start": "2026-11-16 00:00", "end": "2026-11-23 00:00", "confirmed": "1"}
    )
    assert confirmed.status_code == 302
    assert Run.objects.filter(trigger="backfill").count() == 7
    # The message links to its runs, where they can be followed and cancelled together.
    batch = Run.objects.filter(trigger="backfill").first().backfill_id
    report_page = admin_client.get(confirmed["Location"]).content.decode()
    assert f'href="/admin/runs/run/?backfill_id={batch}" id="backfill-runs"' in report_page
    listed = admin_client.get(f"/admin/runs/run/?backfill_id={batch}").content.decode()
    assert listed.count('rs-badge rs-queued"') == 7
    again = admin_client.post(url, {"start": "2026-11-16 00:00", "end": "2026-11-23 00:00"})
    assert "Nothing to queue" in again.content.decode()


def test_admin_rerun_button_queues_a_linked_run(admin_client, daily):
    original = Run.objects.create(
        report=daily,
        trigger=RunTrigger.API,
        interval_start=berlin(2026, 11, 24, 6),
        interval_end=berlin(2026, 11, 25, 6),
    )
    page = admin_client.get(f"/admin/runs/run/{original.pk}/change/").content.decode()
    assert 'id="rerun"' in page
    response = admin_client.post(f"/admin/runs/run/{original.pk}/rerun/")
    rerun = Run.objects.exclude(pk=original.pk).get()
    assert response.status_code == 302 and response["Location"].endswith(f"/{rerun.pk}/change/")
    assert rerun.rerun_of == original and rerun.interval_end == original.interval_end


def test_admin_pages_for_parameters_need_the_run_permission(client, daily):
    user = make_user("looker", "view", staff=True)
    client.force_login(user)
    response = client.get(f"/admin/reports/report/{daily.pk}/backfill/")
    assert response.status_code == 302
    assert client.post(f"/admin/reports/report/{daily.pk}/backfill/", {}).status_code == 302
    assert not Run.objects.exists()
