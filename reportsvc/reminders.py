"""How often a report that keeps failing may remind: NOTIFY_REPEAT_AFTER and the
per-report override share these bounds (no app imports: the settings read it)."""

from datetime import timedelta

from django.utils.dateparse import parse_duration

MIN_REPEAT_AFTER = timedelta(minutes=1)
# Rarer than monthly is no reminder anyone acts on; blank the targets instead.
MAX_REPEAT_AFTER = timedelta(days=30)
DEFAULT_REPEAT_AFTER = timedelta(hours=1)
EXAMPLES = "e.g. 01:00:00 (an hour), 1 00:00:00 (a day), 3600 (seconds) or ISO 8601 (PT1H)"


def repeat_after_problem(value):
    """Why ``value`` (a timedelta) cannot be a reminder interval, or None."""
    if value < MIN_REPEAT_AFTER:
        return (
            f"At least a minute (00:01:00), not {value}: to hear of every failure, "
            "choose notify when 'After every failed run'."
        )
    if value > MAX_REPEAT_AFTER:
        days = MAX_REPEAT_AFTER.days
        return f"At most {days} days ({days} 00:00:00), not {value}."
    return None


def parse_repeat_after(text):
    """NOTIFY_REPEAT_AFTER's value as a timedelta; ValueError says what is wrong."""
    value = parse_duration(text.strip())
    if value is None:
        raise ValueError(f"'{text}' is not a duration: {EXAMPLES}")
    problem = repeat_after_problem(value)
    if problem:
        raise ValueError(problem)
    return value
