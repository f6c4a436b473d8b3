"""Webhook receivers and a mail server for tests: real servers on 127.0.0.1,
well-behaved and hostile."""

import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """A local HTTP server: answers with the given status codes in turn, records
    requests; ``headers`` are added to every answer (e.g. a redirect's Location)."""

    def __init__(
        self, statuses=(200,), delay=0.0, headers=None, path="/hooks/T000/secret-path", reason=None
    ):
        self.statuses, self.delay, self.requests = list(statuses), delay, []
        self.answered = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                time.sleep(receiver.delay)
                status = (
                    receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                )
                self.send_response(status, reason)  # None: the usual phrase
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(b"ok")
                receiver.answered.set()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}{path}"
        # shutdown() waits for serve_forever to notice, up to one poll interval (0.5 s
        # by default) after every test.
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class RefusingMailServer:
    """An SMTP server on 127.0.0.1 that has no mailbox for anyone: it refuses every
    recipient as Postfix does (``550 5.1.1 <name@domain>: Recipient address
    rejected``), so smtplib raises SMTPRecipientsRefused naming the addresses."""

    def __init__(self):
        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.reply("220 mail.corp.example ESMTP")
                for line in self.rfile:
                    command = line.decode("ascii", "replace").strip()
                    verb = command[:4].upper()
                    if verb in ("EHLO", "HELO"):
                        self.reply("250 mail.corp.example")
                    elif verb == "RCPT":
                        address = command.partition(":")[2].strip().strip("<>")
                        self.reply(
                            f"550 5.1.1 <{address}>: Recipient address rejected: "
                            "User unknown in local recipient table"
                        )
                    elif verb == "QUIT":
                        self.reply("221 2.0.0 Bye")
                        return
                    elif verb == "DATA":
                        self.reply("554 5.5.1 Error: no valid recipients")
                    else:  # MAIL, RSET, NOOP
                        self.reply("250 2.0.0 Ok")

            def reply(self, text):
                self.wfile.write(text.encode() + b"\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class TcpReceiver:
    """A raw TCP server on 127.0.0.1. Each connection gets ``greeting`` at once (after
    the request, if ``read_request``), then ``trickle`` one byte every ``interval``
    seconds, until the client hangs up. Records when each connection began and ended."""

    def __init__(self, *, trickle=b"", interval=1.0, greeting=b"", read_request=True):
        self.trickle, self.interval = trickle, interval
        self.greeting, self.read_request = greeting, read_request
        self.connections = []  # [accepted_at, closed_at or None, bytes received]
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        record = [time.monotonic(), None, b""]
        self.connections.append(record)
        self.connected.set()
        try:
            with conn:
                conn.settimeout(0.1)
                while self.read_request and b"\r\n\r\n" not in record[2]:
                    if self._stop.is_set():
                        return
                    try:
                        if not self._receive(conn, record):
                            return
                    except TimeoutError:
                        continue
                conn.sendall(self.greeting)
                sent = 0
                conn.settimeout(self.interval)
                while not self._stop.is_set():
                    try:
                        if not self._receive(conn, record):
                            return  # the client hung up
                        continue
                    except TimeoutError:
                        pass
                    if sent < len(self.trickle):
                        conn.sendall(self.trickle[sent : sent + 1])
                        sent += 1
        except OSError:
            pass
        finally:
            record[1] = time.monotonic()

    @staticmethod
    def _receive(conn, record):
        """False once the client has hung up; TimeoutError while it is quiet."""
        data = conn.recv(65536)
        record[2] += data
        return bool(data)

    def close(self):
        self._stop.set()
        self._listener.close()


# A complete, valid answer, for trickling one byte at a time.
HTTP_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
# The header of a TLS handshake record of 16 KiB: a TLS client waits for the rest.
TLS_RECORD_HEADER = b"\x16\x03\x03\x40\x00"
