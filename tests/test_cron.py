from datetime import date, datetime

import pytest

from reports.cron import CronError, parse_crontab


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
        ("@reboot", "@reboot has no meaning"),
        ("@often", "unknown shortcut '@often'"),
    ],
)
def test_invalid_expressions_say_why(expression, message):
    with pytest.raises(CronError) as error:
        parse_crontab(expression)
    assert message in str(error.value)
