"""Bad reports fail with a message a user can act on, and change nothing."""

import time

import pytest

from datasources.backends.postgresql import BACKEND as POSTGRESQL
from datasources.backends.postgresql import execute_one_statement
from datasources.registry import DEFAULT_SOURCE, connection_for_source
from datasources.sandbox import ExportFailed, ReportSQLError
from reports.models import Report
from runs.models import RunStatus
from runs.services.infrastructure.exporter import export_query
from runs.services.runtime.runner import run_report_now
from tests.conftest import (
    enqueue_run,
    execute_run,
    executes_reports,
    files_under,
    postgres_only,
    read_csv,
    sqlite_only,
)

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture
def guarded(source_sql, scratch_tables):
    """A table with three rows that no report may change."""
    scratch_tables.extend(["guarded", "evil"])
    source_sql("CREATE TABLE guarded (id integer PRIMARY KEY, name text)")
    source_sql("INSERT INTO guarded VALUES (1, 'a'), (2, 'b'), (3, 'c')")

    def contents():
        return source_sql("SELECT id, name FROM guarded ORDER BY id")

    return contents


def run_sql(sql, **report_fields):
    report = Report.objects.create(name="Check", slug="check", sql=sql, **report_fields)
    run = run_report_now(report)
    run.refresh_from_db()
    return run


def table_exists(source_sql, name):
    connection = connection_for_source(DEFAULT_SOURCE)
    with connection.cursor() as cursor:
        return name in connection.introspection.table_names(cursor)


@executes_reports
@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (
            "DELETE FROM guarded",
            {"postgresql": "a DELETE statement", "sqlite": "this statement would use DELETE"},
        ),
        (
            "UPDATE guarded SET name = 'x'",
            {"postgresql": "an UPDATE statement", "sqlite": "this statement would use UPDATE"},
        ),
        (
            "CREATE TABLE evil (a integer)",
            {"postgresql": "a CREATE statement", "sqlite": "would use a schema change"},
        ),
        (
            "SELECT 1; DROP TABLE guarded",
            {
                "postgresql": "A report runs exactly one statement, but PostgreSQL reads 2",
                "sqlite": "A report runs exactly one statement, but SQLite found more than one",
            },
        ),
    ],
)
def test_write_statements_fail_and_change_nothing(guarded, source_sql, outputs_dir, sql, message):
    before = guarded()
    run = run_sql(sql)
    assert run.status == RunStatus.FAILED
    assert message[connection_for_source(DEFAULT_SOURCE).vendor] in run.error
    assert guarded() == before
    assert not table_exists(source_sql, "evil")
    assert files_under(outputs_dir) == []


@executes_reports
@postgres_only
def test_postgres_read_only_transaction_stops_writes_the_checks_cannot_see(guarded, source_sql):
    # A SELECT that calls a function which deletes: only the database can tell.
    source_sql(
        "CREATE FUNCTION purge_guarded() RETURNS bigint LANGUAGE sql AS "
        "'DELETE FROM guarded RETURNING id'"
    )
    try:
        before = guarded()
        run = run_sql("SELECT purge_guarded() AS deleted")
        assert run.status == RunStatus.FAILED
        assert "cannot execute DELETE in a read-only transaction" in run.error
        assert guarded() == before
    finally:
        source_sql("DROP FUNCTION purge_guarded()")


@sqlite_only
def test_sqlite_driver_refuses_writes_at_prepare_time(guarded, tmp_path):
    # Past the report checks, the driver's authorizer refuses anything but reading
    # (PRAGMA query_only stands behind it).
    before = guarded()
    with open(tmp_path / "out.csv", "wb") as file, pytest.raises(ExportFailed) as error:
        export_query(
            connection_for_source(DEFAULT_SOURCE),
            "DELETE FROM guarded RETURNING id",
            file,
            timeout_seconds=5,
            max_rows=10,
        )
    assert str(error.value) == "Reports can only read data, but this statement would use DELETE."
    assert guarded() == before


SLOW_QUERIES = {
    "postgresql": "SELECT pg_sleep(10)",
    "sqlite": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
    "SELECT count(*) FROM n",
}


def test_a_slow_query_times_out_with_a_clear_message(outputs_dir):
    vendor = connection_for_source(DEFAULT_SOURCE).vendor
    started = time.monotonic()
    run = run_sql(SLOW_QUERIES[vendor], timeout_seconds=1)
    assert time.monotonic() - started < 8
    assert run.status == RunStatus.FAILED
    assert run.error.startswith("Query timed out after 1 s (the report's timeout)")
    assert files_under(outputs_dir) == []


@pytest.mark.parametrize(
    ("sql", "messages"),
    [
        (
            "SELECT * FROM no_such_table",
            {
                "postgresql": 'relation "no_such_table" does not exist',
                "sqlite": "no such table: no_such_table",
            },
        ),
        (
            "SELECT * FROM WHERE",
            {
                "postgresql": 'syntax error at or near "WHERE"',
                "sqlite": 'near "WHERE": syntax error',
            },
        ),
    ],
)
def test_invalid_sql_fails_with_the_database_message_and_no_file(outputs_dir, sql, messages):
    vendor = connection_for_source(DEFAULT_SOURCE).vendor
    run = run_sql(sql)
    assert run.status == RunStatus.FAILED
    assert messages[vendor] in run.error
    assert "Traceback" not in run.error
    assert not run.output
    assert run.output_sha256 == ""
    assert files_under(outputs_dir) == []


ROWS_1_TO_10 = (
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 10) SELECT x FROM n"
)


def test_exceeding_the_row_cap_fails_clearly_and_leaves_no_file(outputs_dir):
    run = run_sql(ROWS_1_TO_10, max_rows=5)
    assert run.status == RunStatus.FAILED
    assert run.error == (
        "The result has more than 5 rows, the report's row limit. "
        "Narrow the query or raise the report's max rows."
    )
    assert files_under(outputs_dir) == []


def test_a_result_at_the_row_cap_succeeds():
    run = run_sql(ROWS_1_TO_10, max_rows=10)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.row_count == 10
    assert read_csv(run.output.path)[1:] == [[str(n)] for n in range(1, 11)]


@postgres_only
def test_an_error_mid_stream_leaves_no_partial_file_and_the_connection_works(outputs_dir):
    # Rows stream out before row 5000 divides by zero.
    run = run_sql("SELECT 1 / (x - 5000) AS boom FROM generate_series(1, 10000) AS x")
    assert run.status == RunStatus.FAILED
    assert "division by zero" in run.error
    assert files_under(outputs_dir) == []
    run.report.delete()
    after = run_sql("SELECT 42 AS answer")
    assert after.status == RunStatus.SUCCEEDED, after.error
    assert read_csv(after.output.path) == [["answer"], ["42"]]


def test_the_connection_is_usable_after_a_timeout():
    vendor = connection_for_source(DEFAULT_SOURCE).vendor
    run_sql(SLOW_QUERIES[vendor], timeout_seconds=1).report.delete()
    after = run_sql("SELECT 1 AS one")
    assert after.status == RunStatus.SUCCEEDED, after.error


def test_an_unknown_data_source_fails_the_run():
    report = Report.objects.create(name="X", slug="x", sql="SELECT 1", data_source="nowhere")
    run = enqueue_run(report, "cli")
    execute_run(run)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error == "Unknown data source 'nowhere': it is not configured."


def test_a_run_that_is_not_queued_is_not_executed_again():
    report = Report.objects.create(name="X", slug="x", sql="SELECT 1")
    run = run_report_now(report)
    first_output = run.output.name
    assert execute_run(run) is False
    run.refresh_from_db()
    assert run.output.name == first_output


INJECTION = (
    "SELECT name'\\' AS a) q) TO STDOUT WITH (FORMAT csv, HEADER); COMMIT; BEGIN; "
    "DELETE FROM guarded; CREATE TABLE evil (x int); COMMIT; "
    "COPY (SELECT * FROM (SELECT * FROM guarded"
)


@executes_reports
def test_quotes_that_look_escaped_cannot_smuggle_a_second_statement(guarded, source_sql):
    # PostgreSQL ends the string at name'\' (no E prefix), so everything after the
    # first ; would be a new statement: it must count as one, and never run.
    with pytest.raises(ReportSQLError, match="cannot parse"):
        POSTGRESQL.read_only_statement(INJECTION)
    before = guarded()
    run = run_sql(INJECTION)
    assert run.status == RunStatus.FAILED
    assert guarded() == before
    assert not table_exists(source_sql, "evil")


@postgres_only
def test_the_copy_wrapper_is_checked_by_the_parser(guarded, source_sql, tmp_path):
    # Past the report checks, the exporter parses its own COPY and refuses to send it.
    before = guarded()
    statement = INJECTION.replace("name'\\'", "'x'")
    with open(tmp_path / "out.csv", "wb") as file, pytest.raises(ExportFailed) as error:
        export_query(
            connection_for_source(DEFAULT_SOURCE), statement, file, timeout_seconds=5, max_rows=10
        )
    assert "does not fit in one COPY statement" in str(error.value)
    assert guarded() == before
    assert not table_exists(source_sql, "evil")


@postgres_only
def test_the_protocol_itself_runs_exactly_one_statement(guarded, source_sql):
    # Past every check, the extended protocol refuses a second statement outright.
    connection = connection_for_source(DEFAULT_SOURCE)
    connection.ensure_connection()
    before = guarded()
    with pytest.raises(Exception, match="cannot insert multiple commands"):
        execute_one_statement(
            connection.connection, "SELECT 1; CREATE TABLE evil (x int)", time.monotonic() + 5
        )
    assert guarded() == before
    assert not table_exists(source_sql, "evil")


@postgres_only
def test_a_report_cannot_change_the_session_of_the_next_one():
    first = run_sql(
        "SELECT set_config('search_path', 'nowhere', false) AS changed, "
        "set_config('timezone', 'Asia/Tokyo', false) AS zone, "
        "pg_advisory_lock(8243118316935476086) AS locked"
    )
    assert first.status == RunStatus.SUCCEEDED, first.error
    first.report.delete()
    second = run_sql(
        "SELECT current_setting('search_path') AS search_path, "
        "current_setting('timezone') AS zone, "
        "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
        "AND pid = pg_backend_pid()) AS advisory_locks"
    )
    # The demo source's role starts with search_path=demo; the reset brings that back.
    assert read_csv(second.output.path)[1] == ["demo", "UTC", "0"]


@sqlite_only
def test_one_huge_sqlite_function_call_cannot_outlast_the_timeout(outputs_dir):
    started = time.monotonic()
    run = run_sql(
        "SELECT length(replace(hex(zeroblob(150000000)), '0', 'ab')) AS n", timeout_seconds=1
    )
    assert time.monotonic() - started < 6
    assert run.status == RunStatus.FAILED
    assert "timed out" in run.error or "too big" in run.error
    assert files_under(outputs_dir) == []
