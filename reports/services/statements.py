"""The statement a run of a report executes: its SQL with the run's values in it.

The rendered text goes through the same sandbox as SQL without placeholders (the
backend's ``read_only_statement``: one statement, read-only; then its export's
read-only transaction, timeout and row cap).
"""

from datasources.backends import backend_for
from datasources.placeholders import TemplateError, find_placeholders
from reports import parameters as params
from reports.zones import report_zone
from reportsvc.moments import out_of_range_message, representable, utc_text


def declared_of(report):
    """The report's declared parameters (ParameterError if the stored list is invalid)."""
    return params.declared_parameters(report.parameters, report_zone(report))


def render_for_connection(sql, declared, values, connection):
    """``sql`` with ``values`` as quoted, cast literals for ``connection``'s database,
    after the database's parser has confirmed every placeholder stands where a value
    goes and the SQL holds no bind parameter of its own (checked with or without
    placeholders). Raises TemplateError, ReportSQLError or the driver's error."""
    placeholders = find_placeholders(sql)
    problem = params.names_problem(placeholders, declared)
    if problem:
        raise TemplateError(problem)
    backend = backend_for(connection)
    backend.check_positions(sql, placeholders, connection)
    if not placeholders:
        return sql, placeholders
    quote = backend.quoter(connection)
    return params.render(sql, placeholders, declared, values, quote), placeholders


def statement_for_run(report, connection, given, interval):
    """``(statement, recorded values)`` for a run of ``report`` with the ``given``
    parameter values over ``interval`` (start, end).

    Raises ParameterError (a value), TemplateError (the SQL's placeholders) or
    ReportSQLError (the statement), each with a message for the user.
    """
    zone = report_zone(report)
    # Checked again here: a run may have been queued before values were checked.
    for name, bound in zip(params.BUILT_IN_NAMES, interval, strict=True):
        if not representable(bound, zone):
            raise params.ParameterError(name, out_of_range_message(utc_text(bound), zone))
    if not isinstance(given or {}, dict):
        raise params.ParameterError("parameters", "The run's values are not an object.")
    declared = declared_of(report)
    values = params.resolve_values(declared, given, interval, zone)
    rendered, placeholders = render_for_connection(report.sql, declared, values, connection)
    statement = backend_for(connection).read_only_statement(rendered)
    recorded = params.used_values(placeholders, declared, values)
    return statement, params.values_json(declared, recorded)
