from pathlib import Path

import pytest

from datasources.backends.postgresql import demo_role_password
from datasources.registry import (
    ReportingDatabaseRouter,
    login_aliases_by_source,
    reporting_databases,
    source_urls_from_environment,
)

SERVICE_URL = "postgres://app@db/app"
SERVICE_DATABASE = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": "app",
    "USER": "app",
    "PASSWORD": "",
    "HOST": "db",
    "PORT": "",
}
VAR = Path("/srv/var")


def databases(environment, service_url=SERVICE_URL, service=SERVICE_DATABASE):
    return reporting_databases(environment, service_url, service, VAR, "key")


def test_without_a_reporting_url_there_is_no_configured_default():
    assert source_urls_from_environment({}) == {}


def test_reporting_url_and_named_sources():
    urls = source_urls_from_environment(
        {
            "REPORTING_DATABASE_URL": "postgres://reader@replica/app",
            "REPORTING_DATABASE_URL_WAREHOUSE": "postgres://reader@dwh/dwh",
            "UNRELATED": "x",
        }
    )
    assert urls == {
        "default": "postgres://reader@replica/app",
        "warehouse": "postgres://reader@dwh/dwh",
    }


def test_bad_source_name_is_refused():
    with pytest.raises(ValueError, match="REPORTING_DATABASE_URL_9X: data source names"):
        source_urls_from_environment({"REPORTING_DATABASE_URL_9X": "sqlite:///x"})
    # A double underscore is how a source's further logins are named.
    with pytest.raises(ValueError, match="REPORTING_DATABASE_URL_A__2: data source names"):
        source_urls_from_environment({"REPORTING_DATABASE_URL_A__2": "postgres://r@h/d"})


def test_further_logins_become_aliases_of_the_same_server_and_options():
    configured = databases(
        {
            "REPORTING_DATABASE_URL": "postgres://reader1:pw1@replica:6432/app?sslmode=require",
            "REPORTING_DATABASE_LOGINS": "reader2:pw2, reader3:p%2Cw%3A3",
            "REPORTING_DATABASE_URL_DWH": "postgres://dwh1@dwh/dwh",
            "REPORTING_DATABASE_LOGINS_DWH": "dwh2",
        }
    )
    assert login_aliases_by_source(configured) == {
        "default": ["reporting_default", "reporting_default__2", "reporting_default__3"],
        "dwh": ["reporting_dwh", "reporting_dwh__2"],
    }
    first, third = configured["reporting_default"], configured["reporting_default__3"]
    assert (third["USER"], third["PASSWORD"]) == ("reader3", "p,w:3")
    for key in ("HOST", "PORT", "NAME"):
        assert third[key] == first[key]
    assert third["OPTIONS"] == first["OPTIONS"]
    assert third["OPTIONS"]["sslmode"] == "require"
    assert configured["reporting_dwh__2"]["PASSWORD"] == ""
    # In tests a further login uses the test database its first login uses.
    assert configured["reporting_dwh__2"]["TEST"] == {"MIRROR": "reporting_dwh"}
    mirrored = databases(
        {"REPORTING_DATABASE_URL": SERVICE_URL, "REPORTING_DATABASE_LOGINS": "other:x"}
    )
    assert mirrored["reporting_default__2"]["TEST"] == {"MIRROR": "default"}


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        (
            {"REPORTING_DATABASE_LOGINS": "r2:pw"},
            "REPORTING_DATABASE_LOGINS: there is no data source 'default' to add logins to: "
            "set REPORTING_DATABASE_URL (its first login) too.",
        ),
        (
            {"REPORTING_DATABASE_URL": "postgres://r@h/d", "REPORTING_DATABASE_LOGINS_X": "r2"},
            "REPORTING_DATABASE_LOGINS_X: there is no data source 'x' to add logins to: set "
            "REPORTING_DATABASE_URL_X (its first login) too.",
        ),
        (
            {"REPORTING_DATABASE_URL": "sqlite:///x", "REPORTING_DATABASE_LOGINS": "r2"},
            "REPORTING_DATABASE_LOGINS: data source 'default' is SQLite, which has no logins.",
        ),
        (
            {"REPORTING_DATABASE_URL": "postgres://r@h/d", "REPORTING_DATABASE_LOGINS": "a:s,,b"},
            "REPORTING_DATABASE_LOGINS: entry 2 has no user name",
        ),
        (
            {
                "REPORTING_DATABASE_URL": "postgres://r:secret@h/d",
                "REPORTING_DATABASE_LOGINS": "r:other-secret",
            },
            "REPORTING_DATABASE_LOGINS: the login 'r' is listed twice",
        ),
    ],
)
def test_bad_logins_are_refused_naming_the_variable_and_never_a_password(environment, message):
    with pytest.raises(ValueError) as error:
        databases(environment)
    assert str(error.value).startswith(message)
    assert "secret" not in str(error.value)


def test_a_source_on_a_vendor_without_a_backend_is_refused_at_start():
    with pytest.raises(ValueError) as error:
        databases({"REPORTING_DATABASE_URL_ERP": "oracle://reader:secret@erp/erp"})
    assert str(error.value).startswith(
        "REPORTING_DATABASE_URL_ERP: Data sources on oracle are not supported; use one of: "
        "postgres://, sqlite://"
    )
    assert "secret" not in str(error.value)


def test_the_postgres_demo_source_is_a_reader_role_of_its_own_in_the_demo_schema():
    service = {
        **SERVICE_DATABASE,
        "OPTIONS": {"application_name": "web", "sslmode": "require", "assume_role": "app"},
    }
    demo = databases({}, service=service)["reporting_default"]
    assert demo["OPTIONS"]["application_name"] == "web"
    assert demo["OPTIONS"]["sslmode"] == "require"
    assert "assume_role" not in demo["OPTIONS"]  # never the service's role
    assert demo["USER"] == "app_demo_reader_1" != SERVICE_DATABASE["USER"]
    assert demo["PASSWORD"] == demo_role_password("key", "app_demo_reader_1") != ""
    assert (demo["HOST"], demo["NAME"]) == ("db", "app")
    assert demo["OPTIONS"]["options"] == "-c search_path=demo -c TimeZone=UTC"
    assert demo["TEST"] == {"MIRROR": "default"}
    # A pool of logins, each with a password of its own, for runs side by side.
    configured = databases({}, service=service)
    logins = login_aliases_by_source(configured)["default"]
    assert [configured[alias]["USER"] for alias in logins] == [
        f"app_demo_reader_{number}" for number in range(1, 5)
    ]
    assert len({configured[alias]["PASSWORD"] for alias in logins}) == 4
    assert all(configured[alias]["TEST"] == {"MIRROR": "default"} for alias in logins)


def test_the_sqlite_demo_source_is_a_file_of_its_own():
    service = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(VAR / "reportsvc.sqlite3")}
    demo = databases({}, f"sqlite:///{VAR}/reportsvc.sqlite3", service)["reporting_default"]
    assert demo["NAME"] == str(VAR / "demo.sqlite3")
    assert demo["TEST"] == {"NAME": str(VAR / "test-demo.sqlite3")}


def test_sources_become_aliases_and_same_url_mirrors_in_tests():
    configured = databases(
        {
            "REPORTING_DATABASE_URL": SERVICE_URL,
            "REPORTING_DATABASE_URL_DWH": "postgres://reader@dwh/dwh",
        }
    )
    assert list(configured) == ["reporting_default", "reporting_dwh"]
    assert configured["reporting_default"]["TEST"] == {"MIRROR": "default"}
    assert configured["reporting_dwh"]["HOST"] == "dwh"
    assert configured["reporting_dwh"]["OPTIONS"]["connect_timeout"] == 10
    assert "TEST" not in configured["reporting_dwh"]


def test_service_tables_are_never_migrated_into_report_sources():
    router = ReportingDatabaseRouter()
    assert router.allow_migrate("reporting_default", "runs") is False
    assert router.allow_migrate("default", "runs") is None
