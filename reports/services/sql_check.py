"""Check report SQL against its database without running it (EXPLAIN)."""

import sqlite3

import psycopg
from django.db import DatabaseError, transaction

from reports.datasources import connection_for_source
from reports.sql import ReportSQLError, executable_statement

EXPLAIN = {"postgresql": "EXPLAIN {statement}", "sqlite": "EXPLAIN QUERY PLAN {statement}"}
CHECK_TIMEOUT_MS = 5000


def sql_problem(data_source, sql):
    """The database's objection to ``sql`` (syntax, unknown table or column), or None.

    The statement is planned, never executed, in a read-only transaction that is rolled
    back, so a check changes nothing even if the checks before it were fooled.
    """
    try:
        statement = executable_statement(sql)
        connection = connection_for_source(data_source)
    except (ReportSQLError, KeyError):
        return None  # the field validators report these
    if connection.vendor not in EXPLAIN:
        return None
    explain = EXPLAIN[connection.vendor].format(statement=statement)
    try:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SET TRANSACTION READ ONLY")
                cursor.execute(f"SET LOCAL statement_timeout = {CHECK_TIMEOUT_MS}")
                cursor.cursor.execute(explain)  # raw: a % in the SQL is not a placeholder
            else:
                connection.connection.execute("PRAGMA query_only = ON")
                try:
                    connection.connection.execute(explain)
                finally:
                    connection.connection.execute("PRAGMA query_only = OFF")
            transaction.set_rollback(True, using=connection.alias)
    except (DatabaseError, psycopg.Error, sqlite3.Error) as error:
        return str(error).strip()
    return None
