"""Which other sessions of a data-source login exist: one small function per vendor.

A connection made for a leased login asks this right after it connects. Any other
session of the same login (a frozen former holder, another program using the login)
could see the query text of, or end, the sessions of its login, so the login counts as
busy. Each function answers for the connection's own login (its session user) across
the whole server, not one database: a server signals sessions of any database.
"""

# Every session of the server, with its role, as pg_stat_activity lists it to every
# role; without the view's joins, which cost a fresh session 2 ms of server CPU.
POSTGRES_OTHER_SESSIONS_SQL = (
    "SELECT count(*) FROM pg_stat_get_activity(NULL) AS s "
    "WHERE s.usesysid = session_user::regrole AND s.pid <> pg_backend_pid()"
)


def _postgres_other_sessions(connection):
    with connection.cursor() as cursor:
        cursor.execute(POSTGRES_OTHER_SESSIONS_SQL)
        return cursor.fetchone()[0]


OTHER_SESSIONS = {"postgresql": _postgres_other_sessions}


def other_sessions_of_login(connection):
    """How many sessions besides ``connection``'s own its login has on the server now."""
    try:
        count_sessions = OTHER_SESSIONS[connection.vendor]
    except KeyError:
        raise NotImplementedError(
            f"No check of a login's other sessions on {connection.vendor} yet."
        ) from None
    return count_sessions(connection)
