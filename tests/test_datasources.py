import pytest

from reports.datasources import (
    ReportingDatabaseRouter,
    reporting_databases,
    source_urls_from_environment,
)

SERVICE_URL = "postgres://app@db/app"


def test_default_source_falls_back_to_database_url():
    assert source_urls_from_environment({}, SERVICE_URL) == {"default": SERVICE_URL}


def test_reporting_url_and_named_sources():
    urls = source_urls_from_environment(
        {
            "REPORTING_DATABASE_URL": "postgres://reader@replica/app",
            "REPORTING_DATABASE_URL_WAREHOUSE": "postgres://reader@dwh/dwh",
            "UNRELATED": "x",
        },
        SERVICE_URL,
    )
    assert urls == {
        "default": "postgres://reader@replica/app",
        "warehouse": "postgres://reader@dwh/dwh",
    }


def test_bad_source_name_is_refused():
    with pytest.raises(ValueError, match="REPORTING_DATABASE_URL_9X: data source names"):
        source_urls_from_environment({"REPORTING_DATABASE_URL_9X": "sqlite:///x"}, SERVICE_URL)


def test_sources_become_aliases_and_same_url_mirrors_in_tests():
    databases = reporting_databases(
        {"REPORTING_DATABASE_URL_DWH": "postgres://reader@dwh/dwh"}, SERVICE_URL, {}
    )
    assert set(databases) == {"reporting_default", "reporting_dwh"}
    assert databases["reporting_default"]["TEST"] == {"MIRROR": "default"}
    assert databases["reporting_dwh"]["HOST"] == "dwh"
    assert "TEST" not in databases["reporting_dwh"]


def test_service_tables_are_never_migrated_into_report_sources():
    router = ReportingDatabaseRouter()
    assert router.allow_migrate("reporting_default", "runs") is False
    assert router.allow_migrate("default", "runs") is None
