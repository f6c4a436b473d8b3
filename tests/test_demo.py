import re
import stat

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection

from reports.models import Report
from reports.services.demo import DEMO_REPORTS
from reportsvc.localrun import admin_password_path
from runs.models import Run, RunStatus
from runs.services.runtime.runner import run_report_now
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


def test_the_demo_admin_sees_everything(demo, client):
    """The demo's admin is a superuser: the SQL, rows, full targets and every control."""
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.has_perm("reports.view_report_sql")
    report = Report.objects.get(slug="daily-revenue-by-currency")
    run = run_report_now(report)
    client.force_login(admin)
    page = client.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert '<pre class="rs-sql">' in page and 'id="preview-table"' in page
    assert f'href="/api/runs/{run.pk}/download/"' in page and 'id="rerun"' in page
    assert "Hidden:" not in page
    page = client.get(f"/admin/reports/report/{report.pk}/change/").content.decode()
    assert '<textarea name="sql"' in page and "Replace the SQL" not in page
    assert 'id="run-now"' in page and 'id="rotate-webhook-secret"' in page


def test_every_demo_report_runs(demo):
    for report in Report.objects.all():
        run = run_report_now(report)
        assert run.status == RunStatus.SUCCEEDED, f"{report.slug}: {run.error}"
        rows = read_csv(run.output.path)
        assert rows[0], report.slug
    assert Run.objects.filter(status=RunStatus.SUCCEEDED).count() == len(DEMO_REPORTS)
    revenue = Report.objects.get(slug="daily-revenue-by-currency").runs.get()
    assert revenue.row_count > 30


def test_admin_password_is_printed_once_and_kept_where_only_the_user_reads_it(
    source_sql, scratch_tables, capsys, settings, var_dir
):
    scratch_tables.extend(["demo_orders", "demo_customers"])
    settings.PUBLIC_BASE_URL = "http://127.0.0.1:8761"
    call_command("seed_demo")
    first = capsys.readouterr().out
    call_command("seed_demo")
    second = capsys.readouterr().out
    password = re.search(r"user 'admin', password '([^']+)'", first).group(1)
    assert "Admin login (shown only this once)" in first
    saved = admin_password_path(var_dir, connection.settings_dict)
    assert saved.name.startswith("admin-password-")  # one file per database
    assert saved.read_text() == password + "\n"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert f"The password is also in {saved} (only you can read it)." in first
    assert "Change it: " in first and "manage.py changepassword admin" in first
    assert first.rstrip().endswith("Open http://127.0.0.1:8761/admin/")
    assert password not in second
    assert f"the superuser 'admin' exists already; the password of 'admin' is in {saved}." in second
    assert "Reset a password: " in second and "manage.py changepassword admin" in second
    assert "Open http://127.0.0.1:8761/admin/" in second


def test_later_runs_name_the_existing_superuser(source_sql, scratch_tables, capsys, var_dir):
    scratch_tables.extend(["demo_orders", "demo_customers"])
    get_user_model().objects.create_superuser("ops-lead", "lead@example.com", "a-long-pass-7")
    call_command("seed_demo")
    out = capsys.readouterr().out
    assert "the superuser 'ops-lead' exists already." in out  # no password file to point at
    assert "manage.py changepassword ops-lead" in out
    assert not list(var_dir.glob("admin-password*"))


def test_a_password_that_no_longer_opens_the_login_is_not_shown(
    source_sql, scratch_tables, capsys, var_dir
):
    scratch_tables.extend(["demo_orders", "demo_customers"])
    call_command("seed_demo")
    saved = admin_password_path(var_dir, connection.settings_dict)
    capsys.readouterr()
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("changed-by-hand-42")
    admin.save()
    call_command("seed_demo")
    out = capsys.readouterr().out
    assert "the superuser 'admin' exists already." in out
    assert "password of 'admin' is in" not in out
    assert not saved.exists()  # removed: it opened nothing


def test_the_parameterised_demo_report_covers_its_interval(demo, source_sql):
    report = Report.objects.get(slug="daily-revenue")
    run = run_report_now(report)
    assert run.status == RunStatus.SUCCEEDED, run.error
    day = run.parameters["day"]
    assert run.output.name == f"daily-revenue/daily-revenue_{day}_run{run.pk}.csv"
    rows = read_csv(run.output.path)
    assert rows[0] == ["day", "currency", "orders", "revenue"]
    assert {row[0] for row in rows[1:]} == {day} and len(rows) > 2
    # Refunded orders of the same day, with other values: fewer orders.
    refunds = run_report_now(report, parameters={"status": "refunded"})
    assert refunds.parameters["status"] == "refunded"
    counted = sum(int(row[2]) for row in read_csv(refunds.output.path)[1:])
    assert counted < sum(int(row[2]) for row in rows[1:])
