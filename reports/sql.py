"""What report SQL may be, decided by each database's own parser.

PostgreSQL text is parsed with pglast (libpg_query: PostgreSQL's own grammar), so the
statement count and kind are what the server would see. SQLite text is judged by the
sqlite3 driver itself when it is prepared (``guard_sqlite_connection``): it refuses a
second statement, and an authorizer refuses anything but reading.

These checks give users a clear message; they are not the only guard. Every path that
sends report text to a database also executes at most one statement by construction
(PostgreSQL's extended protocol, SQLite's single-statement ``execute``) inside a
read-only transaction, on a data source that cannot see the service's own tables.
"""

import contextlib
import sqlite3

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.visitors import Visitor

from datasources.sandbox import (
    ReportSQLError,
    require_sql,
    service_table_names,
    service_tables_message,
    without_statement_text,
)

__all__ = ["ReportSQLError", "without_statement_text"]

WRITE_STATEMENTS = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)


def read_only_statement(sql, vendor):
    """The one read-only statement in ``sql``, as the data source's engine will run it.

    Raises :class:`ReportSQLError` with a message for the user when the SQL is empty,
    holds more than one statement, or does not only read.
    """
    require_sql(sql)
    if vendor == "postgresql":
        return _postgres_statement(sql)
    if vendor == "sqlite" and not sqlite3.complete_statement(sql.rstrip() + "\n;"):
        raise ReportSQLError(
            "The SQL is incomplete: a string, identifier or comment is not closed."
        )
    # SQLite (and anything else) is judged by its driver when the statement is prepared.
    # A complete statement's last ';' is its terminator, never part of a literal.
    return sql.strip().rstrip("; \t\r\n\f\v")


def _postgres_statement(sql):
    try:
        statements = parse_sql(sql)
    except ParseError as error:
        raise ReportSQLError(f"PostgreSQL cannot parse this SQL: {error}.") from None
    if not statements:
        raise ReportSQLError("The SQL is empty: write one SELECT statement.")
    if len(statements) > 1:
        raise ReportSQLError(
            f"A report runs exactly one statement, but PostgreSQL reads {len(statements)} "
            "statements in this SQL. Keep only the query."
        )
    raw = statements[0]
    node = raw.stmt
    if not isinstance(node, ast.SelectStmt):
        kind = _statement_kind(node)
        raise ReportSQLError(
            f"Reports can only read data, but this is {_article(kind)} {kind} statement. "
            "Write a SELECT (or WITH … SELECT, VALUES, TABLE)."
        )
    problem = _ReadOnlyQuery.problem(node)
    if problem:
        raise ReportSQLError(problem)
    touched = _relation_names(node) & service_table_names()
    if touched:
        raise ReportSQLError(service_tables_message(touched))
    # The statement as the parser delimited it: no trailing ';' or comment after it.
    end = len(sql) if raw.stmt_len == 0 else raw.stmt_location + raw.stmt_len
    return sql[raw.stmt_location : end].strip()


def _article(word):
    return "an" if word[:1] in "AEIOU" else "a"


def _statement_kind(node):
    name = type(node).__name__
    return name[: -len("Stmt")].upper() if name.endswith("Stmt") else name


class _ReadOnlyQuery(Visitor):
    """Finds what makes a SELECT write or lock: data-modifying WITH, INTO, FOR UPDATE."""

    def __init__(self):
        super().__init__()
        self.found = None

    @classmethod
    def problem(cls, node):
        visitor = cls()
        visitor(node)
        return visitor.found

    def _note(self, message):
        if self.found is None:
            self.found = message

    def visit_SelectStmt(self, ancestors, node):
        if node.intoClause is not None:
            self._note("Reports can only read data: SELECT … INTO creates a table.")
        if node.lockingClause:
            self._note("Reports can only read data: FOR UPDATE/SHARE locks rows.")

    def visit_CommonTableExpr(self, ancestors, node):
        if isinstance(node.ctequery, WRITE_STATEMENTS):
            kind = _statement_kind(node.ctequery)
            self._note(
                f"Reports can only read data, but a WITH part of this query is {_article(kind)} "
                f"{kind} statement."
            )


class _Relations(Visitor):
    def __init__(self):
        super().__init__()
        self.names = set()

    def visit_RangeVar(self, ancestors, node):
        self.names.add(node.relname)


def _relation_names(node):
    visitor = _Relations()
    visitor(node)
    return visitor.names


def assert_copy_of_one_query(copy_sql):
    """Fail unless ``copy_sql`` is one ``COPY (query) TO STDOUT``: the exporter's own
    wrapper, checked by the parser so report text can never reshape it."""
    try:
        statements = parse_sql(copy_sql)
    except ParseError:
        statements = []
    copy = statements[0].stmt if len(statements) == 1 else None
    if not (
        isinstance(copy, ast.CopyStmt)
        and not copy.is_from
        and not copy.is_program
        and copy.filename is None
        and isinstance(copy.query, ast.SelectStmt)
    ):
        raise ReportSQLError("The report's SQL does not fit in one COPY statement.")


# --- SQLite: the driver prepares the statement; the authorizer decides what it may do ---

_SQLITE_READ_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}
_SQLITE_ACTION_WORDS = {
    sqlite3.SQLITE_INSERT: "INSERT",
    sqlite3.SQLITE_UPDATE: "UPDATE",
    sqlite3.SQLITE_DELETE: "DELETE",
    sqlite3.SQLITE_PRAGMA: "PRAGMA",
    sqlite3.SQLITE_ATTACH: "ATTACH",
    sqlite3.SQLITE_DETACH: "DETACH",
    sqlite3.SQLITE_TRANSACTION: "a transaction",
    sqlite3.SQLITE_SAVEPOINT: "a savepoint",
    sqlite3.SQLITE_ANALYZE: "ANALYZE",
    sqlite3.SQLITE_REINDEX: "REINDEX",
}


class SQLiteGuard:
    """An authorizer that lets a statement read and nothing else, remembering why not."""

    def __init__(self):
        self.refused = None

    def __call__(self, action, first, second, database, trigger):
        if action in _SQLITE_READ_ACTIONS:
            return sqlite3.SQLITE_OK
        if self.refused is None:
            schema_table = first in ("sqlite_master", "sqlite_temp_master", "sqlite_schema")
            word = None if schema_table else _SQLITE_ACTION_WORDS.get(action)
            self.refused = word or "a schema change"
        return sqlite3.SQLITE_DENY

    def policy_message(self, error):
        """Why the guard refused the statement behind ``error``, or None."""
        if isinstance(error, sqlite3.ProgrammingError) and "one statement" in str(error):
            return (
                "A report runs exactly one statement, but SQLite found more than one in "
                "this SQL. Keep only the query."
            )
        if self.refused:
            return f"Reports can only read data, but this statement would use {self.refused}."
        text = str(error).strip()
        missing = text.removeprefix("no such table: ")
        if missing != text and missing.rsplit(".", 1)[-1] in service_table_names():
            return service_tables_message({missing})
        return None

    def message(self, error):
        """The user's message for a driver error raised while the guard was on."""
        return self.policy_message(error) or str(error).strip()


@contextlib.contextmanager
def sqlite_read_only(raw_connection):
    """Prepare or explain report text on SQLite only under the guard, query_only on: a
    refusal by the guard comes out as ReportSQLError with its message, other driver
    errors as they are."""
    guard = SQLiteGuard()
    raw_connection.execute("PRAGMA query_only = ON")
    raw_connection.set_authorizer(guard)
    try:
        yield
    except sqlite3.Error as error:
        refusal = guard.policy_message(error)
        if refusal:
            raise ReportSQLError(refusal) from error
        raise
    finally:
        raw_connection.set_authorizer(None)
        raw_connection.execute("PRAGMA query_only = OFF")
