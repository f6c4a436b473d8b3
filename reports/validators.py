"""Field validators of Report: each turns a bad value into a message for the user."""

import zoneinfo

from django.core.exceptions import ValidationError

from reports.cron import CronError, parse_crontab
from reports.datasources import data_source_names
from reports.sql import ReportSQLError, executable_statement


def validate_crontab(value):
    if not value.strip():
        return
    try:
        parse_crontab(value)
    except CronError as error:
        raise ValidationError(
            f"Invalid schedule '{value}': {error}.", code="invalid_cron"
        ) from error


def validate_timezone(value):
    if value not in zoneinfo.available_timezones():
        raise ValidationError(
            f"Unknown time zone '{value}': use an IANA name such as 'Europe/Berlin' or 'UTC'.",
            code="invalid_timezone",
        )


def validate_data_source(value):
    names = data_source_names()
    if value not in names:
        raise ValidationError(
            f"Unknown data source '{value}': configured sources are {', '.join(names)} "
            "(add more with REPORTING_DATABASE_URL_<NAME>).",
            code="unknown_data_source",
        )


def validate_report_sql(value):
    try:
        executable_statement(value)
    except ReportSQLError as error:
        raise ValidationError(str(error), code="invalid_sql") from error
