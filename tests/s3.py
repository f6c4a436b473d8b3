"""A real S3 API server on loopback for the tests: moto's server mode, in its own process.

``.ci/run`` starts one and exports its address as ``REPORTSVC_TEST_S3_URL``; without
that, each test process starts its own on a free port. In front of it for downloads
stands :class:`PresignedURLGateway`, which checks presigned URLs the way S3 does (moto
serves them without looking at their signature or expiry).
"""

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

import boto3
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

# moto accepts any credentials; these are the ones every test client signs with.
ACCESS_KEY = "reportsvc-test"
SECRET_KEY = "reportsvc-test-secret"
REGION = "us-east-1"
EXTERNAL_SERVER_VARIABLE = "REPORTSVC_TEST_S3_URL"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_answering(url, process=None, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
            return
        except (urllib.error.URLError, OSError):
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the moto server exited with {process.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def start_moto_server(log_path):
    """A moto server process on a free loopback port: ``(process, url)``."""
    port = free_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_until_answering(url, process)
    return process, url


def client_for(url):
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )


def create_bucket(client, name):
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=name)


def presigned_url_problem(method, url, now=None):
    """Why S3 would refuse this presigned URL (expired, or a signature that does not
    match the URL as sent), or None. The signature is recomputed with the test
    credentials for the host the URL names."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    fields = dict(query)
    if "X-Amz-Signature" not in fields:
        return None
    signed_at = datetime.strptime(fields["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    expires = int(fields["X-Amz-Expires"])
    if (now or datetime.now(UTC)) > signed_at + timedelta(seconds=expires):
        return "AccessDenied: Request has expired"
    region = fields["X-Amz-Credential"].split("/")[2]
    unsigned = [(key, value) for key, value in query if not key.startswith("X-Amz-")]
    request = AWSRequest(
        method=method,
        url=f"{parts.scheme}://{parts.netloc}{parts.path}"
        + (f"?{urlencode(unsigned)}" if unsigned else ""),
    )
    request.context["timestamp"] = fields["X-Amz-Date"]
    auth = S3SigV4QueryAuth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", region, expires=expires)
    auth._modify_request_before_signing(request)
    canonical = auth.canonical_request(request)
    expected = auth.signature(auth.string_to_sign(request, canonical), request)
    if expected != fields["X-Amz-Signature"]:
        return "SignatureDoesNotMatch"
    return None


class PresignedURLGateway:
    """An HTTP server on loopback that refuses presigned GETs S3 would refuse and passes
    the rest on to the S3 server: the address download URLs are signed for."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.requests = []  # (method, path with query, status) of each request answered
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                gateway._serve(self, "GET")

            def do_HEAD(self):
                gateway._serve(self, "HEAD")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _serve(self, handler, method):
        problem = presigned_url_problem(method, f"{self.url}{handler.path}")
        if problem:
            code, _, message = problem.partition(": ")
            body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
            self._answer(handler, method, 403, {"Content-Type": "application/xml"}, body)
            return
        upstream = urllib.request.Request(f"{self.upstream}{handler.path}", method=method)
        try:
            with urllib.request.urlopen(upstream, timeout=30) as response:
                status, headers, body = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, headers, body = error.code, error.headers, error.read()
        passed = {
            name: value
            for name, value in headers.items()
            if name.lower() not in ("content-length", "transfer-encoding", "connection")
        }
        self._answer(handler, method, status, passed, body)

    def _answer(self, handler, method, status, headers, body):
        self.requests.append((method, handler.path, status))
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if method != "HEAD":
            handler.wfile.write(body)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class S3Server:
    """The S3 server of this test process, its bucket and the download gateway."""

    def __init__(self, url, bucket):
        self.url = url
        self.bucket = bucket
        self.client = client_for(url)
        create_bucket(self.client, bucket)
        self.gateway = PresignedURLGateway(url)


def external_server_url():
    return os.environ.get(EXTERNAL_SERVER_VARIABLE, "").rstrip("/")


ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
)


class FaultyStorageProxy:
    """A TCP proxy on loopback in front of the S3 server, to play the storage's bad days.

    Modes (``set_mode``; connections open at a change are cut, so every request after it
    sees the new mode):

    - ``forward``: passes every byte both ways;
    - ``stall``: accepts connections (the kernel does, as for a stalled server) and
      holds every byte either way until ``forward`` again, then delivers them: a
      request the client gave up on meanwhile still reaches the server;
    - ``drop answers``: requests reach the server, its answers never come back;
    - ``refuse``: answers every request ``403 AccessDenied`` as S3 does for a key
      without the permission, the server never asked.
    """

    FORWARD, STALL, DROP_ANSWERS, REFUSE = "forward", "stall", "drop answers", "refuse"

    def __init__(self, upstream_url):
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname, parts.port)
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.mode = self.FORWARD
        self.connections = 0  # accepted so far
        self.requests = []  # (method, path) of each request passed on to the server
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._sockets = set()
        self._pumps = set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def set_mode(self, mode):
        with self._lock:
            previous, self.mode = self.mode, mode
            # Held bytes are delivered when a stall ends; any other change cuts what is open.
            cut = [] if previous == self.STALL else list(self._sockets)
        if mode == self.STALL:
            self._flowing.clear()
        else:
            self._flowing.set()
        for sock in cut:
            self._close(sock)

    def wait_until_idle(self, timeout=30):
        """Until every held byte was delivered and every connection ended."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                pumps = [pump for pump in self._pumps if pump.is_alive()]
            if not pumps:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(pumps)} connections still open")
            pumps[0].join(0.05)

    def close(self):
        self._closed = True
        self._flowing.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            self._close(sock)

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.mode == self.REFUSE:
                threading.Thread(target=self._refuse, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
                for source, target, answers in (
                    (client, upstream, False),
                    (upstream, client, True),
                ):
                    pump = threading.Thread(
                        target=self._pump, args=(source, target, answers), daemon=True
                    )
                    self._pumps.add(pump)
                    pump.start()

    def _pump(self, source, target, answers):
        """Pass what ``source`` sends on to ``target``: requests (``answers`` False) or
        the server's answers. Answers dropped leave the client waiting, as a server
        that never answers does, until it gives up."""
        failed = False
        try:
            while True:
                data = source.recv(1 << 16)
                self._flowing.wait()
                if not data:
                    if not (answers and self.mode == self.DROP_ANSWERS):
                        with contextlib.suppress(OSError):
                            target.shutdown(socket.SHUT_WR)
                    break
                if answers and self.mode == self.DROP_ANSWERS:
                    continue
                if not answers:
                    self._note_request(data)
                target.sendall(data)
        except OSError:
            failed = True
        finally:
            dropping = self.mode == self.DROP_ANSWERS
            if failed or (answers and not dropping) or (not answers and dropping):
                self._close(source)
                self._close(target)
            with self._lock:
                self._pumps.discard(threading.current_thread())

    def _note_request(self, data):
        method, _, rest = data.partition(b" ")
        if method in (b"GET", b"HEAD", b"PUT", b"POST", b"DELETE"):
            self.requests.append((method.decode(), rest.partition(b" ")[0].decode()))

    def _refuse(self, client):
        with client:
            client.settimeout(10)
            data = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in data:
                    chunk = client.recv(1 << 16)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                headers = head.decode("latin-1").lower()
                length = 0
                for line in headers.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip() == "content-length":
                        length = int(value)
                if "expect: 100-continue" not in headers:
                    while len(body) < length:  # the whole request, as S3 reads it
                        chunk = client.recv(1 << 16)
                        if not chunk:
                            break
                        body += chunk
                client.sendall(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n"
                    + f"Content-Length: {len(ACCESS_DENIED)}\r\n".encode()
                    + b"Connection: close\r\n\r\n"
                    + (b"" if head.startswith(b"HEAD ") else ACCESS_DENIED)
                )

    def _close(self, sock):
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
