"""A calendar date: ``2026-11-25``."""

import re
from datetime import date, datetime

from datasources.parameters.base import ParameterError, ParameterType
from reportsvc.text import shown


class DateType(ParameterType):
    name = "date"
    sql_type = "date"
    interval_default = True
    help_text = "YYYY-MM-DD"

    def parse(self, parameter, raw, zone):
        if isinstance(raw, date) and not isinstance(raw, datetime):
            return raw
        if not isinstance(raw, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", raw.strip()):
            raise ParameterError(parameter.name, "Give a date as YYYY-MM-DD, e.g. 2026-11-25.")
        try:
            return date.fromisoformat(raw.strip())
        except ValueError:
            raise ParameterError(
                parameter.name, f"'{shown(raw.strip())}' is not a date in the calendar."
            ) from None

    def json_value(self, value):
        return value.isoformat()

    def sample(self, parameter, interval):
        return interval[0].date()

    def from_bound(self, bound, zone):
        return bound.astimezone(zone).date()

    def literal(self, value):
        return value.isoformat()


TYPE = DateType()
