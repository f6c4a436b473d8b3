"""Leadership is a lease: taken when free, renewed by its holder, refused to a former
holder in the very transaction that would write the schedule; and what /healthz and the
admin say about it. Real processes: tests/test_leader_faults.py."""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import DatabaseError, OperationalError, connection, transaction
from django.utils import timezone

from reports.models import Report
from reports.services.schedules import save_report
from runs.models import Run, SchedulerLease, WorkerHeartbeat
from runs.services.runtime.fires import fire_due_reports, repair_next_runs
from runs.services.runtime.leadership import (
    Lease,
    LeaseLost,
    acquire_lease,
    bound_sessions_of_this_thread,
    fence,
    release_lease,
    renew_lease,
)
from tests.conftest import needs_commits, postgres_only, wait_for

pytestmark = pytest.mark.django_db(databases="__all__")

NOW = datetime(2026, 11, 26, 12, 0, 20, tzinfo=UTC)


def due_report(slug="every-minute"):
    report = save_report(Report(name=slug, slug=slug, sql="SELECT 1", schedule="* * * * *"))
    Report.objects.filter(pk=report.pk).update(next_run_at=NOW.replace(second=0))
    return report


def lapse(seconds_ago=1):
    SchedulerLease.objects.update(expires_at=timezone.now() - timedelta(seconds=seconds_ago))


def test_a_free_lease_is_taken_and_a_held_one_refused():
    first = acquire_lease("a:1", 60)
    assert first == Lease("a:1", 1)
    assert acquire_lease("b:2", 60) is None
    assert renew_lease(first, 60)
    assert SchedulerLease.objects.get().holder == "a:1"


def test_an_expired_lease_passes_on_and_its_former_holder_records_nothing(lease):
    report = due_report()
    lapse()
    successor = acquire_lease("b:2", 60)
    assert successor == Lease("b:2", lease.epoch + 1)
    assert not renew_lease(lease, 60)
    with pytest.raises(LeaseLost, match=r"test:1 no longer holds the scheduler lease \(epoch 1\)"):
        fire_due_reports(lease, now=NOW)
    astray = save_report(Report(name="astray", slug="astray", sql="SELECT 1", schedule="0 6 * * *"))
    Report.objects.filter(pk=astray.pk).update(next_run_at=NOW + timedelta(days=3))
    with pytest.raises(LeaseLost):
        repair_next_runs(lease, now=NOW)
    assert not Run.objects.exists()
    assert Report.objects.get(pk=report.pk).next_run_at == NOW.replace(second=0)
    assert Report.objects.get(pk=astray.pk).next_run_at == NOW + timedelta(days=3)
    assert fire_due_reports(successor, now=NOW) == 1
    assert repair_next_runs(successor, now=NOW) == 1


def test_an_expired_lease_nobody_took_is_renewed_by_its_holder(lease):
    due_report()
    lapse()
    with pytest.raises(LeaseLost):  # not while it has expired
        fire_due_reports(lease, now=NOW)
    assert renew_lease(lease, 60)
    assert fire_due_reports(lease, now=NOW) == 1


def test_a_released_lease_is_free_at_once(lease):
    release_lease(lease)
    with pytest.raises(LeaseLost), transaction.atomic():
        fence(lease)
    assert acquire_lease("b:2", 60) == Lease("b:2", lease.epoch + 1)


@postgres_only
def test_service_database_sessions_notice_a_vanished_peer_on_both_ends():
    """The server's side too: a dead client's session (and its locks) ends in seconds,
    not after the kernel's two hours."""
    with connection.cursor() as cursor:
        settings = {}
        for name in ("tcp_keepalives_idle", "tcp_keepalives_count", "tcp_user_timeout"):
            cursor.execute(f"SHOW {name}")
            settings[name] = cursor.fetchone()[0]
    assert settings == {
        "tcp_keepalives_idle": "5",
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": "10000",  # ms
    }
    parameters = connection.connection.info.get_parameters()
    assert parameters["keepalives_idle"] == "5"
    assert parameters["tcp_user_timeout"] == "10000"


@needs_commits
@postgres_only
@pytest.mark.long_running
def test_a_leader_s_transaction_left_idle_ends_and_frees_the_due_reports(settings, lease):
    """A fire pass frozen mid-transaction: the server ends it within a quarter of the
    lease, so the next leader is not left skipping the reports it had locked."""
    settings.SCHEDULE_LEADER_LEASE_SECONDS = 4  # transactions: 1 s
    report = due_report()
    locked, outcome = threading.Event(), []

    def frozen_pass():
        try:
            with transaction.atomic():
                fence(lease, fire_pass=True)
                list(Report.objects.select_for_update().filter(pk=report.pk))
                locked.set()
                time.sleep(2.5)  # frozen, as by SIGSTOP
                Report.objects.filter(pk=report.pk).update(next_run_at=None)
        except DatabaseError as error:
            outcome.append(str(error))
        finally:
            connection.close()

    frozen = threading.Thread(target=frozen_pass)
    frozen.start()
    try:
        assert locked.wait(5)
        started = time.monotonic()
        wait_for(lambda: report_is_free(report), timeout=5, interval=0.1)
        assert time.monotonic() - started < 2
    finally:
        frozen.join()
    assert "idle-in-transaction timeout" in outcome[0]
    assert Report.objects.get(pk=report.pk).next_run_at == NOW.replace(second=0)


def report_is_free(report):
    try:
        with transaction.atomic():
            return list(Report.objects.select_for_update(nowait=True).filter(pk=report.pk))
    except OperationalError:
        return False


@needs_commits
@postgres_only
def test_the_leader_s_threads_open_sessions_with_a_time_limit():
    limits = []

    def leader_thread():
        bound_sessions_of_this_thread(1.5)
        with connection.cursor() as cursor:
            for name in ("statement_timeout", "idle_in_transaction_session_timeout"):
                cursor.execute(f"SHOW {name}")
                limits.append(cursor.fetchone()[0])
        connection.close()

    thread = threading.Thread(target=leader_thread)
    thread.start()
    thread.join()
    assert limits == ["1500ms", "1500ms"]
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "0"  # other threads: unlimited


# --- /healthz and the admin ---------------------------------------------------------------


@pytest.fixture
def live_worker():
    return WorkerHeartbeat.objects.create(
        name="w:1",
        host="w",
        pid=1,
        version="x",
        started_at=timezone.now(),
        last_seen_at=timezone.now(),
    )


def scheduler_of(client):
    response = client.get("/healthz")
    return response.status_code, response.json()["scheduler"]


def test_healthz_names_the_leader_while_it_fires(client, live_worker, lease):
    SchedulerLease.objects.update(fire_pass_at=timezone.now())
    status, scheduler = scheduler_of(client)
    assert status == 200
    assert scheduler["ok"] and scheduler["leader"] == "test:1"
    assert 55 < scheduler["lease_expires_in_seconds"] <= 60
    assert scheduler["seconds_since_fire_pass"] < 5


def test_healthz_is_503_once_no_worker_has_held_the_lease_for_longer_than_the_lease(
    client, live_worker, lease, settings
):
    settings.SCHEDULE_LEADER_LEASE_SECONDS = 15
    assert scheduler_of(client)[1].get("problem") is None
    lapse(seconds_ago=5)  # changing hands: not yet a gap worth a page
    status, scheduler = scheduler_of(client)
    assert status == 200
    assert (scheduler["leader"], scheduler["last_leader"]) == (None, "test:1")
    assert 5 <= scheduler["seconds_without_leader"] < 10
    lapse(seconds_ago=20)
    status, scheduler = scheduler_of(client)
    assert status == 503
    assert scheduler["problem"].startswith(
        "No worker has held the scheduler lease for 20 s (the last holder, test:1, let it lapse at "
    )
    assert scheduler["problem"].endswith("UTC): no report is scheduled.")
    assert client.get("/healthz?scope=web").status_code == 200  # the web is fine


def test_healthz_is_503_when_the_leader_holds_the_lease_but_makes_no_fire_pass(
    client, live_worker, lease
):
    long_ago = timezone.now() - timedelta(seconds=40)
    SchedulerLease.objects.update(acquired_at=long_ago, fire_pass_at=long_ago)
    status, scheduler = scheduler_of(client)
    assert status == 503
    assert scheduler["problem"] == (
        "The scheduling worker test:1 holds the lease but has made no fire pass for 40 s: "
        "no report is scheduled."
    )


def test_healthz_before_any_worker_held_the_lease(client, live_worker):
    status, scheduler = scheduler_of(client)
    assert status == 503
    assert scheduler == {
        "ok": False,
        "leader": None,
        "problem": "No worker has held the scheduler lease yet: no report is scheduled.",
    }
    assert client.get("/healthz?scope=web").json() == {
        "status": "ok",
        "database": "ok",
        "workers": {"ok": True},
    }
