"""Check report SQL against its data source without running it (EXPLAIN).

The same guards as a run: the database's own parser decides what the text is, the
source must be safe (reports.services.source_safety), the check holds a login of the
source alone (reports.services.logins), and the one statement goes over PostgreSQL's
extended protocol or SQLite's single-statement ``execute``, read-only and time-limited,
in a transaction that is rolled back.

Saving never waits long for runs: when every login stays in use for SAVE_WAIT_SECONDS,
the SQL is saved as the parser checked it, with a warning; its runs check it on the
database.
"""

import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC

import psycopg
from django.db import DatabaseError

from datasources.registry import connection_for_source
from reports import parameters as params
from reports.extended_protocol import ConnectionStalled, execute_one_statement
from reports.services.logins import (
    ONE_SHOT_LEASE_SECONDS,
    NoFreeLogin,
    SourceUnavailable,
    leased_connection,
    one_shot_holder,
)
from reports.services.source_safety import DataSourceRefused, ensure_source_is_safe
from reports.services.statements import render_for_connection
from reports.sql import ReportSQLError, read_only_statement, sqlite_read_only

CHECK_TIMEOUT_MS = 5000
SAVE_WAIT_SECONDS = 3


@dataclass(frozen=True)
class SQLCheck:
    problem: str | None = None  # why the SQL cannot be saved
    warning: str | None = None  # saved, but checked less than usual


def sql_problem(data_source, sql, declared=(), zone=UTC):
    """Why ``sql`` cannot run on ``data_source`` (a message for the user), or None."""
    return check_sql(data_source, sql, declared, zone).problem


def check_sql(data_source, sql, declared=(), zone=UTC):
    """The database's verdict on ``sql`` for ``data_source``, as a :class:`SQLCheck`.

    Placeholders are filled with the declared parameters' defaults, or typed sample
    values (``zone`` reads naive defaults); on SQLite, preparing the statement also
    shows whether each placeholder stands where a value goes. What the parser alone
    refuses is left to ``Report.clean()``, which says it first.
    """
    try:
        vendor = connection_for_source(data_source).vendor
        marked = params.with_markers(sql, vendor)
        read_only_statement(marked, vendor)
        if params.names_problem(params.find_placeholders(sql), declared):
            return SQLCheck()
    except (KeyError, ReportSQLError, params.TemplateError):
        return SQLCheck()  # the data_source field and Report.clean() report these
    try:
        with leased_connection(
            data_source,
            one_shot_holder("check"),
            wait_seconds=SAVE_WAIT_SECONDS,
            seconds=ONE_SHOT_LEASE_SECONDS,
        ) as connection:
            ensure_source_is_safe(connection)
            values = params.sample_values(declared, zone)
            rendered, _ = render_for_connection(sql, declared, values, connection)
            statement = read_only_statement(rendered, connection.vendor)
            if connection.vendor == "postgresql":
                _explain_on_postgres(connection, statement)
            elif connection.vendor == "sqlite":
                _explain_on_sqlite(connection, statement)
    except NoFreeLogin as error:
        return SQLCheck(warning=parser_only_warning(data_source, error.logins))
    except (ReportSQLError, DataSourceRefused, params.TemplateError, SourceUnavailable) as error:
        return SQLCheck(problem=str(error))
    except (DatabaseError, psycopg.Error, sqlite3.Error, ConnectionStalled) as error:
        return SQLCheck(problem=f"The database rejects this SQL: {str(error).strip()}")
    return SQLCheck()


def parser_only_warning(data_source, logins):
    return (
        f"The SQL was checked by the parser only: all {logins} login"
        f"{'s' if logins != 1 else ''} of data source '{data_source}' stayed in use by runs "
        f"for {SAVE_WAIT_SECONDS} s. The database checks it when it runs."
    )


def _explain_on_postgres(connection, statement):
    raw = connection.connection
    with connection.cursor() as cursor:  # constants only: nothing of the report's text
        cursor.execute(f"BEGIN READ ONLY; SET LOCAL statement_timeout = {CHECK_TIMEOUT_MS}")
    try:
        deadline = time.monotonic() + CHECK_TIMEOUT_MS / 1000 + 5
        execute_one_statement(raw, f"EXPLAIN {statement}", deadline)
    except ConnectionStalled:
        connection.close()
        raise
    finally:
        if connection.connection is not None:
            with connection.cursor() as cursor:
                cursor.execute("ROLLBACK")


def _explain_on_sqlite(connection, statement):
    connection.ensure_connection()
    with sqlite_read_only(connection.connection):
        connection.connection.execute(f"EXPLAIN QUERY PLAN {statement}")
