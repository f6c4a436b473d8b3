"""The worker as a real process: picking up runs, stopping, crashing, following edits."""

import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from datasources.registry import DEFAULT_SOURCE, connection_for_source
from reports.models import Report
from runs.models import Run, RunStatus, WorkerHeartbeat
from tests.conftest import (
    ON_POSTGRES,
    enqueue_run,
    files_under,
    postgres_only,
    sqlite_only,
    wait_for,
)
from tests.faults import REFUSAL, refused_success
from tests.receivers import HTTP_OK, TcpReceiver
from tests.workers import (
    WORKER_APPLICATION_NAME,
    WorkerProcess,
    leader_pid,
    process_environment,
)

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.long_running,
]

SLOW_SQL = {
    # Both run for about 2 s per 1 s given, and return one row.
    "postgresql": "SELECT 1 AS done FROM pg_sleep({seconds})",
    "sqlite": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n "
    "WHERE x < {seconds} * 1500000) SELECT count(*) > 0 AS done FROM n",
}


def slow_sql(seconds):
    return SLOW_SQL[connection_for_source(DEFAULT_SOURCE).vendor].format(seconds=seconds)


@pytest.fixture
def start_worker(tmp_path, outputs_dir):
    workers = []

    def start(*arguments, **settings):
        log = tmp_path / f"worker-{len(workers)}.log"
        worker = WorkerProcess(log, process_environment(outputs_dir, **settings), *arguments)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.kill()


def wait_for_heartbeat(worker, timeout=20):
    return wait_for(lambda: WorkerHeartbeat.objects.filter(pid=worker.pid).first(), timeout=timeout)


def status_of(run):
    run.refresh_from_db()
    return run.status


def test_an_idle_worker_starts_a_manual_run_within_two_seconds(start_worker):
    worker = start_worker()
    wait_for_heartbeat(worker)
    report = Report.objects.create(name="Now", slug="now", sql="SELECT 1 AS n")
    run = enqueue_run(report, "manual")
    wait_for(lambda: status_of(run) == RunStatus.SUCCEEDED, timeout=10)
    assert (run.started_at - run.queued_at).total_seconds() < 2
    assert run.worker == f"{WorkerHeartbeat.objects.get(pid=worker.pid).name}"
    assert worker.stop() == 0


def test_sigterm_lets_the_running_run_finish_then_exits_zero(start_worker):
    worker = start_worker()
    wait_for_heartbeat(worker)
    report = Report.objects.create(name="Slow", slug="slow", sql=slow_sql(1))
    run = enqueue_run(report, "manual")
    wait_for(lambda: status_of(run) == RunStatus.RUNNING, timeout=10)
    assert worker.stop() == 0
    assert status_of(run) == RunStatus.SUCCEEDED
    assert "stopping: SIGTERM" in worker.log()
    assert not WorkerHeartbeat.objects.filter(pid=worker.pid).exists()


def test_sigterm_past_the_grace_time_fails_the_run_and_keeps_no_file(start_worker, outputs_dir):
    worker = start_worker(WORKER_SHUTDOWN_GRACE_SECONDS=0.5)
    wait_for_heartbeat(worker)
    report = Report.objects.create(name="Slow", slug="slow", sql=slow_sql(10))
    run = enqueue_run(report, "manual")
    wait_for(lambda: status_of(run) == RunStatus.RUNNING, timeout=10)
    started = time.monotonic()
    assert worker.stop() == 0
    assert time.monotonic() - started < 8
    assert status_of(run) == RunStatus.FAILED
    assert run.error.startswith("Worker ") and "stopped by shutdown" in run.error
    assert files_under(outputs_dir) == []


def test_sigterm_does_not_wait_for_a_slow_webhook_beyond_the_grace(start_worker):
    receiver = TcpReceiver(trickle=HTTP_OK, interval=1.0)  # a minute for one answer
    try:
        worker = start_worker(
            WORKER_SHUTDOWN_GRACE_SECONDS=3,
            NOTIFY_WEBHOOK_TIMEOUT_SECONDS=120,
            NOTIFY_WEBHOOK_BLOCKED_NETWORKS="169.254.0.0/16",
        )
        wait_for(lambda: leader_pid() == worker.pid)
        report = Report.objects.create(
            name="Hooked",
            slug="hooked",
            sql="SELECT * FROM missing_table",
            notify_webhooks=f"http://127.0.0.1:{receiver.port}/hook",
        )
        run = enqueue_run(report, "manual")
        assert receiver.connected.wait(15)  # the failure alert is on its way, slowly
        stopping = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        wait_for(lambda: leader_pid() is None, timeout=2)
        assert worker.running()  # the lease went first; the alert still has its grace
        assert worker.stop(timeout=15) == 0
        assert time.monotonic() - stopping < 3 + 2
        assert (
            f"stopped before the notifications of 1 run(s) were sent: run {run.pk} (hooked)"
            in worker.log()
        )
        assert status_of(run) == RunStatus.FAILED
    finally:
        receiver.close()


def test_a_killed_worker_s_run_is_failed_by_the_next_worker(start_worker, outputs_dir):
    doomed = start_worker()
    wait_for_heartbeat(doomed)
    report = Report.objects.create(name="Slow", slug="slow", sql=slow_sql(15))
    run = enqueue_run(report, "manual")
    wait_for(lambda: status_of(run) == RunStatus.RUNNING, timeout=10)
    wait_for(lambda: list((outputs_dir / ".partial-runs").glob(f"run{run.pk}-*/*")), timeout=10)
    doomed.kill()
    killed_at = time.monotonic()

    rescuer = start_worker()
    wait_for(lambda: status_of(run) == RunStatus.FAILED, timeout=30)
    assert time.monotonic() - killed_at < 20  # lost-after is 3 s in these tests
    assert run.error.startswith(f"Worker lost: {run.worker} stopped sending heartbeats")
    # The worker that fails the run removes its scratch directory right after.
    wait_for(lambda: files_under(outputs_dir) == [], timeout=5)
    assert rescuer.stop() == 0


def test_report_edits_reach_the_running_worker(start_worker):
    worker = start_worker()
    wait_for_heartbeat(worker)
    report = Report.objects.create(
        name="Edited", slug="edited", sql="SELECT 1", schedule="0 6 * * *", timezone="UTC"
    )

    def next_run():
        report.refresh_from_db()
        return report.next_run_at

    first = wait_for(next_run, timeout=10)
    assert (first.hour, first.minute) == (6, 0)
    report.schedule = "45 7 * * *"
    report.save()
    wait_for(lambda: next_run() and next_run().minute == 45, timeout=10)
    report.enabled = False
    report.save()
    wait_for(lambda: next_run() is None, timeout=10)
    assert worker.running()
    assert worker.stop() == 0


def test_a_due_report_is_queued_within_seconds_with_its_interval(start_worker):
    worker = start_worker()
    wait_for(lambda: leader_pid() == worker.pid)
    report = Report.objects.create(
        name="Due", slug="due", sql="SELECT 1 AS n", schedule="* * * * *", timezone="UTC"
    )
    minute = timedelta(minutes=1)
    fire = timezone.now().replace(second=0, microsecond=0)
    Report.objects.filter(pk=report.pk).update(next_run_at=fire)  # this minute's, passed
    due_since = time.monotonic()
    run = wait_for(lambda: Run.objects.filter(report=report).first(), timeout=10)
    assert time.monotonic() - due_since < 3  # a pass every second
    assert run.scheduled_for in (fire, fire + minute)  # the minute may have turned since
    assert (run.interval_start, run.interval_end) == (run.scheduled_for - minute, run.scheduled_for)
    wait_for(lambda: status_of(run) == RunStatus.SUCCEEDED, timeout=10)
    report.refresh_from_db()
    assert report.next_run_at == run.scheduled_for + minute
    assert worker.stop() == 0


@sqlite_only
def test_a_second_worker_on_sqlite_is_refused(start_worker):
    first = start_worker()
    wait_for_heartbeat(first)
    second = start_worker()
    assert second.process.wait(30) == 1
    assert "Another worker" in second.log()
    assert "SQLite supports one worker; use PostgreSQL" in second.log()
    assert first.running()
    assert first.stop() == 0


def test_the_worker_heartbeat_row_says_who_and_when(start_worker):
    worker = start_worker()
    beat = wait_for_heartbeat(worker)
    assert beat.version
    first_seen = beat.last_seen_at
    wait_for(
        lambda: WorkerHeartbeat.objects.get(pid=worker.pid).last_seen_at > first_seen, timeout=5
    )
    assert (
        timezone.now() - WorkerHeartbeat.objects.get(pid=worker.pid).last_seen_at
    ).total_seconds() < 3
    assert worker.stop() == 0


@postgres_only
def test_two_workers_run_every_fire_and_every_run_exactly_once(start_worker, outputs_dir):
    every_minute = [
        Report.objects.create(name=f"s{i}", slug=f"s{i}", sql="SELECT 1 AS n", schedule="* * * * *")
        for i in range(10)
    ]
    manual = [
        Report.objects.create(name=f"m{i}", slug=f"m{i}", sql="SELECT 1 AS n") for i in range(20)
    ]
    workers = [start_worker(), start_worker()]
    for worker in workers:
        wait_for_heartbeat(worker)
    queued = [enqueue_run(report, "api") for report in manual for _ in range(3)]

    wait_for(
        lambda: (
            not Run.objects.filter(pk__in=[r.pk for r in queued])
            .exclude(status=RunStatus.SUCCEEDED)
            .exists()
        ),
        timeout=60,
    )
    executed_by = set(
        Run.objects.filter(pk__in=[r.pk for r in queued]).values_list("worker", flat=True)
    )
    assert len(executed_by) == 2  # both workers took a share

    # A fire of every report, whichever worker leads: this minute's, passed (not waiting
    # for the next one), so one run per report.
    fire = timezone.now().replace(second=0, microsecond=0)
    Report.objects.filter(pk__in=[report.pk for report in every_minute]).update(next_run_at=fire)
    wait_for(
        lambda: (
            Run.objects.filter(report__in=every_minute, status=RunStatus.SUCCEEDED).count() >= 10
        ),
        timeout=90,
    )
    time.sleep(2)
    fires = Run.objects.filter(report__in=every_minute).values_list("report_id", "scheduled_for")
    first_fire = min(when for _, when in fires)
    per_report = {}
    for report_id, when in fires:
        if when == first_fire:
            per_report[report_id] = per_report.get(report_id, 0) + 1
    assert per_report == {report.pk: 1 for report in every_minute}

    succeeded = Run.objects.filter(status=RunStatus.SUCCEEDED).count()
    assert len(files_under(outputs_dir)) == succeeded  # no run wrote twice

    leader = next(w for w in workers if w.pid == leader_pid())
    follower = next(w for w in workers if w is not leader)
    leader.kill()
    wait_for(lambda: leader_pid() == follower.pid, timeout=15)
    assert follower.stop() == 0
    for worker in workers:
        assert "ERROR" not in worker.log() and "Traceback" not in worker.log(), worker.log()


@postgres_only
def test_the_worker_survives_losing_its_database_connections(start_worker, source_sql):
    worker = start_worker()
    wait_for(lambda: leader_pid() == worker.pid)
    source_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE application_name = '{WORKER_APPLICATION_NAME}' "
        "AND datname = current_database()"  # not the workers of parallel test processes
    )
    report = Report.objects.create(name="After", slug="after", sql="SELECT 1 AS n")
    run = enqueue_run(report, "manual")
    wait_for(lambda: status_of(run) == RunStatus.SUCCEEDED, timeout=20)
    wait_for(lambda: leader_pid() == worker.pid, timeout=15)
    assert worker.running()
    assert worker.stop() == 0


def test_a_run_whose_recording_breaks_ends_failed_and_the_next_one_runs(start_worker):
    refused = Report.objects.create(name="Refused", slug="refused", sql="SELECT 1 AS n")
    fine = Report.objects.create(name="Fine", slug="fine", sql="SELECT 2 AS n")
    with refused_success(refused):
        worker = start_worker(WORKER_CONCURRENCY=1)  # one slot: the next run waits its turn
        wait_for_heartbeat(worker)
        broken = enqueue_run(refused, "manual")
        queued_after = enqueue_run(fine, "manual")
        queued = time.monotonic()
        wait_for(lambda: status_of(broken) == RunStatus.FAILED, timeout=10)
        assert time.monotonic() - queued < 5  # not the minute "Worker lost" takes
        wait_for(lambda: status_of(queued_after) == RunStatus.SUCCEEDED, timeout=10)
    assert broken.error.startswith("The run failed inside reportsvc while recording its outcome")
    assert REFUSAL in broken.error and broken.worker in broken.error
    assert worker.running()
    assert f"run {broken.pk} broke while recording its outcome" in worker.log()
    assert worker.stop() == 0


def test_runs_queued_before_values_were_checked_do_not_wedge_the_worker(start_worker):
    report = Report.objects.create(
        name="Old",
        slug="old",
        sql="SELECT {{ day }} AS day, {{ note }} AS note",
        timezone="America/New_York",
        parameters=[
            {"name": "day", "type": "date", "default": "interval_start"},
            {"name": "note", "type": "text", "default": "x"},
        ],
    )
    year_1 = enqueue_run(report, "manual")
    Run.objects.filter(pk=year_1.pk).update(
        interval_start=datetime(1, 1, 1, tzinfo=UTC), interval_end=datetime(1, 1, 2, tzinfo=UTC)
    )
    poisoned = [year_1]
    if not ON_POSTGRES:  # SQLite stores a JSON escape of a lone surrogate as given
        surrogate = enqueue_run(report, "manual")
        Run.objects.filter(pk=surrogate.pk).update(parameters={"note": "a\ud800b"})
        poisoned.append(surrogate)
    good = enqueue_run(report, "manual")
    worker = start_worker(WORKER_CONCURRENCY=1)
    wait_for(lambda: status_of(good) == RunStatus.SUCCEEDED, timeout=15)
    for run in poisoned:
        assert status_of(run) == RunStatus.FAILED
        assert run.error.startswith("Parameter ")
    assert "out of range" in year_1.error
    assert worker.stop() == 0
