"""What every backend's sandbox shares, whatever the vendor.

The sandbox's contract (README: Security): report text reaches a data source only as
exactly one statement, by construction (a protocol or driver call that carries one
statement, never a split of the text here); that statement only reads (a read-only
transaction or its vendor's equivalent, and the vendor's own parser or authorizer
refusing writes and locks); it ends by the report's timeout, even if the text tries to
lift it; at most the row cap plus one row is fetched; and it never sees the service's
own tables.

The exceptions here carry messages meant for the user.
"""

from dataclasses import dataclass


class ReportSQLError(ValueError):
    """Report SQL that must not run; the message is meant for the user."""


class ExportFailed(Exception):
    """The export did not produce a result; ``str()`` is the message for the user."""


class QueryTimedOut(ExportFailed):
    pass


class RowLimitExceeded(ExportFailed):
    pass


@dataclass(frozen=True)
class RowLimit:
    rows: int
    message: str  # the run's error past it


def require_sql(sql):
    """Raise ReportSQLError for empty report SQL (the first check of every backend)."""
    if not (sql or "").strip():
        raise ReportSQLError("The SQL is empty: write one SELECT statement.")


def service_table_names():
    """The tables of this service (users, sessions, API tokens, reports, runs, ...)."""
    from django.apps import apps
    from django.conf import settings

    # Not django_migrations: it holds no secrets, and Django's test set-up creates it in
    # every database, the demo source's too.
    names = {model._meta.db_table for model in apps.get_models(include_auto_created=True)}
    for cache in settings.CACHES.values():
        if cache["BACKEND"].endswith("DatabaseCache"):
            names.add(cache["LOCATION"])
    return names


def service_tables_message(names):
    listed = ", ".join(sorted(names))
    return (
        f"Reports cannot read reportsvc's own tables ({listed}): they hold its users, "
        "sessions, API tokens and report settings. Query your data through a reporting "
        "data source instead (README: Security)."
    )


def without_statement_text(message):
    """A database error without the lines in which it quotes the statement.

    PostgreSQL appends ``LINE 2: SELECT 'top secret' …`` with a caret (and may add
    QUERY/CONTEXT lines) to errors; people who may not see a report's SQL get the
    message without them.
    """
    kept = []
    for line in (message or "").splitlines():
        if line.startswith(("LINE ", "QUERY:", "CONTEXT:")):
            break
        kept.append(line)
    return "\n".join(kept).strip()


class StatementCancelled(ExportFailed):
    """The statement was stopped by a backend's ``cancel`` while it ran."""


def timeout_message(timeout_seconds, detail):
    return f"Query timed out after {timeout_seconds} s (the report's timeout): {detail}"


def database_message(error):
    """The database's own message, without Python's exception decoration."""
    return str(error).strip() or error.__class__.__name__
