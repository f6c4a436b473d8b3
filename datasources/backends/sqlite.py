"""SQLite data sources: the sqlite3 driver prepares one statement per ``execute``, an
authorizer lets it read and nothing else, ``query_only`` and a read transaction keep it
from writing, a progress handler and ``interrupt`` end it on time."""

import contextlib

from datasources.backends.base import Backend, DemoSource

# Seconds a connection waits for a lock the service's writers hold.
BUSY_TIMEOUT_SECONDS = 20


class SQLiteBackend(Backend):
    vendor = "sqlite"
    label = "SQLite"
    engine = "django.db.backends.sqlite3"
    url_schemes = ("sqlite",)
    # "Sessions" are file handles of this process: nothing to lease or to see.
    has_server_sessions = False

    def database_settings(self, config):
        config["OPTIONS"].setdefault("timeout", BUSY_TIMEOUT_SECONDS)
        return config


# --- the built-in demo source --------------------------------------------------------


class SQLiteDemo(DemoSource):
    """A file of its own beside the service's database: it holds nothing else."""

    tables = (
        """CREATE TABLE IF NOT EXISTS demo_customers (
            id integer PRIMARY KEY, name text NOT NULL, email text NOT NULL,
            country text NOT NULL, signed_up_at text NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS demo_orders (
            id integer PRIMARY KEY, customer_id integer NOT NULL REFERENCES demo_customers,
            ordered_at text NOT NULL, currency text NOT NULL,
            amount_cents integer NOT NULL, status text NOT NULL, refunded_at text)""",
    )
    queries = {
        "daily-revenue": """SELECT {{ day }} AS day, currency,
       count(*) AS orders, round(sum(amount_cents) / 100.0, 2) AS revenue
FROM demo_orders
WHERE ordered_at >= {{ interval_start }} AND ordered_at < {{ interval_end }}
  AND status = {{ status }} AND amount_cents >= {{ min_amount_cents }}
GROUP BY currency
ORDER BY currency""",
        "daily-revenue-by-currency": """SELECT date(ordered_at) AS day, currency,
       count(*) AS orders, round(sum(amount_cents) / 100.0, 2) AS revenue
FROM demo_orders
WHERE status = 'paid' AND ordered_at >= date('now', '-30 days')
GROUP BY 1, 2
ORDER BY 1, 2""",
        "top-customers-this-week": """SELECT c.name, c.email, c.country, count(*) AS orders,
       round(sum(o.amount_cents) / 100.0, 2) AS spent
FROM demo_orders o JOIN demo_customers c ON c.id = o.customer_id
WHERE o.status = 'paid' AND o.ordered_at >= datetime('now', '-7 days')
GROUP BY c.id
ORDER BY spent DESC, c.name
LIMIT 20""",
        "refunds-yesterday": """SELECT o.id AS order_id, c.email, o.currency,
       round(o.amount_cents / 100.0, 2) AS amount, o.refunded_at
FROM demo_orders o JOIN demo_customers c ON c.id = o.customer_id
WHERE o.status = 'refunded'
  AND o.refunded_at >= date('now', '-1 day') AND o.refunded_at < date('now')
ORDER BY o.refunded_at""",
        "new-customers-by-country": """SELECT country, count(*) AS new_customers
FROM demo_customers
WHERE signed_up_at >= datetime('now', '-90 days')
GROUP BY country
ORDER BY new_customers DESC, country""",
    }

    def database(self, service_database, var_dir, secret_key):
        settings = {
            "ENGINE": service_database["ENGINE"],
            "NAME": str(var_dir / "demo.sqlite3"),
            "TEST": {"NAME": str(var_dir / "test-demo.sqlite3")},
        }
        return settings, []

    @contextlib.contextmanager
    def writer(self, source_connection):
        from django.db import transaction

        with (
            transaction.atomic(using=source_connection.alias),
            source_connection.cursor() as cursor,
        ):
            yield cursor

    def timestamp(self, moment):
        return moment.strftime("%Y-%m-%d %H:%M:%S")


SQLiteBackend.demo = SQLiteDemo()
BACKEND = SQLiteBackend()
