"""Check report SQL against its data source without running it (EXPLAIN).

The same guards as a run: the database's own parser decides what the text is, the
source must be safe (datasources.safety), the check holds a login of the source alone
(reports.services.logins), and the backend sends the one statement the way a run does
(``Backend.explain``), read-only and time-limited, in a transaction that is rolled back.

Saving never waits long for runs: when every login stays in use for SAVE_WAIT_SECONDS,
the SQL is saved as the parser checked it, with a warning; its runs check it on the
database.
"""

from dataclasses import dataclass
from datetime import UTC

from datasources.backends import database_errors
from datasources.placeholders import TemplateError, find_placeholders, with_markers
from datasources.registry import source_for
from datasources.safety import DataSourceRefused, ensure_source_is_safe
from datasources.sandbox import ReportSQLError
from reports import parameters as params
from reports.services.logins import (
    ONE_SHOT_LEASE_SECONDS,
    NoFreeLogin,
    SourceUnavailable,
    leased_connection,
    one_shot_holder,
)
from reports.services.statements import render_for_connection

CHECK_TIMEOUT_SECONDS = 5
SAVE_WAIT_SECONDS = 3


@dataclass(frozen=True)
class SQLCheck:
    problem: str | None = None  # why the SQL cannot be saved
    warning: str | None = None  # saved, but checked less than usual


def check_sql(data_source, sql, declared=(), zone=UTC):
    """The database's verdict on ``sql`` for ``data_source``, as a :class:`SQLCheck`.

    Placeholders are filled with the declared parameters' defaults, or typed sample
    values (``zone`` reads naive defaults); on SQLite, preparing the statement also
    shows whether each placeholder stands where a value goes. What the parser alone
    refuses is left to ``Report.clean()``, which says it first.
    """
    try:
        backend = source_for(data_source).backend
        backend.read_only_statement(with_markers(sql, backend.marker))
        if params.names_problem(find_placeholders(sql), declared):
            return SQLCheck()
    except (KeyError, ReportSQLError, TemplateError):
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
            statement = backend.read_only_statement(rendered)
            backend.explain(connection, statement, CHECK_TIMEOUT_SECONDS)
    except NoFreeLogin as error:
        return SQLCheck(warning=parser_only_warning(data_source, error.logins))
    except (ReportSQLError, DataSourceRefused, TemplateError, SourceUnavailable) as error:
        return SQLCheck(problem=str(error))
    except database_errors() as error:
        return SQLCheck(problem=f"The database rejects this SQL: {str(error).strip()}")
    return SQLCheck()


def parser_only_warning(data_source, logins):
    return (
        f"The SQL was checked by the parser only: all {logins} login"
        f"{'s' if logins != 1 else ''} of data source '{data_source}' stayed in use by runs "
        f"for {SAVE_WAIT_SECONDS} s. The database checks it when it runs."
    )
