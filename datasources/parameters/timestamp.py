"""A moment, with its zone: ISO 8601, naive text read in the report's zone."""

from datetime import UTC, datetime

from django.utils.dateparse import parse_datetime

from datasources.parameters.base import ParameterError, ParameterType
from reportsvc.moments import out_of_range_message, representable
from reportsvc.text import shown


def parse_timestamp(name, raw, zone):
    """An aware datetime (in UTC) from ISO 8601 text; naive text is read in ``zone``.

    The moment must exist in ``zone`` as well as in UTC (see reportsvc.moments), so that
    everything that shows or computes it in the report's zone can.
    """
    if isinstance(raw, datetime):
        value, text = raw, raw.isoformat()
    else:
        if not isinstance(raw, str) or len(raw) > 64:
            raise ParameterError(name, "Give a time stamp in ISO 8601, e.g. 2026-11-25T06:00:00Z.")
        text = raw.strip()
        try:
            value = parse_datetime(text.replace("z", "Z"))
        except ValueError:
            value = None
        if value is None:
            raise ParameterError(
                name,
                f"'{shown(text, 64)}' is not an ISO 8601 time stamp, e.g. 2026-11-25T06:00:00Z.",
            )
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    try:
        value = value.astimezone(UTC)
    except (OverflowError, ValueError):
        value = None
    if value is None or not representable(value, zone):
        raise ParameterError(name, out_of_range_message(shown(text, 64), zone))
    return value


class TimestampType(ParameterType):
    name = "timestamp"
    sql_type = "timestamp"
    interval_default = True
    help_text = "ISO 8601"

    def parse(self, parameter, raw, zone):
        return parse_timestamp(parameter.name, raw, zone)

    def json_value(self, value):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")

    def sample(self, parameter, interval):
        return interval[0]

    def from_bound(self, bound, zone):
        return bound

    def literal(self, value):
        return value.astimezone(UTC)


TYPE = TimestampType()
