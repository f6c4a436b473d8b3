"""Limits on queuing runs: the per-user trigger throttle, shared by every web process, and
REPORT_MAX_QUEUED_RUNS, the runs one report may have waiting, for every entry point."""

import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from types import SimpleNamespace

import pytest
import requests
from django.core.cache import cache, caches
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from rest_framework.throttling import ScopedRateThrottle

from reports.models import Report
from reports.throttling import SharedScopedRateThrottle
from runs.models import Run, RunStatus, RunTrigger
from runs.services.domain.queue import QueueFull, request_run, schedule_retry
from runs.services.domain.transitions import transition_run
from tests.api_helpers import client_for, make_user, token_key
from tests.conftest import enqueue_run, needs_commits, postgres_only, record_scheduled_fire
from tests.workers import PROJECT_DIR, process_environment

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()


@pytest.fixture
def report():
    return Report.objects.create(name="Numbers", slug="numbers", sql="SELECT 1 AS n")


@pytest.fixture
def runner():
    return client_for(make_user("runner", "run"))


def queued(report):
    return Run.objects.filter(report=report, status=RunStatus.QUEUED).count()


# --- the shared cache -------------------------------------------------------------------


def test_the_cache_is_a_database_table_that_migrate_creates():
    assert caches["default"].__class__.__name__ == "DatabaseCache"
    assert "reportsvc_cache" in connection.introspection.table_names()
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE reportsvc_cache")
    call_command("migrate", verbosity=0)
    assert "reportsvc_cache" in connection.introspection.table_names()
    cache.set("probe", 1)
    assert cache.get("probe") == 1


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def flood_the_throttle(user, count, rate, clock, monkeypatch, every=0.05):
    """``count`` run triggers by ``user``, ``every`` seconds apart on ``clock``, through
    the throttle as DRF calls it (a new one per request); how many it let through."""
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"report-runs": rate})
    monkeypatch.setattr(SharedScopedRateThrottle, "timer", clock)
    request, view = SimpleNamespace(user=user), SimpleNamespace(throttle_scope="report-runs")
    allowed = 0
    for _ in range(count):
        clock.now += every
        allowed += SharedScopedRateThrottle().allow_request(request, view)
    return allowed


def cached_history(user):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT value FROM reportsvc_cache WHERE cache_key LIKE %s", [f"%report-runs_{user.pk}"]
        )
        return cursor.fetchone()[0]


def test_the_throttle_keeps_a_record_of_fixed_size_however_many_requests_it_lets_through(
    monkeypatch,
):
    """DRF keeps a timestamp per request and writes them all back at each request: 500
    requests left about 1 MB of row versions in the cache table (at 5,000/minute, 2,000
    requests 12 MB). Counts per tenth of the period stay a few hundred bytes."""
    user, clock = make_user("flooder", "run"), Clock(1_000_000.0)
    assert flood_the_throttle(user, 510, "500/minute", clock, monkeypatch) == 500
    assert len(cached_history(user)) < 400  # base64 of at most 11 (tenth, count, last)
    refused = SharedScopedRateThrottle()
    request, view = SimpleNamespace(user=user), SimpleNamespace(throttle_scope="report-runs")
    assert not refused.allow_request(request, view)
    # The first tenth (6 s) leaves the period a minute after its last request, at 1.95 s.
    assert refused.wait() == pytest.approx(60 + 1.95 - 25.5)
    clock.now += refused.wait()
    assert SharedScopedRateThrottle().allow_request(request, view)


def test_no_period_ever_holds_more_than_the_rate(monkeypatch):
    user, clock = make_user("steady", "run"), Clock(2_000_000.0)
    allowed_at = []
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"report-runs": "5/minute"})
    monkeypatch.setattr(SharedScopedRateThrottle, "timer", clock)
    request, view = SimpleNamespace(user=user), SimpleNamespace(throttle_scope="report-runs")
    for _ in range(400):  # a request every 0.7 s for 280 s
        clock.now += 0.7
        if SharedScopedRateThrottle().allow_request(request, view):
            allowed_at.append(clock.now)
    assert all(
        later - earlier >= 60 for earlier, later in zip(allowed_at, allowed_at[5:], strict=False)
    )
    assert len(allowed_at) >= 5 * 280 // 66  # and none held back longer than a tenth


@postgres_only
def test_a_flood_leaves_the_cache_table_small(monkeypatch):
    def table_bytes():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_total_relation_size('reportsvc_cache')")
            return cursor.fetchone()[0]

    before = table_bytes()
    user = make_user("flooder", "run")
    assert flood_the_throttle(user, 500, "500/minute", Clock(3_000_000.0), monkeypatch) == 500
    assert table_bytes() - before < 200_000  # DRF's history: about 1 MB


# --- REPORT_MAX_QUEUED_RUNS ---------------------------------------------------------------


def test_an_api_trigger_past_the_queue_cap_gets_409_and_says_why(report, runner, settings):
    settings.REPORT_MAX_QUEUED_RUNS = 3
    codes = [runner.post("/api/reports/numbers/run/").status_code for _ in range(4)]
    assert codes == [202, 202, 202, 409]
    refused = runner.post("/api/reports/numbers/run/")
    assert refused.status_code == 409
    assert refused.json() == {
        "detail": "Report 'numbers' already has 3 runs waiting in the queue, the most one "
        "report may have (REPORT_MAX_QUEUED_RUNS). Queue another once one of them has started."
    }
    assert queued(report) == 3
    # Once one has started (running no longer waits), there is room for one more.
    first = Run.objects.filter(report=report).earliest("queued_at")
    assert transition_run(first, RunStatus.RUNNING, worker="w:1")
    assert runner.post("/api/reports/numbers/run/").status_code == 202
    assert queued(report) == 3


def test_the_cap_is_per_report(report, runner, settings):
    settings.REPORT_MAX_QUEUED_RUNS = 1
    Report.objects.create(name="Other", slug="other", sql="SELECT 2 AS n")
    assert runner.post("/api/reports/numbers/run/").status_code == 202
    assert runner.post("/api/reports/numbers/run/").status_code == 409
    assert runner.post("/api/reports/other/run/").status_code == 202


def test_an_idempotent_replay_still_answers_when_the_queue_is_full(report, runner, settings):
    settings.REPORT_MAX_QUEUED_RUNS = 1
    first = runner.post("/api/reports/numbers/run/", HTTP_IDEMPOTENCY_KEY="nightly")
    again = runner.post("/api/reports/numbers/run/", HTTP_IDEMPOTENCY_KEY="nightly")
    assert again.status_code == 202 and again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = runner.post("/api/reports/numbers/run/", HTTP_IDEMPOTENCY_KEY="other")
    assert other.status_code == 409
    assert queued(report) == 1


def test_admin_run_now_past_the_cap_shows_an_error_and_queues_nothing(
    admin_client, report, settings
):
    settings.REPORT_MAX_QUEUED_RUNS = 2
    for _ in range(2):
        enqueue_run(report, RunTrigger.MANUAL)
    response = admin_client.post(f"/admin/reports/report/{report.pk}/run/", follow=True)
    assert response.status_code == 200
    message = next(iter(response.context["messages"]))
    assert message.level_tag == "error"
    assert str(message).startswith("Report 'numbers' already has 2 runs waiting in the queue")
    other = Report.objects.create(name="Other", slug="other", sql="SELECT 2 AS n")
    response = admin_client.post(
        "/admin/reports/report/",
        {"action": "run_now", "_selected_action": [report.pk, other.pk]},
        follow=True,
    )
    levels = sorted(message.level_tag for message in response.context["messages"])
    assert levels == ["error", "success"]
    assert queued(report) == 2 and queued(other) == 1


def test_scheduled_fires_and_retries_count_but_are_never_refused(report, settings):
    """A fire or a retry is one run at a time by construction (a fire while a run is
    queued is skipped); the cap is for requests, which can pile up."""
    settings.REPORT_MAX_QUEUED_RUNS = 2
    Report.objects.filter(pk=report.pk).update(schedule="0 6 * * *", max_retries=3)
    report.refresh_from_db()
    fire = record_scheduled_fire(report.pk, timezone.now() - timedelta(minutes=1))
    assert fire.status == RunStatus.QUEUED
    request_run(report, RunTrigger.API)
    with pytest.raises(QueueFull):
        request_run(report, RunTrigger.API)
    # A failed scheduled attempt's retry is queued even with the queue full.
    assert transition_run(fire, RunStatus.RUNNING, worker="w:1")
    request_run(report, RunTrigger.API)
    assert transition_run(fire, RunStatus.FAILED, error="boom")
    assert schedule_retry(fire).status == RunStatus.QUEUED
    assert queued(report) == 3


def test_zero_means_no_cap(report, settings):
    settings.REPORT_MAX_QUEUED_RUNS = 0
    for _ in range(12):
        request_run(report, RunTrigger.API)
    assert queued(report) == 12


# --- many web processes at once -----------------------------------------------------------


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def web_processes(tmp_path, outputs_dir):
    """gunicorn with 3 processes of 4 threads on the test database."""
    port = free_port()
    log = open(tmp_path / "gunicorn.log", "w")  # noqa: SIM115 - closed below
    environment = process_environment(
        outputs_dir, API_RUN_THROTTLE_RATE="25/minute", REPORT_MAX_QUEUED_RUNS="5"
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "reportsvc.wsgi:application",
            "--workers=3",
            "--threads=4",
            f"--bind=127.0.0.1:{port}",
        ],
        cwd=PROJECT_DIR,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base}/healthz?scope=web", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(30)
        log.close()


@needs_commits
def test_three_web_processes_share_one_throttle_and_one_queue_cap(report, web_processes):
    """40 triggers at once, spread over 3 processes of 4 threads: the user's 25/minute
    lets exactly 25 through, and the report's cap of 5 queues exactly 5 of those."""
    headers = {"Authorization": f"Token {token_key(make_user('runner', 'run'))}"}

    def trigger(_):
        response = requests.post(
            f"{web_processes}/api/reports/numbers/run/", headers=headers, timeout=30
        )
        return response.status_code, response.headers["Content-Type"]

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(trigger, range(40)))
    assert {content_type for _, content_type in answers} == {"application/json"}
    assert Counter(code for code, _ in answers) == {202: 5, 409: 20, 429: 15}
    assert queued(report) == 5
