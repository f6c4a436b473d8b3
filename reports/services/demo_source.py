"""The built-in demo source: where demo data lives when REPORTING_DATABASE_URL is unset.

It sits beside the service's database, on its vendor, and can never see the service's
tables: on SQLite a file of its own, on PostgreSQL the schema ``demo`` read through
roles of its own (the backend's ``demo``: datasources.backends.base.DemoSource).
``migrate`` sets it up (``provision_demo_source`` runs after every migrate,
idempotently).
"""

import contextlib

from django.db import connections

from datasources.backends.base import DemoSourceUnavailable
from datasources.registry import DEFAULT_SOURCE, is_demo_source, source_for


def provision_demo_source(using="default"):
    """Create (or refresh) what the demo source needs in the service's database; whether
    there was anything to do (nothing when REPORTING_DATABASE_URL names the default
    source). Raises DemoSourceUnavailable."""
    if not is_demo_source(DEFAULT_SOURCE):
        return False
    return source_for(DEFAULT_SOURCE).backend.demo.provision(connections[using])


@contextlib.contextmanager
def demo_source_writer():
    """A cursor that may create and fill tables in the demo source, in a transaction."""
    if not is_demo_source(DEFAULT_SOURCE):
        raise DemoSourceUnavailable(
            "REPORTING_DATABASE_URL is set: demo data goes only into the built-in demo "
            "source. Unset it to try the demo."
        )
    source = source_for(DEFAULT_SOURCE)
    with source.backend.demo.writer(source.connection) as cursor:
        yield cursor
