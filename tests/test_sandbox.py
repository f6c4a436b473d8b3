"""Hostile report SQL changes nothing, through every entry point, on every engine and role.

A canary table lives in the data source. Each statement of a corpus built from
PostgreSQL's lexical rules (and SQLite's) goes through the admin form, the API, the
runreport command and the worker; afterwards the canary is intact, no table was
created, no program ran and no refused report was saved.
"""

import time
import uuid
from pathlib import Path

import psycopg
import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command

from datasources.registry import DEFAULT_SOURCE, connection_for_source
from reports.models import Report
from runs.models import Run, RunStatus, RunTrigger
from runs.services.domain.queue import claim_runs
from runs.services.runtime.runner import perform_run
from tests.api_helpers import client_for, make_user
from tests.conftest import ON_POSTGRES, default_source_as, enqueue_run, postgres_only

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    # Cluster-wide roles and the sandbox database: one test process at a time.
    pytest.mark.xdist_group("postgres-cluster"),
]

PWNED = Path("/tmp") / f"reportsvc-pwned-{uuid.uuid4().hex}"
SANDBOX_DATABASE = "reportsvc_sandbox_test"

CORPUS = [
    # Dollar-quote tags glued to identifiers: x$$$ is a name, not a quote.
    "SELECT 1 AS x$$$; COMMIT; DROP TABLE canary; SELECT 1 AS y$$$",
    # A -- comment ends at \r (and \n); \f and \v are white space.
    "SELECT 1 --\r; COMMIT; DROP TABLE canary",
    "SELECT 1 --\f\n; DELETE FROM canary",
    "SELECT 1;\x0bDELETE FROM canary",
    # Nested block comments, escape strings, Unicode strings, doubled quotes.
    "SELECT 1 /* /* */ */; DELETE FROM canary",
    "SELECT E'\\''; DELETE FROM canary; SELECT ''",
    "SELECT name'\\'; DELETE FROM canary; SELECT '",
    "SELECT U&'\\0041'; DELETE FROM canary",
    'SELECT 1 AS "a""b"; DELETE FROM canary',
    "SELECT $a$ $b$ $a$; DELETE FROM canary",
    # Breaking out of the exporter's COPY wrapper.
    "SELECT 1) TO STDOUT; DELETE FROM canary; COPY (SELECT 1",
    f"SELECT 1 FROM canary; COPY canary TO PROGRAM 'touch {PWNED}'",
    f"SELECT 1) TO PROGRAM 'touch {PWNED}' --",
    # Plain writes, writes inside a query, transaction control, a slow second statement.
    "DELETE FROM canary",
    "WITH gone AS (DELETE FROM canary RETURNING *) SELECT * FROM gone",
    "SELECT * INTO evil FROM canary",
    "CREATE TABLE evil AS SELECT * FROM canary",
    "COMMIT; DELETE FROM canary",
    "SELECT 1; SELECT pg_sleep(8)",
    "DROP TABLE canary",
]
CANARY_ROWS = [(1, "alive"), (2, "well")]
# SQLite ends a -- comment only at \n: to it this is one harmless SELECT, and may run.
ONE_STATEMENT_TO_SQLITE = {"SELECT 1 --\r; COMMIT; DROP TABLE canary"}


def must_be_refused(sql):
    return ON_POSTGRES or sql not in ONE_STATEMENT_TO_SQLITE


def _owner_sql_on_source():
    """The data source's own connection (used where it is the owner: a superuser)."""
    connection = connection_for_source(DEFAULT_SOURCE)

    def run(statement):
        with connection.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchall() if cursor.description else None

    return run


@pytest.fixture
def superuser_source(settings):
    """The default source connects as a PostgreSQL superuser to a database of its own,
    allowed by the opt-in: the worst set-up the service still runs with."""
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres") as admin:
        admin.autocommit = True
        exists = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [SANDBOX_DATABASE]
        ).fetchone()
        if not exists:
            admin.execute(f"CREATE DATABASE {SANDBOX_DATABASE}")
    settings.UNSAFE_ALLOW_PRIVILEGED_DATA_SOURCES = True
    with default_source_as(NAME=SANDBOX_DATABASE, USER="postgres", PASSWORD="", OPTIONS={}):
        yield _owner_sql_on_source()


@pytest.fixture(params=["demo role", "superuser"])
def owner_sql(request, source_sql):
    if request.param == "superuser":
        if not ON_POSTGRES:
            pytest.skip("PostgreSQL-only (runs in CI)")
        return request.getfixturevalue("superuser_source")
    return source_sql


@pytest.fixture
def canary(owner_sql):
    owner_sql("DROP TABLE IF EXISTS evil")
    owner_sql("DROP TABLE IF EXISTS canary")
    owner_sql("CREATE TABLE canary (id integer PRIMARY KEY, name text)")
    owner_sql("INSERT INTO canary VALUES (1, 'alive'), (2, 'well')")

    def intact():
        rows = [tuple(row) for row in owner_sql("SELECT id, name FROM canary ORDER BY id")]
        evil = owner_sql(
            "SELECT count(*) FROM pg_class WHERE relname = 'evil'"
            if ON_POSTGRES
            else "SELECT count(*) FROM sqlite_master WHERE name = 'evil'"
        )[0][0]
        return rows == CANARY_ROWS and evil == 0 and not PWNED.exists()

    assert intact()
    yield intact
    owner_sql("DROP TABLE IF EXISTS canary")


@pytest.fixture
def editor_client(client):
    """A staff user who may only add, change and view reports: the hostile author."""
    user = make_user("author", staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["add_report", "change_report", "view_report"])
    )
    client.force_login(user)
    return client


def admin_form(sql):
    return {
        "name": "Hostile",
        "slug": "hostile",
        "description": "",
        "sql": sql,
        "data_source": "default",
        "schedule": "",
        "timezone": "UTC",
        "enabled": "on",
        "max_retries": "0",
        "notify_when": "failure",
        "webhook_secret": "x" * 16,
    }


def test_the_corpus_changes_nothing_through_the_admin(canary, editor_client):
    for sql in CORPUS:
        started = time.monotonic()
        response = editor_client.post("/admin/reports/report/add/", admin_form(sql))
        assert time.monotonic() - started < 5, sql  # a smuggled pg_sleep(8) never runs
        if must_be_refused(sql):
            assert response.status_code == 200, sql  # the form again, with the reason
            assert "errornote" in response.content.decode(), sql
        assert canary(), sql
        Report.objects.filter(slug="hostile").delete()  # what SQLite saw as harmless
    assert not Report.objects.exists()


def test_the_corpus_changes_nothing_through_the_api(canary):
    api = client_for(make_user("api-author", "editor"))
    for sql in CORPUS:
        started = time.monotonic()
        response = api.post(
            "/api/reports/", {"name": "Hostile", "slug": "hostile", "sql": sql}, format="json"
        )
        assert time.monotonic() - started < 5, sql
        if must_be_refused(sql):
            assert response.status_code == 400, (sql, response.json())
            assert set(response.json()) == {"sql"}, sql
        assert canary(), sql
        Report.objects.filter(slug="hostile").delete()


def test_the_corpus_changes_nothing_through_runreport(canary):
    # Reports saved around every check (Report.objects.create validates nothing).
    for index, sql in enumerate(CORPUS):
        report = Report.objects.create(name=f"Hostile {index}", slug=f"hostile-{index}", sql=sql)
        if must_be_refused(sql):
            with pytest.raises(CommandError, match="failed"):
                call_command("runreport", report.slug)
        else:
            call_command("runreport", report.slug)
        assert canary(), sql


def test_the_corpus_changes_nothing_through_the_worker(canary):
    for index, sql in enumerate(CORPUS):
        report = Report.objects.create(name=f"Hostile {index}", slug=f"hostile-{index}", sql=sql)
        enqueue_run(report, RunTrigger.API)
        (run,) = claim_runs(1, "test-worker:1")
        perform_run(run)
        run.refresh_from_db()
        if must_be_refused(sql):
            assert run.status == RunStatus.FAILED, sql
            assert run.error, sql
        assert canary(), sql


@postgres_only
@pytest.mark.parametrize("owner_sql", ["superuser"], indirect=True)
def test_a_superuser_source_is_still_read_only(canary, superuser_source):
    # The opt-in allows the role; a run is still one statement in a read-only transaction.
    report = Report.objects.create(name="Fine", slug="fine", sql="SELECT count(*) FROM canary")
    call_command("runreport", report.slug)
    assert Run.objects.get(report=report).status == RunStatus.SUCCEEDED
    superuser_source(
        "CREATE OR REPLACE FUNCTION purge_canary() RETURNS bigint LANGUAGE sql "
        "AS 'DELETE FROM canary RETURNING id'"
    )
    try:
        sneaky = Report.objects.create(name="Sneaky", slug="sneaky", sql="SELECT purge_canary()")
        with pytest.raises(CommandError, match="read-only transaction"):
            call_command("runreport", sneaky.slug)
        assert canary()
    finally:
        superuser_source("DROP FUNCTION purge_canary()")
