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
PostgreSQL the schema ``demo`` of the service's database, read by roles of its own that
``migrate`` creates (the backend's ``demo``: datasources.backends.base.DemoSource).

Each source's vendor is served by a backend (datasources.backends), chosen by its URL's
engine: it fills in the connection options and says whether the source has logins.
"""

import copy
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import environ

from datasources.backends import (
    UnsupportedVendor,
    backend_for,
    backend_for_engine,
    backend_for_scheme,
)
from datasources.backends.base import Backend

ENV_PREFIX = "REPORTING_DATABASE_URL"
LOGINS_ENV_PREFIX = "REPORTING_DATABASE_LOGINS"
ALIAS_PREFIX = "reporting_"
LOGIN_ALIAS_SEPARATOR = "__"
DEFAULT_SOURCE = "default"
SOURCE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


def alias_for_source(name):
    return f"{ALIAS_PREFIX}{name}"


def alias_for_login(name, number):
    """The alias of a source's login ``number`` (1: the URL's own login)."""
    base = alias_for_source(name)
    return base if number == 1 else f"{base}{LOGIN_ALIAS_SEPARATOR}{number}"


def source_variable(name):
    """The environment variable that configures the source ``name``."""
    return ENV_PREFIX if name == DEFAULT_SOURCE else f"{ENV_PREFIX}_{name.upper()}"


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
        backend = backend_of_url(key.replace(LOGINS_ENV_PREFIX, ENV_PREFIX, 1), urls[name])
        if not backend.has_server_sessions:
            raise ValueError(
                f"{key}: data source '{name}' is {backend.label}, which has no logins."
            )
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


def demo_source_database(service_database, var_dir, secret_key):
    """The built-in demo source's settings, next to the service's database, and its
    further logins ``[(user, password), ...]``."""
    try:
        demo = backend_for_engine(service_database["ENGINE"]).demo
    except UnsupportedVendor:
        demo = None
    if demo is None:
        raise ValueError(
            "Set REPORTING_DATABASE_URL: the demo source needs "
            f"{' or '.join(backend.label for backend in demo_backends())}."
        )
    return demo.database(service_database, var_dir, secret_key)


def demo_backends():
    from datasources.backends import backends

    return [backend for backend in backends().values() if backend.demo is not None]


def backend_of_url(variable, url):
    """The backend serving ``url`` (of the environment variable ``variable``): the one
    naming its scheme, else the one of the Django engine django-environ gives it."""
    backend = backend_for_scheme(urlsplit(url).scheme)
    if backend is not None:
        return backend
    engine = environ.Env.db_url_config(url).get("ENGINE", "")
    try:
        return backend_for_engine(engine)
    except UnsupportedVendor as error:
        raise ValueError(f"{variable}: {error}") from None


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
        config["ENGINE"] = backend_of_url(source_variable(name), url).engine
        if url == service_url:
            config["TEST"] = {"MIRROR": "default"}
        configs[name] = config
    if DEFAULT_SOURCE not in configs:
        demo, demo_logins = demo_source_database(service_database, var_dir, secret_key)
        configs = {DEFAULT_SOURCE: demo, **configs}
        if demo_logins:
            logins[DEFAULT_SOURCE] = demo_logins
    databases = {}
    for name, config in configs.items():
        config.setdefault("OPTIONS", {})
        backend_for_engine(config["ENGINE"]).database_settings(config)
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


@dataclass(frozen=True)
class Source:
    """A configured data source: its name, its logins' aliases (the first login's
    first) and the backend of its vendor."""

    name: str
    aliases: tuple
    backend: Backend

    @property
    def connection(self):
        """The Django connection wrapper of its first login."""
        from django.db import connections

        return connections[self.aliases[0]]


def source_for(name):
    """The configured data source ``name``; KeyError for unknown names."""
    from django.conf import settings
    from django.db import connections

    aliases = tuple(settings.REPORT_DATA_SOURCE_LOGINS[name])
    return Source(name, aliases, backend_for(connections[aliases[0]]))


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


class ReportingDatabaseRouter:
    """Keep the service's tables out of the reporting aliases."""

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if db.startswith(ALIAS_PREFIX):
            return False
        return None
