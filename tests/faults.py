"""Real faults for tests of what the service does when something breaks.

- ``refused_updates`` / ``refused_success``: the database itself refuses a write, as a
  constraint or a broken disk would, for every connection and every process (the worker
  processes tests start too);
- ``FaultProxy``: a TCP proxy between a process and PostgreSQL that injects network faults:
  ``pause()`` (nothing passes either way, new connections included, while both ends'
  kernels keep every connection up: a stalled network, a hung middlebox), ``cut()`` (every
  connection closed on both sides, FIN), ``reset()`` (every connection reset, RST) and
  ``resume()`` (data flows again).
"""

import contextlib
import queue
import selectors
import socket
import struct
import threading

from django.db import connection

REFUSAL = "recording refused by a trigger of the test"


@contextlib.contextmanager
def refused_updates(report, condition):
    """While the block runs, the service's database refuses updates of ``report``'s
    runs that meet ``condition`` (SQL over ``OLD`` and ``NEW``): a trigger raises."""
    when = f"NEW.report_id = {int(report.pk)} AND ({condition})"
    if connection.vendor == "postgresql":
        create = [
            "CREATE FUNCTION test_refuse_update() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{REFUSAL}'; END $$",
            "CREATE TRIGGER test_refuse_update BEFORE UPDATE ON runs_run FOR EACH ROW "
            f"WHEN ({when}) EXECUTE FUNCTION test_refuse_update()",
        ]
        drop = [
            "DROP TRIGGER IF EXISTS test_refuse_update ON runs_run",
            "DROP FUNCTION IF EXISTS test_refuse_update()",
        ]
    else:
        create = [
            f"CREATE TRIGGER test_refuse_update BEFORE UPDATE ON runs_run WHEN {when} "
            f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
        ]
        drop = ["DROP TRIGGER IF EXISTS test_refuse_update"]
    with connection.cursor() as cursor:
        for statement in create:
            cursor.execute(statement)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for statement in drop:
                cursor.execute(statement)


def refused_success(report):
    """The database refuses to record that a run of ``report`` succeeded."""
    return refused_updates(report, "NEW.status = 'succeeded'")


class FaultProxy:
    def __init__(self, upstream_host, upstream_port):
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._peers = {}  # socket -> the socket at the other end
        self._paused = False
        self._commands = queue.Queue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self._thread.start()

    def pause(self):
        self._do(self._pause)

    def resume(self):
        self._do(self._resume)

    def cut(self):
        self._do(self._close_all)

    def reset(self):
        self._do(lambda: self._close_all(reset=True))

    def connections(self):
        return len(self._peers) // 2

    def close(self):
        self._closed.set()
        self._thread.join(5)
        self._close_all()
        self._listener.close()

    # --- in the proxy's thread ------------------------------------------------------------

    def _do(self, command):
        done = threading.Event()
        self._commands.put((command, done))
        done.wait(5)

    def _serve(self):
        while not self._closed.is_set():
            with contextlib.suppress(queue.Empty):
                while True:
                    command, done = self._commands.get_nowait()
                    command()
                    done.set()
            for key, _ in self._selector.select(timeout=0.02):
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    self._forward(key.fileobj)

    def _pause(self):
        self._paused = True
        for sock in [self._listener, *self._peers]:
            self._selector.unregister(sock)

    def _resume(self):
        if self._paused:
            self._paused = False
            for sock in [self._listener, *self._peers]:
                self._selector.register(sock, selectors.EVENT_READ)

    def _accept(self):
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        for sock in (client, server):
            sock.setblocking(True)
            self._selector.register(sock, selectors.EVENT_READ)
        self._peers[client], self._peers[server] = server, client

    def _forward(self, sock):
        other = self._peers.get(sock)
        try:
            data = sock.recv(65536)
            if data:
                other.sendall(data)
                return
        except OSError:
            pass
        self._close_pair(sock)

    def _close_pair(self, sock, reset=False):
        for end in (sock, self._peers.get(sock)):
            if end is None or end not in self._peers:
                continue
            del self._peers[end]
            if not self._paused:
                self._selector.unregister(end)
            if reset:  # close with a zero linger time: RST instead of FIN
                end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
            end.close()

    def _close_all(self, reset=False):
        for sock in list(self._peers):
            self._close_pair(sock, reset=reset)
