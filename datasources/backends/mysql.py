"""MySQL and MariaDB data sources (``mysql://`` and ``mariadb://`` URLs).

- Connections are Django's MySQL backend over mysqlclient (an optional install:
  requirements-mysql.txt), through datasources.backends.mysql_engine, which switches
  multi-statements off right after each connect: the server refuses a second statement
  in any text sent to it.
- Statements are judged by sqlglot's MySQL dialect (a kept parser): count, kind, and
  what a read-only transaction still allows but a report must not do: ``INTO
  OUTFILE/DUMPFILE`` or variables, ``LOAD_FILE``, locking reads, named locks, sequence
  steps, and executable comments (``/*! … */``, ``/*M! … */``, optimizer hints ``/*+ …
  */``), which the server runs but parsers read as comments. ``SET STATEMENT … FOR`` is
  not a SELECT.
- A report runs as sent, in ``START TRANSACTION READ ONLY``, with the session's
  statement limit (MariaDB's ``max_statement_time``, MySQL's ``max_execution_time``)
  and a watchdog that runs ``KILL QUERY`` from a second connection at the deadline,
  whatever the text did to the limit. The connection is closed after each export, so
  nothing it held (named locks, variables) outlives the run.
- Rows stream unbuffered (``use_result``: the server sends them as the client reads),
  fetched in blocks of about ``FETCH_BLOCK_BYTES``. CSV fields are the server's own
  text form of each value (what ``mariadb --batch --raw`` prints), joined in C-speed
  blocks; binary strings are written ``0x`` and their hex digits, BIT as its number.
- A login is refused for any global privilege but USAGE, any privilege on the ``mysql``
  schema, PROXY, and for having another login of its source as a role; its other
  sessions come from ``information_schema.PROCESSLIST`` (a user sees its own).
- A running statement is stopped by ``KILL QUERY`` from a second connection.
"""

import contextlib
import functools
import os
import re
import socket
import threading
import time
from datetime import UTC, date, datetime
from decimal import Decimal

from django.db import DatabaseError

from datasources.backends.base import Backend, Examination
from datasources.backends.mysql_engine import MISSING_DRIVER
from datasources.placeholders import (
    TemplateError,
    bind_parameter_message,
    outside_parameter_message,
    substitute,
)
from datasources.sandbox import (
    ExportFailed,
    QueryTimedOut,
    ReportSQLError,
    RowLimitExceeded,
    StatementCancelled,
    require_sql,
    service_table_names,
    service_tables_message,
    timeout_message,
)

CONNECT_TIMEOUT_SECONDS = 10
# The watchdog's KILL QUERY lands this long after the server's own limit should have.
WATCHDOG_MARGIN_SECONDS = 0.5
# Past the deadline and a KILL QUERY, a connection that still says nothing has stalled.
STALL_MARGIN_SECONDS = 30
# Bytes of values per block of rows: memory holds one block, whatever the row count.
FETCH_BLOCK_BYTES = 256 << 10
MAX_FETCH_ROWS = 4096
# Server errors that mean the statement was stopped: interrupted (KILL QUERY), MariaDB's
# max_statement_time, MySQL's max_execution_time.
INTERRUPTED = {1317, 1969, 3024}
# The cast of a literal by its parameter type's sql_type (datasources.parameters).
CASTS = {
    "date": "DATE",
    "timestamp": "DATETIME(6)",
    "integer": "SIGNED",
    "decimal": "DECIMAL",
    "text": None,
    "boolean": None,
}
# Functions a report may not call: they read server files, take or free named locks that
# outlive a statement, step sequences, or wait on replication.
REFUSED_FUNCTIONS = {
    "LOAD_FILE": "reads a file on the database server",
    "GET_LOCK": "takes a named lock",
    "RELEASE_LOCK": "frees a named lock",
    "RELEASE_ALL_LOCKS": "frees named locks",
    "IS_FREE_LOCK": "looks at named locks",
    "IS_USED_LOCK": "looks at named locks",
    "NEXTVAL": "steps a sequence",
    "SETVAL": "sets a sequence",
    "MASTER_POS_WAIT": "waits for replication",
    "MASTER_GTID_WAIT": "waits for replication",
    "SOURCE_POS_WAIT": "waits for replication",
    "WAIT_FOR_EXECUTED_GTID_SET": "waits for replication",
}

# MySQL field types (MySQLdb.constants.FIELD_TYPE), so the module imports without it.
DECIMAL, TINY, SHORT, LONG, FLOAT, DOUBLE, NULL, TIMESTAMP, LONGLONG, INT24 = range(10)
DATE, TIME, DATETIME, YEAR, NEWDATE, VARCHAR, BIT = range(10, 17)
JSON, NEWDECIMAL, ENUM, SET = 245, 246, 247, 248
TINY_BLOB, MEDIUM_BLOB, LONG_BLOB, BLOB, VAR_STRING, STRING, GEOMETRY = range(249, 256)
STRING_TYPES = (VARCHAR, TINY_BLOB, MEDIUM_BLOB, LONG_BLOB, BLOB, VAR_STRING, STRING, ENUM, SET)
NUMBER_TYPES = (DECIMAL, NEWDECIMAL, TINY, SHORT, LONG, FLOAT, DOUBLE, LONGLONG, INT24, YEAR)
BINARY_FLAG = 128  # set by mysqlclient for a field whose character set is binary


class MySQLBackend(Backend):
    vendor = "mysql"
    label = "MySQL/MariaDB"
    engine = "datasources.backends.mysql_engine"
    url_schemes = ("mysql", "mariadb")
    has_server_sessions = True

    @property
    def errors(self):
        driver = _driver()
        return (driver.Error,) if driver is not None else ()

    # --- connection options --------------------------------------------------------

    def database_settings(self, config):
        config["ENGINE"] = self.engine
        options = config["OPTIONS"]
        options.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
        # utf8mb4: every Unicode character (Django's default, utf8, is MySQL's 3-byte one).
        options.setdefault("charset", "utf8mb4")
        # Time stamps in UTC, as PostgreSQL sources show them; given at connect.
        options.setdefault("init_command", "SET time_zone = '+00:00'")
        return config

    # --- safety examination ----------------------------------------------------------

    def examine(self, connection, *, service_tables, peer_logins):
        """Judged by the user's grants and every role's it could ``SET ROLE`` to (SHOW
        GRANTS), what information_schema lets it see of the ``mysql`` schema, and which
        service tables it could read."""
        _require_driver()
        with connection.cursor() as cursor:
            cursor.execute("SELECT CURRENT_USER(), VERSION()")
            account, version = cursor.fetchone()
            grants, roles, unreadable = _grants(cursor)
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'mysql'"
            )
            (mysql_tables,) = cursor.fetchone()
            tables = sorted(service_tables)
            readable = []
            if tables:
                marks = ", ".join(["%s"] * len(tables))
                cursor.execute(
                    "SELECT DISTINCT TABLE_NAME FROM information_schema.TABLES "
                    f"WHERE TABLE_NAME IN ({marks}) ORDER BY 1",
                    tables,
                )
                readable = [row[0] for row in cursor.fetchall()]
        user, _, host = account.rpartition("@")
        powers = _powers(grants)
        if mysql_tables and not any("mysql schema" in power for power in powers):
            powers.append("privileges on the mysql schema")
        powers += [f"role '{role}' (its grants could not be read)" for role in unreadable]
        flavour = "MariaDB" if "mariadb" in version.lower() else "MySQL"
        return Examination(
            login=user,
            account=f"{flavour} user '{user}'@'{host}'",
            powers=powers,
            peers=sorted({role for role in roles if role in set(peer_logins)}),
            readable_tables=readable,
        )

    def other_sessions(self, connection):
        _require_driver()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                "WHERE USER = SUBSTRING_INDEX(USER(), '@', 1) AND ID <> CONNECTION_ID()"
            )
            return cursor.fetchone()[0]

    # --- statements ------------------------------------------------------------------

    def read_only_statement(self, sql):
        require_sql(sql)
        tokens = _tokens(sql)
        _refuse_executable_comments(tokens)
        sqlglot = _sqlglot()
        try:
            statements = [s for s in sqlglot.parse(sql, read="mysql") if s is not None]
        except sqlglot.errors.ParseError as error:
            raise ReportSQLError(_parse_problem(tokens, error)) from None
        if not statements:
            raise ReportSQLError("The SQL is empty: write one SELECT statement.")
        if len(statements) > 1:
            raise ReportSQLError(
                f"A report runs exactly one statement, but MySQL reads {len(statements)} "
                "statements in this SQL. Keep only the query."
            )
        problem = _read_only_problem(statements[0])
        if problem:
            raise ReportSQLError(problem)
        return _without_terminator(sql, tokens)

    def marker(self, index):
        return "? "

    def check_positions(self, sql, placeholders, connection=None):
        """The kept parser's tokenizer must read every placeholder's marker as a bind
        parameter (``?``) where it stands, and find no other; needs no connection."""
        marked, offsets = substitute(sql, placeholders, lambda index, _: self.marker(index))
        try:
            tokens = _tokens(marked)
        except ReportSQLError:
            return  # left to read_only_statement
        found = [token.start for token in tokens if token.token_type.name == "PLACEHOLDER"]
        for index, placeholder in enumerate(placeholders):
            if offsets[index] not in found:
                raise TemplateError(outside_parameter_message(placeholder))
        foreign = [position for position in found if position not in set(offsets)]
        if foreign:
            line = marked.count("\n", 0, foreign[0]) + 1
            raise TemplateError(f"Line {line}: {bind_parameter_message('?')}")

    def quoter(self, connection):
        """The driver's ``literal()`` of the value's text (it escapes by the
        connection's character set and SQL mode), with an explicit cast:
        ``CAST('2026-11-25' AS DATE)``."""
        _require_driver()
        connection.ensure_connection()
        raw = connection.connection

        def quote(kind, value):
            value = kind.literal(value)
            if isinstance(value, bool):
                return "TRUE" if value else "FALSE"
            text = (
                value.strftime("%Y-%m-%d %H:%M:%S.%f")
                if isinstance(value, datetime)
                else str(value)
            )
            quoted = raw.literal(text)
            quoted = quoted.decode() if isinstance(quoted, bytes) else quoted
            cast = CASTS[kind.sql_type]
            if kind.sql_type == "decimal":
                cast = _decimal_cast(text)
            return f"CAST({quoted} AS {cast})" if cast else f"({quoted})"

        return quote

    # --- execution ---------------------------------------------------------------------

    def export(self, connection, statement, writer, output_format, timeout_seconds, limit):
        """The statement as it is, unbuffered; rows past the cap are never read (the
        server is stopped with KILL QUERY). CSV formats get the server's text of each
        value; others typed values."""
        driver = _require_driver()
        connection.reportsvc_cancelled = False
        csv_output = output_format.reads_csv_copy
        run = None
        try:
            with _statement_run(connection, timeout_seconds) as run:
                raw = run.raw
                raw.converter = _csv_conversions() if csv_output else _typed_conversions()
                raw.query(statement.encode())
                run.result = raw.use_result()
                if run.result is None:
                    raise ExportFailed("The statement returned no result set.")
                export_rows = _export_csv if csv_output else _export_typed
                return export_rows(run, writer, limit)
        except driver.Error as error:
            code = error.args[0] if error.args else None
            if getattr(connection, "reportsvc_cancelled", False):
                raise StatementCancelled(f"The query was cancelled: {_message(error)}") from error
            if run is not None and run.stalled:
                raise ExportFailed(
                    f"The MySQL/MariaDB server stopped answering, {STALL_MARGIN_SECONDS} s "
                    "past the report's timeout; the connection was closed."
                ) from error
            if code in INTERRUPTED or (run is not None and run.timed_out):
                raise QueryTimedOut(timeout_message(timeout_seconds, _message(error))) from error
            raise ExportFailed(_message(error)) from error
        except DatabaseError as error:  # connecting
            raise ExportFailed(str(error).strip()) from error

    def explain(self, connection, statement, timeout_seconds):
        driver = _require_driver()
        try:
            with _statement_run(connection, timeout_seconds) as run:
                run.raw.converter = {}
                run.raw.query(f"EXPLAIN {statement}".encode())
                run.raw.store_result()
        except driver.Error as error:
            if error.args and error.args[0] in INTERRUPTED:
                raise DatabaseError(f"EXPLAIN took longer than {timeout_seconds} s") from error
            raise DatabaseError(_message(error)) from error

    def cancel(self, connection):
        """``KILL QUERY`` of the connection's thread, from a connection of its own: the
        server stops the statement; the connection stays its user's."""
        thread_id = getattr(connection, "reportsvc_mysql_thread", None)
        if _driver() is None or connection.connection is None or thread_id is None:
            return
        connection.reportsvc_cancelled = True
        _kill_query(connection, thread_id)


# --- the driver and the parser ---------------------------------------------------------


@functools.cache
def _driver():
    """mysqlclient's MySQLdb, or None without it; imported on first use, so processes
    that never read a MySQL source do not load it."""
    try:
        import MySQLdb
    except ImportError:  # optional: requirements-mysql.txt
        return None
    return MySQLdb


def _require_driver():
    """MySQLdb; DatabaseError saying what to install without it."""
    driver = _driver()
    if driver is None:
        raise DatabaseError(MISSING_DRIVER)
    return driver


def _sqlglot():
    import logging

    import sqlglot
    import sqlglot.errors

    # It warns when it reads a statement it does not know as a command: report authors'
    # text, refused with a message of ours, is no news for the service's log.
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    return sqlglot


def _message(error):
    """A driver error's message without its code tuple: ``(1064, "…")`` -> ``…``."""
    if len(error.args) >= 2 and isinstance(error.args[0], int):
        return f"{error.args[1]} (MySQL error {error.args[0]})"
    return str(error).strip() or type(error).__name__


# --- statement analysis (sqlglot, MySQL dialect) ---------------------------------------


def _tokens(sql):
    sqlglot = _sqlglot()
    try:
        return sqlglot.tokenize(sql, read="mysql")
    except sqlglot.errors.TokenError:
        raise ReportSQLError(
            "The SQL is incomplete: a string, identifier or comment is not closed."
        ) from None


def _refuse_executable_comments(tokens):
    """``/*! … */`` and ``/*M! … */`` are run by the server; ``/*+ … */`` hints change
    how (MySQL's MAX_EXECUTION_TIME lifts the session's limit). Parsers read them as
    comments, so the report may not hold them."""
    for token in tokens:
        if token.token_type.name == "HINT":
            raise ReportSQLError(
                "The SQL holds an optimizer hint (/*+ … */), which could lift the report's "
                "timeout (MAX_EXECUTION_TIME) or change how the server runs it. Remove it."
            )
        for comment in token.comments:
            if comment.startswith("+"):  # a hint where the server may or may not read one
                raise ReportSQLError(
                    "The SQL holds an optimizer hint (/*+ … */), which could lift the "
                    "report's timeout (MAX_EXECUTION_TIME) or change how the server runs it. "
                    "Remove it."
                )
            if comment.startswith(("!", "M!")):
                raise ReportSQLError(
                    "The SQL holds an executable comment (/*! … */ or /*M! … */), which the "
                    "server runs as SQL although it looks like a comment. Remove it, or write "
                    "its content as plain SQL."
                )


def _parse_problem(tokens, error):
    words = [token.text.upper() for token in tokens]
    for index, word in enumerate(words[:-1]):
        if word == "INTO" and words[index + 1] in ("OUTFILE", "DUMPFILE"):
            return (
                f"Reports can only read data, but SELECT … INTO {words[index + 1]} writes a "
                "file on the database server. Remove the INTO clause: the run writes the "
                "output file."
            )
    if words[:1] == ["SET"]:
        return _set_statement_message()
    detail = str(error).split("\n")[0].rstrip(".")
    return f"MySQL cannot parse this SQL: {detail}."


def _set_statement_message():
    return (
        "Reports can only read data, but this is a SET statement. SET STATEMENT … FOR "
        "would lift the report's timeout (max_statement_time); write the SELECT alone."
    )


def _read_only_problem(node):
    from sqlglot import exp

    if isinstance(node, exp.Command) and node.name.upper() == "SET":
        return _set_statement_message()
    if isinstance(node, exp.Set):
        return _set_statement_message()
    if not isinstance(node, exp.Query):
        kind = _statement_kind(node)
        return (
            f"Reports can only read data, but this is {kind} statement. Write a SELECT "
            "(or WITH … SELECT, or a UNION of SELECTs)."
        )
    for found in node.walk():
        if isinstance(found, exp.Lock):
            return (
                "Reports can only read data, but this SELECT locks rows (FOR UPDATE, FOR "
                "SHARE or LOCK IN SHARE MODE). Remove the locking clause."
            )
        if isinstance(found, exp.Into) or (
            isinstance(found, exp.Select) and found.args.get("into")
        ):
            return (
                "Reports can only read data, but SELECT … INTO writes variables or files. "
                "Remove the INTO clause: the run writes the output file."
            )
        if isinstance(found, (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create)):
            return f"Reports can only read data, but this SQL holds {_statement_kind(found)}."
        if isinstance(found, exp.Func):
            name = found.name if isinstance(found, exp.Anonymous) else found.sql_name()
            why = REFUSED_FUNCTIONS.get((name or "").upper())
            if why:
                return (
                    f"Reports may not call {name.upper()}(): it {why}, which must not "
                    "happen from a report. Remove it."
                )
        if isinstance(found, exp.Table) and found.name in service_table_names():
            return service_tables_message({found.name})
    return None


def _statement_kind(node):
    name = type(node).__name__.upper()
    words = {
        "COMMAND": (getattr(node, "name", "") or "a command").upper(),
        "DESCRIBE": "EXPLAIN",
    }
    word = words.get(name, name)
    return f"{'an' if word[:1] in 'AEIOU' else 'a'} {word}"


def _without_terminator(sql, tokens):
    """The text without a trailing ``;`` (the parser read one statement)."""
    last = tokens[-1] if tokens else None
    if last is not None and last.token_type.name == "SEMICOLON":
        return sql[: last.start].strip()
    return sql.strip()


def _decimal_cast(text):
    digits = text.lstrip("-")
    whole, _, fraction = digits.partition(".")
    scale = min(len(fraction), 30)
    precision = min(max(len(whole.lstrip("0")) + scale, scale, 1), 65)
    return f"DECIMAL({precision}, {scale})"


# --- privileges ------------------------------------------------------------------------

GRANT_LINE = re.compile(r"^GRANT (?P<what>.+?) ON (?P<target>\S+) TO ", re.IGNORECASE)
ROLE_LINE = re.compile(r"^GRANT (?P<roles>.+?) TO ", re.IGNORECASE)
QUOTED_NAME = re.compile(r"`((?:[^`]|``)*)`(?:@`(?:[^`]|``)*`)?")


def _grants(cursor):
    """Every grant line of the current user and of each role it holds, roles'
    roles too; the roles; the roles whose grants could not be read."""
    lines, roles, unreadable = [], [], []
    pending = [None]
    seen = set()
    while pending:
        role = pending.pop()
        found = _grant_lines(cursor, role)
        if found is None:
            unreadable.append(role)
            continue
        for line in found:
            grant = GRANT_LINE.match(line)
            if grant:
                lines.append((grant["what"], grant["target"]))
                continue
            held = ROLE_LINE.match(line)
            if held:
                for name in QUOTED_NAME.findall(held["roles"]):
                    name = name.replace("``", "`")
                    if name not in seen:
                        seen.add(name)
                        roles.append(name)
                        pending.append(name)
    return lines, roles, unreadable


def _grant_lines(cursor, role):
    """The grant lines of the current user (``role`` None) or of a role it holds; None
    when the server shows them in none of the ways it may.

    MariaDB shows a role's grants to its holder only while the role is set (``SHOW
    GRANTS FOR role`` needs access to the mysql schema); MySQL 8 with ``USING``. The
    role in force before is set again afterwards."""
    if role is None:
        cursor.execute("SHOW GRANTS")
        return [row[0] for row in cursor.fetchall()]
    for statement in ("SHOW GRANTS FOR %s", "SHOW GRANTS FOR CURRENT_USER() USING %s"):
        try:
            cursor.execute(statement, [role])
            return [row[0] for row in cursor.fetchall()]
        except DatabaseError:
            continue
    try:
        cursor.execute("SELECT CURRENT_ROLE()")
        (before,) = cursor.fetchone()
        cursor.execute("SET ROLE %s", [role])
        try:
            cursor.execute("SHOW GRANTS")
            return [row[0] for row in cursor.fetchall()]
        finally:
            if before and before != "NONE":
                cursor.execute("SET ROLE %s", [before])
            else:
                cursor.execute("SET ROLE NONE")
    except DatabaseError:
        return None


def _powers(grants):
    powers = []
    for what, target in grants:
        what = what.strip()
        if what.upper().startswith("PROXY"):
            powers.append("PROXY")
        elif target == "*.*" and what.upper() != "USAGE":
            powers.append(f"global privileges ({what})")
        elif target.lower().startswith(("`mysql`.", "mysql.")):
            powers.append(f"privileges on the mysql schema ({what})")
    return powers


# --- one statement, read-only, with a deadline -----------------------------------------


class _Run:
    def __init__(self, connection, raw):
        self.connection, self.raw = connection, raw
        # The connection's socket, duplicated: the watchdog can shut it while the driver
        # waits on it (mysqlclient refuses fileno() from a second thread then), and the
        # duplicate never names another socket once the connection is closed.
        self.socket = socket.socket(fileno=os.dup(raw.fileno()))
        self.result = None
        self.finished = False  # every row was read
        self.timed_out = False
        self.stalled = False


def _server_limit(raw, timeout_seconds):
    """The session's statement limit, as this server names it (a constant statement)."""
    if "mariadb" in raw.get_server_info().lower():
        return f"SET SESSION max_statement_time = {float(timeout_seconds):.3f}"
    return f"SET SESSION max_execution_time = {int(timeout_seconds * 1000)}"


@contextlib.contextmanager
def _statement_run(connection, timeout_seconds):
    """A connection in a read-only transaction, with the server's statement limit and a
    watchdog that kills the statement at the deadline (the text may have lifted the
    limit) and closes a connection that stays silent. Closed afterwards."""
    connection.ensure_connection()
    raw = connection.connection
    if not getattr(raw, "reportsvc_single_statement", False):
        raise ReportSQLError("The connection allows more than one statement; refused.")
    run = _Run(connection, raw)
    thread_id = raw.thread_id()
    connection.reportsvc_mysql_thread = thread_id
    raw.converter = {}
    deadline = time.monotonic() + timeout_seconds
    stop = threading.Event()

    def watch():
        if stop.wait(max(deadline - time.monotonic(), 0) + WATCHDOG_MARGIN_SECONDS):
            return
        run.timed_out = True
        _kill_query(connection, thread_id)
        if stop.wait(STALL_MARGIN_SECONDS):
            return
        run.stalled = True
        _shut_socket(run.socket)

    watchdog = threading.Thread(target=watch, name="mysql-statement-watchdog", daemon=True)
    watchdog.start()  # before the first round trip: a silent server is caught there too
    try:
        raw.query(_server_limit(raw, timeout_seconds).encode())
        raw.query(b"START TRANSACTION READ ONLY")
        yield run
    finally:
        stop.set()
        if run.result is not None and not run.finished:
            # Rows the report will not read: stop the server before letting go of them.
            _kill_query(connection, thread_id)
            _shut_socket(run.socket)
        connection.reportsvc_mysql_thread = None
        run.result = None
        with contextlib.suppress(Exception):
            connection.close()  # named locks, variables, temporary tables end with it
        run.socket.close()


def _kill_query(connection, thread_id):
    """``KILL QUERY`` from a second connection of the same login (the server lets a
    user stop its own threads). Best effort."""
    driver = _driver()
    try:
        params = connection.get_connection_params()
        params["connect_timeout"] = 5
        params.pop("init_command", None)
        killer = driver.connect(**params)
    except Exception:
        return
    try:
        killer.query(f"KILL QUERY {int(thread_id)}".encode())
    except driver.Error:
        pass
    finally:
        with contextlib.suppress(Exception):
            killer.close()


def _shut_socket(duplicate):
    """End the connection's socket (``duplicate``: a socket object on a duplicate of its
    descriptor) under a thread that waits on it: its read fails at once."""
    with contextlib.suppress(OSError):
        duplicate.shutdown(socket.SHUT_RDWR)


# --- conversions: the server's text for CSV, typed values for the rest ------------------


def _hex_bytes(value):
    return b"0x" + value.hex().encode()


def _hex_text(value):
    return "0x" + value.hex()


def _bit_bytes(value):
    return str(int.from_bytes(value, "big")).encode()


def _bit_number(value):
    return int.from_bytes(value, "big")


def _csv_conversions():
    """Field type -> converter: values stay the server's bytes but binary strings (hex)
    and BIT (its number)."""
    conversions = {kind: ((BINARY_FLAG, _hex_bytes), (None, bytes)) for kind in STRING_TYPES}
    conversions[BIT] = _bit_bytes
    conversions[GEOMETRY] = _hex_bytes
    return conversions


def _date_or_text(value):
    try:
        return date.fromisoformat(value)
    except ValueError:  # the zero date 0000-00-00
        return value


def _datetime_or_text(value):
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return value


def _utc_or_text(value):
    moment = _datetime_or_text(value)
    return moment.replace(tzinfo=UTC) if isinstance(moment, datetime) else moment


def _typed_conversions():
    """Field type -> converter for typed formats: numbers and dates as such; TIME
    (which spans -838:59:59 to 838:59:59), JSON, ENUM, SET and text as text."""
    conversions = {kind: ((BINARY_FLAG, _hex_text), (None, str)) for kind in STRING_TYPES}
    conversions.update({kind: int for kind in (TINY, SHORT, LONG, LONGLONG, INT24, YEAR)})
    conversions.update({FLOAT: float, DOUBLE: float, DECIMAL: Decimal, NEWDECIMAL: Decimal})
    conversions.update(
        {
            DATE: _date_or_text,
            NEWDATE: _date_or_text,
            DATETIME: _datetime_or_text,
            TIMESTAMP: _utc_or_text,
            TIME: str,
            JSON: bytes.decode,  # MySQL 8's JSON type, sent with the binary character set
            BIT: _bit_number,
            GEOMETRY: _hex_text,
        }
    )
    return conversions


# --- streaming ---------------------------------------------------------------------------

_QUOTE_NEEDED = re.compile(rb'[",\r\n]')
_needs_quotes = _QUOTE_NEEDED.search


def _csv_field(value):
    if value is None:
        return b""
    if not value:
        return b'""'
    if _QUOTE_NEEDED.search(value):
        return b'"' + value.replace(b'"', b'""') + b'"'
    return value


def _csv_line(row):
    return b",".join(map(_csv_field, row))


def _csv_block(rows, width):
    """The CSV lines of ``rows`` (bytes values or None), each ending in a newline.

    Most blocks hold no NULL, no empty value and nothing to quote: one join in C makes
    them, and counting the separators in the result proves it. Other blocks go column
    by column (_csv_column), so one column of quoted text costs little more."""
    try:
        text = b"\n".join(map(b",".join, rows))
    except TypeError:  # a NULL
        return _csv_block_by_column(rows)
    bounded = b"\n" + text + b"\n"
    if (
        b'"' in text
        or b"\r" in text
        or text.count(b",") != len(rows) * (width - 1)
        or text.count(b"\n") != len(rows) - 1
        or b",," in bounded
        or b"\n," in bounded
        or b",\n" in bounded
        or (width == 1 and b"\n\n" in bounded)
    ):
        return _csv_block_by_column(rows)
    return text + b"\n"


def _csv_block_by_column(rows):
    columns = [_csv_column(column) for column in zip(*rows, strict=True)]
    return b"\n".join(map(b",".join, zip(*columns, strict=True))) + b"\n"


def _csv_column(values):
    """One column's CSV fields. A column without NULL, empty values or NULs whose
    joined text holds nothing to quote stays as it is, and one whose every value needs
    quotes is quoted in a few passes over its joined text, all in C; only columns with
    NULLs or mixed values go value by value."""
    try:
        joined = b"\x00".join(values)
    except TypeError:  # a NULL
        return list(map(_csv_field, values))
    if (
        joined.count(b"\x00") != len(values) - 1  # a NUL inside a value
        or b"\x00\x00" in joined
        or joined[:1] in (b"", b"\x00")
        or joined[-1:] == b"\x00"
    ):  # an empty value
        return list(map(_csv_field, values))
    if not (b"," in joined or b'"' in joined or b"\n" in joined or b"\r" in joined):
        return values  # four byte searches: far faster than a regex over the column
    if all(map(_needs_quotes, values)):
        quoted = b'"' + joined.replace(b'"', b'""').replace(b"\x00", b'"\x00"') + b'"'
        return quoted.split(b"\x00")
    return list(map(_csv_field, values))


def _blocks(run, first_rows=16):
    """The result's rows in blocks of about FETCH_BLOCK_BYTES (sent back: the size of
    the block before). Marks ``run.finished`` when the server has sent every row."""
    fetch = run.result.fetch_row
    rows_per_fetch = first_rows
    while True:
        rows = fetch(rows_per_fetch, 0)
        if not rows:
            run.finished = True
            return
        size = yield rows
        if size:
            per_row = max(size // len(rows), 1)
            rows_per_fetch = max(1, min(MAX_FETCH_ROWS, FETCH_BLOCK_BYTES // per_row))


def _export_csv(run, writer, limit):
    """CSV lines in blocks; to a writer that looks at each row (formula escaping), row
    by row."""
    columns = run.result.describe()
    by_row = writer.needs_column_types
    write = writer.copy_writer(_text_columns(columns) if by_row else None)
    width = len(columns)
    write(_csv_line([column[0].encode() for column in columns]) + b"\n")
    row_count, size = 0, None
    blocks = _blocks(run)
    while (rows := _next_block(blocks, size)) is not None:
        row_count += len(rows)
        if row_count > limit.rows:
            raise RowLimitExceeded(limit.message)
        block = _csv_block(rows, width)
        size = len(block)
        if by_row:
            for row in rows:
                write(_csv_line(row) + b"\n")
        else:
            write(block)
    return row_count


def _next_block(blocks, size):
    try:
        return blocks.send(size)
    except StopIteration:
        return None


def _text_columns(columns):
    """Positions of the columns whose values are text (formula escaping's business)."""
    return [
        index
        for index, column in enumerate(columns)
        if column[1] not in NUMBER_TYPES and column[1] != BIT
    ]


def _export_typed(run, writer, limit):
    names = [column[0] for column in run.result.describe()]
    writer.write_header(names)
    row_count, size = 0, None
    blocks = _blocks(run, first_rows=1)
    while (rows := _next_block(blocks, size)) is not None:
        row_count += len(rows)
        if row_count > limit.rows:
            raise RowLimitExceeded(limit.message)
        writer.write_rows(rows)
        size = 8 * len(rows) * len(names) + sum(
            len(value) for row in rows for value in row if isinstance(value, (str, bytes))
        )
    return row_count


BACKEND = MySQLBackend()
