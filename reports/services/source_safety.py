"""Refuse data sources that would let report SQL out of its sandbox.

A data source is refused when its connection can read the service's own tables (API
tokens, password hashes, sessions, webhook secrets) or, on PostgreSQL, connects as a
superuser or as a role that can read or write server files, run server programs,
replicate, or signal or watch other sessions. The second rule has an opt-in for
throwaway local set-ups (``UNSAFE_ALLOW_PRIVILEGED_DATA_SOURCES``); the first has none.
A login that has the privileges of another login of its source is refused too: its
reports could reach that login's runs.

A connection is examined once, when it is first used for a report, and again whenever
the data source reconnects (every run connects anew: reports.services.logins). Roles
are judged from the session user, whose memberships include every role a report could
``SET ROLE`` to.
"""

from dataclasses import dataclass, field

from django.conf import settings

from datasources.registry import ALIAS_PREFIX, LOGIN_ALIAS_SEPARATOR
from reports.sql import service_table_names

PRIVILEGED_ROLES = (
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_signal_backend",
    # Every session's query text (pg_monitor holds pg_read_all_stats).
    "pg_read_all_stats",
    "pg_monitor",
)
# Named first when a source can read them: what an attacker would be after.
MOST_SECRET_TABLES = ("authtoken_token", "auth_user", "django_session", "reports_report")
OPT_IN_SETTING = "UNSAFE_ALLOW_PRIVILEGED_DATA_SOURCES"
FIX = "Connect it as a role that can read only the reporting data (README: Security)."

# One round trip: who we are, which dangerous roles we hold (directly or through
# membership, including ones we could SET ROLE to), which other logins of the source we
# are a member of, which service tables we could read.
POSTGRES_PRIVILEGES_SQL = """
SELECT r.rolname, r.rolsuper, r.rolreplication,
  ARRAY(SELECT p.rolname::text FROM pg_roles p
        WHERE p.rolname = ANY(%(roles)s) AND pg_has_role(session_user, p.oid, 'MEMBER')
        ORDER BY 1),
  ARRAY(SELECT p.rolname::text FROM pg_roles p
        WHERE p.rolname = ANY(%(peers)s) AND p.rolname <> session_user
          AND pg_has_role(session_user, p.oid, 'MEMBER')
        ORDER BY 1),
  ARRAY(SELECT DISTINCT c.relname::text FROM pg_class c
        WHERE c.relname = ANY(%(tables)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND EXISTS (
            SELECT 1 FROM pg_roles m
            WHERE pg_has_role(session_user, m.oid, 'MEMBER')
              AND has_schema_privilege(m.oid, c.relnamespace, 'USAGE')
              AND (has_table_privilege(m.oid, c.oid, 'SELECT')
                   OR has_any_column_privilege(m.oid, c.oid, 'SELECT')))
        ORDER BY 1)
FROM pg_roles r WHERE r.rolname = session_user
"""


class DataSourceRefused(Exception):
    """The data source is unsafe for report SQL; ``str()`` names it and the fix."""


@dataclass
class SourceAssessment:
    name: str
    refusals: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    # Superuser or predefined roles, allowed only by the opt-in: such a login reaches
    # every session anyway.
    powers: list = field(default_factory=list)


def source_name(connection):
    return connection.alias.removeprefix(ALIAS_PREFIX).partition(LOGIN_ALIAS_SEPARATOR)[0]


def peer_logins(connection):
    """The other logins of the data source behind ``connection``."""
    from django.db import connections

    aliases = settings.REPORT_DATA_SOURCE_LOGINS.get(source_name(connection), [])
    return [
        connections[alias].settings_dict["USER"] for alias in aliases if alias != connection.alias
    ]


def assess_source(connection):
    """What is wrong with the data source behind ``connection`` (connects if needed)."""
    assessment = SourceAssessment(source_name(connection))
    tables = sorted(service_table_names())
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                POSTGRES_PRIVILEGES_SQL,
                {
                    "roles": list(PRIVILEGED_ROLES),
                    "peers": peer_logins(connection),
                    "tables": tables,
                },
            )
            role, is_superuser, can_replicate, roles, peers, readable = cursor.fetchone()
        powers = (["superuser"] if is_superuser else []) + (
            ["REPLICATION"] if can_replicate else []
        )
        powers += [] if is_superuser else roles
        if powers:
            held = f"connects as PostgreSQL role '{role}', which has {', '.join(powers)}"
            if getattr(settings, OPT_IN_SETTING):
                assessment.powers = powers
                assessment.warnings.append(
                    f"Data source '{assessment.name}' {held}. Allowed only because "
                    f"{OPT_IN_SETTING} is set: never use this outside a throwaway local set-up."
                )
            else:
                assessment.refusals.append(
                    f"Data source '{assessment.name}' {held}: report SQL could read server "
                    "files, run programs, or end or watch other sessions. "
                    f"{FIX} For a throwaway local set-up only, {OPT_IN_SETTING}=1 allows it."
                )
        if peers and not is_superuser:
            assessment.refusals.append(
                f"Data source '{assessment.name}': its login '{role}' has the privileges of "
                f"{', '.join(peers)}, other logins of the same source, so its reports could "
                "end or watch their runs. Make each login a member of the group role that "
                "holds the read grants and of nothing else (README: Security)."
            )
    else:
        with connection.cursor() as cursor:
            marks = ", ".join(["%s"] * len(tables))
            cursor.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                f"AND name IN ({marks}) ORDER BY name",
                tables,
            )
            readable = [row[0] for row in cursor.fetchall()]
    if readable:
        readable = sorted(readable, key=lambda name: (name not in MOST_SECRET_TABLES, name))
        shown = ", ".join(readable[:6]) + (", …" if len(readable) > 6 else "")
        assessment.refusals.append(
            f"Data source '{assessment.name}' can read reportsvc's own tables ({shown}): "
            "report SQL could read API tokens, password hashes, sessions and webhook "
            f"secrets. {FIX}"
        )
    return assessment


def ensure_source_is_safe(connection):
    """Raise :class:`DataSourceRefused` unless the source behind ``connection`` is safe;
    else its assessment.

    Examined once per physical connection: a reconnect (new credentials, failover) is
    examined again.
    """
    connection.ensure_connection()
    vetted = getattr(connection, "reportsvc_vetted", None)
    if vetted is not None and vetted[0] is connection.connection:
        return vetted[1]
    assessment = assess_source(connection)
    if assessment.refusals:
        raise DataSourceRefused(" ".join(assessment.refusals))
    connection.reportsvc_vetted = (connection.connection, assessment)
    return assessment
