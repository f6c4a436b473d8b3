"""Reports cannot reach each other's sessions: each run holds a login of its data source
alone (reports.services.logins), so PostgreSQL shows it, and lets it end, no session but
its own."""

import contextlib
import io
import secrets
import threading
import time
from datetime import timedelta

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connections
from django.test import override_settings
from django.utils import timezone

from datasources.registry import DEFAULT_SOURCE, alias_for_login
from reports.models import LoginLease, Report
from runs.models import RunStatus
from runs.services.runtime.runner import run_report_now, touch_runs
from tests.api_helpers import client_for, make_user
from tests.conftest import (
    default_source_logins,
    needs_commits,
    postgres_only,
    read_csv,
    wait_for,
)


def _superuser_sql(statement, params=None):
    with connections["default"].cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


class Pool:
    """Roles made for one test: a group holding the read grants and logins that are
    members of it and of nothing else, as README's recipe makes them."""

    def __init__(self, size):
        database = connections["default"].settings_dict["NAME"]
        # Roles are cluster-wide and other test runs share the cluster.
        self.prefix = f"{database[:40]}_{secrets.token_hex(3)}".lower()
        self.group = f"{self.prefix}_grp"
        self.logins = [f"{self.prefix}_{number}" for number in range(1, size + 1)]
        _superuser_sql(f'CREATE ROLE "{self.group}" NOLOGIN')
        _superuser_sql(f'GRANT USAGE ON SCHEMA demo TO "{self.group}"')
        for login in self.logins:
            _superuser_sql(f'CREATE ROLE "{login}" LOGIN INHERIT IN ROLE "{self.group}"')

    def connect(self, login):
        """A session of ``login`` that reportsvc did not open."""
        source = connections["default"].settings_dict
        return psycopg.connect(
            host=source["HOST"],
            port=source["PORT"] or 5432,
            dbname=source["NAME"],
            user=login,
            autocommit=True,
        )

    def drop(self):
        roles = [*self.logins, self.group]
        _superuser_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)",
            [self.logins],
        )
        for role in roles:
            _superuser_sql(f'DROP OWNED BY "{role}"')
            _superuser_sql(f'DROP ROLE "{role}"')


@pytest.fixture
def pool():
    """``pool(size)``: the default source runs on ``size`` logins made for this test."""
    made = []
    with contextlib.ExitStack() as stack:

        def make(size):
            roles = Pool(size)
            made.append(roles)
            stack.enter_context(default_source_logins(*roles.logins))
            return roles

        yield make
    for roles in made:
        roles.drop()


def in_thread(report, **options):
    """Run ``report`` in a thread of its own; the thread and a list for its run."""
    finished = []

    def work():
        try:
            finished.append(run_report_now(report, **options))
        finally:
            connections.close_all()

    thread = threading.Thread(target=work)
    thread.start()
    return thread, finished


def sleeping_session(login, marker):
    """The pid of ``login``'s session running a statement that holds ``marker``."""
    rows = _superuser_sql(
        "SELECT pid FROM pg_stat_activity WHERE usename = %s AND state = 'active' "
        "AND query LIKE %s",
        [login, f"%{marker}%"],
    )
    return rows[0][0] if rows else None


def sleeper(slug, seconds):
    return Report.objects.create(
        name=slug,
        slug=slug,
        sql=f"SELECT {{{{ secret }}}} AS secret, pg_sleep({seconds}) AS slept",
        parameters=[{"name": "secret", "type": "text", "default": "none"}],
    )


@postgres_only
@needs_commits
@pytest.mark.long_running
def test_a_report_can_neither_end_nor_watch_another_run_of_its_source(pool):
    roles = pool(2)
    secret = f"top-secret-{secrets.token_hex(4)}"
    victim = sleeper("victim", 3)
    thread, finished = in_thread(victim, parameters={"secret": secret})
    pid = wait_for(lambda: sleeping_session(roles.logins[0], "pg_sleep"))
    # Before logins were leased, this ended every other run of the source.
    killer = Report.objects.create(
        name="Killer",
        slug="killer",
        sql="SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity "
        "WHERE usename = current_user AND pid <> pg_backend_pid()",
    )
    killed = run_report_now(killer)
    assert killed.status == RunStatus.SUCCEEDED, killed.error
    assert read_csv(killed.output.path) == [["ended"]]  # no other session of its login
    # Any session it can name: PostgreSQL refuses to signal another role's.
    broad = Report.objects.create(
        name="Broad",
        slug="broad",
        sql=f"SELECT pg_terminate_backend({pid}) AS ended",
    )
    refused = run_report_now(broad)
    assert refused.status == RunStatus.FAILED
    assert "permission denied" in refused.error or "must be a member" in refused.error
    watcher = Report.objects.create(
        name="Watcher",
        slug="watcher",
        sql="SELECT pid, usename, query FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
    )
    watched = run_report_now(watcher)
    assert watched.status == RunStatus.SUCCEEDED, watched.error
    rows = read_csv(watched.output.path)
    seen = {row[0]: row for row in rows[1:]}
    assert seen[str(pid)][1] == roles.logins[0]  # the session is listed, its text is not
    assert seen[str(pid)][2] in ("", "<insufficient privilege>")
    text = watched.output.open("rb").read().decode()
    assert secret not in text and "pg_sleep" not in text
    thread.join(20)
    assert finished[0].status == RunStatus.SUCCEEDED, finished[0].error
    assert read_csv(finished[0].output.path)[1][0] == secret


@postgres_only
@needs_commits
@pytest.mark.long_running
def test_two_runs_on_a_one_login_source_run_one_after_the_other(pool):
    pool(1)
    sql = (
        "SELECT clock_timestamp() AS began, pg_sleep(1) AS slept, "
        "clock_timestamp() AS ended FROM (SELECT 1) AS once"
    )
    first = Report.objects.create(name="First", slug="first", sql=sql)
    second = Report.objects.create(name="Second", slug="second", sql=sql)
    threads = [in_thread(first), in_thread(second)]
    for thread, _ in threads:
        thread.join(30)
    runs = [finished[0] for _, finished in threads]
    assert [run.status for run in runs] == [RunStatus.SUCCEEDED] * 2, [r.error for r in runs]
    (began_a, _, ended_a), (began_b, _, ended_b) = (read_csv(run.output.path)[1] for run in runs)
    assert ended_a <= began_b or ended_b <= began_a  # never at once
    lease = LoginLease.objects.get(source=DEFAULT_SOURCE)
    assert lease.holder == "" and lease.expires_at <= timezone.now()  # given back


@postgres_only
@needs_commits
@pytest.mark.long_running
def test_a_run_that_finds_no_free_login_in_its_timeout_fails_saying_what_to_do(pool):
    roles = pool(1)
    holder = sleeper("holder", 4)
    thread, finished = in_thread(holder)
    wait_for(lambda: sleeping_session(roles.logins[0], "pg_sleep"))
    impatient = Report.objects.create(name="Now", slug="now", sql="SELECT 1", timeout_seconds=1)
    started = time.monotonic()
    run = run_report_now(impatient)
    assert 1 <= time.monotonic() - started < 4
    assert run.status == RunStatus.FAILED
    assert run.error == (
        "Data source 'default' had no free login for 1 s: its 1 login was in use by other "
        "runs and save-time checks. Add logins (REPORTING_DATABASE_LOGINS: README, "
        "Security) or run fewer reports at once."
    )
    thread.join(20)
    assert finished[0].status == RunStatus.SUCCEEDED


@postgres_only
@needs_commits
def test_the_lease_of_a_dead_holder_is_taken_over_and_a_live_one_is_not(pool):
    roles = pool(1)
    report = Report.objects.create(
        name="Who", slug="who", sql="SELECT current_user AS who", timeout_seconds=1
    )
    # A live holder (its lease runs for a minute): the run waits its timeout, then fails.
    lease = LoginLease.objects.create(
        source=DEFAULT_SOURCE,
        login=roles.logins[0],
        holder="run:999999",
        expires_at=timezone.now() + timedelta(minutes=1),
    )
    assert run_report_now(report).status == RunStatus.FAILED
    # Its worker died: the lease ran out, and the next run takes the login over.
    LoginLease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    run = run_report_now(report)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert read_csv(run.output.path) == [["who"], [roles.logins[0]]]
    lease.refresh_from_db()
    assert lease.holder == ""


@postgres_only
@needs_commits
def test_a_frozen_holder_s_open_session_makes_its_login_busy(pool):
    roles = pool(2)
    frozen, other = roles.logins
    # The frozen holder's lease ran out long ago; its session is still open.
    LoginLease.objects.create(
        source=DEFAULT_SOURCE,
        login=frozen,
        holder="run:999999",
        expires_at=timezone.now() - timedelta(minutes=5),
    )
    report = Report.objects.create(name="Who", slug="who", sql="SELECT current_user AS who")
    with roles.connect(frozen) as session:
        session.execute("SELECT 1")
        run = run_report_now(report)
        assert run.status == RunStatus.SUCCEEDED, run.error
        assert read_csv(run.output.path) == [["who"], [other]]
        busy = LoginLease.objects.get(login=frozen)
        assert busy.holder == "busy:another session" and busy.expires_at > timezone.now()
        # With that login alone, nothing frees up: the run says why.
        with override_settings(
            REPORT_DATA_SOURCE_LOGINS={DEFAULT_SOURCE: [alias_for_login(DEFAULT_SOURCE, 1)]}
        ):
            LoginLease.objects.filter(login=frozen).update(expires_at=timezone.now())
            report.timeout_seconds = 1
            report.save()
            lonely = run_report_now(report)
    assert lonely.status == RunStatus.FAILED
    assert "by sessions reportsvc did not open" in lonely.error


@postgres_only
@needs_commits
@pytest.mark.long_running
def test_hostile_reports_cannot_free_a_login_or_take_another_role(pool):
    roles = pool(2)
    holder = sleeper("holder", 3)
    thread, finished = in_thread(holder)
    wait_for(lambda: sleeping_session(roles.logins[0], "pg_sleep"))
    lease = LoginLease.objects.get(login=roles.logins[0])
    # Locks on the source, a role switch that outlives the statement: none of it is
    # what keeps logins apart.
    hostile = Report.objects.create(
        name="Hostile",
        slug="hostile",
        sql=f"SELECT pg_advisory_unlock_all() AS unlocked, "
        f"set_config('role', '{roles.group}', false) AS became",
    )
    assert run_report_now(hostile).status == RunStatus.SUCCEEDED
    assert LoginLease.objects.get(pk=lease.pk).holder == lease.holder  # still the sleeper's
    impostor = Report.objects.create(
        name="Impostor",
        slug="impostor",
        sql=f"SELECT set_config('role', '{roles.logins[0]}', false) AS became",
    )
    refused = run_report_now(impostor)
    assert refused.status == RunStatus.FAILED
    assert "permission denied to set role" in refused.error
    after = Report.objects.create(
        name="After", slug="after", sql="SELECT current_user AS cur, session_user AS sess"
    )
    run = run_report_now(after)
    assert read_csv(run.output.path)[1] == [roles.logins[1], roles.logins[1]]  # a fresh session
    thread.join(20)
    assert finished[0].status == RunStatus.SUCCEEDED, finished[0].error


@pytest.mark.django_db(databases="__all__")
def test_a_run_s_heartbeat_renews_its_lease(settings):
    settings.WORKER_LOST_AFTER_SECONDS = 60
    now = timezone.now()
    mine = LoginLease.objects.create(
        source="x", login="a", holder="run:41", expires_at=now + timedelta(seconds=5)
    )
    other = LoginLease.objects.create(
        source="x", login="b", holder="run:42", expires_at=now + timedelta(seconds=5)
    )
    touch_runs([41])
    mine.refresh_from_db()
    other.refresh_from_db()
    assert mine.expires_at >= now + timedelta(seconds=59)
    assert other.expires_at < now + timedelta(seconds=6)


@pytest.mark.django_db(databases="__all__")
def test_a_login_is_leased_to_one_holder_at_a_time_on_either_service_database():
    from reports.services.logins import give_back, take_login

    logins = ["a", "b"]
    assert take_login("x", logins, "run:1", 60) == "a"  # rows made on first use
    assert take_login("x", logins, "run:2", 60) == "b"
    assert take_login("x", logins, "run:3", 60) is None
    give_back("x", "a", "run:3")  # not its lease: nothing happens
    assert take_login("x", logins, "run:3", 60) is None
    give_back("x", "a", "run:1")
    assert take_login("x", logins, "run:3", 60) == "a"
    # A holder that stopped renewing loses the login when its lease runs out.
    LoginLease.objects.filter(login="b").update(expires_at=timezone.now() - timedelta(seconds=1))
    assert take_login("x", logins, "run:4", 60) == "b"
    assert dict(LoginLease.objects.values_list("login", "holder")) == {"a": "run:3", "b": "run:4"}


@postgres_only
@pytest.mark.django_db(databases="__all__")
def test_saving_when_every_login_is_in_use_saves_with_a_warning(
    settings, monkeypatch, admin_client
):
    from reports.services import sql_check

    monkeypatch.setattr(sql_check, "SAVE_WAIT_SECONDS", 0.3)
    first = alias_for_login(DEFAULT_SOURCE, 1)
    settings.REPORT_DATA_SOURCE_LOGINS = {DEFAULT_SOURCE: [first]}
    LoginLease.objects.create(
        source=DEFAULT_SOURCE,
        login=connections[first].settings_dict["USER"],
        holder="run:1",
        expires_at=timezone.now() + timedelta(minutes=1),
    )
    editor = client_for(make_user("editor", "editor"))
    body = {"name": "Later", "slug": "later", "sql": "SELECT 1 AS one FROM not_yet_there"}
    response = editor.post("/api/reports/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response["Warning"] == (
        '199 - "The SQL was checked by the parser only: all 1 login of data source '
        "'default' stayed in use by runs for 0.3 s. The database checks it when it runs.\""
    )
    # What the parser refuses is refused still.
    refused = editor.post(
        "/api/reports/", {**body, "slug": "two", "sql": "SELECT 1; SELECT 2"}, format="json"
    )
    assert refused.status_code == 400
    assert "exactly one statement" in refused.json()["sql"][0]
    page = admin_client.post(
        "/admin/reports/report/add/",
        {
            **dict.fromkeys(
                ["description", "schedule", "timeout_seconds", "max_rows", "retention_days"], ""
            ),
            **dict.fromkeys(["notify_emails", "notify_webhooks", "alert_threshold"], ""),
            "name": "Admin later",
            "slug": "admin-later",
            "sql": "SELECT 1 AS one",
            "parameters": "[]",
            "data_source": DEFAULT_SOURCE,
            "timezone": "UTC",
            "enabled": "on",
            "max_retries": "0",
            "targets": "[]",
            "notify_when": "failure",
            "inline_rows": "0",
            "alert_condition": "",
            "output_format": "csv",
        },
        follow=True,
    )
    assert Report.objects.filter(slug="admin-later").exists()
    assert "checked by the parser only" in page.content.decode()


@postgres_only
@pytest.mark.django_db(databases="__all__")
def test_a_server_source_with_one_login_gets_a_warning_at_check(settings):
    settings.REPORT_DATA_SOURCE_LOGINS = {DEFAULT_SOURCE: [alias_for_login(DEFAULT_SOURCE, 1)]}
    output = io.StringIO()
    call_command("check", stdout=output, stderr=output)
    assert "(reports.W003) Data source 'default' has a single login" in output.getvalue()
    assert "its runs run one at a time" in output.getvalue()
    settings.REPORT_DATA_SOURCE_LOGINS = {
        DEFAULT_SOURCE: [alias_for_login(DEFAULT_SOURCE, number) for number in (1, 2)]
    }
    output = io.StringIO()
    call_command("check", stdout=output, stderr=output)
    assert "reports.W003" not in output.getvalue()


@postgres_only
@needs_commits
def test_every_login_of_a_pool_is_examined(pool):
    roles = pool(3)
    member, peer, watcher = roles.logins
    _superuser_sql(f'GRANT "{peer}" TO "{member}"')
    _superuser_sql(f'GRANT pg_read_all_stats TO "{watcher}"')
    with pytest.raises(SystemCheckError) as error:
        call_command("check", stdout=io.StringIO())
    text = str(error.value)
    assert f"its login '{member}' has the privileges of {peer}, other logins" in text
    assert f"connects as PostgreSQL role '{watcher}', which has pg_read_all_stats" in text
    assert text.count("(reports.E001)") == 2  # the third login is fine
    # Each run examines the login it leases: the logins taken in turn, two refuse.
    report = Report.objects.create(name="Any", slug="any", sql="SELECT 1")
    runs = [run_report_now(report) for _ in range(3)]
    assert sorted(run.status for run in runs) == [RunStatus.FAILED] * 2 + [RunStatus.SUCCEEDED]
    errors = " ".join(run.error for run in runs)
    assert "which has pg_read_all_stats" in errors and "has the privileges of" in errors


@postgres_only
@pytest.mark.django_db(databases="__all__")
def test_the_demo_roles_are_made_by_a_createrole_owner_that_is_no_superuser():
    from datasources.backends.postgresql import create_demo_schema_and_roles

    prefix = f"{connections['default'].settings_dict['NAME'][:40]}_{secrets.token_hex(3)}"
    owner, database = f"{prefix}_owner", f"{prefix}_db"
    group, logins = f"{prefix}_demo_reader", [f"{prefix}_demo_reader_{n}" for n in (1, 2)]
    server = connections["default"].settings_dict
    admin = psycopg.connect(
        host=server["HOST"],
        port=server["PORT"] or 5432,
        dbname="postgres",
        user=server["USER"],
        autocommit=True,
    )

    def connect(user):
        # Client-side binding, as Django's cursors do: CREATE ROLE takes no parameters.
        return psycopg.connect(
            host=server["HOST"],
            port=server["PORT"] or 5432,
            dbname=database,
            user=user,
            cursor_factory=psycopg.ClientCursor,
        )

    admin.execute(f'CREATE ROLE "{owner}" LOGIN CREATEROLE NOSUPERUSER')
    admin.execute(f'CREATE DATABASE "{database}" OWNER "{owner}"')
    try:
        with connect(owner) as connection, connection.cursor() as cursor:
            # What the version before the logins made: the reader itself logged in.
            cursor.execute(f'CREATE ROLE "{group}" LOGIN NOINHERIT')
            cursor.execute("CREATE SCHEMA demo")
            cursor.execute("CREATE TABLE demo.orders AS SELECT 7 AS amount")
            for _ in range(2):  # every migrate runs it again
                create_demo_schema_and_roles(cursor, group, [(login, "pw") for login in logins])
            cursor.execute("CREATE TABLE demo.later AS SELECT 1 AS one")  # default privileges
            cursor.execute(
                "SELECT r.rolname, r.rolcanlogin, r.rolinherit, ARRAY(SELECT g.rolname::text "
                "FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                "WHERE m.member = r.oid) FROM pg_roles r WHERE r.rolname = ANY(%s) ORDER BY 1",
                [[group, *logins]],
            )
            assert cursor.fetchall() == [
                (group, False, False, []),
                (logins[0], True, True, [group]),
                (logins[1], True, True, [group]),
            ]
        with connect(logins[0]) as first, connect(logins[1]) as second:
            assert first.execute("SELECT amount FROM demo.orders").fetchall() == [(7,)]
            assert second.execute("SELECT one FROM demo.later").fetchall() == [(1,)]
            second.rollback()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                second.execute(f'SET ROLE "{logins[0]}"')
            second.rollback()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                second.execute("SELECT pg_terminate_backend(%s)", [first.pgconn.backend_pid])
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for role in [*logins, group, owner]:
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()
