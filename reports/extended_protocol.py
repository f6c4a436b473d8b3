"""Send one statement to PostgreSQL over the extended query protocol, and wait for it.

The extended protocol (``PQsendQueryParams``) carries exactly one statement: whatever
report text does to the quoting, nothing after it can run. psycopg's ``execute``
without parameters uses the simple protocol, which runs every statement in a string,
so report text never goes through it.
"""

import select
import time

from psycopg import pq


class ConnectionStalled(Exception):
    pass


def send_one_statement(pgconn, sql):
    pgconn.send_query_params(sql.encode(), None)
    while pgconn.flush():
        pass


def wait_readable(pgconn, deadline):
    # poll() releases the GIL, so other threads run while the database works.
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    while not poller.poll(1000):
        if time.monotonic() > deadline:
            raise ConnectionStalled(
                "The database stopped answering (no data past the statement timeout); "
                "the connection was closed."
            )
    pgconn.consume_input()


def next_result(pgconn, deadline):
    while pgconn.is_busy():
        wait_readable(pgconn, deadline)
    return pgconn.get_result()


def drain_results(pgconn, deadline):
    """Consume every pending result; the first error among them, if any."""
    first_error = None
    while (result := next_result(pgconn, deadline)) is not None:
        if result.status == pq.ExecStatus.COPY_OUT:  # never expected: one statement only
            raise ConnectionStalled("Unexpected second COPY from the database.")
        if first_error is None and result.status == pq.ExecStatus.FATAL_ERROR:
            first_error = result
    return first_error


def execute_one_statement(psycopg_connection, sql, deadline):
    """Run ``sql`` as one statement and discard its rows; raise the database's error."""
    import psycopg

    pgconn = psycopg_connection.pgconn
    send_one_statement(pgconn, sql)
    error = drain_results(pgconn, deadline)
    if error is not None:
        raise psycopg.errors.error_from_result(error)
