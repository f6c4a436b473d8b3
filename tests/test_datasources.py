from pathlib import Path

import pytest

from reports.datasources import (
    ReportingDatabaseRouter,
    demo_role_password,
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


def test_the_postgres_demo_source_is_a_reader_role_of_its_own_in_the_demo_schema():
    service = {
        **SERVICE_DATABASE,
        "OPTIONS": {"application_name": "web", "sslmode": "require", "assume_role": "app"},
    }
    demo = databases({}, service=service)["reporting_default"]
    assert demo["OPTIONS"]["application_name"] == "web"
    assert demo["OPTIONS"]["sslmode"] == "require"
    assert "assume_role" not in demo["OPTIONS"]  # never the service's role
    assert demo["USER"] == "app_demo_reader" != SERVICE_DATABASE["USER"]
    assert demo["PASSWORD"] == demo_role_password("key") != ""
    assert (demo["HOST"], demo["NAME"]) == ("db", "app")
    assert demo["OPTIONS"]["options"] == "-c search_path=demo"
    assert demo["TEST"] == {"MIRROR": "default"}


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
