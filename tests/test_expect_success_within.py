"""A report's expect_success_within (admin, API, validation) and the one definition of
stale (runs.selectors.reports_with_freshness), on both databases."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from reports.models import Report
from runs.models import RunStatus
from runs.selectors import reports_with_freshness
from runs.services.domain.transitions import tally_finished
from runs.services.runtime.runner import run_report_now
from tests.api_helpers import client_for, make_user
from tests.test_admin import form_data

pytestmark = pytest.mark.django_db(databases="__all__")

NOW = timezone.now().replace(microsecond=0)
DAY = timedelta(days=1)


def make_report(slug="daily", created=None, **fields):
    report = Report.objects.create(name=slug, slug=slug, sql="SELECT 1 AS n", **fields)
    if created is not None:
        Report.objects.filter(pk=report.pk).update(created_at=created)
    return report


def succeeded_at(report, moment):
    """What a run of ``report`` that succeeded at ``moment`` records (transitions)."""
    tally_finished(report.pk, RunStatus.SUCCEEDED, started_at=moment, finished_at=moment)


def freshness(now=NOW):
    return {
        report.slug: (report.stale, report.last_success_at)
        for report in reports_with_freshness(now)
    }


# --- stale -------------------------------------------------------------------------------


def test_a_report_without_an_expectation_is_never_stale():
    make_report("manual", created=NOW - timedelta(days=400))
    assert freshness() == {"manual": (False, None)}


def test_a_report_that_never_succeeded_is_stale_once_it_is_older_than_the_expectation():
    make_report("new", created=NOW - timedelta(hours=23), expect_success_within=DAY)
    make_report("old", created=NOW - timedelta(hours=25), expect_success_within=DAY)
    assert freshness() == {"new": (False, None), "old": (True, None)}


def test_a_report_is_stale_when_its_last_success_is_older_than_the_expectation():
    recent = make_report("recent", created=NOW - 10 * DAY, expect_success_within=DAY)
    late = make_report("late", created=NOW - 10 * DAY, expect_success_within=DAY)
    edge = make_report("edge", created=NOW - 10 * DAY, expect_success_within=DAY)
    succeeded_at(recent, NOW - 3 * DAY)
    succeeded_at(recent, NOW - timedelta(hours=2))  # the newest success counts
    succeeded_at(recent, NOW - 2 * DAY)  # recorded later, but older: changes nothing
    succeeded_at(late, NOW - DAY - timedelta(seconds=1))
    succeeded_at(edge, NOW - DAY)  # exactly a day: not older than it
    assert freshness() == {
        "recent": (False, NOW - timedelta(hours=2)),
        "late": (True, NOW - DAY - timedelta(seconds=1)),
        "edge": (False, NOW - DAY),
    }
    assert freshness(NOW + timedelta(microseconds=1))["edge"] == (True, NOW - DAY)


def test_failures_and_skips_keep_no_report_fresh():
    report = make_report(created=NOW - 2 * DAY, expect_success_within=DAY)
    tally_finished(report.pk, RunStatus.FAILED, started_at=NOW, finished_at=NOW)
    tally_finished(report.pk, RunStatus.SKIPPED)
    assert freshness() == {"daily": (True, None)}
    assert list(reports_with_freshness(NOW).filter(stale=True)) == [report]


def test_a_real_run_makes_a_report_fresh():
    report = make_report(created=NOW - 2 * DAY, expect_success_within=DAY)
    assert freshness(timezone.now())["daily"][0] is True
    run = run_report_now(report)
    assert freshness(timezone.now())["daily"] == (False, run.finished_at)


# --- the field -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (timedelta(0), "Give a positive duration"),
        (timedelta(seconds=-1), "Give a positive duration"),
        (timedelta(days=365, microseconds=1), "At most a year (365 00:00:00), not 365 days"),
        (timedelta(days=10_000), "At most a year (365 00:00:00), not 10000 days"),
    ],
)
def test_a_bad_expectation_is_a_field_error(value, message):
    report = Report(name="Daily", slug="daily", sql="SELECT 1", expect_success_within=value)
    with pytest.raises(ValidationError) as error:
        report.full_clean()
    assert list(error.value.message_dict) == ["expect_success_within"]
    assert message in error.value.message_dict["expect_success_within"][0]


@pytest.mark.parametrize("value", [None, timedelta(seconds=1), DAY, timedelta(days=365)])
def test_good_expectations_pass(value):
    Report(name="Daily", slug="daily", sql="SELECT 1", expect_success_within=value).full_clean()


@pytest.fixture
def author():
    return client_for(make_user("author", "editor", staff=True))


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("1 02:00:00", "1 02:00:00"),
        ("P1D", "1 00:00:00"),
        ("PT6H", "06:00:00"),
        ("3600", "01:00:00"),
        (None, None),
    ],
)
def test_the_api_takes_and_shows_the_expectation(author, given, shown):
    body = {"name": "Daily", "slug": "daily", "sql": "SELECT 1", "expect_success_within": given}
    created = author.post("/api/reports/", body, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["expect_success_within"] == shown
    assert author.get("/api/reports/daily/").json()["expect_success_within"] == shown
    [listed] = author.get("/api/reports/").json()
    assert listed["expect_success_within"] == shown


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("-01:00:00", "Give a positive duration"),
        ("00:00:00", "Give a positive duration"),
        ("366 00:00:00", "At most a year (365 00:00:00), not 366 days"),
        ("soon", "Duration has wrong format"),
        ("99999999999 00:00:00", "The number of days must be between"),
        ("P" + "9" * 5000 + "D", "The number of days must be between"),
        ([1], "Duration has wrong format"),
    ],
)
def test_the_api_refuses_a_bad_expectation_with_a_field_error(author, given, message):
    make_report()
    response = author.patch("/api/reports/daily/", {"expect_success_within": given}, format="json")
    assert response.status_code == 400
    [error] = response.json()["expect_success_within"]
    assert message in error
    assert Report.objects.get().expect_success_within is None  # nothing changed


def test_the_admin_takes_the_expectation_and_refuses_a_bad_one(admin_client):
    refused = admin_client.post(
        "/admin/reports/report/add/", form_data(expect_success_within="-1 00:00:00")
    )
    assert refused.status_code == 200  # the form again, with the error
    assert "Give a positive duration" in refused.content.decode()
    assert not Report.objects.exists()

    saved = admin_client.post(
        "/admin/reports/report/add/", form_data(expect_success_within="1 02:00:00")
    )
    assert saved.status_code == 302
    report = Report.objects.get()
    assert report.expect_success_within == timedelta(days=1, hours=2)
    page = admin_client.get(f"/admin/reports/report/{report.pk}/change/").content.decode()
    assert 'name="expect_success_within" value="1 02:00:00"' in page
