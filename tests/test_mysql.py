"""MySQL and MariaDB data sources keep the promises PostgreSQL's do, on the local server.

Each test gets a database and users of its own (tests.mysql_source); a canary table
survives the MySQL hostile corpus through the admin, the API, runreport and the worker;
each refusal says what is wrong and what to do; CSV holds what ``mariadb --batch --raw``
prints; the deadline holds whatever the text does to the server's limit.
"""

import io
import shutil
import subprocess
import threading
import time

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.test import override_settings

from datasources.backends import backend_for
from datasources.placeholders import TemplateError, find_placeholders
from datasources.safety import DataSourceRefused, assess_source, ensure_source_is_safe
from datasources.sandbox import (
    QueryTimedOut,
    ReportSQLError,
    RowLimit,
    RowLimitExceeded,
    StatementCancelled,
)
from reports.models import Report
from runs.models import RunStatus, RunTrigger
from runs.services.domain.queue import claim_runs
from runs.services.formats import get_format
from runs.services.runtime.runner import perform_run
from tests.api_helpers import client_for, make_user
from tests.conftest import enqueue_run, needs_commits, wait_for
from tests.mysql_source import (
    ADMIN_SOCKET,
    SOURCE,
    MySQLSource,
    admin_sql,
    configured_source,
    require_mysql,
)

pytestmark = needs_commits

CANARY_ROWS = ((1, "alive"), (2, "well"))
CORPUS = [
    # A second statement after the first, however the text hides the boundary.
    "SELECT 1; DROP TABLE canary",
    "SELECT 1;DELETE FROM canary",
    "SELECT 1 -- \n; DELETE FROM canary",
    "SELECT 1 # x\n; DELETE FROM canary",
    "SELECT 'a\\'; DELETE FROM canary; SELECT '",
    'SELECT "a""b"; DELETE FROM canary',
    "SELECT `a``b` FROM canary; DELETE FROM canary",
    "SELECT 1 /* ; */; DELETE FROM canary",
    # Comments the server runs.
    "SELECT 1 /*!50000 ; DELETE FROM canary */",
    "SELECT 1 /*! , (SELECT 1 FROM canary FOR UPDATE) */",
    "SELECT 1 /*M! ; DROP TABLE canary */",
    "SELECT /*+ MAX_EXECUTION_TIME(100000) */ 1",
    # Writes, files, locks, a lifted limit.
    "DELETE FROM canary",
    "DROP TABLE canary",
    "CREATE TABLE evil AS SELECT * FROM canary",
    "INSERT INTO canary VALUES (3, 'evil')",
    "SELECT * FROM canary INTO OUTFILE '/tmp/reportsvc-mysql-pwned'",
    "SELECT * FROM canary INTO DUMPFILE '/tmp/reportsvc-mysql-pwned'",
    "SELECT LOAD_FILE('/etc/passwd')",
    "SELECT * FROM canary FOR UPDATE",
    "SELECT * FROM canary LOCK IN SHARE MODE",
    "SELECT GET_LOCK('reportsvc', 0)",
    "SET STATEMENT max_statement_time=0 FOR SELECT SLEEP(8)",
    "SELECT 1 INTO @x",
    "COMMIT; DELETE FROM canary",
    "SELECT 1; SELECT SLEEP(8)",
]
# With backslash escapes on (MySQL's default) this is one string: harmless, and may run.
# Under NO_BACKSLASH_ESCAPES the server would read a second statement and refuse it.
ONE_STATEMENT_TO_MYSQL = {"SELECT 'a\\'; DELETE FROM canary; SELECT '"}


@pytest.fixture
def mysql():
    """A database of the test's own with a canary table, the data source ``shop`` on it
    read by a user holding SELECT on that database and nothing else."""
    require_mysql()
    source = MySQLSource()
    try:
        source.sql("CREATE TABLE canary (id integer PRIMARY KEY, name text)")
        source.sql("INSERT INTO canary VALUES (1, 'alive'), (2, 'well')")
        source.reader, source.password = source.user("reader")
        with configured_source(source.url(source.reader, source.password)) as connections:
            source.connection = connections[0]
            yield source
    finally:
        source.drop()


def intact(source):
    rows = source.sql("SELECT id, name FROM canary ORDER BY id")
    evil = source.sql(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
        "AND TABLE_NAME = 'evil'",
        [source.database],
    )[0][0]
    return tuple(rows) == CANARY_ROWS and evil == 0


def export(connection, sql, output="csv", timeout=5, rows=1000):
    backend = backend_for(connection)
    output_format = get_format(output)
    writer = output_format.open_writer(sink := io.BytesIO())
    count = backend.export(
        connection,
        backend.read_only_statement(sql),
        writer,
        output_format,
        timeout,
        RowLimit(rows, "too many rows"),
    )
    writer.close()
    return count, sink.getvalue()


def refusal(sql):
    with pytest.raises(ReportSQLError) as refused:
        backend_for_mysql().read_only_statement(sql)
    return str(refused.value)


def backend_for_mysql():
    from datasources.backends import backend_for_vendor

    return backend_for_vendor("mysql")


# --- the hostile corpus, through every entry point ----------------------------------


def test_the_corpus_changes_nothing_through_the_admin(mysql, client):
    user = make_user("author", staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["add_report", "change_report", "view_report"])
    )
    client.force_login(user)
    for sql in CORPUS:
        started = time.monotonic()
        response = client.post(
            "/admin/reports/report/add/",
            {
                "name": "Hostile",
                "slug": "hostile",
                "description": "",
                "sql": sql,
                "data_source": SOURCE,
                "schedule": "",
                "timezone": "UTC",
                "enabled": "on",
                "max_retries": "0",
                "notify_when": "failure",
                "webhook_secret": "x" * 16,
            },
        )
        assert time.monotonic() - started < 5, sql
        if sql not in ONE_STATEMENT_TO_MYSQL:
            assert response.status_code == 200, sql
            assert "errornote" in response.content.decode(), sql
        assert intact(mysql), sql
        Report.objects.filter(slug="hostile").delete()
    assert not Report.objects.exists()


def test_the_corpus_changes_nothing_through_the_api(mysql):
    api = client_for(make_user("api-author", "editor"))
    for sql in CORPUS:
        response = api.post(
            "/api/reports/",
            {"name": "Hostile", "slug": "hostile", "sql": sql, "data_source": SOURCE},
            format="json",
        )
        if sql not in ONE_STATEMENT_TO_MYSQL:
            assert response.status_code == 400, (sql, response.json())
            assert set(response.json()) == {"sql"}, sql
        assert intact(mysql), sql
        Report.objects.filter(slug="hostile").delete()
    assert not Report.objects.exists()


def test_the_corpus_changes_nothing_through_runreport_and_the_worker(mysql):
    for index, sql in enumerate(CORPUS):
        report = Report.objects.create(
            name=f"Hostile {index}", slug=f"hostile-{index}", sql=sql, data_source=SOURCE
        )
        refused = sql not in ONE_STATEMENT_TO_MYSQL
        if refused:
            with pytest.raises(CommandError, match="failed"):
                call_command("runreport", report.slug)
        else:
            call_command("runreport", report.slug)
        assert intact(mysql), sql
        enqueue_run(report, RunTrigger.API)
        (run,) = claim_runs(1, "test-worker:1")
        perform_run(run)
        run.refresh_from_db()
        if refused:
            assert run.status == RunStatus.FAILED, sql
            assert run.error, sql
        assert intact(mysql), sql


def test_the_server_itself_refuses_a_second_statement(mysql):
    # Past the parser: the connection has multi-statements off.
    connection = mysql.connection
    connection.ensure_connection()
    raw = connection.connection
    import MySQLdb

    for sql in ("SELECT 1; DELETE FROM canary", "SELECT 1;DROP TABLE canary"):
        with pytest.raises(MySQLdb.ProgrammingError, match=r"1064|syntax"):
            raw.query(sql.encode())
    assert intact(mysql)


def test_a_read_only_transaction_refuses_writes_the_parser_missed(mysql):
    # Straight to export, past read_only_statement, as a user who may write.
    writer_user, password = mysql.user("writer", grants=("SELECT", "INSERT"))
    with configured_source(mysql.url(writer_user, password)) as (connection,):
        backend = backend_for(connection)
        writer = get_format("csv").open_writer(io.BytesIO())
        with pytest.raises(Exception, match="READ ONLY"):
            backend.export(
                connection,
                "INSERT INTO canary VALUES (3, 'evil')",
                writer,
                get_format("csv"),
                5,
                RowLimit(10, "x"),
            )
    assert intact(mysql)


# --- each refusal, in words --------------------------------------------------------------


def test_refusals_say_what_is_wrong():
    assert "exactly one statement" in refusal("SELECT 1; SELECT 2")
    assert "a DELETE statement" in refusal("DELETE FROM canary")
    assert "INTO OUTFILE writes a file" in refusal("SELECT 1 INTO OUTFILE '/tmp/x'")
    assert "INTO DUMPFILE writes a file" in refusal("SELECT 1 INTO DUMPFILE '/tmp/x'")
    assert "LOAD_FILE()" in refusal("SELECT LOAD_FILE('/etc/passwd')")
    assert "GET_LOCK()" in refusal("SELECT GET_LOCK('a', 1)")
    assert "locks rows" in refusal("SELECT * FROM t FOR UPDATE")
    assert "locks rows" in refusal("SELECT * FROM t LOCK IN SHARE MODE")
    assert "lift the report's timeout" in refusal("SET STATEMENT max_statement_time=0 FOR SELECT 1")
    assert "MAX_EXECUTION_TIME" in refusal("SELECT /*+ MAX_EXECUTION_TIME(1) */ 1")
    assert "executable comment" in refusal("SELECT 1 /*!50000 , 2 */")
    assert "executable comment" in refusal("SELECT 1 /*M! , 2 */")
    assert "not closed" in refusal("SELECT 'a")
    assert "reportsvc's own tables" in refusal("SELECT * FROM auth_user")
    # Ordinary comments, strings and a trailing ';' are fine.
    backend = backend_for_mysql()
    assert backend.read_only_statement("SELECT 1 /* ! */ -- x\n;") == "SELECT 1 /* ! */ -- x"
    assert backend.read_only_statement("SELECT 'a;b', `x;y` FROM t") == "SELECT 'a;b', `x;y` FROM t"


def test_placeholders_stand_where_values_go():
    backend = backend_for_mysql()
    sql = "SELECT * FROM t WHERE a = {{ a }} AND b = '{{ b }}'"
    with pytest.raises(TemplateError, match=r"\{\{ b \}\} \(line 1\) is inside a string"):
        backend.check_positions(sql, find_placeholders(sql))
    sql = "SELECT * FROM t WHERE a = {{ a }} AND b = ?"
    with pytest.raises(TemplateError, match="holds a bind parameter, \\?"):
        backend.check_positions(sql, find_placeholders(sql))
    sql = "SELECT * FROM t WHERE a = {{ a }} -- {{ b }}"
    with pytest.raises(TemplateError, match="b }}"):
        backend.check_positions(sql, find_placeholders(sql))
    sql = "SELECT * FROM t WHERE a = {{ a }} AND b > {{ b }}"
    backend.check_positions(sql, find_placeholders(sql))


def test_parameters_are_typed_literals_quoted_by_the_driver(mysql):
    from datetime import UTC, date, datetime
    from decimal import Decimal

    from datasources.parameters import parameter_type

    quote = backend_for(mysql.connection).quoter(mysql.connection)
    values = [
        quote(parameter_type("date"), date(2026, 11, 25)),
        quote(parameter_type("timestamp"), datetime(2026, 11, 25, 10, 30, tzinfo=UTC)),
        quote(parameter_type("integer"), -42),
        quote(parameter_type("decimal"), Decimal("12345678901234567890.125")),
        quote(parameter_type("text"), 'it\'s a \\ "test"; DROP TABLE canary --'),
        quote(parameter_type("boolean"), True),
    ]
    count, body = export(mysql.connection, "SELECT " + ", ".join(values))
    assert count == 1
    assert body.split(b"\n")[1] == (
        b"2026-11-25,2026-11-25 10:30:00.000000,-42,12345678901234567890.125,"
        b'"it\'s a \\ ""test""; DROP TABLE canary --",1'
    )
    assert intact(mysql)


def test_a_privileged_user_is_refused_at_run_time_save_and_check(mysql, settings):
    for suffix, grant in (
        ("file", "GRANT FILE ON *.* TO '{user}'@'%'"),
        ("proc", "GRANT PROCESS ON *.* TO '{user}'@'%'"),
        ("sys", "GRANT SELECT ON mysql.user TO '{user}'@'%'"),
    ):
        user, password = mysql.user(suffix)
        admin_sql(grant.format(user=user))
        with configured_source(mysql.url(user, password)) as (connection,):
            with pytest.raises(DataSourceRefused) as refused:
                ensure_source_is_safe(connection)
            message = str(refused.value)
            assert f"Data source '{SOURCE}' connects as MariaDB user '{user}'@'%'" in message
            assert "UNSAFE_ALLOW_PRIVILEGED_DATA_SOURCES=1" in message
            report = Report.objects.create(
                name=suffix, slug=f"privileged-{suffix}", sql="SELECT 1", data_source=SOURCE
            )
            with pytest.raises(CommandError, match="failed"):
                call_command("runreport", report.slug)
            api = client_for(make_user(f"api-{suffix}", "editor"))
            response = api.post(
                "/api/reports/",
                {"name": "x", "slug": f"x-{suffix}", "sql": "SELECT 1", "data_source": SOURCE},
                format="json",
            )
            assert response.status_code == 400
            assert "UNSAFE_ALLOW_PRIVILEGED_DATA_SOURCES" in str(response.json())
            with override_settings(UNSAFE_ALLOW_PRIVILEGED_DATA_SOURCES=True):
                assert assess_source(connection).warnings
            connection.close()
    # Database-level grants on reporting schemas are fine.
    assert assess_source(mysql.connection).refusals == []


def test_the_reporting_user_recipe_of_the_docs_runs_as_written(mysql):
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "mysql.md").read_text()
    recipe = text.split("```sql\n", 1)[1].split("```", 1)[0]
    user = f"{mysql.prefix}_recipe"
    recipe = recipe.replace("reportsvc_reader", user).replace("shop", mysql.database)
    mysql.users.append(user)
    for statement in filter(None, (part.strip() for part in recipe.split(";"))):
        admin_sql(statement.replace("change-me", "recipe-password"))
    with configured_source(mysql.url(user, "recipe-password")) as (connection,):
        assert assess_source(connection).refusals == []
        assert export(connection, "SELECT name FROM canary ORDER BY id")[1] == (
            b"name\nalive\nwell\n"
        )


def test_unreachable_server_and_wrong_password_say_so(mysql):
    report_sql = "SELECT 1"
    with configured_source(mysql.url(mysql.reader, "wrong")):
        report = Report.objects.create(
            name="Wrong", slug="wrong", sql=report_sql, data_source=SOURCE
        )
        with pytest.raises(CommandError, match="failed"):
            call_command("runreport", report.slug)
        run = report.runs.get()
        assert f"refused login '{mysql.reader}'" in run.error
        assert "Check the user name and password" in run.error
    with configured_source(mysql.url(mysql.reader, mysql.password, port=1)):
        with pytest.raises(CommandError, match="failed"):
            call_command("runreport", report.slug)
        run = report.runs.order_by("-id").first()
        assert "Cannot reach the MySQL/MariaDB server at 127.0.0.1:1" in run.error


def test_a_missing_driver_says_what_to_install(tmp_path):
    """In a process where mysqlclient cannot be imported, the service starts and the
    MySQL source's check, runs and save-time checks say what to install."""
    import os
    import sys
    from pathlib import Path

    project = Path(__file__).resolve().parent.parent
    script = (
        "import sys, runpy\n"
        "sys.modules['MySQLdb'] = None  # as if mysqlclient were not installed\n"
        "sys.argv = ['manage.py', 'check']\n"
        "runpy.run_path('manage.py', run_name='__main__')\n"
    )
    environment = {
        **os.environ,
        "SECRET_KEY": "missing-driver",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'service.sqlite3'}",
        "REPORTING_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        "REPORTING_DATABASE_URL_SHOP": "mysql://reader:pw@127.0.0.1:3306/shop",
        "REPORTSVC_VAR_DIR": str(tmp_path),
    }
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "Data source 'shop' could not be checked: MySQL and MariaDB data sources" in output
    assert "pip install -r requirements-mysql.txt" in output


def test_the_backend_without_its_driver_says_what_to_install(monkeypatch):
    from django.db import DatabaseError

    from datasources.backends import mysql as backend_module

    monkeypatch.setattr(backend_module, "_driver", lambda: None)
    with pytest.raises(DatabaseError, match=r"requirements-mysql\.txt"):
        backend_module.BACKEND.examine(None, service_tables=set(), peer_logins=[])
    assert backend_module.BACKEND.errors == ()
    backend_module.BACKEND.cancel(None)  # nothing to stop, and no driver to stop it with


# --- the server's text, streamed -----------------------------------------------------------

TYPES_TABLE = """CREATE TABLE typed (
    id int PRIMARY KEY, amount decimal(20, 6), at datetime(6), span time(3), yr year,
    big bigint unsigned, doc json, kind enum('a', 'b'), tags set('x', 'y'),
    note text, price double, day date, stamp timestamp(3) NULL)"""
TYPES_ROWS = """INSERT INTO typed VALUES
    (1, 12345678901234.123456, '2026-11-25 10:30:00.123456', '-838:59:59.000', 2026,
     18446744073709551615, '{"k": [1, 2]}', 'a', 'x,y', 'comma, "quote"', 0.1,
     '2026-11-25', '2026-11-25 10:30:00.500'),
    (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '', NULL, NULL, NULL),
    (3, -0.000001, '1000-01-01 00:00:00', '00:00:00.001', 1901, 0, '[]', 'b', '', 'é ü 😀',
     1e300, '1000-01-01', NULL)"""


def cli_rows(database, query):
    """What ``mariadb --batch --raw`` prints for ``query``, split into fields."""
    output = subprocess.run(
        [
            shutil.which("mariadb") or shutil.which("mysql"),
            f"--socket={ADMIN_SOCKET}",
            "--user=root",
            "--batch",
            "--raw",
            "--default-character-set=utf8mb4",
            database,
            "-e",
            f"SET time_zone = '+00:00'; {query}",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return [line.split(b"\t") for line in output.split(b"\n")[:-1]]


def test_csv_holds_what_the_cli_prints(mysql):
    import csv

    if not (shutil.which("mariadb") or shutil.which("mysql")):
        pytest.skip("no mariadb client")
    mysql.sql(TYPES_TABLE)
    mysql.sql(TYPES_ROWS)
    query = "SELECT * FROM typed ORDER BY id"
    count, body = export(mysql.connection, query)
    assert count == 3
    expected = cli_rows(mysql.database, query)
    parsed = list(csv.reader(io.StringIO(body.decode(), newline="")))
    for csv_row, cli_row in zip(parsed, expected, strict=True):
        cli_values = ["" if value == b"NULL" else value.decode() for value in cli_row]
        assert csv_row == cli_values
    # NULL is an empty unquoted field, the empty string "".
    assert body.split(b"\n")[2] == b'2,,,,,,,,,"",,,'
    assert body.split(b"\n")[1].startswith(b"1,12345678901234.123456,2026-11-25 10:30:00.123456,")


def test_binary_values_are_hex_and_bit_a_number(mysql):
    mysql.sql(
        "CREATE TABLE blobs (b varbinary(8), l blob, f bit(5), t varchar(4) COLLATE utf8mb4_bin)"
    )
    mysql.sql("INSERT INTO blobs VALUES (x'00ff', 'a,b', b'101', 'Ab')")
    assert export(mysql.connection, "SELECT * FROM blobs")[1] == (
        b"b,l,f,t\n0x00ff,0x612c62,5,Ab\n"
    )


def test_xlsx_cells_are_typed_and_csv_gz_works(mysql):
    import gzip
    from datetime import date, datetime

    from runs.services.formats.xlsx import read_rows

    mysql.sql(TYPES_TABLE)
    mysql.sql(TYPES_ROWS)
    query = "SELECT id, amount, at, day, big, note, price, span FROM typed ORDER BY id"
    _, body = export(mysql.connection, query, output="xlsx")
    rows = list(read_rows(io.BytesIO(body)))
    assert rows[0] == ("id", "amount", "at", "day", "big", "note", "price", "span")
    assert rows[1][0] == 1 and isinstance(rows[1][6], float)
    assert rows[1][1] == "12345678901234.123456"  # more digits than a spreadsheet keeps
    assert isinstance(rows[1][2], datetime) and isinstance(rows[1][3], date)
    assert rows[1][4] == "18446744073709551615"  # beyond what a spreadsheet keeps exactly
    assert rows[1][5] == 'comma, "quote"' and rows[1][7] == "-838:59:59.000"
    _, compressed = export(mysql.connection, query, output="csv_gz")
    assert gzip.decompress(compressed) == export(mysql.connection, query)[1]


def test_the_row_cap_stops_reading(mysql):
    started = time.monotonic()
    with pytest.raises(RowLimitExceeded, match="too many rows"):
        export(mysql.connection, "SELECT seq FROM seq_1_to_100000000", rows=1000)
    assert time.monotonic() - started < 5
    assert export(mysql.connection, "SELECT seq FROM seq_1_to_3")[0] == 3


def test_memory_stays_flat_in_row_count(mysql):
    import tracemalloc

    class Discard:
        def write(self, data):
            return len(data)

    backend = backend_for(mysql.connection)

    def peak(rows):
        writer = get_format("csv").open_writer(Discard())
        tracemalloc.start()
        backend.export(
            mysql.connection,
            f"SELECT seq, 'x' AS t FROM seq_1_to_{rows}",
            writer,
            get_format("csv"),
            30,
            RowLimit(rows, "x"),
        )
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(1000), peak(300_000)
    assert large < small + (2 << 20), (small, large)


# --- timeouts and cancel ----------------------------------------------------------------


def test_the_timeout_holds_whatever_the_text_does(mysql):
    started = time.monotonic()
    with pytest.raises(QueryTimedOut, match=r"Query timed out after 1 s"):
        export(mysql.connection, "SELECT SLEEP(20)", timeout=1)
    assert time.monotonic() - started < 5


def test_the_watchdog_kills_a_statement_that_lifted_the_limit(mysql):
    # Straight to export, past the parser: the server's own limit is lifted for it.
    backend = backend_for(mysql.connection)
    writer = get_format("csv").open_writer(io.BytesIO())
    started = time.monotonic()
    with pytest.raises(QueryTimedOut):
        backend.export(
            mysql.connection,
            "SET STATEMENT max_statement_time = 0 FOR SELECT SLEEP(20)",
            writer,
            get_format("csv"),
            1,
            RowLimit(10, "x"),
        )
    assert time.monotonic() - started < 5


def test_cancel_stops_the_statement_from_another_thread(mysql):
    from django.db import connections

    outcome, holder, ready = [], {}, threading.Event()

    def work():
        connection = connections[mysql.connection.alias]
        connection.ensure_connection()
        holder["connection"] = connection
        ready.set()
        try:
            outcome.append(export(connection, "SELECT SLEEP(30)", timeout=60))
            outcome.append(export(connection, "SELECT 1 AS one"))
        except Exception as error:
            outcome.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    ready.wait(10)
    connection = holder["connection"]
    backend = backend_for(connection)
    deadline = time.monotonic() + 10
    while thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.3)
        backend.cancel(connection)
        thread.join(0.3)
    assert not thread.is_alive()
    assert isinstance(outcome[0], StatementCancelled), outcome
    assert str(outcome[0]).startswith("The query was cancelled: ")


# --- logins: one run per login, no session of another run in sight -----------------------


def test_each_login_is_examined_and_other_sessions_counted(mysql):
    import MySQLdb

    second, password = mysql.user("second")
    logins = f"{second}:{password}"
    with configured_source(mysql.url(mysql.reader, mysql.password), logins=logins) as found:
        first, other = found
        backend = backend_for(first)
        ensure_source_is_safe(first)
        assert backend.other_sessions(first) == 0
        stray = MySQLdb.connect(
            host="127.0.0.1", port=3306, user=mysql.reader, password=mysql.password
        )
        try:
            assert backend.other_sessions(first) == 1
        finally:
            stray.close()
        assert assess_source(other).refusals == []
        report = Report.objects.create(
            name="Fine", slug="fine", sql="SELECT name FROM canary ORDER BY id", data_source=SOURCE
        )
        call_command("runreport", report.slug)
        assert report.runs.get().status == RunStatus.SUCCEEDED


def test_a_login_holding_another_login_as_a_role_is_refused(mysql):
    second, password = mysql.user("second")
    role = mysql.role("role")
    admin_sql(f"GRANT '{role}' TO '{second}'@'%'")
    with configured_source(mysql.url(second, password)) as (connection,):
        found = backend_for(connection).examine(
            connection, service_tables=set(), peer_logins=[role]
        )
        assert found.peers == [role]
        assert found.powers == []
        # A role it could SET ROLE to counts as its own grants.
        admin_sql(f"GRANT SHUTDOWN ON *.* TO '{role}'")
        found = backend_for(connection).examine(connection, service_tables=set(), peer_logins=[])
        assert found.powers == ["global privileges (SHUTDOWN)"]


def test_check_examines_every_login_of_a_mysql_source(mysql):
    from django.core.management.base import SystemCheckError

    powerful, password = mysql.user("powerful")
    admin_sql(f"GRANT PROCESS ON *.* TO '{powerful}'@'%'")
    logins = f"{powerful}:{password}"
    with configured_source(mysql.url(mysql.reader, mysql.password), logins=logins):
        with pytest.raises(SystemCheckError) as error:
            call_command("check", stdout=io.StringIO())
        assert f"MariaDB user '{powerful}'@'%', which has global privileges (PROCESS)" in str(
            error.value
        )
    second, password = mysql.user("second")
    with configured_source(mysql.url(mysql.reader, mysql.password), logins=f"{second}:{password}"):
        call_command("check", stdout=io.StringIO())  # every login examined: no error


@pytest.mark.long_running
def test_a_report_cannot_watch_another_run_of_its_source(mysql):
    from runs.services.runtime.runner import run_report_now
    from tests.conftest import read_csv

    second, password = mysql.user("second")
    secret = f"top-secret-{mysql.prefix}"
    finished = []
    with configured_source(mysql.url(mysql.reader, mysql.password), logins=f"{second}:{password}"):
        victim = Report.objects.create(
            name="Victim",
            slug="victim",
            sql=f"SELECT '{secret}' AS secret, SLEEP(3) AS slept",
            data_source=SOURCE,
        )

        def work():
            from django.db import connections

            try:
                finished.append(run_report_now(victim))
            finally:
                connections.close_all()

        thread = threading.Thread(target=work)
        thread.start()
        running = wait_for(
            lambda: admin_sql(
                "SELECT USER FROM information_schema.PROCESSLIST WHERE INFO LIKE %s "
                "AND INFO NOT LIKE %s",
                [f"%{secret}%", "%PROCESSLIST%"],
            )
        )
        assert running[0][0] in (mysql.reader, second)
        watcher = Report.objects.create(
            name="Watcher",
            slug="watcher",
            sql="SELECT ID, USER, INFO FROM information_schema.PROCESSLIST "
            "WHERE ID <> CONNECTION_ID()",
            data_source=SOURCE,
        )
        watched = run_report_now(watcher)
        assert watched.status == RunStatus.SUCCEEDED, watched.error
        rows = read_csv(watched.output.path)
        assert rows[0] == ["ID", "USER", "INFO"]
        assert secret not in watched.output.open("rb").read().decode()
        thread.join(20)
    assert finished[0].status == RunStatus.SUCCEEDED, finished[0].error


def test_a_named_lock_dies_with_the_run(mysql):
    # Past the parser (which refuses GET_LOCK): the connection ends with the export.
    backend = backend_for(mysql.connection)
    writer = get_format("csv").open_writer(io.BytesIO())
    name = f"{mysql.prefix}_lock"
    count = backend.export(
        mysql.connection,
        f"SELECT GET_LOCK('{name}', 0) AS taken",
        writer,
        get_format("csv"),
        5,
        RowLimit(10, "x"),
    )
    assert count == 1
    # The server ends the session, and frees its locks, once it sees the disconnect.
    wait_for(lambda: admin_sql(f"SELECT IS_FREE_LOCK('{name}')")[0][0] == 1, timeout=5)


def test_mysql_and_mariadb_urls_configure_the_mysql_backend():
    from datasources.registry import reporting_databases

    databases = reporting_databases(
        {
            "REPORTING_DATABASE_URL": "sqlite:////tmp/x.sqlite3",
            "REPORTING_DATABASE_URL_SHOP": "mysql://reader:pw@db:3306/shop",
            "REPORTING_DATABASE_URL_BOOKS": "mariadb://reader:pw@db/books?ssl_mode=REQUIRED",
            "REPORTING_DATABASE_LOGINS_SHOP": "reader2:pw2",
        },
        "sqlite:////tmp/service.sqlite3",
        {"ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/service.sqlite3"},
        None,
        "secret",
    )
    shop, books = databases["reporting_shop"], databases["reporting_books"]
    assert shop["ENGINE"] == books["ENGINE"] == "datasources.backends.mysql_engine"
    assert shop["OPTIONS"] == {
        "connect_timeout": 10,
        "charset": "utf8mb4",
        "init_command": "SET time_zone = '+00:00'",
    }
    assert books["OPTIONS"]["ssl_mode"] == "REQUIRED"
    assert databases["reporting_shop__2"]["USER"] == "reader2"


def test_csv_blocks_match_the_value_by_value_encoding():
    """The block and column shortcuts write what encoding each value on its own writes,
    for every mix of NULLs, empty values, NULs and text that needs quotes."""
    import csv
    import random

    from datasources.backends.mysql import _csv_block, _csv_line

    pieces = [None, b"", b"x", b"a,b", b'say "hi"', b"line\nbreak", b"cr\r", b"\x00", b"0", b" "]
    chooser = random.Random(24)
    for width in (1, 2, 3, 8):
        for _ in range(300):
            rows = [
                tuple(chooser.choice(pieces) for _ in range(width))
                for _ in range(chooser.randint(1, 6))
            ]
            expected = b"".join(_csv_line(row) + b"\n" for row in rows)
            assert _csv_block(rows, width) == expected, rows
            parsed = list(csv.reader(io.StringIO(expected.decode(), newline="")))
            # A lone NULL is an empty line, as PostgreSQL's COPY writes it; csv reads [].
            parsed = [row or [""] for row in parsed]
            assert parsed == [
                ["" if value is None else value.decode() for value in row] for row in rows
            ]
    # A column that all needs quotes, one that needs none, one with NULLs.
    rows = [(b"a,%d" % n, b"%d" % n, None if n % 2 else b"v") for n in range(50)]
    assert _csv_block(rows, 3) == b"".join(_csv_line(row) + b"\n" for row in rows)


def test_saving_checks_the_sql_on_the_server_with_explain(mysql):
    api = client_for(make_user("api-saver", "editor"))
    good = api.post(
        "/api/reports/",
        {
            "name": "Good",
            "slug": "good",
            "sql": "SELECT name FROM canary WHERE id >= {{ first }}",
            "data_source": SOURCE,
            "parameters": [{"name": "first", "type": "integer", "default": 1}],
        },
        format="json",
    )
    assert good.status_code == 201, good.json()
    missing = api.post(
        "/api/reports/",
        {"name": "Bad", "slug": "bad", "sql": "SELECT * FROM nowhere", "data_source": SOURCE},
        format="json",
    )
    assert missing.status_code == 400
    message = missing.json()["sql"][0]
    assert message.startswith("The database rejects this SQL: ")
    assert "nowhere' doesn't exist" in message
    assert intact(mysql)


def test_a_server_that_goes_silent_ends_the_export(mysql, monkeypatch):
    """Past the deadline, the watchdog's KILL QUERY cannot reach a server that stopped
    answering; the connection is shut STALL_MARGIN_SECONDS later and the run says so."""
    from datasources.backends import mysql as backend_module
    from datasources.sandbox import ExportFailed
    from tests.faults import FaultProxy
    from tests.mysql_source import HOST, PORT

    monkeypatch.setattr(backend_module, "STALL_MARGIN_SECONDS", 1)
    proxy = FaultProxy(HOST, PORT)
    try:
        url = mysql.url(mysql.reader, mysql.password, host="127.0.0.1", port=proxy.port)
        with configured_source(url) as (connection,):
            outcome, ready = [], threading.Event()

            def work():
                from django.db import connections

                own = connections[connection.alias]
                own.ensure_connection()
                ready.set()
                try:
                    outcome.append(export(own, "SELECT SLEEP(5) AS slept", timeout=1))
                except Exception as error:
                    outcome.append(error)
                finally:
                    own.close()

            thread = threading.Thread(target=work, daemon=True)
            started = time.monotonic()
            thread.start()
            assert ready.wait(10)
            time.sleep(0.3)  # the statement sent, or about to be: silent either way
            proxy.pause()
            thread.join(20)
            assert not thread.is_alive()
            assert time.monotonic() - started < 15
            assert isinstance(outcome[0], ExportFailed), outcome
            assert "stopped answering" in str(outcome[0])
    finally:
        proxy.close()
