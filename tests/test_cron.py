from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from reports.cron import CronError, next_fire_time, next_fire_times, parse_crontab


def test_every_fifteen_minutes():
    assert sorted(parse_crontab("*/15 * * * *").minutes) == [0, 15, 30, 45]


def test_ranges_lists_and_steps_combine():
    schedule = parse_crontab("0-10/5,30,45-47 8-17/3 * * *")
    assert sorted(schedule.minutes) == [0, 5, 10, 30, 45, 46, 47]
    assert sorted(schedule.hours) == [8, 11, 14, 17]


@pytest.mark.parametrize("sunday", ["0", "7", "sun", "SUN"])
def test_sunday_is_zero_seven_or_name(sunday):
    assert parse_crontab(f"0 0 * * {sunday}").days_of_week == {0}


def test_weekday_names_and_ranges():
    assert parse_crontab("0 6 * * mon-fri").days_of_week == {1, 2, 3, 4, 5}
    assert parse_crontab("0 6 * * 1-5").days_of_week == {1, 2, 3, 4, 5}
    assert parse_crontab("0 6 * * 5-7").days_of_week == {5, 6, 0}


def test_month_names():
    assert parse_crontab("0 0 1 jan,Jul *").months == {1, 7}


def test_day_of_month_or_day_of_week_when_both_restricted():
    # crontab(5): "1,15 * * fri" style schedules run on the 1st, the 15th AND every Friday.
    schedule = parse_crontab("0 0 1,15 * fri")
    assert schedule.matches_day(date(2026, 11, 1))  # a Sunday, but the 1st
    assert schedule.matches_day(date(2026, 11, 27))  # a Friday, not the 1st/15th
    assert not schedule.matches_day(date(2026, 11, 26))  # Thursday the 26th


def test_day_fields_and_when_one_is_star():
    schedule = parse_crontab("0 0 * * fri")
    assert schedule.matches_day(date(2026, 11, 27))
    assert not schedule.matches_day(date(2026, 11, 1))
    # A field starting with '*' (even "*/2") counts as unrestricted, as in cron.
    stepped = parse_crontab("0 0 */2 * fri")
    assert stepped.matches_day(date(2026, 11, 27))  # Friday the 27th (odd day)
    assert not stepped.matches_day(date(2026, 11, 20))  # Friday the 20th (even day)
    assert not stepped.matches_day(date(2026, 11, 3))  # odd day, Tuesday


def test_matches_a_wall_clock_time():
    schedule = parse_crontab("30 6 * * mon-fri")
    assert schedule.matches(datetime(2026, 11, 26, 6, 30))
    assert not schedule.matches(datetime(2026, 11, 28, 6, 30))  # Saturday
    assert not schedule.matches(datetime(2026, 11, 26, 6, 31))


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
