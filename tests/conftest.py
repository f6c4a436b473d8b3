import contextlib
import copy
import csv
import gc
import io
import os
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from django.test import override_settings
from django.test.testcases import QuietWSGIRequestHandler

from datasources.registry import DEFAULT_SOURCE, connection_for_source
from reports.services.demo_source import demo_source_writer
from tests.mysql_source import add_placeholder_aliases

ON_POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
add_placeholder_aliases()  # a MySQL data source's, for the tests that configure one
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


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: two test processes per core. Many tests spend their time waiting on
    servers, worker processes and timeouts; one process per core leaves cores idle."""
    return min(2 * len(os.sched_getaffinity(0)), 8)


def pytest_collection_finish(session):
    """What is loaded by now (Django, the project, the tests) lives as long as the test
    process: frozen, the garbage collector stops walking it on every full collection,
    about a tenth of the suite's CPU."""
    gc.freeze()


def pytest_collection_modifyitems(items):
    """Tests marked long_running start first. Parallel test processes take the next test
    as they become free, so the longest ones started last would leave one process
    working alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("long_running") is None)


@pytest.fixture(autouse=True, scope="session")
def fast_password_hashing():
    """Most tests make users: the production hasher spends about half a second of CPU on
    each password. Processes the tests start keep the production hashers."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True, scope="session")
def cheap_flush_between_transactional_tests():
    """After each transactional test Django empties every table, then sends post_migrate
    so that the content types and permissions are written again. Here:

    - the content types and permissions stay, and no post_migrate follows: they come
      from the migrations and no test changes them (four fifths of a teardown's time;
      the signal's other receivers, the demo source and the cache table, look after
      nothing a flush removes);
    - on PostgreSQL the rows are deleted, as Django does on SQLite, instead of one
      TRUNCATE, which makes new files for every table and index: 150 ms for tables
      holding a few rows against 5 ms. Django's foreign keys are deferred, so the order
      of the deletes does not matter.
    """
    from django.core.management.commands import flush

    kept = {"django_content_type", "auth_permission"}

    def sql_flush(style, connection, reset_sequences=True, allow_cascade=False):
        tables = [
            table
            for table in connection.introspection.django_table_names(
                only_existing=True, include_views=False
            )
            if table not in kept
        ]
        if connection.vendor == "postgresql" and not (reset_sequences or allow_cascade):
            deletes = [f"DELETE FROM {connection.ops.quote_name(table)}" for table in tables]
            return ["SET CONSTRAINTS ALL DEFERRED", *deletes] if deletes else []
        return connection.ops.sql_flush(
            style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
        )

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flush, "sql_flush", sql_flush)
        patch.setattr(flush, "emit_post_migrate_signal", lambda *args, **kwargs: None)
        yield


@pytest.fixture(autouse=True, scope="session")
def data_source_logins_outside_rolled_back_tests():
    """A rolled-back test opens a transaction on every alias it may use, which connects
    it. On PostgreSQL the demo source's logins mirror the service's database: each test
    would hold a session of every login for its whole length, and runs of the other
    test processes (the logins are cluster-wide) would find every login busy. Their
    transactions would roll back nothing (they only read), so they are left out."""
    from django.db import connections
    from django.test import TestCase

    from datasources.registry import ALIAS_PREFIX

    names = TestCase._databases_names.__func__

    def without_source_mirrors(cls, include_mirrors=True):
        return [
            alias
            for alias in names(cls, include_mirrors)
            if not (
                alias.startswith(ALIAS_PREFIX)
                and connections[alias].settings_dict["TEST"].get("MIRROR")
            )
        ]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TestCase, "_databases_names", classmethod(without_source_mirrors))
        yield


@pytest.fixture(autouse=True)
def data_source_sessions_end_with_the_test():
    """A test that reads a data source itself (outside a run) leaves its session open;
    the other test processes would find that login busy until the process ends."""
    yield
    from django.db import connections

    from datasources.registry import ALIAS_PREFIX

    for connection in connections.all(initialized_only=True):
        alias, vendor = connection.alias, connection.vendor
        if alias.startswith(ALIAS_PREFIX) and vendor != "sqlite" and not connection.in_atomic_block:
            connection.close()


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
    """Point the default data source at another role or database for a while, with that
    one login only.

    Only in tests with real commits (needs_commits): a rolled-back test holds the
    aliases in its transaction (on SQLite the data source's too), and a connection
    closed inside it stays closed until the test ends."""
    connection = connection_for_source(DEFAULT_SOURCE)
    connection.close()
    saved = copy.deepcopy(connection.settings_dict)
    connection.settings_dict.update(changes)
    logins = {**settings.REPORT_DATA_SOURCE_LOGINS, DEFAULT_SOURCE: [connection.alias]}
    try:
        with override_settings(REPORT_DATA_SOURCE_LOGINS=logins):
            yield connection
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


@contextlib.contextmanager
def default_source_logins(*users):
    """The default data source with ``users`` as its logins (at most four, the aliases
    the PostgreSQL demo source has), the first as its URL's user, as a configured
    source (REPORTING_DATABASE_URL set: messages name its variables). Only in tests with
    real commits, like default_source_as."""
    aliases = settings.REPORT_DATA_SOURCE_LOGINS[DEFAULT_SOURCE][: len(users)]
    assert len(aliases) == len(users), "the demo source has fewer logins"
    saved = {alias: copy.deepcopy(connections[alias].settings_dict) for alias in aliases}
    for alias, user in zip(aliases, users, strict=True):
        connections[alias].close()
        connections[alias].settings_dict.update(USER=user, PASSWORD="")
    logins = {**settings.REPORT_DATA_SOURCE_LOGINS, DEFAULT_SOURCE: aliases}
    try:
        with override_settings(
            REPORT_DATA_SOURCE_LOGINS=logins, REPORTING_DATABASE_URL="postgres://configured"
        ):
            yield aliases
    finally:
        for alias in aliases:
            connections[alias].close()
            connections[alias].settings_dict.clear()
            connections[alias].settings_dict.update(saved[alias])


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

    Test databases are thrown away after the run, so the test process does not wait for
    the disk after each commit (SQLite's synchronous=OFF, PostgreSQL's
    synchronous_commit=off for its own sessions). A transactional test's teardown (flush,
    then the permissions written again) commits a dozen times.
    """
    for database in settings.DATABASES.values():
        database["CONN_MAX_AGE"] = 0
        options = database.setdefault("OPTIONS", {})
        if database["ENGINE"].endswith("sqlite3"):
            options["init_command"] = f"{options.get('init_command', '')}PRAGMA synchronous=OFF;"
        elif database["ENGINE"].endswith("postgresql"):
            options["options"] = f"{options.get('options', '')} -c synchronous_commit=off".strip()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """Close every connection before the test databases are dropped. Dropping closes
    only each database's own alias; a data source's connection to the same database
    would keep PostgreSQL's DROP DATABASE waiting 5 s, then failing."""
    from django.db import connections

    yield
    connections.close_all()


@pytest.fixture
def lease():
    """The scheduler lease, held by the test for a minute (fire and repair passes need it)."""
    from runs.services.runtime.leadership import acquire_lease

    return acquire_lease("test:1", 60)


def enqueue_run(report, trigger, *, requested_by=None, scheduled_for=None):
    """A queued run of ``report`` over the latest complete interval as of now, inserted
    as it is: no queue cap, no idempotency key (the service's ways in are
    runs.services.domain.queue's request_run and record_scheduled_fires)."""
    from django.utils import timezone

    from runs.models import Run, RunStatus
    from runs.services.domain.intervals import default_interval

    start, end = default_interval(report, timezone.now())
    return Run.objects.create(
        report=report,
        trigger=trigger,
        status=RunStatus.QUEUED,
        requested_by=requested_by,
        scheduled_for=scheduled_for,
        interval_start=start,
        interval_end=end,
    )


def record_scheduled_fire(report_id, scheduled_for):
    """Record one fire of a report's schedule at ``scheduled_for`` as the leader's fire
    pass would (its interval from the previous fire time); the new run, or None if the
    report is not scheduled or the fire was recorded already."""
    from reports.cron import previous_fire_time
    from reports.models import Report
    from reports.services.schedules import parsed_schedule
    from runs.models import Run
    from runs.services.domain.queue import record_scheduled_fires

    report = Report.objects.filter(pk=report_id, enabled=True).exclude(schedule="").first()
    if report is None or Run.objects.filter(report=report, scheduled_for=scheduled_for).exists():
        return None
    schedule, zone = parsed_schedule(report.schedule, report.timezone)
    record_scheduled_fires(
        [(report_id, scheduled_for, previous_fire_time(schedule, zone, scheduled_for))]
    )
    return Run.objects.select_related("report").get(report=report, scheduled_for=scheduled_for)


def execute_run(run):
    """Start this queued run in this process, as a worker's claim would, and perform it;
    False if it was no longer queued."""
    from django.utils import timezone

    from reports.services.history import newest_version_id
    from runs.models import RunStatus
    from runs.services.domain.queue import statement_to_record
    from runs.services.domain.transitions import transition_run
    from runs.services.runtime.guard import execute_claimed_run
    from runs.services.runtime.heartbeats import worker_name

    now = timezone.now()
    started = transition_run(
        run,
        RunStatus.RUNNING,
        sql=statement_to_record(run.report),
        report_version_id=newest_version_id(run.report_id),
        worker=worker_name(),
        started_at=now,
        heartbeat_at=now,
    )
    if started:
        execute_claimed_run(run)
    return started


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory, worker_id):
    """The S3 API server of this test process (moto's server mode on loopback), with a
    bucket of its own: the one .ci/run started, or one started here."""
    from tests.s3 import S3Server, external_server_url, start_moto_server

    url, process = external_server_url(), None
    if not url:
        process, url = start_moto_server(tmp_path_factory.mktemp("moto") / "moto.log")
    server = S3Server(url, f"reportsvc-test-{worker_id}")
    yield server
    server.gateway.close()
    if process is not None:
        process.terminate()
        process.wait(timeout=10)


class S3Outputs:
    """What a test sees of its outputs in the bucket."""

    def __init__(self, server, settings, prefix):
        self.server, self.settings, self.prefix = server, settings, prefix
        self.client, self.bucket = server.client, server.bucket
        self.use()

    def use(self, **options):
        """Point the storage at this test's prefix, with ``options`` for s3_storages."""
        from reportsvc.object_storage import s3_storages
        from tests import s3

        options = {
            "prefix": self.prefix,
            "endpoint_url": self.server.url,
            "access_key": s3.ACCESS_KEY,
            "secret_key": s3.SECRET_KEY,
            "region_name": s3.REGION,
            "addressing_style": "path",
            **options,
        }
        self.settings.OUTPUTS_S3_BUCKET = self.bucket
        self.settings.OUTPUTS_S3_PREFIX = options["prefix"]
        self.settings.AWS_S3_ENDPOINT_URL = self.server.url
        # Clients download through the gateway that checks presigned URLs.
        self.settings.OUTPUTS_S3_PUBLIC_ENDPOINT_URL = self.server.gateway.url
        self.settings.STORAGES = s3_storages(self.bucket, **options)

    def keys(self, prefix=None):
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{prefix or self.prefix}/"
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def uploads(self):
        answer = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=f"{self.prefix}/")
        return [upload["Key"] for upload in answer.get("Uploads", [])]

    def body(self, key):
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def put(self, key, body=b"x\n"):
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)


@pytest.fixture
def s3_outputs(s3_server, settings):
    """This test's outputs go to the S3 server's bucket, under a prefix of their own."""
    import uuid

    return S3Outputs(s3_server, settings, f"test-{uuid.uuid4().hex[:12]}/outputs")


@pytest.fixture
def faulty_storage(s3_server, s3_outputs, settings):
    """This test's outputs in the S3 server's bucket, reached through a
    :class:`tests.s3.FaultyStorageProxy` (``set_mode`` to stall, drop answers or refuse),
    with waits short enough for a test: 1 s to connect and per read, two attempts, and
    the web's checks 1 s in all."""
    from tests.s3 import FaultyStorageProxy

    proxy = FaultyStorageProxy(s3_server.url)
    s3_outputs.use(endpoint_url=proxy.url, connect_timeout=1, read_timeout=1, max_attempts=2)
    settings.OUTPUTS_S3_WEB_TIMEOUT_SECONDS = 1
    yield proxy
    proxy.close()


@pytest.fixture
def chat(settings):
    """A local Slack and Teams stand-in (tests/chat_servers.py) that the chat channels
    are allowed to reach."""
    from tests.chat_servers import ChatServer

    server = ChatServer()
    settings.NOTIFY_CHAT_TEST_ORIGIN = server.origin
    yield server
    server.close()
