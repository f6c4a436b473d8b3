"""PostgreSQL data sources: pglast (PostgreSQL's own parser), the extended query
protocol (one statement per message), COPY for CSV, roles for the safety examination,
pg_stat_activity for a login's other sessions, a cancel request to stop a statement."""

from datasources.backends.base import Backend


class PostgreSQLBackend(Backend):
    vendor = "postgresql"
    label = "PostgreSQL"
    engine = "django.db.backends.postgresql"
    url_schemes = ("postgres", "postgresql", "pgsql")
    has_server_sessions = True


BACKEND = PostgreSQLBackend()
