"""GET /metrics: what a scrape says after real runs, read back with prometheus-client's
parser; counters that retention cannot lower; who may scrape; hostile input."""

import gzip
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from django.db import connections, transaction
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from reports.models import Report
from runs.models import Run, RunStatus, RunTally
from runs.services.domain.queue import claim_runs, record_scheduled_fires
from runs.services.domain.transitions import tally_finished, transition_run
from runs.services.infrastructure.metrics import (
    PREFIX,
    Family,
    exposition,
    metrics_text,
    read_metrics,
)
from runs.services.runtime.heartbeats import register_worker
from runs.services.runtime.housekeeping import purge_expired_runs
from runs.services.runtime.runner import run_report_now
from tests.conftest import enqueue_run, needs_commits, record_scheduled_fire
from tests.test_settings import settings_in_a_fresh_process
from tests.workers import PROJECT_DIR, process_environment

pytestmark = pytest.mark.django_db(databases="__all__")

TOKEN = "metrics-test-token-" + "a" * 32
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A slug no form would accept, made to end the label, the line and start a series.
HOSTILE_SLUG = 'evil"} 1\nreportsvc_runs{status="queued"} 999\n# \\ "ünï\r'


@pytest.fixture
def token(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []
    return TOKEN


def make_report(slug, **fields):
    fields.setdefault("sql", "SELECT 1 AS n")
    return Report.objects.create(name=slug, slug=slug, **fields)


def scrape(client, token=TOKEN, **headers):
    if token is not None:
        headers.setdefault("HTTP_AUTHORIZATION", f"Bearer {token}")
    return client.get("/metrics", **headers)


def families_of(response):
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == CONTENT_TYPE
    return {
        family.name: family
        for family in text_string_to_metric_families(response.content.decode("utf-8"))
    }


def samples(families, name):
    """``{label values: value}`` of a family (a counter by its name without _total)."""
    return {tuple(sample.labels.values()): sample.value for sample in families[name].samples}


def finished(families):
    return samples(families, "reportsvc_runs_finished")


def counts(slug, succeeded=0, failed=0, skipped=0, cancelled=0):
    return {
        (slug, "succeeded"): succeeded,
        (slug, "failed"): failed,
        (slug, "skipped"): skipped,
        (slug, "cancelled"): cancelled,
    }


# --- what a scrape says -----------------------------------------------------------------


def test_a_scrape_after_real_runs_says_what_happened(client, token):
    good = make_report("good", expect_success_within=timedelta(days=1))
    broken = make_report(
        "broken", sql="SELECT * FROM missing_table", expect_success_within=timedelta(hours=1)
    )
    quiet = make_report("quiet")  # no expectation, never run
    flaky = make_report("flaky")
    Report.objects.filter(pk=broken.pk).update(created_at=timezone.now() - timedelta(hours=2))
    run_report_now(good)
    last = run_report_now(good)
    failed = run_report_now(broken)
    flaky_success = run_report_now(flaky)
    Report.objects.filter(pk=flaky.pk).update(sql="SELECT * FROM missing_table")
    flaky_failure = run_report_now(Report.objects.get(pk=flaky.pk))
    enqueue_run(quiet, "manual")
    register_worker("host-a:41", "host-a", 41)
    assert (last.status, failed.status) == (RunStatus.SUCCEEDED, RunStatus.FAILED)

    families = families_of(scrape(client))

    def seconds(run):
        return pytest.approx((run.finished_at - run.started_at).total_seconds(), abs=1e-6)

    assert samples(families, "reportsvc_report_last_success_timestamp_seconds") == {
        ("good",): pytest.approx(last.finished_at.timestamp(), abs=1e-6),
        ("flaky",): pytest.approx(flaky_success.finished_at.timestamp(), abs=1e-6),
    }
    # The last run, whatever its outcome: flaky's failure came after its success.
    assert samples(families, "reportsvc_report_last_run_duration_seconds") == {
        ("good",): seconds(last),
        ("broken",): seconds(failed),
        ("flaky",): seconds(flaky_failure),
    }
    # Only reports that expect a success have a staleness: broken never had one in 2 h.
    assert samples(families, "reportsvc_report_stale") == {("good",): 0, ("broken",): 1}
    assert finished(families) == {
        **counts("good", succeeded=2),
        **counts("broken", failed=1),
        **counts("quiet"),
        **counts("flaky", succeeded=1, failed=1),
    }
    assert samples(families, "reportsvc_runs") == {("queued",): 1, ("running",): 0}
    [(worker, seen)] = samples(
        families, "reportsvc_worker_last_heartbeat_timestamp_seconds"
    ).items()
    assert worker == ("host-a:41",)
    assert seen == pytest.approx(timezone.now().timestamp(), abs=60)
    assert families["reportsvc_runs_finished"].type == "counter"
    assert families["reportsvc_report_stale"].type == "gauge"


def test_the_text_is_prometheus_clients_own_byte_for_byte(client, token):
    """The service writes the text itself (for speed); prometheus-client's writer, given
    the same readings, writes the same bytes: escaping, order, numbers."""
    make_report(HOSTILE_SLUG)
    make_report("plain", expect_success_within=timedelta(minutes=5))
    run_report_now(Report.objects.get(slug=HOSTILE_SLUG))
    run_report_now(make_report("broken", sql="SELECT * FROM missing_table"))
    register_worker('host "b"\\\n:7', "host", 7)
    odd = Family(
        "odd",
        "gauge",
        'Help with a back\\slash and a\nnew line, "quotes".',
        ("zone", "area"),
        [
            (("", "\\"), 0),
            (('"', "\n"), 1),
            (("\r\t{}=,#", "ünïcödé ✓"), 1234567),
            (("a", "b"), 1.5),
            (("c", "d"), 1e-7),
            (("e", "f"), 1796655348.188215),
            (("g", "h"), 2**53),
        ],
    )
    families = [*read_metrics(), odd]

    assert exposition(families) == generate_latest(_registry_of(families))
    # A scrape's text, each report's lines reused from the scrape before or written anew.
    now = timezone.now()
    for _ in range(2):
        assert metrics_text(now) == generate_latest(_registry_of(read_metrics(now)))


def test_a_report_whose_row_changed_between_scrapes_is_written_anew(client, token):
    """Lines are reused only for a report whose row is the same as at the scrape before:
    a rename, a new run, a new expectation show at the next scrape."""
    report = make_report("before", expect_success_within=timedelta(days=1))
    other = make_report("other")
    run_report_now(report)
    first = finished(families_of(scrape(client)))
    assert first == {**counts("before", succeeded=1), **counts("other")}

    Report.objects.filter(pk=report.pk).update(slug="after")
    Report.objects.filter(pk=other.pk).update(expect_success_within=timedelta(seconds=1))
    Report.objects.filter(pk=other.pk).update(created_at=timezone.now() - timedelta(hours=1))
    run_report_now(Report.objects.get(pk=report.pk))
    families = families_of(scrape(client))

    assert finished(families) == {**counts("after", succeeded=2), **counts("other")}
    assert samples(families, "reportsvc_report_stale") == {("after",): 0, ("other",): 1}


def _registry_of(families):
    """The same families as prometheus-client's own metric families, in a registry."""

    class Readings:
        def collect(self):
            for family in families:
                kind = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
                metric = kind(PREFIX + family.name, family.help, labels=family.label_names)
                for values, value in family.samples:
                    metric.add_metric(list(values), value)
                yield metric

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Readings())
    return registry


def test_a_scraper_that_accepts_gzip_gets_it(client, token):
    for number in range(20):
        run_report_now(make_report(f"report-{number}"))
    plain = scrape(client)
    packed = scrape(client, HTTP_ACCEPT_ENCODING="gzip, deflate")  # as Prometheus asks
    assert packed["Content-Encoding"] == "gzip"
    assert packed["Vary"] == "Accept-Encoding"
    assert "Content-Encoding" not in plain
    assert len(packed.content) * 5 < len(plain.content)
    assert gzip.decompress(packed.content) == plain.content


def test_a_hostile_slug_stays_one_label_value(client, token):
    run_report_now(make_report(HOSTILE_SLUG, expect_success_within=timedelta(days=1)))
    response = scrape(client)
    families = families_of(response)

    assert set(families) == {
        "reportsvc_report_last_success_timestamp_seconds",
        "reportsvc_report_last_run_duration_seconds",
        "reportsvc_report_stale",
        "reportsvc_runs_finished",
        "reportsvc_runs",
        "reportsvc_worker_last_heartbeat_timestamp_seconds",
    }
    assert samples(families, "reportsvc_report_stale") == {(HOSTILE_SLUG,): 0}
    assert finished(families) == counts(HOSTILE_SLUG, succeeded=1)
    assert samples(families, "reportsvc_runs") == {("queued",): 0, ("running",): 0}
    # Every line is a comment or one sample: the slug's new line is written as \n.
    lines = response.content.decode().split("\n")[:-1]  # \r is no line end here
    assert all(line.startswith(("# HELP ", "# TYPE ", "reportsvc_")) for line in lines)
    assert len(lines) == sum(2 + len(family.samples) for family in families.values())


def test_a_scrape_reads_no_runs_and_costs_the_same_queries_for_many_reports(
    client, token, django_assert_max_num_queries
):
    for number in range(30):
        run_report_now(make_report(f"report-{number}", expect_success_within=timedelta(days=1)))
    # The reports with their tallies, queued and running runs, workers.
    with django_assert_max_num_queries(4) as queries:
        families_of(scrape(client))
    # The runs table only for how many are queued and running (an index of statuses).
    [runs_query] = [query["sql"] for query in queries if '"runs_run"' in query["sql"]]
    assert "GROUP BY" in runs_query
    assert len(finished(families_of(scrape(client)))) == 30 * 4  # each final status


# --- counters -----------------------------------------------------------------------------


@needs_commits
def test_counters_and_the_last_success_survive_retention_and_deleted_runs(client, token, settings):
    settings.RUN_RETENTION_DAYS = 30
    report = make_report("daily", expect_success_within=timedelta(days=1))
    broken = make_report("broken", sql="SELECT * FROM missing_table")
    runs = [run_report_now(report) for _ in range(3)] + [run_report_now(broken)]
    before = families_of(scrape(client))
    assert finished(before) == {**counts("daily", succeeded=3), **counts("broken", failed=1)}

    Run.objects.filter(pk__in=[run.pk for run in runs[:2]] + [runs[3].pk]).update(
        queued_at=timezone.now() - timedelta(days=40)
    )
    assert purge_expired_runs() == 3
    Run.objects.filter(pk=runs[2].pk).delete()  # as the admin's Delete would
    assert not Run.objects.exists()

    after = families_of(scrape(client))
    assert finished(after) == finished(before)
    last_success = "reportsvc_report_last_success_timestamp_seconds"
    assert samples(after, last_success) == samples(before, last_success)
    assert samples(after, "reportsvc_report_stale") == {("daily",): 0}

    run_report_now(report)
    assert finished(families_of(scrape(client)))["daily", "succeeded"] == 4


def test_a_run_counts_once_whoever_else_tries_to_end_it(client, token):
    report = make_report("daily")
    run = enqueue_run(report, "manual")
    assert transition_run(run, RunStatus.RUNNING)
    assert transition_run(run, RunStatus.FAILED, error="worker lost")
    assert not transition_run(run, RunStatus.FAILED, error="again")
    assert not transition_run(run, RunStatus.SUCCEEDED)
    assert finished(families_of(scrape(client))) == counts("daily", failed=1)


@needs_commits
def test_two_processes_ending_the_same_run_at_once_count_it_once():
    """A lost worker's run, failed by two workers' recovery at the same moment."""
    report = make_report("daily")
    runs = [enqueue_run(report, "manual") for _ in range(10)]
    for run in runs:
        transition_run(run, RunStatus.RUNNING)
    barrier = threading.Barrier(2)
    won = []

    def fail_all():
        try:
            for run in runs:
                barrier.wait()
                if transition_run(Run.objects.get(pk=run.pk), RunStatus.FAILED, error="lost"):
                    won.append(run.pk)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=fail_all) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(won) == sorted(run.pk for run in runs)  # each run ended exactly once
    assert RunTally.objects.get(report=report, status=RunStatus.FAILED).count == 10


@needs_commits
def test_the_first_two_runs_of_a_tally_ending_at_once_both_count():
    """Neither sees the other's new tally row: one inserts it, the other's insert waits,
    fails on the unique key and adds to the row instead."""
    report = make_report("daily")
    inserted, done = threading.Event(), threading.Event()

    def first():
        try:
            with transaction.atomic():
                tally_finished(report.pk, RunStatus.SUCCEEDED)
                inserted.set()
                done.wait(0.5)  # the second is now waiting on this transaction
        finally:
            connections.close_all()

    def second():
        try:
            inserted.wait(10)
            tally_finished(report.pk, RunStatus.SUCCEEDED)
            done.set()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert RunTally.objects.get(report=report, status=RunStatus.SUCCEEDED).count == 2


def test_fires_recorded_as_skipped_count_once(client, token):
    report = make_report("hourly", schedule="0 * * * *")
    fire = timezone.now().replace(minute=0, second=0, microsecond=0)
    first = record_scheduled_fire(report.pk, fire - timedelta(hours=1))
    assert claim_runs(1, "test:1") == [first]
    skipped = record_scheduled_fire(report.pk, fire)
    assert skipped.status == RunStatus.SKIPPED
    # The same fire again (a second scheduler): the run exists, nothing more is counted.
    record_scheduled_fires([(report.pk, fire, fire - timedelta(hours=1))])
    assert Run.objects.filter(status=RunStatus.SKIPPED).count() == 1
    assert finished(families_of(scrape(client))) == counts("hourly", skipped=1)


def test_a_pass_that_skips_many_fires_tallies_each_once(client, token):
    reports = [make_report(f"busy-{number}", schedule="0 * * * *") for number in range(3)]
    fire = timezone.now().replace(minute=0, second=0, microsecond=0)
    for report in reports:
        record_scheduled_fire(report.pk, fire - timedelta(hours=2))
    claim_runs(3, "test:1")
    record_scheduled_fire(reports[0].pk, fire - timedelta(hours=1))  # its tally exists
    record_scheduled_fires(
        [(report.pk, fire, fire - timedelta(hours=1)) for report in reports]
        + [(reports[1].pk, fire - timedelta(hours=2), None)]  # recorded before: no skip
    )
    assert finished(families_of(scrape(client))) == {
        **counts("busy-0", skipped=2),
        **counts("busy-1", skipped=1),
        **counts("busy-2", skipped=1),
    }


@needs_commits
@pytest.mark.long_running
def test_a_run_recorded_by_another_process_shows_up(client, token, tmp_path):
    """The gauges and counters come from the database, not from the process that ran."""
    report = make_report("numbers", expect_success_within=timedelta(hours=1))
    assert finished(families_of(scrape(client))) == counts("numbers")
    result = subprocess.run(
        [sys.executable, "manage.py", "runreport", "numbers"],
        cwd=PROJECT_DIR,
        env=process_environment(tmp_path / "outputs"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr

    run = Run.objects.get(report=report)
    families = families_of(scrape(client))
    assert finished(families) == counts("numbers", succeeded=1)
    assert samples(families, "reportsvc_report_last_success_timestamp_seconds") == {
        ("numbers",): pytest.approx(run.finished_at.timestamp(), abs=1e-6)
    }
    assert samples(families, "reportsvc_report_stale") == {("numbers",): 0}


def test_existing_runs_are_tallied_when_the_tallies_arrive():
    """The migration starts each tally from the finished runs still kept."""
    import importlib

    from django.apps import apps

    migration = importlib.import_module("runs.migrations.0012_run_tallies")
    report = make_report("daily")
    now = timezone.now()
    for minutes, status in ((30, "succeeded"), (20, "failed"), (10, "succeeded"), (5, "skipped")):
        started = None if status == "skipped" else now - timedelta(minutes=minutes)
        Run.objects.create(
            report=report,
            trigger="schedule",
            status=status,
            started_at=started,
            finished_at=now - timedelta(minutes=minutes - 1),
        )
    Run.objects.create(report=report, trigger="manual")  # queued: not finished

    class SchemaEditor:
        connection = connections["default"]

    migration.tally_kept_runs(apps, SchemaEditor())
    tallies = {
        tally.status: (tally.count, tally.last_started_at, tally.last_finished_at)
        for tally in RunTally.objects.filter(report=report)
    }
    assert tallies == {
        "succeeded": (2, now - timedelta(minutes=10), now - timedelta(minutes=9)),
        "failed": (1, now - timedelta(minutes=20), now - timedelta(minutes=19)),
        "skipped": (1, None, None),
    }


# --- who may scrape ---------------------------------------------------------------------


def test_closed_by_default_it_is_not_there(client, settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "", []
    make_report("daily")
    unknown = client.get("/no-such-page")
    assert unknown.status_code == 404
    for method in (client.get, client.head, client.post, client.delete):
        for headers in ({}, {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}):
            response = method("/metrics", **headers)
            assert response.status_code == 404, method  # as for any unknown address
            assert response.content == method("/no-such-page").content


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN.upper()}",
        f"Token {TOKEN}",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer " + "a" * 1_000_000,  # huge
        "Bearer \x00\xff\u0100" + TOKEN,  # odd bytes (WSGI hands headers over as latin-1)
        "Bearer \ud800",  # a lone surrogate
    ],
)
def test_without_the_token_a_scrape_is_401_and_shows_nothing(
    client, token, authorization, django_assert_num_queries
):
    make_report("daily")
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    with django_assert_num_queries(0):  # refused before any query
        response = client.get("/metrics", **headers)
    assert response.status_code == 401
    assert response.content == b""
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'


def test_with_the_token_a_scrape_is_200(client, token):
    make_report("daily")
    for scheme in ("Bearer", "bearer", "BEARER"):
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"{scheme} {token}")
        assert response.status_code == 200
        assert b'reportsvc_runs_finished_total{report="daily",status="failed"} 0.0' in (
            response.content
        )
    assert response["Cache-Control"] == "max-age=0, no-cache, no-store, must-revalidate, private"
    assert client.head("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    refused = client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert (refused.status_code, refused["Allow"]) == (405, "GET, HEAD")
    assert client.post("/metrics").status_code == 401  # no hint for those without it


def test_allowed_networks_open_it_to_those_networks_only(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8", "2001:db8::/32"]
    for address in ("10.1.2.3", "::ffff:10.1.2.3", "2001:db8::5"):
        assert scrape(client, None, REMOTE_ADDR=address).status_code == 200, address
    for address in ("192.168.1.10", "127.0.0.1", "::1", "11.0.0.1", "2001:db9::1", ""):
        response = scrape(client, None, REMOTE_ADDR=address)
        assert response.status_code == 403, address
        assert response.content == b""


def test_behind_a_proxy_the_network_is_the_clients_not_the_proxys(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    settings.CLIENT_ADDRESS_HEADER = "X-Forwarded-For"
    settings.CLIENT_ADDRESS_PROXY_COUNT = 1
    proxy = {"REMOTE_ADDR": "10.0.0.1"}  # the proxy itself is inside the network
    assert scrape(client, None, HTTP_X_FORWARDED_FOR="10.9.9.9", **proxy).status_code == 200
    assert scrape(client, None, HTTP_X_FORWARDED_FOR="203.0.113.7", **proxy).status_code == 403
    # What the client wrote itself (left of what the proxy appended) is never read.
    spoofed = scrape(client, None, HTTP_X_FORWARDED_FOR="10.9.9.9, 203.0.113.7", **proxy)
    assert spoofed.status_code == 403


def test_with_both_settings_both_must_hold(client, settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert scrape(client, TOKEN, REMOTE_ADDR="10.1.2.3").status_code == 200
    assert scrape(client, None, REMOTE_ADDR="10.1.2.3").status_code == 401
    assert scrape(client, TOKEN, REMOTE_ADDR="192.168.1.10").status_code == 403


def test_tokens_are_compared_as_digests_in_constant_time(client, token, monkeypatch):
    """Neither the token's length nor how much of a guess is right shows in the time."""
    import access.metrics_access

    compared = []

    def compare_digest(given, expected):
        compared.append((len(given), len(expected)))
        return given == expected

    monkeypatch.setattr(access.metrics_access.hmac, "compare_digest", compare_digest)
    assert scrape(client, "short-guess").status_code == 401
    assert scrape(client, TOKEN).status_code == 200
    assert compared == [(32, 32), (32, 32)]  # SHA-256 digests, whatever was sent


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"METRICS_TOKEN": "short"}, "METRICS_TOKEN must be at least 32 characters"),
        ({"METRICS_TOKEN": "a b" * 20}, "METRICS_TOKEN must be at least 32 characters"),
        (
            {"METRICS_ALLOWED_NETWORKS": "10.0.0.0/8,the office"},
            "METRICS_ALLOWED_NETWORKS: 'the office' is not a network in CIDR notation",
        ),
    ],
)
def test_bad_metrics_settings_stop_the_start_with_the_reason(environment, message):
    result = settings_in_a_fresh_process("settings.METRICS_TOKEN", SECRET_KEY="x", **environment)
    assert result.returncode != 0
    assert message in result.stderr


def test_good_metrics_settings_load():
    result = settings_in_a_fresh_process(
        "(len(settings.METRICS_TOKEN), settings.METRICS_ALLOWED_NETWORKS)",
        SECRET_KEY="x",
        METRICS_TOKEN="A" * 43,
        METRICS_ALLOWED_NETWORKS="10.0.0.0/8, 192.168.1.7",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(43, ['10.0.0.0/8', '192.168.1.7/32'])"
