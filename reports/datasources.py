"""Named data sources: the databases report SQL runs against.

Connections come only from the environment, never from the database:
``default`` is ``REPORTING_DATABASE_URL`` (falling back to ``DATABASE_URL``) and every
``REPORTING_DATABASE_URL_<NAME>`` adds a source called ``<name>``. Each source becomes a
Django database alias ``reporting_<name>`` so that report queries never share a
connection (or a transaction) with the service's own bookkeeping.
"""

import re

import environ

ENV_PREFIX = "REPORTING_DATABASE_URL"
ALIAS_PREFIX = "reporting_"
DEFAULT_SOURCE = "default"
SOURCE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
TCP_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def alias_for_source(name):
    return f"{ALIAS_PREFIX}{name}"


def source_urls_from_environment(environment, database_url):
    """Map data-source name -> database URL from environment variables."""
    urls = {DEFAULT_SOURCE: environment.get(ENV_PREFIX) or database_url}
    for key, value in environment.items():
        if not key.startswith(ENV_PREFIX + "_") or not value:
            continue
        name = key[len(ENV_PREFIX) + 1 :].lower()
        if not SOURCE_NAME_PATTERN.match(name):
            raise ValueError(
                f"{key}: data source names must be letters, digits and underscores, "
                "starting with a letter"
            )
        urls[name] = value
    return urls


def reporting_databases(environment, database_url, default_database):
    """Django DATABASES entries for every data source.

    A source on the same URL as the service's own database mirrors it in tests, so the
    test run uses one test database instead of creating a second one.
    """
    databases = {}
    for name, url in source_urls_from_environment(environment, database_url).items():
        config = environ.Env.db_url_config(url)
        config.setdefault("OPTIONS", {})
        if config["ENGINE"].endswith("sqlite3"):
            config["OPTIONS"].setdefault("timeout", 20)
        else:
            # Notice a silently dropped connection instead of waiting on it forever.
            for option, value in TCP_KEEPALIVES.items():
                config["OPTIONS"].setdefault(option, value)
        config["CONN_HEALTH_CHECKS"] = True
        if url == database_url:
            config["TEST"] = {"MIRROR": "default"}
            if "TEST" in default_database and "NAME" in default_database["TEST"]:
                config["TEST"]["NAME"] = default_database["TEST"]["NAME"]
        databases[alias_for_source(name)] = config
    return databases


def data_source_names():
    from django.conf import settings

    return sorted(settings.REPORT_DATA_SOURCES)


def connection_for_source(name):
    """The Django connection wrapper of a data source; KeyError for unknown names."""
    from django.conf import settings
    from django.db import connections

    return connections[settings.REPORT_DATA_SOURCES[name]]


class ReportingDatabaseRouter:
    """Keep the service's tables out of the reporting aliases."""

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if db.startswith(ALIAS_PREFIX):
            return False
        return None
