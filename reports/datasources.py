"""Named data sources: the databases report SQL runs against.

Connections come only from the environment, never from the database:
``default`` is ``REPORTING_DATABASE_URL`` and every ``REPORTING_DATABASE_URL_<NAME>``
adds a source called ``<name>``. Each source becomes a Django database alias
``reporting_<name>`` so that report queries never share a connection (or a transaction)
with the service's own bookkeeping.

A server source may have more logins (``REPORTING_DATABASE_LOGINS`` for ``default``,
``REPORTING_DATABASE_LOGINS_<NAME>``: ``user:password`` pairs, URL-encoded, separated
by commas) for the same host, database and options: each becomes an alias
``reporting_<name>__2``, ``__3``, ... Runs lease a login each
(reports.services.logins), so a report can never reach another run's session.

Without ``REPORTING_DATABASE_URL``, ``default`` is the built-in demo source, which can
never see the service's own tables: on SQLite a file of its own (``demo.sqlite3``), on
PostgreSQL the schema ``demo`` of the service's database, read by a role of its own that
``migrate`` creates (see reports.services.demo_source).
"""

import copy
import hashlib
import hmac
import re
from urllib.parse import unquote, urlsplit

import environ

ENV_PREFIX = "REPORTING_DATABASE_URL"
LOGINS_ENV_PREFIX = "REPORTING_DATABASE_LOGINS"
ALIAS_PREFIX = "reporting_"
LOGIN_ALIAS_SEPARATOR = "__"
DEFAULT_SOURCE = "default"
SOURCE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
DEMO_SCHEMA = "demo"
DEMO_ROLE_SUFFIX = "_demo_reader"
# Logins of the PostgreSQL demo source: runs of it at once (make run's worker runs two).
DEMO_LOGINS = 4
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


def alias_for_login(name, number):
    """The alias of a source's login ``number`` (1: the URL's own login)."""
    base = alias_for_source(name)
    return base if number == 1 else f"{base}{LOGIN_ALIAS_SEPARATOR}{number}"


def logins_variable(name):
    """The environment variable that adds logins to the source ``name``."""
    return LOGINS_ENV_PREFIX if name == DEFAULT_SOURCE else f"{LOGINS_ENV_PREFIX}_{name.upper()}"


def source_urls_from_environment(environment):
    """Map data-source name -> database URL from environment variables."""
    urls = {DEFAULT_SOURCE: environment[ENV_PREFIX]} if environment.get(ENV_PREFIX) else {}
    for key, value in environment.items():
        if not key.startswith(ENV_PREFIX + "_") or not value:
            continue
        name = key[len(ENV_PREFIX) + 1 :].lower()
        if not SOURCE_NAME_PATTERN.match(name) or LOGIN_ALIAS_SEPARATOR in name:
            raise ValueError(
                f"{key}: data source names must be letters, digits and single "
                "underscores, starting with a letter"
            )
        urls[name] = value
    return urls


def source_logins_from_environment(environment, urls):
    """Map data-source name -> its further logins ``[(user, password), ...]``.

    Raises ValueError naming the variable (never a password) for a source that is not
    configured or is SQLite, an entry without a user name, or a login listed twice.
    """
    logins = {}
    for key, value in environment.items():
        if key != LOGINS_ENV_PREFIX and not key.startswith(LOGINS_ENV_PREFIX + "_"):
            continue
        if not value.strip():
            continue
        name = key[len(LOGINS_ENV_PREFIX) + 1 :].lower() or DEFAULT_SOURCE
        if name not in urls:
            url_variable = ENV_PREFIX + key[len(LOGINS_ENV_PREFIX) :]
            raise ValueError(
                f"{key}: there is no data source '{name}' to add logins to: set "
                f"{url_variable} (its first login) too."
            )
        if urls[name].startswith("sqlite"):
            raise ValueError(f"{key}: data source '{name}' is SQLite, which has no logins.")
        first_user = unquote(urlsplit(urls[name]).username or "")
        seen, pairs = {first_user}, []
        for number, entry in enumerate(value.split(","), start=1):
            user, _, password = (unquote(part) for part in entry.strip().partition(":"))
            if not user:
                raise ValueError(
                    f"{key}: entry {number} has no user name; write user:password pairs "
                    "separated by commas (URL-encoded)."
                )
            if user in seen:
                raise ValueError(
                    f"{key}: the login '{user}' is listed twice (the URL's user is the "
                    "first login)."
                )
            seen.add(user)
            pairs.append((user, password))
        logins[name] = pairs
    return logins


def demo_role_name(service_database):
    """The demo source's group role: it holds the read grants, its logins inherit them."""
    # From the service's user, not its database name: the test database and worker
    # processes started against it use the same role.
    return f"{service_database.get('USER') or 'reportsvc'}{DEMO_ROLE_SUFFIX}"[:63]


def demo_login_names(service_database):
    """The demo source's logins, members of the group role and of nothing else."""
    group = demo_role_name(service_database)[:60]
    return [f"{group}_{number}" for number in range(1, DEMO_LOGINS + 1)]


def demo_role_password(secret_key, login):
    """Derived from SECRET_KEY: nothing to store, the same in the web and the worker."""
    message = f"reportsvc demo reader {login}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


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
    login = demo_login_names(service_database)[0]
    return {
        **{key: service_database[key] for key in ("ENGINE", "NAME", "HOST", "PORT")},
        "USER": login,
        "PASSWORD": demo_role_password(secret_key, login),
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
    """Django DATABASES entries for every data source and each of its logins.

    A source on the same URL as the service's own database mirrors it in tests, so the
    test run uses one test database instead of creating a second one; a source's further
    logins mirror what its first login does.
    """
    configs = {}
    urls = source_urls_from_environment(environment)
    logins = source_logins_from_environment(environment, urls)
    for name, url in urls.items():
        config = environ.Env.db_url_config(url)
        if url == service_url:
            config["TEST"] = {"MIRROR": "default"}
        configs[name] = config
    if DEFAULT_SOURCE not in configs:
        demo = demo_source_database(service_database, var_dir, secret_key)
        configs = {DEFAULT_SOURCE: demo, **configs}
        if not demo["ENGINE"].endswith("sqlite3"):
            logins[DEFAULT_SOURCE] = [
                (login, demo_role_password(secret_key, login))
                for login in demo_login_names(service_database)[1:]
            ]
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
            if config["ENGINE"].endswith("postgresql"):
                # The zone Django sets on every new connection, given at connect: each
                # run connects anew, and this saves it a round trip.
                options = config["OPTIONS"].get("options", "")
                if "TimeZone" not in options:
                    config["OPTIONS"]["options"] = f"{options} -c TimeZone=UTC".strip()
        config["CONN_HEALTH_CHECKS"] = True
        test = config.get("TEST", {})
        if test.get("MIRROR") == "default" and "NAME" in service_database.get("TEST", {}):
            test["NAME"] = service_database["TEST"]["NAME"]
        first = alias_for_source(name)
        databases[first] = config
        for number, (user, password) in enumerate(logins.get(name, []), start=2):
            login = copy.deepcopy(config)
            login.update(USER=user, PASSWORD=password)
            login["TEST"] = copy.deepcopy(test) if test.get("MIRROR") else {"MIRROR": first}
            databases[alias_for_login(name, number)] = login
    return databases


def login_aliases_by_source(databases):
    """Data-source name -> the aliases of its logins, the first login's first."""
    by_source = {}
    for alias in databases:
        if alias.startswith(ALIAS_PREFIX):
            name = alias[len(ALIAS_PREFIX) :].partition(LOGIN_ALIAS_SEPARATOR)[0]
            by_source.setdefault(name, []).append(alias)
    return by_source


def is_demo_source(name):
    """True when ``name`` is the built-in demo source (REPORTING_DATABASE_URL unset)."""
    from django.conf import settings

    return name == DEFAULT_SOURCE and not settings.REPORTING_DATABASE_URL


def data_source_names():
    from django.conf import settings

    return sorted(settings.REPORT_DATA_SOURCES)


def connection_for_source(name):
    """The Django connection wrapper of a data source (its first login); KeyError for
    unknown names. Report SQL runs on a leased login's connection instead
    (reports.services.logins)."""
    from django.conf import settings
    from django.db import connections

    return connections[settings.REPORT_DATA_SOURCES[name]]


def login_aliases(name):
    """The aliases of a data source's logins, the first login's first; KeyError for
    unknown names."""
    from django.conf import settings

    return list(settings.REPORT_DATA_SOURCE_LOGINS[name])


def has_server_sessions(vendor):
    """Whether a database keeps sessions that other sessions could see or end: all but
    SQLite, whose "sessions" are file handles of the process."""
    return vendor != "sqlite"


class ReportingDatabaseRouter:
    """Keep the service's tables out of the reporting aliases."""

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if db.startswith(ALIAS_PREFIX):
            return False
        return None
