"""The built-in demo source: where demo data lives when REPORTING_DATABASE_URL is unset.

On SQLite it is a file of its own. On PostgreSQL it is the schema ``demo`` of the
service's database, read through a role of its own (no login to anything else, SELECT
on ``demo`` only), so report SQL can never reach the service's tables. ``migrate``
creates both (``provision_demo_source`` runs after every migrate, idempotently);
demo data is written through the service's own connection, which owns the schema.
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
    alias_for_source,
    connection_for_source,
    is_demo_source,
)

logger = logging.getLogger(__name__)
ROLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DemoSourceUnavailable(Exception):
    """The demo source cannot be set up here; ``str()`` says what to do instead."""


def _demo_role():
    source = settings.DATABASES[alias_for_source(DEFAULT_SOURCE)]
    role = source["USER"]
    if not ROLE_NAME.match(role):
        raise DemoSourceUnavailable(f"'{role}' cannot be a role name: rename the database.")
    return role, source["PASSWORD"]


def provision_demo_source(using="default"):
    """Create (or refresh) the PostgreSQL demo schema and its read-only role.

    Nothing to do on SQLite or when REPORTING_DATABASE_URL names the default source.
    """
    service = connections[using]
    if not is_demo_source(DEFAULT_SOURCE) or service.vendor != "postgresql":
        return False
    role, password = _demo_role()
    # Roles are cluster-wide: two processes migrating side by side (parallel tests, two
    # deploys) may race to create or alter the same role. The loser tries again.
    for attempt in range(3):
        try:
            _create_demo_schema_and_role(service, using, role, password)
            break
        except DatabaseError as error:
            if attempt == 2:
                raise DemoSourceUnavailable(
                    f"Could not create the demo source's role '{role}' ({error}). Set "
                    "REPORTING_DATABASE_URL to a read-only role (README: Security), or let "
                    "the service's database user create roles."
                ) from error
            time.sleep(0.2 * (attempt + 1))
    return True


def _create_demo_schema_and_role(service, using, role, password):
    with transaction.atomic(using=using), service.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        verb = "ALTER" if cursor.fetchone() else "CREATE"
        # Never more than reading: no superuser, no inheritance, nothing granted outside
        # the demo schema.
        cursor.execute(
            f'{verb} ROLE "{role}" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
            "NOREPLICATION NOBYPASSRLS NOINHERIT PASSWORD %s",
            [password],
        )
        cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{DEMO_SCHEMA}"')
        cursor.execute(f'GRANT USAGE ON SCHEMA "{DEMO_SCHEMA}" TO "{role}"')
        cursor.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{DEMO_SCHEMA}" TO "{role}"')
        cursor.execute(
            f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{DEMO_SCHEMA}" GRANT SELECT ON TABLES TO "{role}"'
        )


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
