"""The database goes away during a run: the run fails with the database's own message as
soon as the database is back, and nobody blames the (live) worker for it."""

import contextlib
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from reports.models import Report
from runs.models import Run, RunStatus, WorkerHeartbeat
from runs.services.runtime.runner import run_report_now
from tests.conftest import enqueue_run, postgres_only, wait_for
from tests.workers import WORKER_APPLICATION_NAME, WorkerProcess, process_environment

pytestmark = [
    postgres_only,
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.long_running,
]

SLEEPING_SQL = "SELECT 1 AS done FROM pg_sleep(30)"
TERMINATED = "terminating connection due to administrator command"


def sleeping_backend(source_sql):
    """The pid of the session running the slow report, once it runs."""
    rows = source_sql(
        # This database only: parallel test processes run slow reports of their own.
        "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() "
        "AND datname = current_database() AND query LIKE %s",
        ["COPY %pg_sleep(30)%"],
    )
    return rows[0][0] if rows else None


def server_connection():
    """A session on the server's maintenance database, to change the test database."""
    import psycopg

    settings = connection.settings_dict
    return psycopg.connect(
        dbname="postgres",
        user=settings["USER"],
        password=settings["PASSWORD"] or None,
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
        autocommit=True,
    )


@contextlib.contextmanager
def database_refusing_connections():
    """No new session on the test database, and the worker's sessions cut: a restart."""
    with server_connection() as server:
        database = connection.settings_dict["NAME"]
        server.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        try:
            server.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name = %s",
                [database, WORKER_APPLICATION_NAME],
            )
            yield
        finally:
            server.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')


def test_a_dropped_report_connection_fails_the_run_with_the_database_message(source_sql):
    report = Report.objects.create(name="Slow", slug="slow", sql=SLEEPING_SQL)
    finished = []

    def run_in_thread():
        try:
            finished.append(run_report_now(report))
        finally:
            connections.close_all()

    thread = threading.Thread(target=run_in_thread)
    thread.start()
    pid = wait_for(lambda: sleeping_backend(source_sql))
    started = time.monotonic()
    source_sql("SELECT pg_terminate_backend(%s)", [pid])
    thread.join(20)
    assert not thread.is_alive()
    assert time.monotonic() - started < 5
    run = Run.objects.get(pk=finished[0].pk)
    assert run.status == RunStatus.FAILED
    assert TERMINATED in run.error
    assert "Worker lost" not in run.error
    assert not run.output


@pytest.fixture
def workers(tmp_path, outputs_dir):
    processes = [
        WorkerProcess(tmp_path / f"worker-{index}.log", process_environment(outputs_dir))
        for index in range(2)
    ]
    yield processes
    for process in processes:
        process.kill()


def test_a_database_outage_during_a_run_is_recorded_as_such_once_it_is_back(workers, source_sql):
    """Every session of two workers is cut and no new one is accepted for longer than
    WORKER_LOST_AFTER_SECONDS (3 s here): what a restart of the server looks like to
    them. The worker running the report records the database's message; the other one,
    back too, does not call it lost meanwhile."""
    pids = [worker.pid for worker in workers]
    wait_for(lambda: WorkerHeartbeat.objects.filter(pid__in=pids).count() == 2, timeout=20)
    report = Report.objects.create(name="Slow", slug="slow", sql=SLEEPING_SQL)
    run = enqueue_run(report, "manual")
    wait_for(lambda: sleeping_backend(source_sql), timeout=10)
    with database_refusing_connections():
        time.sleep(4)
        run.refresh_from_db()
        assert run.status == RunStatus.RUNNING  # nothing could be recorded meanwhile
    back = time.monotonic()
    wait_for(lambda: Run.objects.get(pk=run.pk).status == RunStatus.FAILED, timeout=15)
    assert time.monotonic() - back < 12
    run.refresh_from_db()
    assert TERMINATED in run.error, run.error
    assert "Worker lost" not in run.error
    assert not run.output
    # The workers go on: the next runs succeed.
    after = Report.objects.create(name="After", slug="after", sql="SELECT 1")
    later = [enqueue_run(after, "manual") for _ in range(2)]
    wait_for(
        lambda: all(Run.objects.get(pk=r.pk).status == RunStatus.SUCCEEDED for r in later),
        timeout=20,
    )
    for worker in workers:
        assert worker.stop() == 0
        assert "Worker lost" not in worker.log()
    log = "".join(worker.log() for worker in workers)
    assert f"run {run.pk}: cannot record that it failed yet" in log


def test_after_an_outage_a_worker_gives_the_others_time_before_calling_them_lost(
    tmp_path, outputs_dir
):
    """Once the database is back, every worker's heartbeat is as old as the outage; a
    run is called lost only after WORKER_LOST_AFTER_SECONDS (4 s here) of database."""
    worker = WorkerProcess(
        tmp_path / "worker.log", process_environment(outputs_dir, WORKER_LOST_AFTER_SECONDS=4)
    )
    try:
        wait_for(lambda: WorkerHeartbeat.objects.filter(pid=worker.pid).exists(), timeout=20)
        with database_refusing_connections():
            time.sleep(1)
        back = time.monotonic()
        # A run of another worker whose heartbeat stopped with the outage.
        report = Report.objects.create(name="Elsewhere", slug="elsewhere", sql="SELECT 1")
        now = timezone.now()
        peer = Run.objects.create(
            report=report,
            status=RunStatus.RUNNING,
            worker="elsewhere:1",
            started_at=now - timedelta(minutes=1),
            heartbeat_at=now - timedelta(seconds=30),
        )
        time.sleep(max(0.0, back + 3 - time.monotonic()))
        assert Run.objects.get(pk=peer.pk).status == RunStatus.RUNNING
        wait_for(lambda: Run.objects.get(pk=peer.pk).status == RunStatus.FAILED, timeout=10)
        assert Run.objects.get(pk=peer.pk).error.startswith("Worker lost: elsewhere:1")
        assert worker.stop() == 0
    finally:
        worker.kill()
