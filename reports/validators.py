"""Field validators of Report: each turns a bad value into a message for the user."""

import functools
import zoneinfo
from datetime import UTC, timedelta

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator, URLValidator
from django.utils import timezone

from datasources.placeholders import TemplateError, find_placeholders, substitute
from datasources.registry import data_source_names, source_for
from datasources.sandbox import ReportSQLError
from reports.cron import CronError, next_fire_time, parse_crontab
from reportsvc.reminders import repeat_after_problem
from runs.services.notifications.channels.addresses import blocked_target_problem

# A run must be able to finish within a day; larger values made every run fail.
MAX_TIMEOUT_SECONDS = 86_400
# LIMIT max_rows + 1 must fit PostgreSQL's bigint.
MAX_ROWS_LIMIT = 2**63 - 2
# A freshness expectation longer than a year is no expectation anyone is paged for.
MAX_EXPECT_SUCCESS_WITHIN = timedelta(days=365)


def validate_crontab(value):
    if not value.strip():
        return
    try:
        schedule = parse_crontab(value)
    except CronError as error:
        raise ValidationError(
            f"Invalid schedule '{value}': {error}.", code="invalid_cron"
        ) from error
    if next_fire_time(schedule, UTC, timezone.now()) is None:
        raise ValidationError(
            f"The schedule '{value}' never fires: no such date exists (e.g. 30 February).",
            code="never_fires",
        )


# The zone names on this system: listing them walks the tz database on disk (several
# milliseconds), so it is done once per process.
known_time_zones = functools.cache(zoneinfo.available_timezones)


def validate_timezone(value):
    if value not in known_time_zones():
        raise ValidationError(
            f"Unknown time zone '{value}': use an IANA name such as 'Europe/Berlin' or 'UTC'.",
            code="invalid_timezone",
        )


def validate_expect_success_within(value):
    if value <= timedelta(0):
        raise ValidationError(
            "Give a positive duration, e.g. 1 00:00:00 (a day) or 06:00:00 (6 hours); "
            "leave it empty for no expectation.",
            code="not_positive",
        )
    if value > MAX_EXPECT_SUCCESS_WITHIN:
        raise ValidationError(
            f"At most a year ({MAX_EXPECT_SUCCESS_WITHIN.days} 00:00:00), not "
            f"{value.days} days; leave it empty for no expectation.",
            code="too_long",
        )


def validate_notify_repeat_after(value):
    problem = repeat_after_problem(value)
    if problem:
        raise ValidationError(
            problem + " Leave it empty for NOTIFY_REPEAT_AFTER.", code="out_of_range"
        )


def validate_data_source(value):
    names = data_source_names()
    if value not in names:
        raise ValidationError(
            f"Unknown data source '{value}': configured sources are {', '.join(names)} "
            "(add more with REPORTING_DATABASE_URL_<NAME>).",
            code="unknown_data_source",
        )


def report_sql_problem(sql, data_source, declared=()):
    """The parser's objection to ``sql`` on ``data_source``'s engine, or None: its
    placeholders (malformed, naming no parameter in ``declared`` or the built-ins, or,
    where the backend's parser alone can tell, not where a value goes, or bind
    parameters of the SQL's own), then the statement with bind markers in their place.

    Needs no connection; the database's own check (reports.services.sql_check) follows
    in the admin and the API, and checks the placeholders' positions where that needs
    the server (SQLite's prepare).
    """
    from reports import parameters as params

    try:
        placeholders = find_placeholders(sql or "")
    except TemplateError as error:
        return str(error)
    problem = params.names_problem(placeholders, declared)
    if problem:
        return problem
    try:
        backend = source_for(data_source).backend
    except KeyError:
        return None  # the data_source field reports it
    try:
        marked = substitute(sql, placeholders, lambda index, _: backend.marker(index))[0]
        backend.read_only_statement(marked)
        backend.check_positions(sql, placeholders)
    except (ReportSQLError, TemplateError) as error:
        return str(error)
    return None


def split_list(value):
    """Items of a comma- or newline-separated list, stripped, blanks dropped."""
    return [item.strip() for item in value.replace("\n", ",").split(",") if item.strip()]


def validate_email_list(value):
    checker = EmailValidator()
    for address in split_list(value):
        try:
            checker(address)
        except ValidationError:
            raise ValidationError(
                f"'{address}' is not an email address.", code="invalid_email"
            ) from None


def validate_webhook_list(value):
    checker = URLValidator(schemes=["http", "https"])
    for url in (line.strip() for line in value.splitlines() if line.strip()):
        try:
            checker(url)
        except ValidationError:
            raise ValidationError(
                f"'{url}' is not an http(s) URL.", code="invalid_webhook"
            ) from None
        problem = blocked_target_problem(url)
        if problem:
            raise ValidationError(problem, code="blocked_webhook")
