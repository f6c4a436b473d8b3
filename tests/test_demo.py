import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from reports.models import Report
from reports.services.demo import DEMO_REPORTS
from runs.models import Run, RunStatus
from runs.services.runner import run_report_now
from tests.conftest import read_csv

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def demo(source_sql, scratch_tables):
    scratch_tables.extend(["demo_orders", "demo_customers"])
    call_command("seed_demo", stdout=__import__("io").StringIO())


def snapshot(source_sql):
    return (
        source_sql("SELECT count(*), sum(amount_cents) FROM demo_orders"),
        source_sql("SELECT count(*) FROM demo_customers"),
        sorted(Report.objects.values_list("slug", "sql", "schedule", "updated_at")),
        get_user_model().objects.count(),
    )


def test_seeding_twice_changes_nothing(demo, source_sql, capsys):
    before = snapshot(source_sql)
    call_command("seed_demo")
    assert snapshot(source_sql) == before
    assert "already present, unchanged" in capsys.readouterr().out


def test_demo_creates_realistic_data_reports_and_an_admin(demo, source_sql):
    orders, customers = (
        source_sql("SELECT count(*) FROM demo_orders")[0][0],
        source_sql("SELECT count(*) FROM demo_customers")[0][0],
    )
    assert orders >= 1000 and customers >= 100
    assert set(Report.objects.values_list("slug", flat=True)) == set(DEMO_REPORTS)
    for report in Report.objects.all():
        report.full_clean()
        assert report.schedule
    assert get_user_model().objects.filter(is_superuser=True).count() == 1


def test_every_demo_report_runs(demo):
    for report in Report.objects.all():
        run = run_report_now(report)
        assert run.status == RunStatus.SUCCEEDED, f"{report.slug}: {run.error}"
        rows = read_csv(run.output.path)
        assert rows[0], report.slug
    assert Run.objects.filter(status=RunStatus.SUCCEEDED).count() == len(DEMO_REPORTS)
    revenue = Report.objects.get(slug="daily-revenue-by-currency").runs.get()
    assert revenue.row_count > 30


def test_admin_password_is_printed_once(source_sql, scratch_tables, capsys):
    scratch_tables.extend(["demo_orders", "demo_customers"])
    call_command("seed_demo")
    first = capsys.readouterr().out
    call_command("seed_demo")
    second = capsys.readouterr().out
    assert "Admin login (shown only this once): user 'admin', password '" in first
    assert "password '" not in second
    assert "a superuser exists already" in second
