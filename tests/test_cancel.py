"""Cancelling runs: from the API and the admin, queued and running, racing the run's
own end, and what people without the permission get."""

import threading
import time

import pytest
from django.contrib.auth.models import Permission
from django.core import mail
from django.db import connections
from django.utils import timezone

from datasources.registry import DEFAULT_SOURCE, connection_for_source
from reports.models import Report
from runs.models import Run, RunStatus, RunTally
from runs.services.domain.cancelling import RunControl
from runs.services.domain.queue import claim_runs
from runs.services.domain.transitions import cancel_run, transition_run
from runs.services.runtime.guard import execute_claimed_run
from runs.services.runtime.runner import record_outcome, run_report_now
from tests.api_helpers import client_for, make_user
from tests.conftest import enqueue_run, files_under, needs_commits, wait_for
from tests.test_openapi_contract import assert_matches, fetch_schema

pytestmark = pytest.mark.django_db(databases="__all__")

# Both run for about 2 s per 1 s given (see tests/test_worker_process.py).
SLOW_SQL = {
    "postgresql": "SELECT 1 AS done FROM pg_sleep({seconds})",
    "sqlite": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n "
    "WHERE x < {seconds} * 1500000) SELECT count(*) > 0 AS done FROM n",
}


def slow_sql(seconds):
    return SLOW_SQL[connection_for_source(DEFAULT_SOURCE).vendor].format(seconds=seconds)


@pytest.fixture
def report():
    return Report.objects.create(
        name="Numbers", slug="numbers", sql="SELECT 1 AS n", notify_emails="ops@example.com"
    )


@pytest.fixture
def runner():
    return make_user("runner", "run")


def tallies(report):
    return dict(RunTally.objects.filter(report=report).values_list("status", "count"))


# --- queued runs, through the API ---------------------------------------------------------


def test_a_queued_run_is_cancelled_at_once_with_who_and_when(report, runner):
    run = enqueue_run(report, "api")
    before = timezone.now()
    response = client_for(runner).post(f"/api/runs/{run.pk}/cancel/")
    assert response.status_code == 202, response.content
    assert response["Location"].endswith(f"/api/runs/{run.pk}/")
    body = response.json()
    assert body["status"] == "cancelled"
    assert body["cancelled_by"] == "runner"
    assert body["cancelled_at"] is not None
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert run.cancelled_by == runner and run.cancelled_at >= before
    assert run.finished_at == run.cancelled_at
    assert run.error.startswith("Cancelled by runner at ")
    assert tallies(report) == {"cancelled": 1}
    assert claim_runs(5, "worker:1") == []  # never started
    assert mail.outbox == []  # a cancel is not a failure alert


def test_cancelling_twice_is_idempotent_and_keeps_the_first_request(report, runner):
    run = enqueue_run(report, "api")
    assert client_for(runner).post(f"/api/runs/{run.pk}/cancel/").status_code == 202
    first = Run.objects.get(pk=run.pk)
    other = make_user("other", "run")
    again = client_for(other).post(f"/api/runs/{run.pk}/cancel/")
    assert again.status_code == 202
    assert again.json()["cancelled_by"] == "runner"
    assert Run.objects.get(pk=run.pk).cancelled_at == first.cancelled_at
    assert tallies(report) == {"cancelled": 1}


def test_a_run_that_ended_otherwise_is_a_409_saying_how(report, runner):
    succeeded = run_report_now(report)
    failed = enqueue_run(report, "api")
    transition_run(failed, RunStatus.FAILED, error="boom")
    skipped = enqueue_run(report, "api")
    transition_run(skipped, RunStatus.SKIPPED, error="previous run still going")
    api = client_for(runner)
    for run, word in ((succeeded, "succeeded"), (failed, "failed"), (skipped, "was skipped")):
        before = Run.objects.filter(pk=run.pk).values().get()
        response = api.post(f"/api/runs/{run.pk}/cancel/")
        assert response.status_code == 409
        detail = response.json()["detail"]
        assert detail.startswith(f"Run {run.pk} has already ended: it {word} at ")
        assert "Only queued and running runs can be cancelled." in detail
        assert Run.objects.filter(pk=run.pk).values().get() == before


def test_without_run_report_a_cancel_is_403_and_changes_nothing(report):
    run = enqueue_run(report, "api")
    for user in (make_user("viewer", "view"), make_user("editor", "editor")):
        response = client_for(user).post(f"/api/runs/{run.pk}/cancel/")
        assert response.status_code == 403
        assert "run_report" in response.json()["detail"]
    assert client_for().post(f"/api/runs/{run.pk}/cancel/").status_code == 401
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.cancelled_at is None
    # Not even whether the run exists is told.
    assert client_for(make_user("v2", "view")).post("/api/runs/999999/cancel/").status_code == 403


@pytest.mark.parametrize(
    "run_id", ["999999", "99999999999999999999999999", "-1", "0", "abc", "1e9", "%00", "1.5"]
)
def test_cancelling_a_run_that_does_not_exist_is_404(report, runner, run_id):
    run = enqueue_run(report, "api")
    response = client_for(runner).post(f"/api/runs/{run_id}/cancel/")
    assert response.status_code == 404
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED


def test_a_get_is_not_a_cancel(report, runner):
    run = enqueue_run(report, "api")
    assert client_for(runner).get(f"/api/runs/{run.pk}/cancel/").status_code == 405
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED


def test_cancel_answers_are_what_the_schema_says(report, runner):
    schema = fetch_schema(runner)
    path = "/api/runs/{id}/cancel/"
    assert "cancelled" in schema["components"]["schemas"]["RunStatusEnum"]["enum"]
    api = client_for(runner)
    queued = enqueue_run(report, "api")
    assert_matches(schema, path, "post", api.post(f"/api/runs/{queued.pk}/cancel/"))
    running = enqueue_run(report, "api")
    transition_run(running, RunStatus.RUNNING)
    response = api.post(f"/api/runs/{running.pk}/cancel/")
    assert response.json()["status"] == "running" and response.json()["cancelled_at"]
    assert_matches(schema, path, "post", response)
    done = run_report_now(Report.objects.create(name="Other", slug="other", sql="SELECT 1 AS n"))
    assert_matches(schema, path, "post", api.post(f"/api/runs/{done.pk}/cancel/"))
    assert_matches(schema, path, "post", api.post("/api/runs/424242/cancel/"))
    viewer = client_for(make_user("viewer", "view"))
    assert_matches(schema, path, "post", viewer.post(f"/api/runs/{queued.pk}/cancel/"))


def test_the_runs_list_filters_by_cancelled(report, runner):
    cancelled, queued = enqueue_run(report, "api"), enqueue_run(report, "api")
    cancel_run(cancelled, runner)
    listed = client_for(runner).get("/api/runs/?status=cancelled").json()["results"]
    assert [run["id"] for run in listed] == [cancelled.pk]
    assert queued.pk not in [run["id"] for run in listed]


def test_a_cancelled_scheduled_run_is_never_retried(report, runner):
    Report.objects.filter(pk=report.pk).update(max_retries=3)
    run = enqueue_run(report, "schedule", scheduled_for=timezone.now())
    cancel_run(run, runner)
    assert Run.objects.filter(report=report).count() == 1


# --- a running run: its cancel request, and the race with its own end -------------------


def test_a_cancel_recorded_while_running_wins_over_a_late_success(report, runner, outputs_dir):
    run = enqueue_run(report, "api")
    transition_run(run, RunStatus.RUNNING)
    assert cancel_run(run, runner) is True
    assert run.status == RunStatus.RUNNING and run.cancelled_by == runner  # being stopped
    assert cancel_run(run, runner) is False  # asked already
    assert record_outcome(run, RunStatus.SUCCEEDED, row_count=1, output="numbers/x.csv") is False
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert run.output.name == "" and run.row_count is None  # no output is recorded
    assert tallies(report) == {"cancelled": 1}


def test_a_cancel_after_the_run_succeeded_is_refused(report, runner):
    run = enqueue_run(report, "api")
    transition_run(run, RunStatus.RUNNING)
    assert record_outcome(run, RunStatus.SUCCEEDED, row_count=1) is True
    with pytest.raises(Exception, match="has already ended: it succeeded"):
        cancel_run(run, runner)
    assert tallies(report) == {"succeeded": 1}


@needs_commits
@pytest.mark.parametrize("attempt", range(8))
def test_a_cancel_racing_the_run_s_end_leaves_exactly_one_final_state(attempt, runner):
    report = Report.objects.create(name="Race", slug=f"race-{attempt}", sql="SELECT 1 AS n")
    run = enqueue_run(report, "api")
    transition_run(run, RunStatus.RUNNING)
    start = threading.Barrier(2)
    outcomes = {}

    def finish():
        start.wait()
        outcomes["succeeded"] = record_outcome(Run.objects.get(pk=run.pk), RunStatus.SUCCEEDED)
        connections.close_all()

    def cancel():
        start.wait()
        try:
            outcomes["cancel"] = cancel_run(Run.objects.get(pk=run.pk), runner)
        except Exception as error:  # the run had ended first
            outcomes["cancel"] = error
        connections.close_all()

    threads = [threading.Thread(target=finish), threading.Thread(target=cancel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    run.refresh_from_db()
    assert run.status in (RunStatus.SUCCEEDED, RunStatus.CANCELLED)
    assert sum(tallies(report).values()) == 1, tallies(report)
    assert tallies(report) == {run.status: 1}
    if run.status == RunStatus.SUCCEEDED:
        assert outcomes["succeeded"] is True and isinstance(outcomes["cancel"], Exception)
    else:  # the request came first: the end the run was about to record is dropped
        assert outcomes["succeeded"] is False and outcomes["cancel"] is True


@needs_commits
@pytest.mark.parametrize("when", [0.0, 0.05, 0.2, 1.0])
def test_a_real_run_cancelled_at_any_moment_ends_once_and_keeps_no_file_if_cancelled(
    when, runner, outputs_dir
):
    report = Report.objects.create(name="Race", slug="race", sql=slow_sql(0.2))
    run = enqueue_run(report, "api")
    (run,) = claim_runs(1, "tests:1")
    control = RunControl()
    executing = threading.Thread(
        target=lambda: (execute_claimed_run(run, control=control), connections.close_all())
    )
    executing.start()
    time.sleep(when)
    try:
        asked = cancel_run(Run.objects.get(pk=run.pk), runner)
    except Exception:
        asked = False
    if asked:
        control.stop("cancel")
    executing.join(30)
    stored = Run.objects.get(pk=run.pk)
    assert stored.status in (RunStatus.SUCCEEDED, RunStatus.CANCELLED)
    assert tallies(report) == {stored.status: 1}
    if stored.status == RunStatus.CANCELLED:
        assert files_under(outputs_dir) == []
        assert stored.output.name == ""
    else:
        assert len(files_under(outputs_dir)) == 1


@needs_commits
def test_runreport_s_run_is_stopped_within_seconds_and_keeps_no_file(runner, outputs_dir):
    """The command line's run: its heartbeat thread sees the request."""
    report = Report.objects.create(
        name="Slow",
        slug="slow",
        sql=slow_sql(30),
        notify_emails="ops@example.com",
        max_retries=2,
    )
    done = {}
    executing = threading.Thread(
        target=lambda: (done.update(run=run_report_now(report)), connections.close_all())
    )
    executing.start()
    run = wait_for(lambda: Run.objects.filter(report=report, status="running").first())
    time.sleep(0.5)  # well into its statement
    asked_at = time.monotonic()
    assert client_for(runner).post(f"/api/runs/{run.pk}/cancel/").status_code == 202
    wait_for(lambda: Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED, timeout=5)
    assert time.monotonic() - asked_at < 5
    executing.join(10)
    run.refresh_from_db()
    assert run.cancelled_by == runner and run.error.startswith("Cancelled by runner")
    assert run.sql  # what ran is kept
    assert files_under(outputs_dir) == []
    assert Run.objects.filter(report=report).count() == 1  # no retry
    assert mail.outbox == []
    assert done["run"].status == RunStatus.CANCELLED


# --- backfills -----------------------------------------------------------------------------


@pytest.fixture
def backfilled(report, runner):
    Report.objects.filter(pk=report.pk).update(schedule="0 6 * * *", timezone="UTC")
    response = client_for(runner).post(
        "/api/reports/numbers/backfill/",
        {"start": "2026-11-01T00:00:00Z", "end": "2026-11-06T00:00:00Z"},
        format="json",
    )
    assert response.status_code == 202, response.content
    return response.json()["backfill_id"]


def test_a_backfill_s_waiting_runs_are_cancelled_together(report, runner, backfilled):
    other = enqueue_run(report, "api")  # not the backfill's: left alone
    first = Run.objects.filter(backfill_id=backfilled).order_by("id").first()
    transition_run(first, RunStatus.RUNNING)  # one of them is running
    response = client_for(runner).post(f"/api/reports/numbers/backfill/{backfilled}/cancel/")
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["backfill_id"], body["cancelled"], body["stopping"]) == (backfilled, 4, 1)
    assert len(body["runs"]) == 5
    statuses = list(
        Run.objects.filter(backfill_id=backfilled).order_by("id").values_list("status", flat=True)
    )
    assert statuses == ["running"] + ["cancelled"] * 4
    assert Run.objects.get(pk=first.pk).cancelled_by == runner
    assert Run.objects.get(pk=other.pk).status == RunStatus.QUEUED
    again = client_for(runner).post(f"/api/reports/numbers/backfill/{backfilled}/cancel/")
    assert again.status_code == 202
    assert (again.json()["cancelled"], again.json()["stopping"]) == (0, 0)
    schema = fetch_schema(runner)
    assert_matches(schema, "/api/reports/{slug}/backfill/{backfill_id}/cancel/", "post", again)


def test_cancelling_a_backfill_needs_run_report_and_an_existing_backfill(
    report, runner, backfilled
):
    viewer = client_for(make_user("viewer", "view"))
    assert viewer.post(f"/api/reports/numbers/backfill/{backfilled}/cancel/").status_code == 403
    assert not Run.objects.filter(status=RunStatus.CANCELLED).exists()
    api = client_for(runner)
    unknown = "00000000-0000-0000-0000-000000000000"
    response = api.post(f"/api/reports/numbers/backfill/{unknown}/cancel/")
    assert response.status_code == 404
    assert "has no backfill" in response.json()["detail"]
    for odd in ("not-a-uuid", "1" * 400, "g" * 32):
        assert api.post(f"/api/reports/numbers/backfill/{odd}/cancel/").status_code == 404
    Report.objects.create(name="Else", slug="else", sql="SELECT 1 AS n")
    # Another report's backfill is not this report's.
    assert api.post(f"/api/reports/else/backfill/{backfilled}/cancel/").status_code == 404
    assert not Run.objects.filter(status=RunStatus.CANCELLED).exists()


# --- the admin -----------------------------------------------------------------------------


def staff(client, username, *codenames, superuser=False):
    user = make_user(username, staff=True)
    user.is_superuser = superuser
    user.save()
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return user


def test_the_admin_cancel_button_cancels_a_queued_run(client, report):
    run = enqueue_run(report, "manual")
    user = staff(client, "ops", "view_run", "view_report", "run_report")
    page = client.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert 'id="cancel-run"' in page
    response = client.post(f"/admin/runs/run/{run.pk}/cancel/", follow=True)
    page = response.content.decode()
    assert f"Cancelled run {run.pk}." in page
    assert 'rs-badge rs-cancelled">cancelled<' in page
    assert 'id="cancel-run"' not in page  # nothing left to cancel
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.cancelled_by == user


def test_a_running_run_s_page_says_cancelling_until_it_stopped(client, report):
    run = enqueue_run(report, "manual")
    transition_run(run, RunStatus.RUNNING)
    staff(client, "ops", "view_run", "view_report", "run_report")
    response = client.post(f"/admin/runs/run/{run.pk}/cancel/", follow=True)
    page = response.content.decode()
    assert f"Stopping run {run.pk} on the database server" in page
    assert ">cancelling<" in page and 'id="cancelling"' in page
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING  # until its worker stops it


def test_a_viewer_sees_no_cancel_button_and_cannot_cancel(client, report, backfilled):
    run = enqueue_run(report, "manual")
    backfill_run = Run.objects.filter(backfill_id=backfilled).first()
    staff(client, "viewer", "view_run", "view_report")
    for shown in (run, backfill_run):
        page = client.get(f"/admin/runs/run/{shown.pk}/change/").content.decode()
        assert 'id="cancel-run"' not in page and 'id="cancel-backfill"' not in page
    listing = client.get("/admin/runs/run/").content.decode()
    assert "cancel_selected_runs" not in listing
    response = client.post(f"/admin/runs/run/{run.pk}/cancel/", follow=True)
    assert "You are not allowed to cancel runs" in response.content.decode()
    client.post(f"/admin/runs/run/{backfill_run.pk}/cancel-backfill/", follow=True)
    client.post(
        "/admin/runs/run/",
        {"action": "cancel_selected_runs", "_selected_action": [run.pk]},
    )
    assert not Run.objects.filter(status=RunStatus.CANCELLED).exists()
    assert client.get(f"/admin/runs/run/{run.pk}/cancel/").status_code == 302  # GET: nothing
    assert client.post("/admin/runs/run/99999999999999999999/cancel/").status_code == 404


def test_cancel_selected_runs_says_what_it_did_with_each(client, report):
    queued = enqueue_run(report, "manual")
    running = enqueue_run(report, "manual")
    transition_run(running, RunStatus.RUNNING)
    done = run_report_now(Report.objects.create(name="Done", slug="done", sql="SELECT 1 AS n"))
    staff(client, "ops", superuser=True)
    listing = client.get("/admin/runs/run/").content.decode()
    assert "Cancel selected runs" in listing
    response = client.post(
        "/admin/runs/run/",
        {"action": "cancel_selected_runs", "_selected_action": [queued.pk, running.pk, done.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert f"Cancelled run {queued.pk}." in page
    assert f"Stopping run {running.pk} on the database server" in page
    assert f"Run {done.pk} has already ended: it succeeded" in page
    assert Run.objects.get(pk=queued.pk).status == RunStatus.CANCELLED
    assert Run.objects.get(pk=done.pk).status == RunStatus.SUCCEEDED
    filtered = client.get("/admin/runs/run/?status__exact=cancelled").content.decode()
    assert f"/admin/runs/run/{queued.pk}/change/" in filtered
    assert f"/admin/runs/run/{done.pk}/change/" not in filtered


def test_the_admin_cancels_a_backfill_s_runs_together(client, report, backfilled):
    staff(client, "ops", superuser=True)
    run = Run.objects.filter(backfill_id=backfilled).order_by("id").last()
    page = client.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert "Cancel backfill (5 not ended)" in page
    response = client.post(f"/admin/runs/run/{run.pk}/cancel-backfill/", follow=True)
    assert f"Backfill {backfilled}: Cancelled runs " in response.content.decode()
    assert set(Run.objects.filter(backfill_id=backfilled).values_list("status", flat=True)) == {
        "cancelled"
    }
    listing = client.get(f"/admin/runs/run/?backfill_id={backfilled}")
    assert listing.status_code == 200
    assert listing.content.decode().count('rs-badge rs-cancelled"') == 5


def test_a_cancel_counts_in_the_metrics_as_cancelled(report, runner):
    from runs.services.infrastructure.metrics import read_metrics

    cancel_run(enqueue_run(report, "api"), runner)
    (finished,) = [family for family in read_metrics() if family.name == "runs_finished"]
    assert dict(finished.samples) == {
        ("numbers", "succeeded"): 0,
        ("numbers", "failed"): 0,
        ("numbers", "skipped"): 0,
        ("numbers", "cancelled"): 1,
    }


def test_a_cancelled_run_whose_worker_was_lost_ends_cancelled(report, runner, settings):
    from datetime import timedelta

    from runs.services.runtime.recovery import fail_lost_runs

    run = enqueue_run(report, "api")
    transition_run(run, RunStatus.RUNNING, worker="gone:1")
    cancel_run(run, runner)
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert fail_lost_runs(60) == []  # nothing to announce: a cancel notifies no one
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.cancelled_by == runner
    assert run.error.startswith("Cancelled by runner")
    assert tallies(report) == {"cancelled": 1}


def test_many_selected_runs_are_cancelled_in_bulk_and_the_message_stays_short(client, report):
    Report.objects.filter(pk=report.pk).update(targets=[], notify_emails="")
    runs = [enqueue_run(report, "manual") for _ in range(30)]
    staff(client, "ops", superuser=True)
    response = client.post(
        "/admin/runs/run/",
        {"action": "cancel_selected_runs", "_selected_action": [run.pk for run in runs]},
        follow=True,
    )
    page = response.content.decode()
    ids = sorted(run.pk for run in runs)
    assert f"Cancelled runs {', '.join(map(str, ids[:20]))} and more." in page
    assert tallies(report) == {"cancelled": 30}
    again = client.post(
        "/admin/runs/run/",
        {"action": "cancel_selected_runs", "_selected_action": ids[:2]},
        follow=True,
    )
    assert f"Runs {ids[0]}, {ids[1]} had been cancelled already." in again.content.decode()
    assert tallies(report) == {"cancelled": 30}


@needs_commits
def test_a_run_cancelled_while_it_uploads_leaves_no_object(s3_outputs, runner):
    """The request lands after the statement ended: the run's own success is dropped and
    the object it uploaded removed."""
    from tests.conftest import execute_run

    report = Report.objects.create(name="Slow", slug="slow", sql=slow_sql(0.5))
    run = enqueue_run(report, "api")
    outcome = {}

    def run_in_thread():
        try:
            outcome["ok"] = execute_run(run)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run_in_thread)
    thread.start()
    wait_for(lambda: Run.objects.get(pk=run.pk).status == RunStatus.RUNNING)
    assert cancel_run(Run.objects.get(pk=run.pk), runner) is True  # no control stops it
    thread.join(timeout=30)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.cancelled_by == runner
    assert s3_outputs.keys() == [] and s3_outputs.uploads() == []


# --- who hears of a cancel ------------------------------------------------------------------


@pytest.mark.parametrize(
    "notify_when, told",
    [("always", True), ("every_failure", False), ("failure", False), ("never", False)],
)
def test_a_run_stopped_by_a_cancel_is_told_only_to_reports_that_hear_of_every_run(
    report, runner, notify_when, told
):
    from runs.services.notifications.notifier import notify_finished_run

    Report.objects.filter(pk=report.pk).update(notify_when=notify_when)
    run = enqueue_run(report, "api")
    transition_run(run, RunStatus.RUNNING)
    cancel_run(run, runner)
    record_outcome(run, RunStatus.SUCCEEDED, row_count=1, output="numbers/x.csv")  # stop wins
    run = Run.objects.get(pk=run.pk)
    assert run.status == RunStatus.CANCELLED

    deliveries = notify_finished_run(run)

    if not told:
        assert deliveries == [] and mail.outbox == []  # a cancel is not a failure alert
        return
    [delivery] = deliveries
    assert (delivery.reason, delivery.status) == ("cancelled", "sent")
    [message] = mail.outbox
    assert "cancelled" in message.subject and "FAILED" not in message.subject
    assert "Cancelled by runner" in message.body
    # A cancel neither starts nor ends a failing streak: the next failure is the first.
    Report.objects.filter(pk=report.pk).update(notify_when="failure")
    failed = enqueue_run(report, "api")
    transition_run(failed, RunStatus.RUNNING)
    record_outcome(failed, RunStatus.FAILED, error="boom")
    assert [d.reason for d in notify_finished_run(Run.objects.get(pk=failed.pk))] == ["failed"]


def test_a_run_cancelled_before_it_started_tells_nobody_even_after_every_run(report, runner):
    from runs.models import Delivery

    Report.objects.filter(pk=report.pk).update(notify_when="always")
    run = enqueue_run(report, "api")
    assert client_for(runner).post(f"/api/runs/{run.pk}/cancel/").status_code == 202
    assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED
    assert mail.outbox == [] and not Delivery.objects.exists()  # it never ran
