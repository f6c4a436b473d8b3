"""Scheduler benchmark (PostgreSQL): 1,000 reports firing in the same minute.

Measures, with 1 worker and then with 2 workers (each WORKER_CONCURRENCY, default 2):
the time from the fire moment until every fire is a queued run, and until every run
has finished; then, on one idle worker, the lag between a manual enqueue and the run's
start over 100 enqueues (median and p99). Uses its own database, reportsvc_bench.

    python bench/scheduler.py [--reports 1000] [--manual 100]

Waits for minute boundaries, so a full run takes about three minutes.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get("BENCH_SERVER_URL", "postgres://postgres@127.0.0.1:5432")
DATABASE = "reportsvc_bench"
DATABASE_URL = f"{SERVER_URL}/{DATABASE}"


def setup_django(outputs_dir):
    os.environ.update(
        DATABASE_URL=DATABASE_URL, SECRET_KEY="benchmark", OUTPUTS_DIR=str(outputs_dir)
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reportsvc.settings")
    sys.path.insert(0, str(PROJECT_DIR))
    import psycopg

    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as connection:
        # A fresh database each time: nothing left over from an older schema or run.
        connection.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {DATABASE}")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def reset(report_count, schedule):
    from django_apscheduler.models import DjangoJob

    from reports.models import Report
    from runs.models import Run, WorkerHeartbeat

    Run.objects.all().delete()
    DjangoJob.objects.all().delete()
    WorkerHeartbeat.objects.all().delete()
    Report.objects.all().delete()
    Report.objects.bulk_create(
        Report(name=f"Bench {i}", slug=f"bench-{i}", sql="SELECT 1 AS n", schedule=schedule)
        for i in range(report_count)
    )


def start_workers(count, outputs_dir, log_dir):
    environment = {**os.environ, "DATABASE_URL": DATABASE_URL, "OUTPUTS_DIR": str(outputs_dir)}
    workers = []
    for index in range(count):
        log = open(log_dir / f"worker-{count}-{index}.log", "w")  # noqa: SIM115
        workers.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "runapscheduler"],
                cwd=PROJECT_DIR,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return workers


def stop_workers(workers):
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(120)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid, children=False):
    """User + system CPU time of a process (and of its reaped children), from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def database_cpu_seconds():
    """CPU time of the local PostgreSQL server: postmaster, its reaped and live backends."""
    pid_files = list(Path("/var/run/postgresql").glob("*.pid"))
    if not pid_files:
        return None
    postmaster = int(pid_files[0].read_text().split()[0])
    total = cpu_seconds(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == postmaster:
                    total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            except (OSError, IndexError):
                continue  # the process ended meanwhile
    return total


def wait_until(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not met in time")
        time.sleep(interval)
    return result


def measure_batch(worker_count, report_count, outputs_dir, log_dir):
    from reports.models import Report
    from runs.models import Run, RunStatus

    reset(report_count, "* * * * *")
    workers = start_workers(worker_count, outputs_dir, log_dir)
    try:
        # All jobs scheduled (next run times stored) before the minute we measure.
        wait_until(lambda: not Report.objects.filter(next_run_at=None).exists(), 60)
        fire = Report.objects.order_by("next_run_at").first().next_run_at
        if fire.timestamp() - time.time() < 5:  # too close: measure the minute after
            fire += timedelta(minutes=1)
        batch = Run.objects.filter(scheduled_for=fire)
        time.sleep(max(0.0, fire.timestamp() - time.time() - 0.5))
        cpu_before = [cpu_seconds(worker.pid) for worker in workers], database_cpu_seconds()
        wait_until(lambda: batch.count() >= report_count, 120)
        wait_until(
            lambda: not batch.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).exists(),
            300,
        )
        cpu_after = [cpu_seconds(worker.pid) for worker in workers], database_cpu_seconds()
        times = batch.values_list("queued_at", "finished_at", "status")
        queued = max(q for q, _, _ in times) - fire
        finished = max(f for _, f, _ in times) - fire
        statuses = {s for _, _, s in times}
    finally:
        stop_workers(workers)
    worker_cpu = sum(cpu_after[0]) - sum(cpu_before[0])
    database_cpu = None if cpu_before[1] is None else cpu_after[1] - cpu_before[1]
    return queued.total_seconds(), finished.total_seconds(), statuses, worker_cpu, database_cpu


def measure_manual_lag(count, outputs_dir, log_dir):
    from reports.models import Report
    from runs.models import Run, RunStatus
    from runs.services.queue import enqueue_run

    reset(1, "")
    report = Report.objects.get()
    workers = start_workers(1, outputs_dir, log_dir)
    lags = []
    try:
        time.sleep(2)
        for _ in range(count):
            run = enqueue_run(report, "api")
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--manual", type=int, default=100)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="reportsvc-bench-") as folder:
        outputs_dir, log_dir = Path(folder) / "outputs", Path(folder)
        setup_django(outputs_dir)
        one = measure_batch(1, args.reports, outputs_dir, log_dir)
        two = measure_batch(2, args.reports, outputs_dir, log_dir)
        median_lag, p99_lag = measure_manual_lag(args.manual, outputs_dir, log_dir)
    print(f"{args.reports} reports firing at the same minute:")
    # CPU per run explains the scaling: the workers and the database share the cores.
    print(
        f"{'workers':>8} {'all queued':>11} {'all finished':>13} "
        f"{'worker CPU/run':>15} {'database CPU/run':>17}  statuses"
    )
    for workers, (queued, finished, statuses, worker_cpu, database_cpu) in ((1, one), (2, two)):
        database = "n/a" if database_cpu is None else f"{database_cpu / args.reports * 1000:.2f} ms"
        print(
            f"{workers:>8} {queued:>10.2f}s {finished:>12.2f}s "
            f"{worker_cpu / args.reports * 1000:>12.2f} ms {database:>17}  "
            f"{', '.join(sorted(statuses))}"
        )
    speedup = one[1] / two[1]
    print(f"2 workers finish the batch {speedup:.2f}x faster than 1")
    if one[4] is not None:
        # The most a second worker can gain is the CPU the first one leaves unused.
        busy = (one[3] + one[4]) / one[1]
        cores = os.cpu_count()
        print(
            f"1 worker keeps {busy:.2f} of {cores} cores busy (worker + database), so a "
            f"second worker can gain at most {min(2.0, cores / busy):.2f}x on this machine"
        )
    print(
        f"manual enqueue -> start on an idle worker ({args.manual} runs): "
        f"median {median_lag * 1000:.0f} ms, p99 {p99_lag * 1000:.0f} ms"
    )
    checks = [
        (f"all {args.reports} queued within 5 s of the fire", max(one[0], two[0]) <= 5),
        ("manual start lag p99 < 1 s", p99_lag < 1),
        ("2 workers >= 1.6x faster than 1", speedup >= 1.6),
    ]
    for label, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
