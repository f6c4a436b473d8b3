"""The Django database engine of MySQL and MariaDB data sources (the ENGINE of their
aliases): Django's own MySQL backend, with every connection made safe for report text
and its refusals worded for people. datasources.backends.mysql is its backend."""

MISSING_DRIVER = (
    "MySQL and MariaDB data sources need the mysqlclient driver, which is not installed: "
    "pip install -r requirements-mysql.txt (it builds against libmariadb-dev or "
    "libmysqlclient-dev and pkg-config; docs/mysql.md)."
)
