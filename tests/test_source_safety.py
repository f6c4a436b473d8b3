"""Data sources that could read the service's secrets, or do more than read, are refused."""

import io
import re
import secrets
import threading
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.core.management.base import SystemCheckError
from django.db import connections

from datasources.registry import DEFAULT_SOURCE, connection_for_source
from datasources.safety import assess_source
from reports.models import Report
from runs.models import Run, RunStatus
from runs.services.runtime.runner import run_report_now
from tests.api_helpers import client_for, make_user
from tests.conftest import (
    default_source_as,
    default_source_logins,
    needs_commits,
    postgres_only,
    sqlite_only,
    wait_for,
)

pytestmark = [
    pytest.mark.django_db(databases="__all__"),
    # Cluster-wide roles and the sandbox database: one test process at a time.
    pytest.mark.xdist_group("postgres-cluster"),
]

SECURITY_PAGE = Path(__file__).resolve().parent.parent / "docs" / "security.md"


def test_the_built_in_demo_source_passes():
    assessment = assess_source(connection_for_source(DEFAULT_SOURCE))
    assert (assessment.refusals, assessment.warnings) == ([], [])
    call_command("check", stdout=io.StringIO())


def test_a_report_on_the_service_s_token_table_fails_with_the_isolation_message():
    report = Report.objects.create(name="Keys", slug="keys", sql="SELECT * FROM authtoken_token")
    run = run_report_now(report)
    assert run.status == RunStatus.FAILED
    assert run.error.startswith("Reports cannot read reportsvc's own tables (authtoken_token)")
    assert not run.output


@needs_commits
@sqlite_only
def test_a_sqlite_source_on_the_service_s_own_file_is_refused():
    service_file = connections["default"].settings_dict["NAME"]
    with default_source_as(NAME=service_file):
        with pytest.raises(SystemCheckError) as error:
            call_command("check", stdout=io.StringIO())
        assert "(reports.E001) Data source 'default' can read reportsvc's own tables" in str(
            error.value
        )
        assert "authtoken_token" in str(error.value)
        report = Report.objects.create(name="Any", slug="any", sql="SELECT 1")
        run = run_report_now(report)
    assert run.status == RunStatus.FAILED
    assert run.error.startswith("Data source 'default' can read reportsvc's own tables")


def _test_database():
    return connections["default"].settings_dict["NAME"]


@needs_commits
@postgres_only
def test_a_superuser_source_is_refused_by_check_runs_and_the_admin(client, settings):
    with default_source_as(USER="postgres", PASSWORD="", OPTIONS={}):
        with pytest.raises(SystemCheckError) as error:
            call_command("check", stdout=io.StringIO())
        text = str(error.value)
        assert (
            "Data source 'default' connects as PostgreSQL role 'postgres', which has superuser"
            in (text)
        )
        assert "UNSAFE_ALLOW_PRIVILEGED_DATA_SOURCES=1 allows it" in text
        assert "can read reportsvc's own tables (auth_user, authtoken_token, django_session" in (
            text
        )
        run = run_report_now(Report.objects.create(name="Any", slug="any", sql="SELECT 1"))
        assert run.status == RunStatus.FAILED
        assert "which has superuser" in run.error
        api = client_for(make_user("author", "editor"))
        response = api.post(
            "/api/reports/", {"name": "N", "slug": "n", "sql": "SELECT 1"}, format="json"
        )
        assert response.status_code == 400
        assert "which has superuser" in response.json()["sql"][0]


@needs_commits
@postgres_only
def test_the_opt_in_allows_a_superuser_on_a_database_of_its_own_with_a_warning(settings):
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres") as admin:
        admin.autocommit = True
        if not admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = 'reportsvc_sandbox_test'"
        ).fetchone():
            admin.execute("CREATE DATABASE reportsvc_sandbox_test")
    changes = {"NAME": "reportsvc_sandbox_test", "USER": "postgres", "PASSWORD": "", "OPTIONS": {}}
    with default_source_as(**changes):
        with pytest.raises(SystemCheckError, match="which has superuser"):
            call_command("check", stdout=io.StringIO())
        settings.UNSAFE_ALLOW_PRIVILEGED_DATA_SOURCES = True
        output = io.StringIO()
        call_command("check", stdout=output, stderr=output)
        assert "(reports.W002) Data source 'default' connects as PostgreSQL role 'postgres'" in (
            output.getvalue()
        )
        run = run_report_now(Report.objects.create(name="One", slug="one", sql="SELECT 1"))
        assert run.status == RunStatus.SUCCEEDED, run.error


@pytest.fixture
def scratch_role():
    """A login role created for one test and dropped with everything granted to it."""
    names = []

    def create(name, *grants):
        service = connections["default"]
        with service.cursor() as cursor:
            cursor.execute(f"DROP ROLE IF EXISTS {name}")
            cursor.execute(f"CREATE ROLE {name} LOGIN NOINHERIT")
            for grant in grants:
                cursor.execute(grant.format(role=name))
        names.append(name)
        return name

    yield create
    with connections["default"].cursor() as cursor:
        for name in names:
            cursor.execute(f"DROP OWNED BY {name}")
            cursor.execute(f"DROP ROLE {name}")


# Roles are made on the service connection; the data source logs in as them.
@needs_commits
@postgres_only
@pytest.mark.parametrize(
    ("grants", "message"),
    [
        (["GRANT pg_read_server_files TO {role}"], "which has pg_read_server_files"),
        (["GRANT pg_execute_server_program TO {role}"], "which has pg_execute_server_program"),
        # Every session's query text: other runs' SQL and values.
        (["GRANT pg_read_all_stats TO {role}"], "which has pg_read_all_stats"),
        (["GRANT pg_monitor TO {role}"], "which has pg_monitor, pg_read_all_stats"),
        (["GRANT pg_signal_backend TO {role}"], "which has pg_signal_backend"),
        (["ALTER ROLE {role} REPLICATION"], "which has REPLICATION"),
        (
            ["GRANT SELECT ON public.authtoken_token TO {role}"],
            "can read reportsvc's own tables (authtoken_token)",
        ),
        (
            # Through a role it could SET ROLE to, even without inheriting its rights.
            [
                "CREATE ROLE {role}_owner NOLOGIN",
                "GRANT SELECT ON public.auth_user TO {role}_owner",
                "GRANT {role}_owner TO {role}",
            ],
            "can read reportsvc's own tables (auth_user)",
        ),
    ],
)
def test_roles_with_dangerous_powers_are_refused(scratch_role, grants, message):
    # Roles are cluster-wide and other test runs share the cluster: a name of its own.
    role = scratch_role(f"reportsvc_test_risky_{secrets.token_hex(3)}", *grants)
    try:
        with default_source_as(USER=role, PASSWORD="", OPTIONS={}):
            refusals = assess_source(connection_for_source(DEFAULT_SOURCE)).refusals
    finally:
        if "_owner" in " ".join(grants):
            with connections["default"].cursor() as cursor:
                cursor.execute(f"DROP OWNED BY {role}_owner")
                cursor.execute(f"DROP ROLE {role}_owner")
    assert len(refusals) == 1
    assert message in refusals[0]
    assert "README: Security" in refusals[0]


def readme_recipe():
    text = SECURITY_PAGE.read_text()
    match = re.search(r"<!-- reporting-role-recipe -->\s*```sql\n(.*?)```", text, re.S)
    assert match, "docs/security.md lost its reporting-role recipe"
    return match.group(1)


def _superuser_sees_active(pid):
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone() == ("active",)


@needs_commits
@postgres_only
def test_the_readme_recipe_makes_logins_that_read_only_the_reporting_data_and_stay_apart():
    # Roles are cluster-wide and other test runs share the cluster: names of its own.
    prefix = f"{_test_database()[:40]}_{secrets.token_hex(3)}"
    recipe = readme_recipe().replace("reportsvc_reader", prefix)
    group, logins = f"{prefix}s", [f"{prefix}_{number}" for number in (1, 2, 3)]
    service = connections["default"]
    with service.cursor() as cursor:
        cursor.execute("CREATE SCHEMA IF NOT EXISTS reporting")
        cursor.execute("CREATE TABLE reporting.sales (day date, amount integer)")
        cursor.execute("INSERT INTO reporting.sales VALUES ('2026-11-25', 42)")
        cursor.execute(recipe)  # as written, run by an administrator

    def connect(login):
        return psycopg.connect(host="127.0.0.1", user=login, dbname=_test_database())

    try:
        for login in logins:
            with connect(login) as reader:
                assert reader.execute("SELECT amount FROM sales").fetchall() == [(42,)]
                reader.rollback()
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    reader.execute("SELECT * FROM public.authtoken_token")
                reader.rollback()
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    reader.execute("SELECT pg_read_file('/etc/hostname')")
        with connect(logins[0]) as busy, connect(logins[1]) as other:
            other.autocommit = True
            pid = busy.pgconn.backend_pid
            sleeping = threading.Thread(
                target=busy.execute, args=["SELECT 'secret value', pg_sleep(1)"]
            )
            sleeping.start()
            wait_for(lambda: _superuser_sees_active(pid))
            for role in (None, group):  # also after SET ROLE to the group
                if role:
                    other.execute(f'SET ROLE "{role}"')
                query = other.execute(
                    "SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]
                ).fetchone()[0]
                assert query == "<insufficient privilege>"
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    other.execute("SELECT pg_terminate_backend(%s)", [pid])
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    other.execute(f'SET ROLE "{logins[0]}"')
            sleeping.join()
        with default_source_logins(*logins):
            call_command("check", stdout=io.StringIO())  # every login examined: no error
            for alias in settings.REPORT_DATA_SOURCE_LOGINS[DEFAULT_SOURCE]:
                assessment = assess_source(connections[alias])
                assert (assessment.refusals, assessment.warnings) == ([], [])
    finally:
        with service.cursor() as cursor:
            cursor.execute("DROP SCHEMA reporting CASCADE")
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)",
                [logins],
            )
            for role in [*logins, group]:
                cursor.execute(f'DROP OWNED BY "{role}"')
                cursor.execute(f'DROP ROLE "{role}"')


@postgres_only
def test_run_errors_do_not_show_the_statement_to_people_who_may_not_see_sql():
    report = Report.objects.create(
        name="Secret", slug="secret", sql="SELECT 'top secret plan' AS x, no_such_column"
    )
    run = run_report_now(report)
    assert "top secret plan" in run.error  # recorded in full for people who may see SQL
    viewer = client_for(make_user("viewer", "view"))
    seen = viewer.get(f"/api/runs/{run.pk}/").json()["error"]
    assert seen == 'column "no_such_column" does not exist'
    sql_viewer = client_for(make_user("sql-viewer", "sql"))
    assert "top secret plan" in sql_viewer.get(f"/api/runs/{run.pk}/").json()["error"]


def test_runreport_on_a_refused_statement_says_why_and_records_the_run():
    Report.objects.create(name="W", slug="w", sql="SELECT 1; DELETE FROM demo_orders")
    with pytest.raises(CommandError, match="A report runs exactly one statement"):
        call_command("runreport", "w", stdout=io.StringIO())
    assert Run.objects.get().status == RunStatus.FAILED
