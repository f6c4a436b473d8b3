"""Refuse data sources that would let report SQL out of its sandbox.

A data source is refused when its connection can read the service's own tables (API
tokens, password hashes, sessions, webhook secrets) or connects as a login with powers
beyond reading: on PostgreSQL a superuser or a role that can read or write server
files, run server programs, replicate, or signal or watch other sessions (each backend
names its vendor's powers: ``Backend.examine``). The second rule has an opt-in for
throwaway local set-ups (``UNSAFE_ALLOW_PRIVILEGED_DATA_SOURCES``); the first has none.
A login that has the privileges of another login of its source is refused too: its
reports could reach that login's runs.

A connection is examined once, when it is first used for a report, and again whenever
the data source reconnects (every run connects anew: reports.services.logins).
"""

from dataclasses import dataclass, field

from django.conf import settings

from datasources.backends import backend_for
from datasources.registry import ALIAS_PREFIX, LOGIN_ALIAS_SEPARATOR
from datasources.sandbox import service_table_names

# Named first when a source can read them: what an attacker would be after.
MOST_SECRET_TABLES = ("authtoken_token", "auth_user", "django_session", "reports_report")
OPT_IN_SETTING = "UNSAFE_ALLOW_PRIVILEGED_DATA_SOURCES"
FIX = "Connect it as a role that can read only the reporting data (README: Security)."


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
    found = backend_for(connection).examine(
        connection, service_tables=service_table_names(), peer_logins=peer_logins(connection)
    )
    if found.powers:
        held = f"connects as {found.account}, which has {', '.join(found.powers)}"
        if getattr(settings, OPT_IN_SETTING):
            assessment.powers = list(found.powers)
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
    if found.peers:
        assessment.refusals.append(
            f"Data source '{assessment.name}': its login '{found.login}' has the privileges "
            f"of {', '.join(found.peers)}, other logins of the same source, so its reports "
            "could end or watch their runs. Make each login a member of the group role that "
            "holds the read grants and of nothing else (README: Security)."
        )
    readable = found.readable_tables
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
