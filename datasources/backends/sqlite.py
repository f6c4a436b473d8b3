"""SQLite data sources: the sqlite3 driver prepares one statement per ``execute``, an
authorizer lets it read and nothing else, ``query_only`` and a read transaction keep it
from writing, a progress handler and ``interrupt`` end it on time."""

from datasources.backends.base import Backend


class SQLiteBackend(Backend):
    vendor = "sqlite"
    label = "SQLite"
    engine = "django.db.backends.sqlite3"
    url_schemes = ("sqlite",)
    # "Sessions" are file handles of this process: nothing to lease or to see.
    has_server_sessions = False


BACKEND = SQLiteBackend()
