"""Scheduler benchmark: fires, scale-out and the worker's cost per run.

    python bench/scheduler.py            # full: real minute fires, about ten minutes
    python bench/scheduler.py --quick    # CI: small batches made due by hand, under a minute

1. Fire -> queued: N reports due at the same moment; the time from that moment until
   all N runs are in the runs table (polled every 25 ms), on PostgreSQL and on SQLite,
   for 1,000 and 10,000 reports. Full mode waits for a real minute fire of
   ``* * * * *``; quick mode sets ``next_run_at`` to this minute's fire just before a
   whole second, when the leader's pass runs.
2. No-op batch (PostgreSQL): the 1,000 runs of that fire, executed by 1 and then by 2
   workers; the time until all finished, worker CPU per run (every worker process,
   leader included) and database CPU per run (the backends serving the benchmark's
   database, autovacuum left out, and backends that ended meanwhile, which only the
   postmaster counts, for the whole server: on a shared server other sessions count).
3. Scale-out (PostgreSQL): a batch of database-bound runs (``pg_sleep(0.5)`` through the
   default data source), queued at once, finished by 1 worker and by 2 workers of
   WORKER_CONCURRENCY slots each.
4. Manual enqueue -> start on an idle worker.

Uses its own database, reportsvc_bench (PostgreSQL; BENCH_DATABASE names another), and
a SQLite file in a temporary folder; run one at a time.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get("BENCH_SERVER_URL", "postgres://postgres@127.0.0.1:5432")
DATABASE = os.environ.get("BENCH_DATABASE", "reportsvc_bench")
SLEEP_SQL = "SELECT 1 AS done FROM pg_sleep(0.5)"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def setup_django(engine, folder):
    os.environ.update(SECRET_KEY="benchmark", OUTPUTS_DIR=str(folder / "outputs"))
    if engine == "postgresql":
        import psycopg

        with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as connection:
            # A fresh database each time: nothing left over from an older schema or run.
            connection.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            connection.execute(f"CREATE DATABASE {DATABASE}")
        os.environ["DATABASE_URL"] = f"{SERVER_URL}/{DATABASE}"
    else:
        os.environ.update(
            DATABASE_URL=f"sqlite:///{folder / 'bench.sqlite3'}", REPORTSVC_VAR_DIR=str(folder)
        )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reportsvc.settings")
    sys.path.insert(0, str(PROJECT_DIR))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# --- workers and what they cost ---------------------------------------------------------


def start_workers(count, log_dir):
    workers = []
    for _ in range(count):
        log = open(log_dir / f"worker-{len(list(log_dir.glob('worker-*')))}.log", "w")  # noqa: SIM115
        workers.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "runapscheduler"],
                cwd=PROJECT_DIR,
                env=dict(os.environ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    from django.db.models.functions import Now

    from runs.models import SchedulerLease, WorkerHeartbeat

    progress(f"started {count} worker(s)")
    pids = {worker.pid for worker in workers}
    wait_until(lambda: set(WorkerHeartbeat.objects.values_list("pid", flat=True)) >= pids, 60)
    wait_until(lambda: SchedulerLease.objects.filter(expires_at__gt=Now()).exists(), 60)
    progress("workers ready")
    return workers


def stop_workers(workers):
    progress("stopping the workers")
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(120)


def cpu_seconds(pid, children=False):
    """User + system CPU time of a live process (with ``children``: of its children
    that ended and were reaped), from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    first = 13 if children else 11
    return (int(fields[first]) + int(fields[first + 1])) / CLOCK_TICKS


def parent_pid(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


class CpuMeter:
    """CPU of the workers and of the database backends serving the benchmark.

    Each run connects anew as the login it leases and closes the connection when it
    ends, so most backends end during a batch: their CPU is read from the postmaster's
    reaped children, which counts the backends of the whole server (other databases'
    sessions that end meanwhile too, and parallel workers).
    """

    def __init__(self, workers):
        self.workers = workers
        self.postmaster = None
        self.backends_before = self._backends()
        self.ended_before = self._ended()
        self.workers_before = sum(cpu_seconds(worker.pid) for worker in workers)

    def _backends(self):
        from django.db import connection

        if connection.vendor != "postgresql":
            return None
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
            pids = [pid for (pid,) in cursor.fetchall()]
            cursor.execute("SELECT pg_backend_pid()")
            if self.postmaster is None:
                self.postmaster = parent_pid(cursor.fetchone()[0])
        usage = {}
        for pid in pids:
            try:
                usage[pid] = cpu_seconds(pid)
            except OSError:
                continue  # ended meanwhile, or not on this machine
        return usage

    def _ended(self):
        return None if self.postmaster is None else cpu_seconds(self.postmaster, children=True)

    def read(self):
        """(worker CPU seconds, database CPU seconds or None) since the meter started."""
        workers = sum(cpu_seconds(worker.pid) for worker in self.workers) - self.workers_before
        if self.backends_before is None:
            return workers, None
        after = self._backends()
        # Backends still alive, then those that ended (counted by their parent).
        live = sum(used - self.backends_before.get(pid, 0.0) for pid, used in after.items())
        return workers, live + self._ended() - self.ended_before


STARTED = time.monotonic()


def progress(message):
    print(f"[{time.monotonic() - STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


def wait_until(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not met in time")
        time.sleep(interval)
    return result


def sleep_until(moment):
    time.sleep(max(0.0, moment.timestamp() - time.time()))


# --- the cases --------------------------------------------------------------------------


def reset(report_count, schedule="* * * * *", sql="SELECT 1 AS n", enabled=True):
    from django_apscheduler.models import DjangoJob

    from reports.models import Report
    from reports.services.schedules import upcoming_fire
    from runs.models import Run, WorkerHeartbeat

    Run.objects.all().delete()
    DjangoJob.objects.all().delete()
    WorkerHeartbeat.objects.all().delete()
    Report.objects.all().delete()
    next_run_at = upcoming_fire(schedule, "UTC", enabled)
    Report.objects.bulk_create(
        (
            Report(
                name=f"Bench {i}",
                slug=f"bench-{i}",
                sql=sql,
                schedule=schedule,
                timezone="UTC",
                enabled=enabled,
                next_run_at=next_run_at,
            )
            for i in range(report_count)
        ),
        batch_size=1000,
    )
    from django.db import connection

    if connection.vendor == "postgresql":  # no autovacuum of the last case's rows meanwhile
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE runs_run, reports_report, django_apscheduler_djangojob")


def wait_for_a_minute_to_fire_in():
    """Past 40 s into the minute, wait for the next: the measured fire (the next minute
    boundary) comes at least 20 s after the reports and the workers are ready."""
    now = datetime.now(UTC)
    if now.second >= 40:
        sleep_until(now.replace(second=0, microsecond=0) + timedelta(minutes=1, seconds=1))


def measure_fire(report_count, worker_count, log_dir, *, quick, wait_finished):
    """Fire N reports at once; seconds until all are queued (and finished), CPU used."""
    progress(f"{report_count} reports firing, {worker_count} worker(s)")
    from reports.models import Report
    from runs.models import Run, RunStatus

    if not quick:
        wait_for_a_minute_to_fire_in()
    reset(report_count, enabled=not quick)
    workers = start_workers(worker_count, log_dir)
    try:
        if quick:
            # Enabled with this minute's fire due, just before the leader's pass on the
            # second (disabled until then, so no real fire comes first).
            moment = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
            fired = moment.replace(second=0)
            sleep_until(moment - timedelta(seconds=0.6))
            Report.objects.update(enabled=True, next_run_at=fired)
        else:
            moment = fired = Report.objects.order_by("next_run_at").first().next_run_at
        batch = Run.objects.filter(scheduled_for=fired)
        sleep_until(moment - timedelta(seconds=0.5))
        meter = CpuMeter(workers)
        wait_until(lambda: batch.count() >= report_count, 120, interval=0.025)
        queued = time.time() - moment.timestamp()
        finished = statuses = None
        if wait_finished:
            active = batch.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING])
            wait_until(lambda: not active.exists(), 600)
            worker_cpu, database_cpu = meter.read()
            last = max(batch.values_list("finished_at", flat=True))
            finished = (last - moment).total_seconds()
            statuses = sorted(set(batch.values_list("status", flat=True)))
        else:
            worker_cpu, database_cpu = meter.read()
    finally:
        stop_workers(workers)
    return {
        "reports": report_count,
        "workers": worker_count,
        "queued": queued,
        "finished": finished,
        "statuses": statuses,
        "worker_cpu_ms": worker_cpu / report_count * 1000,
        "database_cpu_ms": None if database_cpu is None else database_cpu / report_count * 1000,
    }


def measure_sleep_batch(run_count, worker_count, log_dir):
    """Queue ``run_count`` database-bound runs at once; seconds until all finished."""
    progress(f"{run_count} database-bound runs, {worker_count} worker(s)")
    from reports.models import Report
    from runs.models import Run, RunStatus, RunTrigger

    reset(run_count, schedule="", sql=SLEEP_SQL)
    workers = start_workers(worker_count, log_dir)
    try:
        time.sleep(1)  # past the workers' first steps
        meter = CpuMeter(workers)
        started = datetime.now(UTC)
        Run.objects.bulk_create(
            Run(report=report, trigger=RunTrigger.API, queued_at=started)
            for report in Report.objects.all()
        )
        active = Run.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING])
        wait_until(lambda: not active.exists(), 600)
        worker_cpu, database_cpu = meter.read()
        last = max(Run.objects.values_list("finished_at", flat=True))
        statuses = sorted(set(Run.objects.values_list("status", flat=True)))
    finally:
        stop_workers(workers)
    return {
        "workers": worker_count,
        "finished": (last - started).total_seconds(),
        "statuses": statuses,
        "worker_cpu_ms": worker_cpu / run_count * 1000,
        "database_cpu_ms": database_cpu / run_count * 1000,
    }


def measure_manual_lag(count, log_dir):
    from reports.models import Report
    from runs.models import Run, RunStatus
    from runs.services.domain.queue import request_run

    progress(f"{count} manual runs, one at a time")
    reset(1, schedule="")
    report = Report.objects.get()
    workers = start_workers(1, log_dir)
    lags = []
    try:
        time.sleep(1)
        for _ in range(count):
            run, _ = request_run(report, "api")
            wait_until(
                lambda run=run: Run.objects.filter(pk=run.pk, status=RunStatus.SUCCEEDED).exists(),
                30,
                interval=0.01,
            )
            run.refresh_from_db()
            lags.append((run.started_at - run.queued_at).total_seconds())
            time.sleep(0.05)
    finally:
        stop_workers(workers)
    lags.sort()
    return statistics.median(lags), lags[min(len(lags) - 1, int(len(lags) * 0.99))]


# --- the two engines --------------------------------------------------------------------


def fire_cases(sizes, folder, quick):
    """Fire -> queued for each size (1 worker): the leader's work alone."""
    return [measure_fire(size, 1, folder, quick=quick, wait_finished=False) for size in sizes]


def sqlite_fire_cases(sizes, quick):
    """The SQLite cases, in a process of their own (Django is set up for one database)."""
    command = [sys.executable, __file__, "--sqlite-fires", ",".join(map(str, sizes))]
    output = subprocess.run(
        command + (["--quick"] if quick else []), check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI: small, under a minute")
    parser.add_argument("--sqlite-fires", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [200] if args.quick else [1000, 10000]
    no_op, sleepers, manual = (200, 8, 20) if args.quick else (1000, 80, 100)

    with tempfile.TemporaryDirectory(prefix="reportsvc-bench-") as folder:
        folder = Path(folder)
        if args.sqlite_fires:
            progress("SQLite: migrating")
            setup_django("sqlite", folder)
            sizes = [int(size) for size in args.sqlite_fires.split(",")]
            print(json.dumps(fire_cases(sizes, folder, args.quick)))
            return 0
        sqlite = sqlite_fire_cases(sizes, args.quick)
        progress("PostgreSQL: a fresh database, migrating")
        setup_django("postgresql", folder)
        postgres = fire_cases(sizes[1:], folder, args.quick)
        batch = [
            measure_fire(no_op, workers, folder, quick=args.quick, wait_finished=True)
            for workers in (1, 2)
        ]
        sleeping = [measure_sleep_batch(sleepers, workers, folder) for workers in (1, 2)]
        median_lag, p99_lag = measure_manual_lag(manual, folder)

    how = "made due by hand at a whole second" if args.quick else "firing at a real minute"
    print(f"Fire -> all runs queued ({how}; 1 worker):")
    fires = [("SQLite", case) for case in sqlite]
    fires += [("PostgreSQL", batch[0])] + [("PostgreSQL", case) for case in postgres]
    for engine, case in sorted(fires, key=lambda item: (item[0], item[1]["reports"])):
        print(f"  {engine:<10} {case['reports']:>6} reports  {case['queued']:6.2f} s")

    def cpu(case):
        database = case["database_cpu_ms"]
        return f"worker CPU/run {case['worker_cpu_ms']:5.2f} ms, database CPU/run " + (
            "n/a" if database is None else f"{database:5.2f} ms"
        )

    print(f"\nNo-op batch, {no_op} runs of one fire (PostgreSQL):")
    for case in batch:
        print(
            f"  {case['workers']} worker(s): queued {case['queued']:.2f} s, finished "
            f"{case['finished']:.2f} s, {cpu(case)}  [{', '.join(case['statuses'])}]"
        )
    print(f"\nScale-out, {sleepers} runs of `{SLEEP_SQL}` queued at once (PostgreSQL):")
    for case in sleeping:
        print(
            f"  {case['workers']} worker(s): finished {case['finished']:.2f} s, {cpu(case)}"
            f"  [{', '.join(case['statuses'])}]"
        )
    speedup = sleeping[0]["finished"] / sleeping[1]["finished"]
    print(f"  2 workers finish it {speedup:.2f}x faster than 1")
    print(
        f"\nManual enqueue -> start on an idle worker ({manual} runs): "
        f"median {median_lag * 1000:.0f} ms, p99 {p99_lag * 1000:.0f} ms\n"
    )

    def grows(key):
        return max(batch[1][key] / batch[0][key], sleeping[1][key] / sleeping[0][key])

    small, large = sizes[0], sizes[-1]
    queued = {(engine, case["reports"]): case["queued"] for engine, case in fires}
    checks = [
        (
            f"{small} reports queued within 1 s of the fire (both engines)",
            queued["SQLite", small] <= 1 and queued["PostgreSQL", no_op] <= 1,
        ),
        (
            f"{large} reports queued within 5 s of the fire (both engines)",
            queued["SQLite", large] <= 5 and queued["PostgreSQL", large] <= 5,
        ),
        ("worker CPU per no-op run <= 6 ms", batch[0]["worker_cpu_ms"] <= 6),
        (
            f"CPU per run does not grow from 1 to 2 workers (x{grows('worker_cpu_ms'):.2f} "
            f"worker, x{grows('database_cpu_ms'):.2f} database; <= 1.1)",
            grows("worker_cpu_ms") <= 1.1 and grows("database_cpu_ms") <= 1.1,
        ),
        ("2 workers finish the database-bound batch >= 1.8x faster", speedup >= 1.8),
        ("manual start lag p99 < 1 s", p99_lag < 1),
    ]
    if args.quick:
        print("(quick run: too small for the targets; `python bench/scheduler.py` checks them)")
        return 0
    for label, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
