"""Metrics benchmark (PostgreSQL): GET /metrics with 5,000 reports and 1,000,000 runs.

Fills its own database (reportsvc_bench_metrics) once per size, with one INSERT …
SELECT from generate_series for the runs, then scrapes /metrics as Prometheus does
(bearer token, gzip accepted) through a local gunicorn (one sync worker,
reportsvc.wsgi, a kept-alive HTTP connection) and prints the median and p95 of the
scrapes; then, in this process, how a scrape's time splits between reading and
writing the text, and what prometheus-client's own writer takes for the same bytes.
The text is parsed back with prometheus-client's parser and checked against the data.

    python bench/metrics.py [--scrapes 100]
    python bench/metrics.py --quick      # CI: 500 reports, 50,000 runs, 20 scrapes
"""

import argparse
import collections
import gzip
import http.client
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get("BENCH_SERVER_URL", "postgres://postgres@127.0.0.1:5432")
DATABASE = "reportsvc_bench_metrics"
TOKEN = "bench-metrics-token-" + "x" * 32
TARGET_P95_MS = 50

# Runs oldest first per report (g = 1 is the newest): one in 50 failed, one in 97 a
# skipped fire (never started), the rest succeeded, taking 1 to 60 s. Every tenth
# report has a run waiting, the next one a run going; reports 7, 107, … never succeeded.
FILL_RUNS = """
INSERT INTO runs_run (report_id, status, trigger, scheduled_for, queued_at, started_at,
                      finished_at, heartbeat_at, sql, row_count, output, output_bytes,
                      output_sha256, error, worker, attempt, idempotency_key, parameters)
SELECT r.id, s.status, 'schedule', t.fire, t.fire,
       CASE WHEN s.status IN ('queued', 'skipped') THEN NULL ELSE t.fire END,
       CASE WHEN s.status IN ('queued', 'running') THEN NULL
            WHEN s.status = 'skipped' THEN t.fire
            ELSE t.fire + (1 + (g * 7 + r.id) %% 60) * interval '1 second' END,
       CASE WHEN s.status = 'running' THEN now() END,
       'SELECT 1', CASE WHEN s.status = 'succeeded' THEN 100 END,
       CASE WHEN s.status = 'succeeded' THEN 'bench/run.csv' ELSE '' END,
       CASE WHEN s.status = 'succeeded' THEN 5200 END, '',
       CASE WHEN s.status = 'failed' THEN 'relation "orders" does not exist' ELSE '' END,
       CASE WHEN s.status IN ('queued', 'skipped') THEN '' ELSE 'bench:1' END, 1, '', '{}'::jsonb
FROM reports_report r
CROSS JOIN generate_series(1, %(per_report)s) AS g
CROSS JOIN LATERAL (SELECT now() - g * interval '15 minutes' - r.id * interval '1 second'
                    AS fire) AS t
CROSS JOIN LATERAL (SELECT CASE
    WHEN g = 1 AND r.id %% 10 = 0 THEN 'queued'
    WHEN g = 1 AND r.id %% 10 = 1 THEN 'running'
    WHEN r.id %% 100 = 7 OR g %% 50 = 0 THEN 'failed'
    WHEN g %% 97 = 0 THEN 'skipped'
    ELSE 'succeeded' END AS status) AS s
"""
# What the transitions tallied, as the migration starts the tallies.
FILL_TALLIES = """
INSERT INTO runs_runtally (report_id, status, count, last_started_at, last_finished_at)
SELECT counted.report_id, counted.status, counted.count, newest.started_at,
       newest.finished_at
FROM (SELECT report_id, status, count(*) AS count FROM runs_run
      WHERE status IN ('succeeded', 'failed', 'skipped') GROUP BY report_id, status) AS counted
LEFT JOIN (SELECT DISTINCT ON (report_id, status) report_id, status, started_at, finished_at
           FROM runs_run WHERE started_at IS NOT NULL AND finished_at IS NOT NULL
           ORDER BY report_id, status, finished_at DESC, id DESC) AS newest
       ON newest.report_id = counted.report_id AND newest.status = counted.status
"""


def setup(reports, runs):
    os.environ.update(
        DATABASE_URL=f"{SERVER_URL}/{DATABASE}",
        SECRET_KEY="benchmark",
        ALLOWED_HOSTS="127.0.0.1,testserver",
        LOG_LEVEL="ERROR",
        METRICS_TOKEN=TOKEN,
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reportsvc.settings")
    sys.path.insert(0, str(PROJECT_DIR))
    import psycopg

    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as connection:
        # A fresh database each time: a kept one may hold an older schema's migrations.
        connection.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {DATABASE}")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    fill(reports, runs)


def fill(reports, runs):
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from reports.models import Report
    from runs.models import Run, RunTally, WorkerHeartbeat

    per_report = runs // reports
    if Report.objects.count() == reports and Run.objects.count() == reports * per_report:
        return
    print(f"filling {reports:,} reports and {reports * per_report:,} runs...", flush=True)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE runs_runtally, runs_delivery, runs_run CASCADE")
    Report.objects.all().delete()
    now = timezone.now()
    Report.objects.bulk_create(
        (
            Report(
                name=f"Report {i}",
                slug=f"report-{i}",
                sql="SELECT 1",
                schedule="*/15 * * * *",
                # Every fourth report expects a success within a day; one in 40 within a
                # minute, which its newest success (15 minutes ago or more) misses.
                expect_success_within=(timedelta(minutes=1) if i % 40 == 0 else timedelta(days=1))
                if i % 4 == 0
                else None,
            )
            for i in range(reports)
        ),
        batch_size=1000,
    )
    WorkerHeartbeat.objects.all().delete()
    WorkerHeartbeat.objects.bulk_create(
        WorkerHeartbeat(
            name=f"worker-{i}:{100 + i}",
            host=f"worker-{i}",
            pid=100 + i,
            version="bench",
            started_at=now,
            last_seen_at=now,
        )
        for i in range(4)
    )
    with connection.cursor() as cursor:
        cursor.execute(FILL_RUNS, {"per_report": per_report})
        cursor.execute(FILL_TALLIES)
        cursor.execute("VACUUM ANALYZE runs_run, runs_runtally, reports_report")
    print(
        f"filled in {time.perf_counter() - started:.0f} s: {Run.objects.count():,} runs, "
        f"{RunTally.objects.count():,} tallies",
        flush=True,
    )


def percentiles(values):
    values = sorted(values)
    return statistics.median(values), values[min(len(values) - 1, int(len(values) * 0.95))]


def scrape(connection):
    """One scrape as Prometheus makes it (gzip accepted); its time and its text."""
    started = time.perf_counter()
    connection.request(
        "GET",
        "/metrics",
        headers={"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": "gzip"},
    )
    response = connection.getresponse()
    body = response.read()
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status == 200, (response.status, body[:200])
    assert response.getheader("Content-Encoding") == "gzip"
    return elapsed, body


def start_gunicorn(port):
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "reportsvc.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--access-logfile",
            "/dev/null",
        ],
        cwd=PROJECT_DIR,
        env=dict(os.environ),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("gunicorn did not start")


def check_text(body):
    """The scrape, parsed by prometheus-client, says what the data says."""
    from prometheus_client.parser import text_string_to_metric_families

    from reports.models import Report
    from runs.models import Run, RunStatus
    from runs.selectors import reports_with_freshness

    families = {family.name: family for family in text_string_to_metric_families(body.decode())}
    stale = families["reportsvc_report_stale"].samples
    finished = families["reportsvc_runs_finished"].samples
    active = {
        sample.labels["status"]: sample.value for sample in families["reportsvc_runs"].samples
    }
    checks = [
        (
            "a stale gauge per report that expects a success",
            len(stale) == Report.objects.filter(expect_success_within__isnull=False).count(),
        ),
        (
            "as many stale as the selector says",
            sum(sample.value for sample in stale)
            == reports_with_freshness().filter(stale=True).count(),
        ),
        (
            "every finished run counted",
            sum(sample.value for sample in finished)
            == Run.objects.exclude(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).count(),
        ),
        (
            "queued and running as in the runs table",
            active
            == {
                status: Run.objects.filter(status=status).count()
                for status in (RunStatus.QUEUED, RunStatus.RUNNING)
            },
        ),
    ]
    for label, ok in checks:
        assert ok, label
    return sum(len(family.samples) for family in families.values())


def in_process_split(count):
    """Where a scrape's time goes, in this process (wall clock and CPU): reading the rows;
    the whole text when each report's lines are reused (nothing changed since the last
    scrape), when a tenth of the reports changed, and when none is known (a process's
    first scrape); and what prometheus-client's own writer takes for the same samples."""
    import random

    from django.utils import timezone
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    from runs.services.infrastructure import metrics

    def timed(name, work, before=lambda: None):
        for _ in range(count):
            before()
            started, cpu = time.perf_counter(), time.process_time()
            result = work()
            timings[name].append((time.perf_counter() - started) * 1000)
            timings[f"{name}_cpu"].append((time.process_time() - cpu) * 1000)
        return result

    def forget(share):
        known = metrics.REPORT_LINES._by_row
        for row in random.sample(list(known), int(len(known) * share)):
            del known[row]

    timings = collections.defaultdict(list)
    timed("read", lambda: (metrics._report_rows(timezone.now()), metrics._runs_now()))
    text = timed("text", metrics.metrics_text)
    timed("tenth", metrics.metrics_text, lambda: forget(0.1))
    timed("cold", metrics.metrics_text, lambda: forget(1))
    families = metrics.read_metrics()

    class Readings:
        def collect(self):
            for family in families:
                kind = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
                name = metrics.PREFIX + family.name
                metric = kind(name, family.help, labels=family.label_names)
                for values, value in family.samples:
                    metric.add_metric(list(values), value)
                yield metric

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Readings())
    for _ in range(max(3, count // 10)):
        started = time.perf_counter()
        assert generate_latest(registry) == text
        timings["client"].append((time.perf_counter() - started) * 1000)
    return {name: percentiles(values) for name, values in timings.items()}


def main():
    warnings.filterwarnings("ignore", "No directory at")  # static files are not collected
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--scrapes", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="CI: small, a few seconds")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    if args.quick:
        args.reports, args.runs, args.scrapes = 500, 50_000, 20
    setup(args.reports, args.runs)

    server = start_gunicorn(args.port)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
        for _ in range(3):
            _, packed = scrape(connection)  # warm up
        latencies = [scrape(connection)[0] for _ in range(args.scrapes)]
    finally:
        server.terminate()
        server.wait(30)
    body = gzip.decompress(packed)
    samples = check_text(body)
    median, p95 = percentiles(latencies)
    split = in_process_split(args.scrapes)

    from runs.models import Run

    print(
        f"{Run.objects.count():,} runs over {args.reports:,} reports; {args.scrapes} scrapes "
        f"of {len(body) / 1024:,.0f} KiB ({len(packed) / 1024:,.0f} KiB gzipped), "
        f"{samples:,} samples; load average "
        f"{' '.join(f'{load:.1f}' for load in os.getloadavg())} on {os.cpu_count()} cores"
    )
    print(f"{'':<52} {'median':>8} {'p95':>8}")
    rows = [
        ("GET /metrics (gunicorn, kept-alive)", (median, p95)),
        ("  in process: reading the rows", split["read"]),
        ("                CPU", split["read_cpu"]),
        ("              the whole text, lines reused", split["text"]),
        ("                CPU", split["text_cpu"]),
        ("              ... a tenth of the reports changed", split["tenth"]),
        ("              ... no line known (first scrape)", split["cold"]),
        ("  prometheus-client's generate_latest, same bytes", split["client"]),
    ]
    for label, (middle, high) in rows:
        print(f"{label:<52} {middle:>6.1f}ms {high:>6.1f}ms")
    if args.quick:
        print("(quick run: too small for the target; `python bench/metrics.py` checks it)")
        return 0
    print(f"{'PASS' if p95 <= TARGET_P95_MS else 'MISS'}  scrape p95 <= {TARGET_P95_MS} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
