"""The interface of a data-source backend: one module per database vendor.

A backend module of this package (listed in ``BACKEND_MODULES``) defines ``BACKEND``, an
instance of a :class:`Backend` subclass. Everything that depends on a data source's
vendor lives in its backend; code elsewhere asks ``backend_for(connection)`` and never
branches on a vendor itself (tests/test_vendor_branches.py holds it to that).

Methods take the Django connection wrapper of the source's alias (``connection``: the
one leased for the caller, reports.services.logins) and may connect it. A backend keeps
no state between calls but on that wrapper (attributes named ``reportsvc_*``).

The sandbox contract every method that sends report text to the database keeps
(datasources.sandbox):

- **One statement by construction**: the text goes out through a protocol or driver
  call that carries exactly one statement (PostgreSQL's extended protocol, SQLite's
  ``execute``, a MySQL connection with multi-statements off), never a string the
  backend split or a lexer judged. What the vendor's own parser says about the text
  (:meth:`Backend.read_only_statement`) gives the user a clear message first; it is not
  the only guard.
- **Read-only**: inside a read-only transaction (or the vendor's equivalent: SQLite's
  ``query_only`` and an authorizer), refusing what such a transaction still allows and a
  report must not do (locks that outlive the run, files written).
- **Timeout the report cannot lift**: the statement ends by the report's timeout, on
  the server when the vendor can, and by a watchdog in this process as well (a silent
  connection counts as a stall and is closed).
- **Row cap**: at most ``limit.rows + 1`` rows are fetched.
- **No service tables**: a source that can read them is refused by
  :meth:`Backend.examine`'s findings (datasources.safety) before any report text runs.
- The connection is left in a clean state, or closed.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Examination:
    """What :meth:`Backend.examine` found about a source's login."""

    login: str  # the login's name, as its peers' settings name it ("" without logins)
    account: str  # how a message names it: "PostgreSQL role 'reader'"
    # Powers beyond reading one's own data, as the vendor names them ("superuser",
    # "pg_read_server_files", "FILE"): refused unless the loud opt-in allows them.
    powers: list = field(default_factory=list)
    # Other logins of the same source whose privileges this login has.
    peers: list = field(default_factory=list)
    # Service tables (of ``service_tables``) this login could read.
    readable_tables: list = field(default_factory=list)


class DemoSourceUnavailable(Exception):
    """The demo source cannot be set up here; ``str()`` says what to do instead."""


class DemoSource:
    """The built-in demo source on a vendor the service's own database can be on: where
    demo data lives when REPORTING_DATABASE_URL is unset, beside the service's database
    and never able to read its tables. Optional: a backend without one has
    ``demo = None`` (the service's database is never on its vendor)."""

    # CREATE TABLE IF NOT EXISTS statements of the demo tables (demo_customers,
    # demo_orders: reports.services.demo), in this vendor's dialect.
    tables = ()
    # Demo report slug -> its SQL in this vendor's dialect.
    queries = {}

    def database(self, service_database, var_dir, secret_key):
        """``(settings, logins)``: the demo source's DATABASES entry, made from the
        service's (``service_database``, this vendor's), and its further logins
        ``[(user, password), ...]`` (passwords derived from ``secret_key``)."""
        raise NotImplementedError

    def provision(self, service_connection):
        """Create or refresh, idempotently, what the demo source needs in the service's
        database (a schema, roles); run after every ``migrate``. Whether there was
        anything to do. Raises DemoSourceUnavailable with what to do instead."""
        return False

    def writer(self, source_connection):
        """A context manager: a cursor that may create and fill the demo tables, in a
        transaction (``source_connection``: the demo source's first login)."""
        raise NotImplementedError

    def timestamp(self, moment):
        """An aware datetime as the demo rows store it."""
        return moment


class Backend:
    """A database vendor as a data source. Subclasses set the attributes and implement
    every method; the defaults here are for the optional parts only."""

    vendor = ""  # Django's connection.vendor for the source's alias, e.g. "postgresql"
    label = ""  # for people: "PostgreSQL"
    engine = ""  # the Django ENGINE of the source's alias
    url_schemes = ()  # the URL schemes that configure such a source: ("postgres", ...)
    # Whether the server keeps sessions a report could see or end: then a source has a
    # pool of logins, each run leases one, and :meth:`other_sessions` is asked.
    has_server_sessions = True
    demo = None  # a DemoSource, on vendors the service's own database can be on

    # --- connection options --------------------------------------------------------

    def database_settings(self, config):
        """The Django DATABASES entry of a source's alias, from ``config`` (the URL as
        django-environ parses it; its ``OPTIONS`` exist): the connect timeout,
        keepalives, session settings given at connect. Options the URL gives win.
        Called while settings load: import nothing of the project, no Django models.
        Returns the entry (``config``, changed in place)."""
        raise NotImplementedError

    @property
    def errors(self):
        """The driver's exception classes (a tuple) a method may raise besides Django's
        ``DatabaseError``: callers catch them as the database's own refusal and show
        their message. The module must import without its driver installed: then ()."""
        return ()

    # --- safety examination ----------------------------------------------------------

    def examine(self, connection, *, service_tables, peer_logins):
        """Examine the login behind ``connection`` (connecting it): its powers beyond
        reading, which of ``peer_logins`` (other logins of the source, by name) it has
        the privileges of, which of ``service_tables`` (table names) it could read.
        Returns an :class:`Examination`; raises DatabaseError or one of :attr:`errors`
        when it cannot connect. Judges every role or grant a report could switch to."""
        raise NotImplementedError

    def other_sessions(self, connection):
        """How many sessions of ``connection``'s login, besides its own, exist on the
        whole server now (an int). Only asked when :attr:`has_server_sessions`."""
        raise NotImplementedError

    # --- statements ------------------------------------------------------------------

    def read_only_statement(self, sql):
        """The one read-only statement in ``sql`` as this vendor's parser reads it (no
        trailing ``;``), placeholders already replaced by :meth:`marker`.

        Raises datasources.sandbox.ReportSQLError with the user's message for empty
        text (``require_sql``), more than one statement, anything that writes or locks,
        and a service table named. Needs no connection. Where the vendor's parser is
        only reachable through a connection, the driver refuses a second statement
        when the text is prepared and an authorizer or the read-only transaction the
        writes: then this checks what it can (complete text) and returns it stripped.
        """
        raise NotImplementedError

    def marker(self, index):
        """The bind marker that stands for placeholder ``index`` (0-based) in text the
        parser reads (:meth:`read_only_statement`), with a trailing space so a digit
        after the placeholder does not join it: ``"$1 "``, ``":p1 "``, ``"? "``."""
        raise NotImplementedError

    def check_positions(self, sql, placeholders, connection=None):
        """Raise datasources.placeholders.TemplateError unless the vendor's parser (or
        the server's prepare, on ``connection``) reads every placeholder of ``sql``
        (``placeholders``: datasources.placeholders.Placeholder, in order) as a bound
        value, and no bind parameter the text writes itself (``$2``, ``?``, ``:x``).
        Use the messages of datasources.placeholders.

        Without a connection, check what needs none, or nothing when the check needs
        the server (the save-time check and every run call it with one). Text that does
        not parse is left to :meth:`read_only_statement`. On a connection, prepare
        only: never execute the text; the server's errors are raised as they are."""
        raise NotImplementedError

    def quoter(self, connection):
        """A function ``quote(parameter_type, value) -> str``: ``value`` (of that
        datasources.parameters type) as a literal of this vendor, quoted by the
        driver's own quoting (on ``connection``) from ``parameter_type.literal(value)``,
        and cast by the backend's table keyed by ``parameter_type.sql_type``:
        ``('2026-11-25'::date)``. The result is one self-contained expression."""
        raise NotImplementedError

    # --- execution ---------------------------------------------------------------------

    def export(self, connection, statement, writer, output_format, timeout_seconds, limit):
        """Run ``statement`` (from :meth:`read_only_statement`, values rendered) as one
        read-only statement within ``timeout_seconds`` and hand its result to
        ``writer`` (a runs.services.formats writer: ``write_header(names)`` then
        ``write_rows(rows)`` in blocks, or, for ``output_format.reads_csv_copy``, the
        function ``writer.copy_writer(text_columns)`` returns, fed CSV bytes a row at a
        time; ``writer.needs_column_types`` asks for ``text_columns``). Memory stays
        flat in row count. Returns the rows written.

        Raises datasources.sandbox.RowLimitExceeded(limit.message) past ``limit.rows``
        rows, QueryTimedOut past the timeout, StatementCancelled after :meth:`cancel`,
        ExportFailed with the database's message for anything the database refused or a
        stall, ReportSQLError when the statement cannot be wrapped. The writer's own
        errors pass through. The connection is reset for its next user, or closed.
        """
        raise NotImplementedError

    def explain(self, connection, statement, timeout_seconds):
        """Have the database plan ``statement`` (EXPLAIN) without running it: through
        the same one-statement, read-only path as :meth:`export`, limited to
        ``timeout_seconds``, in a transaction that is rolled back. Returns nothing;
        raises ReportSQLError for what the sandbox refuses, else DatabaseError or one of
        :attr:`errors` with the database's message."""
        raise NotImplementedError

    def cancel(self, connection):
        """Stop the statement now running on ``connection``, called from another
        thread than the one running it. Returns at once; a no-op when nothing runs or
        the connection is closed. The running :meth:`export` then raises
        StatementCancelled. Never closes ``connection`` under its user."""
        raise NotImplementedError

    def __repr__(self):
        return f"<{type(self).__name__} {self.vendor}>"
