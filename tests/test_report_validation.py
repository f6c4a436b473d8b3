import pytest
from django.core.exceptions import ValidationError

from reports.models import Report
from reports.services.validation import check_report

pytestmark = pytest.mark.django_db


def clean_errors(**fields):
    report = Report(name="Orders", slug="orders", sql="SELECT 1", **fields)
    with pytest.raises(ValidationError) as error:
        report.full_clean()
    return error.value.message_dict


def test_name_slug_and_sql_make_a_valid_manual_only_report(settings):
    report = Report.objects.create(name="Orders", slug="orders", sql="SELECT 1")
    report.full_clean()
    assert report.schedule == ""
    assert report.data_source == "default"
    assert report.timezone == settings.TIME_ZONE
    assert report.enabled
    assert report.effective_timeout_seconds == settings.REPORT_TIMEOUT_SECONDS
    assert report.effective_max_rows == settings.REPORT_MAX_ROWS


def test_slug_format():
    report = Report(name="Orders", slug="no spaces/or slashes", sql="SELECT 1")
    with pytest.raises(ValidationError) as error:
        report.full_clean()
    assert "slug" in error.value.message_dict


def test_bad_cron_says_what_is_wrong():
    errors = clean_errors(schedule="0 25 * * *")
    assert errors["schedule"] == ["Invalid schedule '0 25 * * *': hour: 25 is out of range 0-23."]


def test_unknown_timezone():
    errors = clean_errors(timezone="Mars/Olympus")
    assert errors["timezone"] == [
        "Unknown time zone 'Mars/Olympus': use an IANA name such as 'Europe/Berlin' or 'UTC'."
    ]


def test_unknown_data_source_lists_the_configured_ones():
    errors = clean_errors(data_source="warehouse")
    assert (
        "Unknown data source 'warehouse': configured sources are default"
        in (errors["data_source"][0])
    )


def save_time_problem(report):
    """What the admin and the API say on save: the model's rules, then the database's."""
    try:
        report.clean_fields()
        check_report(report)
    except ValidationError as error:
        return error.message_dict["sql"][0]
    return None


@pytest.mark.django_db(databases="__all__")
@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT 1; DROP TABLE demo_orders", "A report runs exactly one statement"),
        ("CREATE TABLE evil (a int)", "Reports can only read data"),
        ("", "This field cannot be blank."),
    ],
)
def test_sql_must_be_one_read_statement(sql, message):
    report = Report(name="Orders", slug="orders", sql=sql)
    assert message in save_time_problem(report)


def test_limits_must_be_positive():
    errors = clean_errors(timeout_seconds=0, max_rows=0)
    assert set(errors) == {"timeout_seconds", "max_rows"}


def test_limits_have_upper_bounds_a_run_can_honour():
    errors = clean_errors(
        timeout_seconds=2147483647, max_rows=2**63 - 1, max_retries=11, retention_days=10**6
    )
    assert errors["timeout_seconds"] == ["Ensure this value is less than or equal to 86400."]
    assert errors["max_rows"] == ["Ensure this value is less than or equal to 9223372036854775806."]
    assert set(errors) == {"timeout_seconds", "max_rows", "max_retries", "retention_days"}


def test_an_alert_on_the_row_count_needs_its_threshold():
    errors = clean_errors(alert_condition="rows_above")
    assert errors == {"alert_threshold": ["Set N for this alert condition."]}


def test_valid_schedule_and_timezone_pass():
    report = Report(
        name="Orders",
        slug="orders",
        sql="SELECT 1",
        schedule="0 6 * * mon-fri",
        timezone="Europe/Berlin",
    )
    report.full_clean()
