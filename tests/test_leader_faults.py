"""Scheduling survives a frozen or cut-off leader: real workers, SIGSTOP, and a proxy
that stalls, cuts or resets the leader's connections to PostgreSQL.

Workers here hold a lease of LEASE seconds (tests.workers), so their transactions
on the scheduler's rows end after a quarter of it. Fires are made due by hand while
the leader is frozen (as a minute boundary would), instead of waiting for a minute.
"""

import os
import signal
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from reports.models import Report
from runs.models import Run, RunTrigger, WorkerHeartbeat
from tests.conftest import enqueue_run, postgres_only, wait_for
from tests.faults import FaultProxy
from tests.workers import (
    FAST_WORKER_SETTINGS,
    WorkerProcess,
    database_url_of_test_run,
    leader_pid,
    process_environment,
)

pytestmark = [
    postgres_only,
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.long_running,
]

LEASE = float(FAST_WORKER_SETTINGS["SCHEDULE_LEADER_LEASE_SECONDS"])
# A takeover: a try every second, the new scheduler's start, its first fire pass.
TAKEOVER = LEASE + 3.5
MINUTE = timedelta(minutes=1)


class Workers:
    def __init__(self, tmp_path, outputs_dir):
        self.tmp_path, self.outputs_dir = tmp_path, outputs_dir
        self.processes, self.proxies = [], []

    def start(self, count, proxied=False, **settings):
        """``count`` workers, started at once; the one that holds the lease first.
        ``proxied``: each one's service-database connections pass a FaultProxy of its
        own (``worker.proxy``). Each worker's sessions carry its application name."""
        started = []
        for _ in range(count):
            proxy = None
            if proxied:
                proxy = FaultProxy(
                    connection.settings_dict["HOST"], connection.settings_dict["PORT"]
                )
                self.proxies.append(proxy)
            name = f"reportsvc-test-{len(self.processes)}"
            url = database_url_of_test_run(port=proxy and proxy.port, application_name=name)
            environment = process_environment(self.outputs_dir, DATABASE_URL=url, **settings)
            worker = WorkerProcess(self.tmp_path / f"{name}.log", environment)
            worker.proxy, worker.application_name = proxy, name
            self.processes.append(worker)
            started.append(worker)
        pids = {worker.pid for worker in started}
        wait_for(
            lambda: set(WorkerHeartbeat.objects.values_list("pid", flat=True)) >= pids, timeout=30
        )
        leader = wait_for(leader_pid)
        return sorted(started, key=lambda worker: worker.pid != leader)

    def close(self):
        for worker in self.processes:
            if worker.running():
                os.kill(worker.pid, signal.SIGCONT)
        for proxy in self.proxies:
            proxy.resume()
        for worker in self.processes:
            worker.kill()
        for proxy in self.proxies:
            proxy.close()


@pytest.fixture
def workers(tmp_path, outputs_dir):
    started = Workers(tmp_path, outputs_dir)
    yield started
    started.close()


def every_minute(slug):
    return Report.objects.create(name=slug, slug=slug, sql="SELECT 1 AS n", schedule="* * * * *")


def make_due(report):
    """This minute's fire, passed: due now, as at a minute boundary."""
    fire = timezone.now().replace(second=0, microsecond=0)
    Report.objects.filter(pk=report.pk).update(next_run_at=fire)
    return fire


def between_passes():
    """Half a second past a whole second: fire passes run on the second, for milliseconds."""
    time.sleep(1.5 - time.time() % 1)


def freeze(worker):
    os.kill(worker.pid, signal.SIGSTOP)


def thaw(worker):
    os.kill(worker.pid, signal.SIGCONT)


def fires_of(report):
    return list(Run.objects.filter(report=report).order_by("scheduled_for"))


def assert_recorded_nothing_after_waking(worker):
    wait_for(lambda: "no longer holds the scheduler lease" in worker.log(), timeout=2 * LEASE)
    time.sleep(1.5)  # its scheduler thread woke with a pass due, and went on to the next
    assert "recorded" not in worker.log(), worker.log()
    assert worker.running()


def test_a_leader_frozen_between_passes_is_replaced_and_records_nothing_when_it_wakes(
    workers,
):
    leader, other = workers.start(2)

    between_passes()
    freeze(leader)
    report = every_minute("frozen-between-passes")
    fire = make_due(report)
    due_since = time.monotonic()
    run = wait_for(lambda: Run.objects.filter(report=report).first(), timeout=TAKEOVER + 5)
    assert time.monotonic() - due_since < TAKEOVER
    assert leader_pid() == other.pid
    assert run.scheduled_for in (fire, fire + MINUTE)  # the minute may have turned since

    thaw(leader)
    assert_recorded_nothing_after_waking(leader)
    assert fires_of(report)[0] == run  # that fire, once
    assert "lost the scheduler lease (epoch 1): another worker took it over" in leader.log()


def test_a_leader_frozen_in_the_middle_of_a_fire_pass_leaves_the_fire_to_the_other(workers):
    leader, other = workers.start(2)
    report = every_minute("frozen-mid-pass")

    # The test holds what the leader's pass needs last: the fire's row in the runs
    # table (this minute's and the next's), inserted and not committed. The pass has
    # locked the report by then, and waits.
    fire = timezone.now().replace(second=0, microsecond=0)
    holding, release = threading.Event(), threading.Event()

    def hold_the_fires():
        with transaction.atomic():
            for scheduled_for in (fire, fire + MINUTE):
                Run.objects.create(
                    report=report, trigger=RunTrigger.SCHEDULE, scheduled_for=scheduled_for
                )
            holding.set()
            release.wait(30)
            transaction.set_rollback(True)
        connection.close()

    holder = threading.Thread(target=hold_the_fires)
    holder.start()
    try:
        assert holding.wait(10)
        make_due(report)
        wait_for(lambda: pass_waits_on_a_lock(leader), timeout=10, interval=0.01)
        freeze(leader)
        frozen_at = timezone.now()
    finally:
        release.set()
        holder.join()
    run = wait_for(lambda: Run.objects.filter(report=report).first(), timeout=TAKEOVER + 5)
    assert (timezone.now() - frozen_at).total_seconds() < TAKEOVER
    assert leader_pid() == other.pid
    assert run.scheduled_for in (fire, fire + MINUTE)
    assert run.queued_at > frozen_at  # the other worker's: the frozen pass never committed

    thaw(leader)
    assert_recorded_nothing_after_waking(leader)
    assert fires_of(report)[0] == run


def pass_waits_on_a_lock(worker):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s AND wait_event_type = 'Lock' "
            "AND query LIKE 'INSERT INTO \"runs_run\"%%'",
            [worker.application_name],
        )
        return cursor.fetchone()[0]


def test_a_stalled_leader_is_replaced_and_healthz_shows_a_gap_no_one_can_fill(workers, settings):
    settings.SCHEDULE_LEADER_LEASE_SECONDS = LEASE  # for /healthz, as for the workers
    leader, other = workers.start(2, proxied=True)
    web = Client()

    leader.proxy.pause()
    report = every_minute("stalled")
    fire = make_due(report)
    due_since = time.monotonic()
    run = wait_for(lambda: Run.objects.filter(report=report).first(), timeout=TAKEOVER + 5)
    assert time.monotonic() - due_since < TAKEOVER
    assert leader_pid() == other.pid
    assert run.scheduled_for in (fire, fire + MINUTE)
    leader.proxy.resume()
    assert_recorded_nothing_after_waking(leader)

    # Both cut off: no worker can hold the lease. The web still answers, and says why.
    other.proxy.pause()
    leader.proxy.pause()
    web_only = web.get("/healthz?scope=web")
    # (First, while the stalled holder's lease runs out, /healthz may say it makes no
    # fire pass: a 503 too, with that cause.)
    problem = wait_for(lambda: leaderless_problem(web), timeout=3 * LEASE)
    assert web_only.status_code == 200
    assert f"(the last holder, {WorkerHeartbeat.objects.get(pid=other.pid).name}," in problem
    assert web.get("/healthz?scope=web").status_code == 200

    leader.proxy.resume()
    wait_for(lambda: web.get("/healthz").status_code == 200, timeout=TAKEOVER)
    assert leader_pid() == leader.pid
    other.proxy.resume()
    wait_for(lambda: "lost the scheduler lease" in other.log(), timeout=LEASE)


def leaderless_problem(web):
    response = web.get("/healthz")
    problem = response.json()["scheduler"].get("problem", "")
    if problem.startswith("No worker has held the scheduler lease for "):
        assert response.status_code == 503
        return problem
    return None


def beats_since(worker, moment):
    return lambda: WorkerHeartbeat.objects.get(pid=worker.pid).last_seen_at > moment


def test_a_worker_survives_cut_and_reset_connections_and_stops_in_time_while_stalled(
    workers,
):
    [worker] = workers.start(1, proxied=True, WORKER_SHUTDOWN_GRACE_SECONDS=1)
    report = Report.objects.create(name="After", slug="after", sql="SELECT 1 AS n")
    for fault in (worker.proxy.cut, worker.proxy.reset):
        fault()
        # Back at work first (a heartbeat through a new connection): a claim whose answer
        # a fault loses is failed as lost later, like a dead worker's.
        wait_for(beats_since(worker, timezone.now()))
        run = enqueue_run(report, "manual")
        wait_for(lambda run=run: Run.objects.get(pk=run.pk).status == "succeeded", timeout=20)
    wait_for(lambda: leader_pid() == worker.pid, timeout=TAKEOVER)

    worker.proxy.pause()
    time.sleep(0.5)  # its next statements are on their way, and wait
    stopping = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(15) == 1
    # The grace (1 s) plus STOP_MARGIN_SECONDS (5 s), and the interpreter's exit.
    assert time.monotonic() - stopping < 1 + 5 + 2
    assert "stopping: SIGTERM" in worker.log()
    assert "did not stop within 6 s: the database does not answer" in worker.log()
