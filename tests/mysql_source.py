"""A MySQL/MariaDB data source for one test, on the local server.

The server is shared by every checkout and CI run on the machine, so each test makes a
database and users whose names start with a prefix of its own (the checkout, the xdist
worker and a random part) and drops them afterwards. Root reaches the server over the
local socket (``MYSQL_ADMIN_SOCKET``, default /run/mysqld/mysqld.sock); reportsvc
connects over TCP (``MYSQL_TEST_HOST``/``MYSQL_TEST_PORT``, default 127.0.0.1:3306).

Without the driver or the server the tests are skipped, unless REQUIRE_MYSQL_TESTS=1
(CI sets it), when they fail instead.
"""

import contextlib
import copy
import hashlib
import os
import secrets
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from django.test import override_settings

from datasources.registry import alias_for_login, alias_for_source, reporting_databases

REQUIRED = os.environ.get("REQUIRE_MYSQL_TESTS") == "1"
ADMIN_SOCKET = os.environ.get("MYSQL_ADMIN_SOCKET", "/run/mysqld/mysqld.sock")
HOST = os.environ.get("MYSQL_TEST_HOST", "127.0.0.1")
PORT = int(os.environ.get("MYSQL_TEST_PORT", "3306"))
SOURCE = "shop"
CHECKOUT = hashlib.sha1(str(Path(__file__).resolve().parent.parent).encode()).hexdigest()[:6]


def unavailable():
    """Why MySQL tests cannot run here, or None."""
    try:
        import MySQLdb  # noqa: F401
    except ImportError:
        return "the mysqlclient driver is not installed (requirements-mysql.txt)"
    try:
        admin().close()
    except Exception as error:
        return f"no MySQL/MariaDB server for the tests as root on {ADMIN_SOCKET}: {error}"
    return None


def require_mysql():
    """Skip the test without the driver or the server, or fail under REQUIRE_MYSQL_TESTS."""
    reason = unavailable()
    if reason:
        if REQUIRED:
            pytest.fail(f"REQUIRE_MYSQL_TESTS=1 but {reason}")
        pytest.skip(reason)


def admin(database=None):
    import MySQLdb

    options = {"unix_socket": ADMIN_SOCKET, "user": "root", "charset": "utf8mb4"}
    if database:
        options["database"] = database
    connection = MySQLdb.connect(**options)
    connection.autocommit(True)
    return connection


def admin_sql(statement, params=None, database=None):
    connection = admin(database)
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall() if cursor.description else None
    finally:
        connection.close()


def prefix():
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"rt_{CHECKOUT}_{worker}_{secrets.token_hex(3)}"


class MySQLSource:
    """A database ``<prefix>`` and its users for one test. ``reader`` is the user the
    data source connects as (SELECT on the database and nothing else) unless the test
    makes others; ``sql`` runs statements in the database as root."""

    def __init__(self):
        self.prefix = prefix()
        self.database = self.prefix
        self.users = []
        self.roles = []
        admin_sql(f"CREATE DATABASE `{self.database}` CHARACTER SET utf8mb4")

    def sql(self, statement, params=None):
        return admin_sql(statement, params, database=self.database)

    def user(self, suffix, password=None, grants=("SELECT",)):
        """A user ``<prefix>_<suffix>`` holding ``grants`` on the test database."""
        name = f"{self.prefix}_{suffix}"[:80]
        password = password or secrets.token_hex(8)
        admin_sql(f"CREATE USER '{name}'@'%%' IDENTIFIED BY %s", [password])
        self.users.append(name)
        if grants:
            admin_sql(f"GRANT {', '.join(grants)} ON `{self.database}`.* TO '{name}'@'%'")
        return name, password

    def role(self, suffix):
        """A role ``<prefix>_<suffix>``, dropped with the database."""
        name = f"{self.prefix}_{suffix}"
        admin_sql(f"CREATE ROLE '{name}'")
        self.roles.append(name)
        return name

    def url(self, user, password, scheme="mysql", host=HOST, port=PORT):
        return f"{scheme}://{user}:{password}@{host}:{port}/{self.database}"

    def drop(self):
        for name in self.users:
            for (thread,) in admin_sql(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", [name]
            ):
                with contextlib.suppress(Exception):
                    admin_sql(f"KILL {int(thread)}")
            admin_sql(f"DROP USER IF EXISTS '{name}'@'%'")
        for name in self.roles:
            admin_sql(f"DROP ROLE IF EXISTS '{name}'")
        admin_sql(f"DROP DATABASE IF EXISTS `{self.database}`")


LOGINS = 3  # aliases the test source has: its URL's login and two more


def aliases(name=SOURCE):
    return [alias_for_login(name, number) for number in range(1, LOGINS + 1)]


def add_placeholder_aliases():
    """Aliases for a MySQL source, made before the test databases are: a test's allowed
    databases are fixed when it starts. Each mirrors itself (no test database is made
    for it, no flush empties it); configured_source fills them in for one test."""
    entries = {}
    for alias in aliases():
        entries[alias] = {
            "ENGINE": "datasources.backends.mysql_engine",
            "NAME": "",
            "USER": "",
            "HOST": HOST,
            "PORT": PORT,
            "OPTIONS": {},
            "TEST": {"MIRROR": alias},
        }
    connections.configure_settings({"default": settings.DATABASES["default"], **entries})
    settings.DATABASES.update(entries)


@contextlib.contextmanager
def configured_source(url, logins="", name=SOURCE):
    """The data source ``name`` configured from ``url`` (and ``logins``: up to two
    more) as the environment would, for the block; its connections."""
    environment = {f"REPORTING_DATABASE_URL_{name.upper()}": url}
    if logins:
        environment[f"REPORTING_DATABASE_LOGINS_{name.upper()}"] = logins
    service = settings.DATABASES["default"]
    made = reporting_databases(environment, "", service, settings.VAR_DIR, settings.SECRET_KEY)
    used = [alias for alias in aliases(name) if alias in made]
    saved = {alias: copy.deepcopy(connections[alias].settings_dict) for alias in used}
    for alias in used:
        connections[alias].close()
        made[alias]["TEST"] = {"MIRROR": alias}
        connections[alias].settings_dict.update(made[alias])
    logins_by_source = {**settings.REPORT_DATA_SOURCE_LOGINS, name: used}
    sources = {**settings.REPORT_DATA_SOURCES, name: alias_for_source(name)}
    try:
        with override_settings(
            REPORT_DATA_SOURCES=sources, REPORT_DATA_SOURCE_LOGINS=logins_by_source
        ):
            yield [connections[alias] for alias in used]
    finally:
        for alias in used:
            with contextlib.suppress(Exception):
                connections[alias].close()
            connections[alias].settings_dict.clear()
            connections[alias].settings_dict.update(saved[alias])
