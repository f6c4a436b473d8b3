import collections
import itertools
import random
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from reports.cron import (
    DAY_NAMES,
    MONTH_NAMES,
    CronError,
    fires_after,
    next_fire_time,
    next_fire_times,
    parse_crontab,
    previous_fire_time,
)


def fires(expression, after, count, zone=UTC):
    """The next fire times in ``zone``, as "Mon 11-30 06:00" wall times."""
    return [
        fire.astimezone(zone).strftime("%a %m-%d %H:%M")
        for fire in next_fire_times(parse_crontab(expression), zone, after, count)
    ]


THU = datetime(2026, 11, 26, tzinfo=UTC)  # a Thursday, 00:00 UTC


def test_every_fifteen_minutes():
    assert fires("*/15 * * * *", THU, 5) == [
        "Thu 11-26 00:15",
        "Thu 11-26 00:30",
        "Thu 11-26 00:45",
        "Thu 11-26 01:00",
        "Thu 11-26 01:15",
    ]


def test_ranges_lists_and_steps_combine():
    minutes = [fire[-2:] for fire in fires("0-10/5,30,45-47 8 * * *", THU, 7)]
    assert minutes == ["00", "05", "10", "30", "45", "46", "47"]
    hours = [fire[-5:-3] for fire in fires("0 8-17/3 * * *", THU, 4)]
    assert hours == ["08", "11", "14", "17"]
    # A one-value range with a step is that value, as in cron (not "5/10").
    assert fires("5-5/10 * * * *", THU, 2) == ["Thu 11-26 00:05", "Thu 11-26 01:05"]


@pytest.mark.parametrize("sunday", ["0", "7", "sun", "SUN"])
def test_sunday_is_zero_seven_or_name(sunday):
    assert fires(f"0 0 * * {sunday}", THU, 2) == ["Sun 11-29 00:00", "Sun 12-06 00:00"]


def test_weekday_names_and_ranges():
    weekdays = ["Thu 11-26 06:00", "Fri 11-27 06:00", "Mon 11-30 06:00"]
    assert fires("0 6 * * mon-fri", THU, 3) == weekdays
    assert fires("0 6 * * 1-5", THU, 3) == weekdays
    assert fires("0 6 * * 5-7", THU, 4) == [
        "Fri 11-27 06:00",
        "Sat 11-28 06:00",
        "Sun 11-29 06:00",
        "Fri 12-04 06:00",
    ]
    assert fires("0 6 * * Tue-thu/2", THU, 2) == ["Thu 11-26 06:00", "Tue 12-01 06:00"]


def test_month_names():
    assert [fire[4:9] for fire in fires("0 0 1 jan,Jul *", THU, 3)] == ["01-01", "07-01", "01-01"]


def test_day_of_month_or_day_of_week_when_both_restricted():
    # crontab(5): "1,15 * * fri" style schedules run on the 1st, the 15th AND every Friday.
    assert fires("0 0 1,15 * fri", THU, 4) == [
        "Fri 11-27 00:00",
        "Tue 12-01 00:00",
        "Fri 12-04 00:00",
        "Fri 12-11 00:00",
    ]


def test_day_fields_and_when_one_is_star():
    assert fires("0 0 * * fri", THU, 2) == ["Fri 11-27 00:00", "Fri 12-04 00:00"]
    # A field starting with '*' (even "*/2") counts as unrestricted, as in cron: odd
    # days AND Fridays.
    assert fires("0 0 */2 * fri", THU, 3) == [
        "Fri 11-27 00:00",
        "Fri 12-11 00:00",
        "Fri 12-25 00:00",
    ]


@pytest.mark.parametrize(
    ("macro", "equivalent"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
    ],
)
def test_macros(macro, equivalent):
    assert parse_crontab(macro) == parse_crontab(equivalent)
    assert fires(macro, THU, 3) == fires(equivalent, THU, 3)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "expected 5 fields"),
        ("* * * * * *", "expected 5 fields"),
        ("60 * * * *", "minute: 60 is out of range 0-59"),
        ("* 24 * * *", "hour: 24 is out of range 0-23"),
        ("* * 0 * *", "day of month: 0 is out of range 1-31"),
        ("* * * 13 *", "month: 13 is out of range 1-12"),
        ("* * * * 8", "day of week: 8 is out of range 0-7"),
        ("*/0 * * * *", "step '0' must be a positive number"),
        ("5/15 * * * *", "write a range with the step, e.g. '5-59/15'"),
        ("10-5 * * * *", "range '10-5' runs backwards"),
        ("* * * * funday", "'funday' is not a valid value (use 0-7 or sun-sat)"),
        ("1,,2 * * * *", "minute: empty item in the list '1,,2'"),
        ("² * * * *", "minute: '²' is not a valid value"),
        ("*/٣ * * * *", "step '٣' must be a positive number"),
        ("@reboot", "@reboot has no meaning"),
        ("@often", "unknown shortcut '@often'"),
        # What cronsim reads but cron does not: seconds, last day, nth weekday.
        ("0 0 6 * * *", "expected 5 fields"),
        ("0 0 L * *", "day of month: 'L' is not a valid value (use 1-31)"),
        ("0 0 * * 5L", "day of week: '5L' is not a valid value"),
        ("0 0 * * mon#2", "day of week: 'mon#2' is not a valid value"),
        ("0 0 ? * *", "day of month: '?' is not a valid value"),
        ("0 0 * * 1/2", "write a range with the step, e.g. '1-7/2'"),
    ],
)
def test_invalid_expressions_say_why(expression, message):
    with pytest.raises(CronError) as error:
        parse_crontab(expression)
    assert message in str(error.value)


BERLIN = ZoneInfo("Europe/Berlin")


def berlin_fires(expression, after, count):
    """The next fire times after a Berlin wall time, as Berlin wall times with offsets."""
    start = after.replace(tzinfo=BERLIN)
    return [
        fire.astimezone(BERLIN).strftime("%m-%d %H:%M%z")
        for fire in next_fire_times(parse_crontab(expression), BERLIN, start, count)
    ]


def test_fires_in_the_report_time_zone():
    fire = next_fire_time(
        parse_crontab("0 6 * * *"), BERLIN, datetime(2026, 11, 26, 12, tzinfo=UTC)
    )
    assert fire == datetime(2026, 11, 27, 5, 0, tzinfo=UTC)  # 06:00 CET


def test_spring_forward_fixed_time_in_the_gap_fires_at_the_change():
    # 2026-03-29: Berlin skips 02:00-02:59. A 02:30 job runs at 03:00, once.
    assert berlin_fires("30 2 * * *", datetime(2026, 3, 28, 12), 2) == [
        "03-29 03:00+0200",
        "03-30 02:30+0200",
    ]
    assert berlin_fires("0,30 2 * * *", datetime(2026, 3, 29, 0), 2) == [
        "03-29 03:00+0200",
        "03-30 02:00+0200",
    ]


def test_spring_forward_wildcard_follows_the_clock():
    assert berlin_fires("*/30 * * * *", datetime(2026, 3, 29, 1, 0), 3) == [
        "03-29 01:30+0100",
        "03-29 03:00+0200",
        "03-29 03:30+0200",
    ]
    assert berlin_fires("0 * * * *", datetime(2026, 3, 29, 0, 30), 2) == [
        "03-29 01:00+0100",
        "03-29 03:00+0200",
    ]


def test_fall_back_fixed_time_fires_once():
    # 2026-10-25: Berlin repeats 02:00-02:59 (first CEST +02, then CET +01).
    assert berlin_fires("30 2 * * *", datetime(2026, 10, 24, 12), 2) == [
        "10-25 02:30+0200",
        "10-26 02:30+0100",
    ]


def test_fall_back_wildcard_fires_in_both_passes():
    assert berlin_fires("*/30 * * * *", datetime(2026, 10, 25, 1, 10), 6) == [
        "10-25 01:30+0200",
        "10-25 02:00+0200",
        "10-25 02:30+0200",
        "10-25 02:00+0100",
        "10-25 02:30+0100",
        "10-25 03:00+0100",
    ]


def test_next_fire_from_inside_the_repeated_hour():
    second_pass = datetime(2026, 10, 25, 2, 20, fold=1, tzinfo=BERLIN)
    assert next_fire_time(parse_crontab("*/30 * * * *"), BERLIN, second_pass) == datetime(
        2026, 10, 25, 1, 30, tzinfo=UTC
    )
    assert next_fire_time(parse_crontab("15 2 * * *"), BERLIN, second_pass) == datetime(
        2026, 10, 26, 1, 15, tzinfo=UTC
    )


def test_rare_and_impossible_dates():
    leap = next_fire_times(parse_crontab("0 0 29 2 *"), UTC, datetime(2026, 1, 1, tzinfo=UTC), 2)
    assert [fire.year for fire in leap] == [2028, 2032]
    assert (
        next_fire_time(parse_crontab("0 0 30 2 *"), UTC, datetime(2026, 1, 1, tzinfo=UTC)) is None
    )


def test_day_of_month_or_weekday_fires():
    fires = next_fire_times(
        parse_crontab("0 9 13 * fri"), UTC, datetime(2026, 11, 1, tzinfo=UTC), 4
    )
    assert [fire.strftime("%a %d") for fire in fires] == ["Fri 06", "Fri 13", "Fri 20", "Fri 27"]
    fires = next_fire_times(
        parse_crontab("0 9 13 * mon"), UTC, datetime(2026, 11, 1, tzinfo=UTC), 3
    )
    assert [fire.strftime("%a %d") for fire in fires] == ["Mon 02", "Mon 09", "Fri 13"]


def test_previous_fire_time_is_the_fire_before():
    daily = parse_crontab("30 2 * * *")
    assert previous_fire_time(daily, BERLIN, datetime(2026, 3, 30, 0, 30, tzinfo=UTC)) == datetime(
        2026,
        3,
        29,
        1,
        0,
        tzinfo=UTC,  # 03:00 CEST, the spring-forward fire
    )
    leap = parse_crontab("0 0 29 2 *")
    assert previous_fire_time(leap, UTC, datetime(2028, 2, 29, tzinfo=UTC)) == datetime(
        2024, 2, 29, tzinfo=UTC
    )
    assert previous_fire_time(parse_crontab("0 0 30 2 *"), UTC, THU) is None


# --- The wrapper against cron's rules, read off the clock minute by minute ------------
#
# Generated schedules (their value sets known by construction) and starts around every
# clock change of 2026 in zones with whole-hour, half-hour, 45-minute and midnight
# changes. The reference walks UTC minutes and applies the README's rules directly.

COMPARISON_ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Havana",
    "America/Santiago",
    "Asia/Beirut",
]


SECOND = timedelta(seconds=1)
GeneratedSchedule = collections.namedtuple("GeneratedSchedule", "expression matches fixed_time")


def generated_field(rng, low, high, names, name_base, near):
    """A random field in cron syntax, and the set of values it stands for."""

    def value():
        number = near + rng.randint(-1, 1) if rng.random() < 0.7 else rng.randint(low, high)
        number = min(high, max(low, number))
        index = number - name_base
        if names and 0 <= index < len(names) and rng.random() < 0.3:
            return names[index].upper() if rng.random() < 0.5 else names[index], number
        return str(number), number

    kind = rng.random()
    if kind < 0.3:
        return "*", set(range(low, high + 1))
    if kind < 0.4:
        step = rng.randint(1, high - low)
        return f"*/{step}", set(range(low, high + 1, step))
    if kind < 0.6:
        text, number = value()
        return text, {number}
    if kind < 0.8:
        first, last = sorted((rng.randint(low, high), min(high, max(low, near))))
        step = rng.choice([1, 1, 2, 3])
        return f"{first}-{last}" + (f"/{step}" if step > 1 else ""), set(
            range(first, last + 1, step)
        )
    items = [value() for _ in range(rng.randint(2, 3))]
    return ",".join(text for text, _ in items), {number for _, number in items}


def generated_schedule(rng, local_change):
    fields = [
        generated_field(rng, 0, 59, (), 0, local_change.minute),
        generated_field(rng, 0, 23, (), 0, local_change.hour),
        generated_field(rng, 1, 31, (), 0, local_change.day) if rng.random() < 0.3 else ("*", None),
        generated_field(rng, 1, 12, MONTH_NAMES, 1, local_change.month)
        if rng.random() < 0.3
        else ("*", None),
        generated_field(rng, 0, 7, DAY_NAMES, 0, local_change.isoweekday() % 7)
        if rng.random() < 0.3
        else ("*", None),
    ]
    expression = " ".join(text for text, _ in fields)
    minutes, hours, days, months, weekdays = (values for _, values in fields)
    days, months = days or set(range(1, 32)), months or set(range(1, 13))
    weekdays = {day % 7 for day in weekdays} if weekdays else set(range(7))
    stars = [text.startswith("*") for text, _ in fields]

    def day_matches(day):
        day_of_month, day_of_week = day.day in days, day.isoweekday() % 7 in weekdays
        either = stars[2] or stars[4]
        matched = (day_of_month and day_of_week) if either else (day_of_month or day_of_week)
        return matched and day.month in months

    def matches(wall):
        return wall.minute in minutes and wall.hour in hours and day_matches(wall)

    schedule = GeneratedSchedule(expression, matches, not (stars[0] or stars[1]))
    return schedule, day_matches, (sorted(hours), sorted(minutes))


def fires_read_off_the_clock(matches, fixed_time, zone, after, until):
    """Fire instants in (after, until]: every UTC minute whose wall clock matches; a
    fixed-time schedule fires in the first pass of a repeated hour only, and at the
    moment of a spring-forward change for times the change skipped."""
    minute, after, until = timedelta(minutes=1), after.astimezone(UTC), until.astimezone(UTC)
    instant = after.replace(second=0, microsecond=0) + minute
    previous_wall = (instant - minute).astimezone(zone).replace(tzinfo=None, fold=0)
    found = []
    while instant <= until:
        local = instant.astimezone(zone)
        wall = local.replace(tzinfo=None, fold=0)
        if fixed_time:
            skipped = (
                previous_wall + minute * step for step in range(1, (wall - previous_wall) // minute)
            )
            fires = (matches(wall) and local.fold == 0) or any(map(matches, skipped))
        else:
            fires = matches(wall)
        if fires:
            found.append(instant)
        previous_wall, instant = wall, instant + minute
    return found


def clock_changes(zone, year):
    changes, hour = [], timedelta(hours=1)
    instant = datetime(year, 1, 1, tzinfo=UTC)
    while instant.year == year:
        if (instant + hour).astimezone(zone).utcoffset() != instant.astimezone(zone).utcoffset():
            low, high = instant, instant + hour
            while high - low > timedelta(minutes=1):
                middle = low + (high - low) / 2
                same = middle.astimezone(zone).utcoffset() == low.astimezone(zone).utcoffset()
                low, high = (middle, high) if same else (low, middle)
            changes.append(high)
        instant += hour
    return changes


def test_fire_times_match_cron_rules_around_every_clock_change():
    rng = random.Random(2026)
    compared = with_fires = 0
    for zone_name in COMPARISON_ZONES:
        zone = ZoneInfo(zone_name)
        for change in clock_changes(zone, 2026):
            for _ in range(20):
                generated = generated_schedule(rng, change.astimezone(zone))[0]
                expression, matches, fixed_time = generated
                after = change + timedelta(
                    minutes=rng.randint(-180, 120), seconds=rng.randint(0, 59)
                )
                if rng.random() < 0.3:
                    after = after.astimezone(zone)  # maybe in the second pass of an hour
                until = after + timedelta(hours=4)
                expected = fires_read_off_the_clock(matches, fixed_time, zone, after, until)
                schedule = parse_crontab(expression)
                got = []
                for fire in fires_after(schedule, zone, after):
                    if fire > until:
                        break
                    got.append(fire)
                assert got == expected, (zone_name, expression, after)
                for earlier, later in itertools.pairwise(got):
                    assert previous_fire_time(schedule, zone, later) == earlier
                compared += 1
                with_fires += bool(expected)
    assert compared > 300 and with_fires > compared / 2


def test_fire_times_match_cron_day_rules_over_a_year():
    rng = random.Random(5)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(300):
        near = start + timedelta(days=rng.randint(0, 364), hours=rng.randint(0, 23))
        generated, day_matches, (hours, minutes) = generated_schedule(rng, near)
        days = (start.date() + timedelta(days=number) for number in range(365))
        every_fire = (
            datetime.combine(day, time(hour, minute), UTC)
            for day in days
            if day_matches(day)
            for hour in hours
            for minute in minutes
        )
        expected = list(itertools.islice(every_fire, 20))
        got = next_fire_times(parse_crontab(generated.expression), UTC, start - SECOND, 20)
        assert [fire for fire in got if fire.year == 2026] == expected, generated.expression
