"""The built-in demo source: where demo data lives when REPORTING_DATABASE_URL is unset.

On SQLite it is a file of its own. On PostgreSQL it is the schema ``demo`` of the
service's database, read through roles of its own, so report SQL can never reach the
service's tables: a group role (no login) holds SELECT on ``demo`` and nothing else,
and DEMO_LOGINS login roles are members of it and of nothing else, so runs can use
them side by side without reaching each other's sessions (reports.services.logins).
``migrate`` creates them (``provision_demo_source`` runs after every migrate,
idempotently; a database user with CREATEROLE is enough); demo data is written through
the service's own connection, which owns the schema.
"""

import contextlib
import logging
import re
import time

from django.conf import settings
from django.db import DatabaseError, connections, transaction

from reports.datasources import (
    DEFAULT_SOURCE,
    DEMO_SCHEMA,
    connection_for_source,
    demo_role_name,
    is_demo_source,
    login_aliases,
)

logger = logging.getLogger(__name__)
ROLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DemoSourceUnavailable(Exception):
    """The demo source cannot be set up here; ``str()`` says what to do instead."""


def _demo_roles():
    """The group role, and each login with its password."""
    group = demo_role_name(settings.DATABASES["default"])
    logins = [
        (connections[alias].settings_dict["USER"], connections[alias].settings_dict["PASSWORD"])
        for alias in login_aliases(DEFAULT_SOURCE)
    ]
    for role in [group, *(login for login, _ in logins)]:
        if not ROLE_NAME.match(role):
            raise DemoSourceUnavailable(f"'{role}' cannot be a role name: rename the database.")
    return group, logins


def provision_demo_source(using="default"):
    """Create (or refresh) the PostgreSQL demo schema, its group role and its logins.

    Nothing to do on SQLite or when REPORTING_DATABASE_URL names the default source.
    """
    service = connections[using]
    if not is_demo_source(DEFAULT_SOURCE) or service.vendor != "postgresql":
        return False
    group, logins = _demo_roles()
    # Roles are cluster-wide: two processes migrating side by side (parallel tests, two
    # deploys) may race to create or alter the same role. The loser tries again.
    for attempt in range(3):
        try:
            with transaction.atomic(using=using), service.cursor() as cursor:
                create_demo_schema_and_roles(cursor, group, logins)
            break
        except DatabaseError as error:
            if attempt == 2:
                raise DemoSourceUnavailable(
                    f"Could not create the demo source's roles '{group}' and its logins "
                    f"({error}). Set REPORTING_DATABASE_URL to a read-only role (README: "
                    "Security), or let the service's database user create roles."
                ) from error
            time.sleep(0.2 * (attempt + 1))
    return True


# What a role the demo source uses may never have. Only a superuser may set or clear
# these on an existing role, so ALTER ROLE leaves them out and they are checked instead.
NEVER = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


def _create_or_alter(cursor, role, options, params=()):
    cursor.execute(
        "SELECT rolsuper OR rolreplication OR rolbypassrls FROM pg_roles WHERE rolname = %s",
        [role],
    )
    existing = cursor.fetchone()
    if existing is None:
        cursor.execute(f'CREATE ROLE "{role}" WITH {options} {NEVER}', list(params))
        return
    if existing[0]:
        raise DemoSourceUnavailable(
            f"The role '{role}' exists with superuser, replication or bypassrls powers, "
            "which the demo source never gives its roles: drop it, then migrate again."
        )
    cursor.execute(f'ALTER ROLE "{role}" WITH {options} NOCREATEDB NOCREATEROLE', list(params))


def create_demo_schema_and_roles(cursor, group, logins):
    """With ``cursor`` of the schema's owner (a superuser, or a role with CREATEROLE):
    the demo schema, ``group`` holding SELECT on it, and ``logins`` (name, password)
    that are members of ``group`` and of nothing else."""
    # Never more than reading: nothing granted outside the demo schema. Before the
    # logins, the group was the one login role: it logs in no longer.
    _create_or_alter(cursor, group, "NOLOGIN NOINHERIT")
    cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{DEMO_SCHEMA}"')
    cursor.execute(f'GRANT USAGE ON SCHEMA "{DEMO_SCHEMA}" TO "{group}"')
    cursor.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{DEMO_SCHEMA}" TO "{group}"')
    cursor.execute(
        f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{DEMO_SCHEMA}" GRANT SELECT ON TABLES TO "{group}"'
    )
    for login, password in logins:
        _create_or_alter(cursor, login, "LOGIN INHERIT PASSWORD %s", [password])
        cursor.execute(
            "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s AND r.rolname <> %s",
            [login, group],
        )
        for (other,) in cursor.fetchall():  # a login is a member of the group only
            cursor.execute(f'REVOKE "{other}" FROM "{login}"')
        cursor.execute(f'GRANT "{group}" TO "{login}"')


@contextlib.contextmanager
def demo_source_writer():
    """A cursor that may create and fill tables in the demo source, in a transaction."""
    if not is_demo_source(DEFAULT_SOURCE):
        raise DemoSourceUnavailable(
            "REPORTING_DATABASE_URL is set: demo data goes only into the built-in demo "
            "source. Unset it to try the demo."
        )
    reporting = connection_for_source(DEFAULT_SOURCE)
    if reporting.vendor == "postgresql":
        writer = connections["default"]  # owns the demo schema; the demo role only reads
        with transaction.atomic(using=writer.alias), writer.cursor() as cursor:
            cursor.execute(f'SET LOCAL search_path TO "{DEMO_SCHEMA}"')
            yield cursor
    else:
        with transaction.atomic(using=reporting.alias), reporting.cursor() as cursor:
            yield cursor
