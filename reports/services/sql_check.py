"""Check report SQL against its data source without running it (EXPLAIN).

The same guards as a run: the database's own parser decides what the text is, the
source must be safe (reports.services.source_safety), and the one statement goes over
PostgreSQL's extended protocol or SQLite's single-statement ``execute``, read-only and
time-limited, in a transaction that is rolled back.
"""

import sqlite3
import time
from datetime import UTC

import psycopg
from django.db import DatabaseError

from reports import parameters as params
from reports.datasources import connection_for_source
from reports.extended_protocol import ConnectionStalled, execute_one_statement
from reports.services.source_safety import DataSourceRefused, ensure_source_is_safe
from reports.services.statements import render_for_connection
from reports.sql import ReportSQLError, read_only_statement, sqlite_read_only

CHECK_TIMEOUT_MS = 5000


def sql_problem(data_source, sql, declared=(), zone=UTC):
    """Why ``sql`` cannot run on ``data_source`` (a message for the user), or None.

    Placeholders are filled with the declared parameters' defaults, or typed sample
    values (``zone`` reads naive defaults); on SQLite, preparing the statement also
    shows whether each placeholder stands where a value goes. What the parser alone
    refuses is left to ``Report.clean()``, which says it first.
    """
    try:
        connection = connection_for_source(data_source)
        marked = params.with_markers(sql, connection.vendor)
        read_only_statement(marked, connection.vendor)
        if params.names_problem(params.find_placeholders(sql), declared):
            return None
    except (KeyError, ReportSQLError, params.TemplateError):
        return None  # the data_source field and Report.clean() report these
    try:
        ensure_source_is_safe(connection)
        values = params.sample_values(declared, zone)
        rendered, _ = render_for_connection(sql, declared, values, connection)
        statement = read_only_statement(rendered, connection.vendor)
        if connection.vendor == "postgresql":
            _explain_on_postgres(connection, statement)
        elif connection.vendor == "sqlite":
            _explain_on_sqlite(connection, statement)
    except (ReportSQLError, DataSourceRefused, params.TemplateError) as error:
        return str(error)
    except (DatabaseError, psycopg.Error, sqlite3.Error, ConnectionStalled) as error:
        return f"The database rejects this SQL: {str(error).strip()}"
    return None


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
