"""PostgreSQL data sources: pglast (PostgreSQL's own parser), the extended query
protocol (one statement per message), COPY for CSV, roles for the safety examination,
pg_stat_activity for a login's other sessions, a cancel request to stop a statement."""

import contextlib
import hashlib
import hmac
import re
import time

from datasources.backends.base import Backend, DemoSource, DemoSourceUnavailable

CONNECT_TIMEOUT_SECONDS = 10
TCP_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


class PostgreSQLBackend(Backend):
    vendor = "postgresql"
    label = "PostgreSQL"
    engine = "django.db.backends.postgresql"
    url_schemes = ("postgres", "postgresql", "pgsql")
    has_server_sessions = True

    def database_settings(self, config):
        options = config["OPTIONS"]
        options.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
        # Notice a silently dropped connection instead of waiting on it forever.
        for option, value in TCP_KEEPALIVES.items():
            options.setdefault(option, value)
        # The zone Django sets on every new connection, given at connect: each run
        # connects anew, and this saves it a round trip.
        given = options.get("options", "")
        if "TimeZone" not in given:
            options["options"] = f"{given} -c TimeZone=UTC".strip()
        return config


# --- the built-in demo source --------------------------------------------------------

DEMO_SCHEMA = "demo"
DEMO_ROLE_SUFFIX = "_demo_reader"
# Logins of the demo source: runs of it at once (make run's worker runs two).
DEMO_LOGINS = 4
# Connection parameters the demo source shares with the service's connection (TLS,
# application name, ...); never a role the service would switch to.
SHARED_CONNECTION_OPTIONS = (
    "application_name",
    "connect_timeout",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "target_session_attrs",
)


def demo_role_name(service_database):
    """The demo source's group role: it holds the read grants, its logins inherit them."""
    # From the service's user, not its database name: the test database and worker
    # processes started against it use the same role.
    return f"{service_database.get('USER') or 'reportsvc'}{DEMO_ROLE_SUFFIX}"[:63]


def demo_login_names(service_database):
    """The demo source's logins, members of the group role and of nothing else."""
    group = demo_role_name(service_database)[:60]
    return [f"{group}_{number}" for number in range(1, DEMO_LOGINS + 1)]


def demo_role_password(secret_key, login):
    """Derived from SECRET_KEY: nothing to store, the same in the web and the worker."""
    message = f"reportsvc demo reader {login}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


ROLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What a role the demo source uses may never have. Only a superuser may set or clear
# these on an existing role, so ALTER ROLE leaves them out and they are checked instead.
NEVER = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


def _create_or_alter(cursor, role, options, params=()):
    cursor.execute(
        "SELECT rolsuper OR rolreplication OR rolbypassrls FROM pg_roles WHERE rolname = %s",
        [role],
    )
    existing = cursor.fetchone()
    if existing is None:
        cursor.execute(f'CREATE ROLE "{role}" WITH {options} {NEVER}', list(params))
        return
    if existing[0]:
        raise DemoSourceUnavailable(
            f"The role '{role}' exists with superuser, replication or bypassrls powers, "
            "which the demo source never gives its roles: drop it, then migrate again."
        )
    cursor.execute(f'ALTER ROLE "{role}" WITH {options} NOCREATEDB NOCREATEROLE', list(params))


def create_demo_schema_and_roles(cursor, group, logins):
    """With ``cursor`` of the schema's owner (a superuser, or a role with CREATEROLE):
    the demo schema, ``group`` holding SELECT on it, and ``logins`` (name, password)
    that are members of ``group`` and of nothing else."""
    # Never more than reading: nothing granted outside the demo schema. Before the
    # logins, the group was the one login role: it logs in no longer.
    _create_or_alter(cursor, group, "NOLOGIN NOINHERIT")
    cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{DEMO_SCHEMA}"')
    cursor.execute(f'GRANT USAGE ON SCHEMA "{DEMO_SCHEMA}" TO "{group}"')
    cursor.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{DEMO_SCHEMA}" TO "{group}"')
    cursor.execute(
        f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{DEMO_SCHEMA}" GRANT SELECT ON TABLES TO "{group}"'
    )
    for login, password in logins:
        _create_or_alter(cursor, login, "LOGIN INHERIT PASSWORD %s", [password])
        cursor.execute(
            "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s AND r.rolname <> %s",
            [login, group],
        )
        for (other,) in cursor.fetchall():  # a login is a member of the group only
            cursor.execute(f'REVOKE "{other}" FROM "{login}"')
        cursor.execute(f'GRANT "{group}" TO "{login}"')


class PostgreSQLDemo(DemoSource):
    """The schema ``demo`` of the service's database, read by roles of its own: a group
    role (no login) holds SELECT on ``demo`` and nothing else, and DEMO_LOGINS login
    roles are members of it and of nothing else, so runs can use them side by side
    without reaching each other's sessions. ``migrate`` creates them (a database user
    with CREATEROLE is enough); demo data is written through the service's own
    connection, which owns the schema."""

    tables = (
        """CREATE TABLE IF NOT EXISTS demo_customers (
            id integer PRIMARY KEY, name text NOT NULL, email text NOT NULL,
            country char(2) NOT NULL, signed_up_at timestamptz NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS demo_orders (
            id integer PRIMARY KEY, customer_id integer NOT NULL REFERENCES demo_customers,
            ordered_at timestamptz NOT NULL, currency char(3) NOT NULL,
            amount_cents integer NOT NULL, status text NOT NULL, refunded_at timestamptz)""",
    )
    queries = {
        "daily-revenue": """SELECT {{ day }} AS day, currency,
       count(*) AS orders, round(sum(amount_cents) / 100.0, 2) AS revenue
FROM demo_orders
WHERE ordered_at >= {{ interval_start }} AND ordered_at < {{ interval_end }}
  AND status = {{ status }} AND amount_cents >= {{ min_amount_cents }}
GROUP BY currency
ORDER BY currency""",
        "daily-revenue-by-currency": """SELECT ordered_at::date AS day, currency,
       count(*) AS orders, round(sum(amount_cents) / 100.0, 2) AS revenue
FROM demo_orders
WHERE status = 'paid' AND ordered_at >= current_date - 30
GROUP BY 1, 2
ORDER BY 1, 2""",
        "top-customers-this-week": """SELECT c.name, c.email, c.country, count(*) AS orders,
       round(sum(o.amount_cents) / 100.0, 2) AS spent
FROM demo_orders o JOIN demo_customers c ON c.id = o.customer_id
WHERE o.status = 'paid' AND o.ordered_at >= now() - interval '7 days'
GROUP BY c.id
ORDER BY spent DESC, c.name
LIMIT 20""",
        "refunds-yesterday": """SELECT o.id AS order_id, c.email, o.currency,
       round(o.amount_cents / 100.0, 2) AS amount, o.refunded_at
FROM demo_orders o JOIN demo_customers c ON c.id = o.customer_id
WHERE o.status = 'refunded'
  AND o.refunded_at >= current_date - 1 AND o.refunded_at < current_date
ORDER BY o.refunded_at""",
        "new-customers-by-country": """SELECT country, count(*) AS new_customers
FROM demo_customers
WHERE signed_up_at >= now() - interval '90 days'
GROUP BY country
ORDER BY new_customers DESC, country""",
    }

    def database(self, service_database, var_dir, secret_key):
        first, *others = demo_login_names(service_database)
        settings = {
            **{key: service_database[key] for key in ("ENGINE", "NAME", "HOST", "PORT")},
            "USER": first,
            "PASSWORD": demo_role_password(secret_key, first),
            "OPTIONS": {
                **{
                    key: value
                    for key, value in service_database.get("OPTIONS", {}).items()
                    if key in SHARED_CONNECTION_OPTIONS
                },
                "options": f"-c search_path={DEMO_SCHEMA}",
            },
            # Tests: the same test database as the service, reached as the demo role.
            "TEST": {"MIRROR": "default"},
        }
        return settings, [(login, demo_role_password(secret_key, login)) for login in others]

    def provision(self, service_connection):
        from django.db import DatabaseError, transaction

        group, logins = self._roles(service_connection)
        # Roles are cluster-wide: two processes migrating side by side (parallel tests,
        # two deploys) may race to create or alter the same role. The loser tries again.
        for attempt in range(3):
            try:
                with (
                    transaction.atomic(using=service_connection.alias),
                    service_connection.cursor() as cursor,
                ):
                    create_demo_schema_and_roles(cursor, group, logins)
                break
            except DatabaseError as error:
                if attempt == 2:
                    raise DemoSourceUnavailable(
                        f"Could not create the demo source's roles '{group}' and its logins "
                        f"({error}). Set REPORTING_DATABASE_URL to a read-only role (README: "
                        "Security), or let the service's database user create roles."
                    ) from error
                time.sleep(0.2 * (attempt + 1))
        return True

    @staticmethod
    def _roles(service_connection):
        """The group role, and each login with its password."""
        from django.db import connections

        from datasources.registry import DEFAULT_SOURCE, login_aliases

        group = demo_role_name(service_connection.settings_dict)
        logins = [
            (connections[alias].settings_dict["USER"], connections[alias].settings_dict["PASSWORD"])
            for alias in login_aliases(DEFAULT_SOURCE)
        ]
        for role in [group, *(login for login, _ in logins)]:
            if not ROLE_NAME.match(role):
                raise DemoSourceUnavailable(f"'{role}' cannot be a role name: rename the database.")
        return group, logins

    @contextlib.contextmanager
    def writer(self, source_connection):
        from django.db import connections, transaction

        writer = connections["default"]  # owns the demo schema; the demo role only reads
        with transaction.atomic(using=writer.alias), writer.cursor() as cursor:
            cursor.execute(f'SET LOCAL search_path TO "{DEMO_SCHEMA}"')
            yield cursor


PostgreSQLBackend.demo = PostgreSQLDemo()
BACKEND = PostgreSQLBackend()
