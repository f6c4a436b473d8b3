import contextlib
import copy
import csv
import io
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings
from django.test.testcases import QuietWSGIRequestHandler

from reports.datasources import DEFAULT_SOURCE, connection_for_source
from reports.services.demo_source import demo_source_writer

ON_POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
postgres_only = pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL-only (runs in CI)")
sqlite_only = pytest.mark.skipif(ON_POSTGRES, reason="SQLite-only")

# The live server writes a response's headers and its body in two sends: with Nagle's
# algorithm on, a keep-alive client (schemathesis, the generated client, the browser)
# waits for its own delayed ACK, about 40 ms, before every body.
QuietWSGIRequestHandler.disable_nagle_algorithm = True

# Tests that execute reports: committed data (the report connection is a second
# connection) and access to the reporting aliases.
executes_reports = pytest.mark.django_db(transaction=True, databases="__all__")
# Tests whose data another thread or process must see, or that rely on on_commit hooks:
# real commits, and every table emptied after the test.
needs_commits = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture(autouse=True, scope="session")
def fast_password_hashing():
    """Most tests make users: the production hasher spends about half a second of CPU on
    each password. Processes the tests start keep the production hashers."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def outputs_dir(settings, tmp_path):
    """Each test writes report outputs into its own empty folder."""
    settings.MEDIA_ROOT = str(tmp_path / "outputs")
    return Path(settings.MEDIA_ROOT)


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    """Files the service keeps beside its database (the admin password) go to a temp folder."""
    settings.VAR_DIR = tmp_path / "var"
    settings.VAR_DIR.mkdir()
    return settings.VAR_DIR


@pytest.fixture
def source_sql():
    """Run SQL in the default (demo) data source as its owner: reports only read it."""

    def run(statement, params=None):
        with demo_source_writer() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall() if cursor.description else None

    return run


@contextlib.contextmanager
def default_source_as(**changes):
    """Point the default data source at another role or database for a while."""
    connection = connection_for_source(DEFAULT_SOURCE)
    connection.close()
    saved = copy.deepcopy(connection.settings_dict)
    connection.settings_dict.update(changes)
    try:
        yield connection
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


@pytest.fixture
def scratch_tables(source_sql):
    """Names of tables a test creates in the data source; dropped afterwards."""
    names = []
    yield names
    for name in names:
        source_sql(f"DROP TABLE IF EXISTS {name}")


def files_under(folder):
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


def parse_csv_text(text):
    return list(csv.reader(io.StringIO(text, newline="")))


def wait_for(predicate, timeout=10.0, interval=0.05):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """In-process tests close connections after each unit of work.

    Scheduler threads come and go within a test; a persistent connection left behind
    by one would keep PostgreSQL from dropping the test database at the end. Worker
    processes started by tests keep the default (persistent) setting. Under
    pytest-xdist each test process gets databases of its own (the suffix fixture).

    SQLite test databases are thrown away after the run: the test process does not wait
    for the disk after each commit. A transactional test's teardown (flush, then the
    permissions written again) commits a dozen times.
    """
    for database in settings.DATABASES.values():
        database["CONN_MAX_AGE"] = 0
        if database["ENGINE"].endswith("sqlite3"):
            options = database.setdefault("OPTIONS", {})
            options["init_command"] = f"{options.get('init_command', '')}PRAGMA synchronous=OFF;"


def execute_run(run):
    """Start this queued run in this process, as a worker's claim would, and perform it;
    False if it was no longer queued."""
    from django.utils import timezone

    from runs.models import RunStatus
    from runs.services.heartbeats import worker_name
    from runs.services.queue import statement_to_record
    from runs.services.runner import perform_run
    from runs.services.transitions import transition_run

    now = timezone.now()
    started = transition_run(
        run,
        RunStatus.RUNNING,
        sql=statement_to_record(run.report),
        worker=worker_name(),
        started_at=now,
        heartbeat_at=now,
    )
    if started:
        perform_run(run)
    return started
