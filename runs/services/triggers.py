"""An APScheduler trigger with crontab(5) semantics (see reports.cron)."""

from datetime import timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger

from reports.cron import next_fire_time, parse_crontab


class CrontabTrigger(BaseTrigger):
    """Fires at a report's crontab times in its time zone.

    APScheduler's own CronTrigger numbers weekdays from Monday and ANDs the two day
    fields; cron numbers from Sunday and ORs them, so reports use this trigger.
    """

    def __init__(self, expression, timezone):
        self.expression = expression
        self.timezone = timezone
        self._schedule = parse_crontab(expression)
        self._zone = ZoneInfo(timezone)

    def get_next_fire_time(self, previous_fire_time, now):
        if previous_fire_time is not None:
            after = previous_fire_time  # strictly after it, even if that is not past yet
        else:
            after = now - timedelta(microseconds=1)  # a fire exactly at ``now`` counts
        return next_fire_time(self._schedule, self._zone, after)

    def __getstate__(self):
        return {"version": 1, "expression": self.expression, "timezone": self.timezone}

    def __setstate__(self, state):
        self.__init__(state["expression"], state["timezone"])

    def __str__(self):
        return f"crontab[{self.expression} {self.timezone}]"

    def __repr__(self):
        return f"<CrontabTrigger {self.expression!r} {self.timezone!r}>"
