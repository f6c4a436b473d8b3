"""The backend registry (one module per vendor, chosen by the connection), and what
every backend does alike: cancel a running statement from another thread."""

import io
import threading
import time

import pytest
from django.db import connections

from datasources.backends import (
    BACKEND_MODULES,
    UnsupportedVendor,
    backend_for,
    backend_for_engine,
    backend_for_vendor,
    backends,
)
from datasources.backends.base import Backend
from datasources.registry import DEFAULT_SOURCE, alias_for_source
from datasources.sandbox import RowLimit, StatementCancelled
from runs.services.formats import get_format
from tests.conftest import executes_reports, postgres_only, sqlite_only


def test_each_backend_module_defines_one_backend_of_its_vendor():
    assert list(backends()) == list(BACKEND_MODULES)
    for vendor, backend in backends().items():
        assert isinstance(backend, Backend)
        assert backend.vendor == vendor
        assert backend.label and backend.engine and backend.url_schemes


def test_a_source_connection_chooses_its_backend():
    connection = connections[alias_for_source(DEFAULT_SOURCE)]
    assert backend_for(connection).vendor == connection.vendor
    assert backend_for_engine(connection.settings_dict["ENGINE"]) is backend_for(connection)


def test_an_unsupported_vendor_is_refused_with_the_supported_ones_named():
    with pytest.raises(UnsupportedVendor) as refused:
        backend_for_vendor("oracle")
    assert str(refused.value).startswith(
        "Data sources on oracle are not supported; use one of: postgres://, sqlite://, mysql://"
    )
    with pytest.raises(UnsupportedVendor, match="Data sources on oracle are not supported"):
        backend_for_engine("django.db.backends.oracle")


def test_every_backend_implements_the_whole_interface():
    required = [
        name
        for name, value in vars(Backend).items()
        if callable(value) and not name.startswith("_")
    ]
    assert "cancel" in required and "export" in required
    for backend in backends().values():
        missing = [name for name in required if getattr(type(backend), name) is vars(Backend)[name]]
        assert missing == [], f"{backend.label} lacks {missing}"


# --- cancel: stop the running statement from another thread ---------------------------

SLEEPING = {
    "postgresql": "SELECT pg_sleep(30)",
    "sqlite": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
    "SELECT count(*) FROM n",
}


def export_in_a_thread(statements, timeout_seconds=60):
    """Export ``statements`` one after the other on one connection of the default source,
    in a thread of its own; that connection, and a function to wait for the outcomes
    (each the row count or the exception)."""
    ready, outcomes = threading.Event(), []
    holder = {}

    def work():
        connection = connections[alias_for_source(DEFAULT_SOURCE)]
        connection.ensure_connection()
        holder["connection"] = connection
        ready.set()
        backend = backend_for(connection)
        try:
            for statement in statements:
                writer = get_format("csv").open_writer(io.BytesIO())
                try:
                    outcomes.append(
                        backend.export(
                            connection,
                            statement,
                            writer,
                            get_format("csv"),
                            timeout_seconds,
                            RowLimit(10, "too many rows"),
                        )
                    )
                except Exception as error:
                    outcomes.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    ready.wait(10)

    def finished(seconds):
        thread.join(seconds)
        assert not thread.is_alive(), "the export did not stop"
        return outcomes

    return holder["connection"], thread, finished


def cancel_until_stopped(connection, thread, seconds=10):
    """Cancel from this thread until the export's thread moves on (a cancel that lands
    before the statement starts has nothing to stop)."""
    backend, deadline = backend_for(connection), time.monotonic() + seconds
    while thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
        backend.cancel(connection)
        thread.join(0.3)


def assert_cancelled_then_usable(statement):
    connection, thread, finished = export_in_a_thread([statement, "SELECT 1 AS one"])
    started = time.monotonic()
    time.sleep(0.5)
    cancel_until_stopped(connection, thread)
    first, second = finished(10)
    assert time.monotonic() - started < 10
    assert isinstance(first, StatementCancelled), first
    assert str(first).startswith("The query was cancelled: ")
    # The connection stays its user's: the next export on it runs, not cancelled.
    assert second == 1


@postgres_only
@executes_reports
def test_postgresql_cancel_sends_a_cancel_request_from_another_thread():
    assert_cancelled_then_usable(SLEEPING["postgresql"])


@sqlite_only
@executes_reports
def test_sqlite_cancel_interrupts_the_statement_from_another_thread():
    assert_cancelled_then_usable(SLEEPING["sqlite"])


@executes_reports
def test_a_cancel_while_nothing_runs_changes_nothing():
    connection = connections[alias_for_source(DEFAULT_SOURCE)]
    backend = backend_for(connection)
    backend.cancel(connection)  # never connected: nothing to stop
    connection.ensure_connection()
    backend.cancel(connection)  # idle
    writer = get_format("csv").open_writer(sink := io.BytesIO())
    rows = backend.export(
        connection, "SELECT 1 AS one", writer, get_format("csv"), 5, RowLimit(10, "too many")
    )
    writer.close()
    assert rows == 1
    assert sink.getvalue() == b"one\n1\n"
