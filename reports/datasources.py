"""Named data sources: the databases report SQL runs against.

Connections come only from the environment, never from the database:
``default`` is ``REPORTING_DATABASE_URL`` and every ``REPORTING_DATABASE_URL_<NAME>``
adds a source called ``<name>``. Each source becomes a Django database alias
``reporting_<name>`` so that report queries never share a connection (or a transaction)
with the service's own bookkeeping.

Without ``REPORTING_DATABASE_URL``, ``default`` is the built-in demo source, which can
never see the service's own tables: on SQLite a file of its own (``demo.sqlite3``), on
PostgreSQL the schema ``demo`` of the service's database, read by a role of its own that
``migrate`` creates (see reports.services.demo_source).
"""

import hashlib
import hmac
import re

import environ

ENV_PREFIX = "REPORTING_DATABASE_URL"
ALIAS_PREFIX = "reporting_"
DEFAULT_SOURCE = "default"
SOURCE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
DEMO_SCHEMA = "demo"
DEMO_ROLE_SUFFIX = "_demo_reader"
CONNECT_TIMEOUT_SECONDS = 10
# Connection parameters the demo source shares with the service's connection (TLS,
# application name, ...); never a role the service would switch to.
SHARED_CONNECTION_OPTIONS = (
    "application_name",
    "connect_timeout",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "target_session_attrs",
)
TCP_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def alias_for_source(name):
    return f"{ALIAS_PREFIX}{name}"


def source_urls_from_environment(environment):
    """Map data-source name -> database URL from environment variables."""
    urls = {DEFAULT_SOURCE: environment[ENV_PREFIX]} if environment.get(ENV_PREFIX) else {}
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


def demo_role_name(service_database):
    # From the service's user, not its database name: the test database and worker
    # processes started against it use the same role.
    return f"{service_database.get('USER') or 'reportsvc'}{DEMO_ROLE_SUFFIX}"[:63]


def demo_role_password(secret_key):
    """Derived from SECRET_KEY: nothing to store, the same in the web and the worker."""
    return hmac.new(secret_key.encode(), b"reportsvc demo reader", hashlib.sha256).hexdigest()


def demo_source_database(service_database, var_dir, secret_key):
    """The built-in demo source's connection settings, next to the service's database."""
    if service_database["ENGINE"].endswith("sqlite3"):
        return {
            "ENGINE": service_database["ENGINE"],
            "NAME": str(var_dir / "demo.sqlite3"),
            "TEST": {"NAME": str(var_dir / "test-demo.sqlite3")},
        }
    if not service_database["ENGINE"].endswith("postgresql"):
        raise ValueError("Set REPORTING_DATABASE_URL: the demo source needs SQLite or PostgreSQL.")
    return {
        **{key: service_database[key] for key in ("ENGINE", "NAME", "HOST", "PORT")},
        "USER": demo_role_name(service_database),
        "PASSWORD": demo_role_password(secret_key),
        "OPTIONS": {
            **{
                key: value
                for key, value in service_database.get("OPTIONS", {}).items()
                if key in SHARED_CONNECTION_OPTIONS
            },
            "options": f"-c search_path={DEMO_SCHEMA}",
        },
        # Tests: the same test database as the service, reached as the demo role.
        "TEST": {"MIRROR": "default"},
    }


def reporting_databases(environment, service_url, service_database, var_dir, secret_key):
    """Django DATABASES entries for every data source.

    A source on the same URL as the service's own database mirrors it in tests, so the
    test run uses one test database instead of creating a second one.
    """
    configs = {}
    for name, url in source_urls_from_environment(environment).items():
        config = environ.Env.db_url_config(url)
        if url == service_url:
            config["TEST"] = {"MIRROR": "default"}
        configs[name] = config
    if DEFAULT_SOURCE not in configs:
        demo = demo_source_database(service_database, var_dir, secret_key)
        configs = {DEFAULT_SOURCE: demo, **configs}
    databases = {}
    for name, config in configs.items():
        config.setdefault("OPTIONS", {})
        if config["ENGINE"].endswith("sqlite3"):
            config["OPTIONS"].setdefault("timeout", 20)
        else:
            config["OPTIONS"].setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
            # Notice a silently dropped connection instead of waiting on it forever.
            for option, value in TCP_KEEPALIVES.items():
                config["OPTIONS"].setdefault(option, value)
        config["CONN_HEALTH_CHECKS"] = True
        test = config.get("TEST", {})
        if test.get("MIRROR") == "default" and "NAME" in service_database.get("TEST", {}):
            test["NAME"] = service_database["TEST"]["NAME"]
        databases[alias_for_source(name)] = config
    return databases


def is_demo_source(name):
    """True when ``name`` is the built-in demo source (REPORTING_DATABASE_URL unset)."""
    from django.conf import settings

    return name == DEFAULT_SOURCE and not settings.REPORTING_DATABASE_URL


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
