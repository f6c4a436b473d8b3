"""The Django database engine of MySQL and MariaDB data sources (the ENGINE of their
aliases): Django's own MySQL backend, with every connection made safe for report text
and its refusals worded for people. datasources.backends.mysql is its backend."""
