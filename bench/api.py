"""API benchmark (PostgreSQL): latency with 1,000,000 runs over 500 (or more) reports.

Fills its own database (reportsvc_bench_api, or BENCH_DATABASE) anew, then measures
through a local gunicorn (one sync worker, reportsvc.wsgi, over a kept-alive HTTP
connection) the median and p95 of: the first and the 50th page of
GET /api/runs/?report=<slug>, GET /api/reports/ (every report with its last run), its
pages (?page_size=), and GET /api/runs/{id}/; and shows that the number of queries
does not grow with the page size. The target is a p95 of 50 ms for each; with more
than 500 reports the whole list has none (its pages have).

    python bench/api.py [--requests 100] [--reports 500] [--page-size 100] [--reference DIR]

With --reference, a second checkout (the code before a change, say) is served alongside
and the two take turns request by request: on a busy machine, the difference between
them is the figure to read.
"""

import argparse
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
DATABASE = os.environ.get("BENCH_DATABASE", "reportsvc_bench_api")
TOTAL_RUNS = 1_000_000

FILL_RUNS = """
INSERT INTO runs_run (report_id, status, trigger, scheduled_for, queued_at, started_at,
                      finished_at, sql, row_count, output, output_bytes, output_sha256,
                      error, worker, attempt, idempotency_key, parameters)
SELECT r.id,
       CASE WHEN g %% 50 = 0 THEN 'failed' ELSE 'succeeded' END,
       CASE WHEN g %% 10 = 0 THEN 'api' ELSE 'schedule' END,
       t.fire, t.fire, t.fire + interval '1 second', t.fire + interval '3 seconds',
       'SELECT * FROM orders', 1000 + g, 'bench/run.csv', 52000, md5(g::text) || md5(r.id::text),
       CASE WHEN g %% 50 = 0 THEN 'relation "orders" does not exist' ELSE '' END,
       'bench:1', 1, '', '{}'::jsonb
FROM reports_report r
CROSS JOIN generate_series(1, %s) AS g
CROSS JOIN LATERAL (SELECT now() - g * interval '15 minutes' - r.id * interval '1 second'
                    AS fire) AS t
"""
# What the transitions tallied (the reports list reads each report's last success there).
FILL_TALLIES = """
INSERT INTO runs_runtally (report_id, status, count, last_started_at, last_finished_at)
SELECT report_id, status, count(*), max(started_at), max(finished_at)
FROM runs_run GROUP BY report_id, status
"""


def setup(reports):
    os.environ.update(
        DATABASE_URL=f"{SERVER_URL}/{DATABASE}",
        SECRET_KEY="benchmark",
        ALLOWED_HOSTS="testserver",
        LOG_LEVEL="ERROR",
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
    fill(reports)


def fill(reports):
    from django.db import connection

    from reports.models import Report
    from runs.models import Run

    runs_per_report = TOTAL_RUNS // reports
    print(f"filling {reports * runs_per_report:,} runs over {reports:,} reports...", flush=True)
    Run.objects.all().delete()
    Report.objects.all().delete()
    Report.objects.bulk_create(
        Report(name=f"Report {i}", slug=f"report-{i}", sql="SELECT 1", schedule="*/15 * * * *")
        for i in range(reports)
    )
    with connection.cursor() as cursor:
        cursor.execute(FILL_RUNS, [runs_per_report])
        cursor.execute(FILL_TALLIES)
        cursor.execute("VACUUM ANALYZE runs_run, runs_runtally, reports_report")


def query_count(client, url, headers):
    """Queries one request makes, counted in-process through the test client."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        assert client.get(url, **headers).status_code == 200
    return len(queries)


def timed(connections, url, count, token):
    """``(median, p95)`` in ms of ``count`` requests of ``url`` to each server, the
    servers taking turns request by request (so a busy moment falls on both)."""
    latencies = [[] for _ in connections]
    for _ in range(count):
        for connection, times in zip(connections, latencies, strict=True):
            started = time.perf_counter()
            connection.request("GET", url, headers={"Authorization": f"Token {token}"})
            response = connection.getresponse()
            response.read()
            times.append((time.perf_counter() - started) * 1000)
            assert response.status == 200, (url, response.status)
    figures = []
    for times in latencies:
        times.sort()
        figures.append(
            (statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))])
        )
    return figures


def server_cpu_seconds(server):
    """CPU time (user + system) of gunicorn's worker processes so far: what requests
    cost the server, whatever else keeps the machine busy."""
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    total = 0
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def start_gunicorn(port, directory=PROJECT_DIR):
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
        cwd=directory,
        env={**os.environ, "ALLOWED_HOSTS": "127.0.0.1"},
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


def main():
    warnings.filterwarnings("ignore", "No directory at")  # static files are not collected
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--reports", type=int, default=500, help="reports (1,000,000 runs over them)"
    )
    parser.add_argument("--page-size", type=int, default=100, help="of GET /api/reports/ pages")
    parser.add_argument(
        "--reference",
        metavar="DIR",
        help="another checkout of the service (e.g. `git worktree add /tmp/before main`), "
        "served by a second gunicorn on the same database: the requests alternate between "
        "the two, and the reference's figures follow each line",
    )
    args = parser.parse_args()
    setup(args.reports)

    from django.contrib.auth import get_user_model
    from django.test import Client

    from access.services.tokens import create_token
    from runs.models import Run

    user, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    _, key = create_token(user, "bench")
    headers = {"HTTP_AUTHORIZATION": f"Token {key}"}
    client = Client()

    # 20 runs a page, as far as the report's runs go (page 50 at 500 reports).
    first = "/api/runs/?report=report-250&page_size=20"
    pages = min(50, TOTAL_RUNS // args.reports // 20)
    page = client.get(first, **headers).json()
    for _ in range(pages - 2):
        page = client.get(page["next"], **headers).json()
    last_runs_page = page["next"].replace("http://testserver", "")
    run_id = (
        Run.objects.filter(report__slug="report-250")
        .order_by("-id")
        .values_list("pk", flat=True)[TOTAL_RUNS // args.reports // 2]
    )
    # The reports list in pages (?page_size=, the next page's URL in the Link header).
    reports_pages = [f"/api/reports/?page_size={args.page_size}"]
    while len(reports_pages) < args.reports // args.page_size:
        link = client.get(reports_pages[-1], **headers).headers["Link"]
        reports_pages.append(link.split(">", 1)[0].lstrip("<").replace("http://testserver", ""))
    middle = reports_pages[len(reports_pages) // 2]

    cases = [
        ("GET /api/runs/?report=<slug> (page 1)", first, True),
        (f"GET /api/runs/?report=<slug> (page {pages})", last_runs_page, True),
        (f"GET /api/reports/ (all {args.reports:,}, last runs)", "/api/reports/", True),
        (f"GET /api/reports/?page_size={args.page_size} (first)", reports_pages[0], True),
        (f"GET /api/reports/?page_size={args.page_size} (middle)", middle, True),
        ("GET /api/runs/{id}/", f"/api/runs/{run_id}/", True),
    ]
    if args.reports > 500:  # the whole list is the pages' job past the 500 of the target
        cases[2] = (*cases[2][:2], False)
    runs = Run.objects.count()
    print(f"{runs:,} runs over {args.reports:,} reports; {args.requests} requests each")
    print(f"{'request':<46} {'median':>8} {'p95':>8} {'CPU/req':>8} {'queries':>8} {'bytes':>10}")
    servers = [start_gunicorn(args.port)]
    if args.reference:
        servers.append(start_gunicorn(args.port + 1, Path(args.reference).resolve()))
    worst = 0.0
    try:
        connections = [
            http.client.HTTPConnection("127.0.0.1", args.port + number, timeout=30)
            for number in range(len(servers))
        ]
        for label, url, targeted in cases:
            timed(connections, url, 3, key)  # warm up
            cpu_before = [server_cpu_seconds(server) for server in servers]
            figures = timed(connections, url, args.requests, key)
            cpu = [
                (server_cpu_seconds(server) - before) / args.requests * 1000
                for server, before in zip(servers, cpu_before, strict=True)
            ]
            if targeted:
                worst = max(worst, figures[0][1])
            queries = query_count(client, url, headers)
            size = len(client.get(url, **headers).content)
            note = "" if targeted else "  (no target)"
            (median, p95), *reference = figures
            print(
                f"{label:<46} {median:>6.1f}ms {p95:>6.1f}ms {cpu[0]:>6.1f}ms {queries:>8} "
                f"{size:>10,}{note}"
            )
            for (median, p95), spent in zip(reference, cpu[1:], strict=True):
                print(f"{'  reference':<46} {median:>6.1f}ms {p95:>6.1f}ms {spent:>6.1f}ms")
    finally:
        for server in servers:
            server.terminate()
            server.wait(30)
    admin = Client()
    admin.force_login(user)
    admin_times = []
    for _ in range(max(10, args.requests // 5)):
        started = time.perf_counter()
        assert admin.get("/admin/runs/run/").status_code == 200
        admin_times.append((time.perf_counter() - started) * 1000)
    admin_times.sort()
    admin_p95 = admin_times[min(len(admin_times) - 1, int(len(admin_times) * 0.95))]
    print(
        f"{'admin runs list (test client)':<46} {statistics.median(admin_times):>6.1f}ms "
        f"{admin_p95:>6.1f}ms {query_count(admin, '/admin/runs/run/', {}):>8}"
    )
    print("queries per runs page by page size:", end=" ")
    counts = []
    for size in (10, 50, 200, 500):
        counts.append(
            query_count(client, f"/api/runs/?report=report-250&page_size={size}", headers)
        )
        print(f"{size}: {counts[-1]}", end="  ")
    print()
    for label, ok in [
        ("p95 <= 50 ms for each request with a target", worst <= 50),
        ("query count does not grow with page size", len(set(counts)) == 1),
        ("admin runs list p95 < 300 ms", admin_p95 < 300),
    ]:
        print(f"{'PASS' if ok else 'MISS'}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
