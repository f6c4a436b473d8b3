"""Every claimed run ends: whatever breaks while a run is prepared, named, stored or
recorded, runs.services.runtime.guard ends it failed with a message a user can act on, and the
executor (the worker's slot, runreport) goes on."""

import logging
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from reports.models import Report
from runs.models import Run, RunStatus
from runs.services.runtime.guard import execute_claimed_run
from tests.conftest import (
    enqueue_run,
    execute_run,
    executes_reports,
    files_under,
    read_csv,
    sqlite_only,
)
from tests.faults import REFUSAL, refused_success, refused_updates

pytestmark = executes_reports


def broken_by_service(run):
    """The message of a run the service broke, not its SQL."""
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.finished_at is not None
    return run.error


def test_a_run_whose_recording_breaks_ends_failed_without_its_file(outputs_dir):
    report = Report.objects.create(name="Refused", slug="refused", sql="SELECT 1 AS n")
    run = enqueue_run(report, "manual")
    with refused_success(report):
        execute_run(run)
    error = broken_by_service(run)
    assert error.startswith("The run failed inside reportsvc while recording its outcome (")
    assert REFUSAL in error
    assert "its SQL was not at fault. Run it again; if it fails the same way" in error
    assert f"has the details of run {run.pk}." in error
    assert files_under(outputs_dir) == []  # stored, then removed: no run records it
    again = enqueue_run(report, "manual")
    execute_run(again)
    again.refresh_from_db()
    assert again.status == RunStatus.SUCCEEDED, again.error
    assert read_csv(again.output.path) == [["n"], ["1"]]


def test_runreport_ends_such_a_run_and_says_why():
    report = Report.objects.create(name="Refused", slug="refused", sql="SELECT 1 AS n")
    with refused_success(report), pytest.raises(CommandError) as raised:
        call_command("runreport", "refused", stdout=StringIO())
    run = Run.objects.get()
    assert str(raised.value) == f"Run {run.pk} failed: {broken_by_service(run)}"
    assert "while recording its outcome" in run.error


def test_a_failed_scheduled_run_is_retried_as_any_failure_is(settings):
    report = Report.objects.create(
        name="Refused", slug="refused", sql="SELECT 1 AS n", schedule="0 6 * * *", max_retries=1
    )
    run = enqueue_run(report, "schedule")
    Run.objects.filter(pk=run.pk).update(trigger="schedule")
    run.trigger = "schedule"
    with refused_success(report):
        execute_run(run)
    broken_by_service(run)
    retry = Run.objects.get(retry_of=run)
    assert retry.status == RunStatus.QUEUED and retry.attempt == 2


def test_when_the_run_s_values_cannot_be_stored_the_failure_is_stored_alone():
    # The success, and a failure that records the statement, are refused: the failure
    # is recorded with its message only, the run keeps the SQL it was claimed with.
    report = Report.objects.create(
        name="Refused", slug="refused", sql="SELECT {{ interval_start }} AS s"
    )
    run = enqueue_run(report, "manual")
    condition = "NEW.status = 'succeeded' OR (NEW.status = 'failed' AND NEW.sql <> OLD.sql)"
    with refused_updates(report, condition):
        execute_run(run)
    assert "while recording its outcome" in broken_by_service(run)
    assert run.sql == report.sql


def test_notifications_that_break_change_nothing(caplog):
    report = Report.objects.create(name="Fine", slug="fine", sql="SELECT 1 AS n")
    run = enqueue_run(report, "manual")
    run.refresh_from_db()
    from runs.services.domain.transitions import transition_run

    transition_run(run, RunStatus.RUNNING, worker="here:1")

    def notify(run):
        raise RuntimeError("the mail server is on fire")

    with caplog.at_level(logging.ERROR, logger="runs.services.runtime.guard"):
        assert execute_claimed_run(run, notify=notify) is True
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert f"notifications for run {run.pk} failed" in caplog.text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"interval_start": "0001-01-01T00:00:00Z", "interval_end": "0001-01-02T00:00:00Z"},
            "Parameter interval_start: '0001-01-01T00:00:00Z' is out of range: in the report's "
            "time zone (America/New_York) time stamps run from 0001-01-01T04:56:02Z",
        ),
        ({"parameters": ["a", "list"]}, "Parameter parameters: The run's values are not an"),
        ({"parameters": {"day": "0000-01-01"}}, "Parameter day: '0000-01-01' is not a date"),
    ],
)
def test_runs_queued_before_values_were_checked_fail_with_the_reason(fields, message):
    report = Report.objects.create(
        name="Old",
        slug="old",
        sql="SELECT {{ day }} AS day",
        timezone="America/New_York",
        parameters=[{"name": "day", "type": "date", "default": "interval_start"}],
    )
    run = enqueue_run(report, "manual")
    Run.objects.filter(pk=run.pk).update(**fields)
    run.refresh_from_db()
    execute_run(run)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error.startswith(message)


@sqlite_only  # PostgreSQL cannot store a lone surrogate
def test_a_lone_surrogate_queued_on_sqlite_fails_its_run_with_the_reason():
    report = Report.objects.create(
        name="Old", slug="old", sql="SELECT {{ note }} AS n", parameters=[
            {"name": "note", "type": "text"}
        ],
    )  # fmt: skip
    run = enqueue_run(report, "manual")
    Run.objects.filter(pk=run.pk).update(parameters={"note": "a\ud800b"})
    run.refresh_from_db()
    execute_run(run)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error == (
        "Parameter note: Text must be valid Unicode: character 2 is a lone surrogate "
        "(\\ud800), which no database can store."
    )


def test_a_run_queued_with_half_an_interval_covers_the_default_one():
    report = Report.objects.create(name="Half", slug="half", sql="SELECT {{ interval_end }} AS e")
    run = enqueue_run(report, "manual")
    end = run.interval_end
    Run.objects.filter(pk=run.pk).update(interval_start=None)
    run.refresh_from_db()
    execute_run(run)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.interval_end == end and run.interval_start is not None
