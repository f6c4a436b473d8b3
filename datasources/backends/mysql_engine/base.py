"""Django's MySQL backend for data-source aliases, with three changes:

- Right after connecting, multi-statements are switched off on the connection
  (mysqlclient turns ``CLIENT.MULTI_STATEMENTS`` on at every connect): from then on the
  server itself refuses a second statement in any text sent to it.
- A connection that cannot be made says why in words (the server unreachable, the
  login refused) instead of a driver's error tuple.
- Without the driver (mysqlclient, requirements-mysql.txt) the alias still exists, so
  the rest of the service starts; each use of it says what to install.
"""

from django.core.exceptions import ImproperlyConfigured
from django.db.utils import OperationalError

from datasources.backends.mysql_engine import MISSING_DRIVER

# mysql_set_server_option(MYSQL_OPTION_MULTI_STATEMENTS_OFF)
MULTI_STATEMENTS_OFF = 1
# Client errors: the server could not be reached, or went away while connecting.
UNREACHABLE = {2002, 2003, 2005, 2006, 2013, 2026}
ACCESS_DENIED = {1044, 1045, 1698}

try:
    from django.db.backends.mysql import base as mysql_base
except ImproperlyConfigured:  # no MySQLdb
    mysql_base = None


def _source_words(settings_dict):
    user = settings_dict.get("USER") or ""
    host = settings_dict.get("HOST") or "localhost"
    port = settings_dict.get("PORT") or 3306
    return user, f"{host}:{port}" if not str(host).startswith("/") else host


def connect_error_message(error, settings_dict):
    """What a failed connect means, in words; None when the driver's own message says
    it best."""
    code = error.args[0] if error.args and isinstance(error.args[0], int) else None
    detail = error.args[1] if len(error.args) > 1 else str(error)
    user, where = _source_words(settings_dict)
    if code in UNREACHABLE:
        return (
            f"Cannot reach the MySQL/MariaDB server at {where} ({detail}). Check that it "
            "runs and that the data source's URL names its host and port."
        )
    if code in ACCESS_DENIED:
        return (
            f"The MySQL/MariaDB server at {where} refused login '{user}' ({detail}). Check "
            "the user name and password in the data source's URL (or its logins), and that "
            "the user may connect from this host."
        )
    return None


if mysql_base is not None:
    import MySQLdb

    class DatabaseWrapper(mysql_base.DatabaseWrapper):
        def get_new_connection(self, conn_params):
            try:
                connection = super().get_new_connection(conn_params)
            except MySQLdb.OperationalError as error:
                message = connect_error_message(error, self.settings_dict)
                if message is None:
                    raise
                raise MySQLdb.OperationalError(message) from error
            try:
                connection.set_server_option(MULTI_STATEMENTS_OFF)
            except BaseException:
                connection.close()
                raise
            connection.reportsvc_single_statement = True
            return connection

else:
    from django.db.backends.dummy import base as dummy_base

    class DatabaseWrapper(dummy_base.DatabaseWrapper):
        vendor = "mysql"
        display_name = "MySQL"

        def ensure_connection(self):
            raise OperationalError(MISSING_DRIVER)

        def connect(self):
            raise OperationalError(MISSING_DRIVER)

        def get_connection_params(self):
            raise OperationalError(MISSING_DRIVER)

        def cursor(self):
            raise OperationalError(MISSING_DRIVER)

        def is_usable(self):
            return False

        def close(self):
            pass
