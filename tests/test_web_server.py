"""The web server as shipped: gunicorn with gunicorn.conf.py, against slow clients and
a stalled storage.

Each test starts a real gunicorn on a free loopback port with a short GUNICORN_TIMEOUT
and downloads a real run's CSV over raw sockets that read slowly, or not at all, or
asks for a run's object in an S3 storage that does not answer.
"""

import hashlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reports.models import Report
from runs.services.runtime.runner import run_report_now
from tests import s3
from tests.api_helpers import make_user, token_key
from tests.conftest import wait_for
from tests.workers import PROJECT_DIR, process_environment

pytestmark = [
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.long_running,
]

TIMEOUT = 2  # GUNICORN_TIMEOUT, seconds
# About 4.5 MiB: several times what the socket buffers between the server and a
# client (see send_request) hold, so at 1.2 MiB/s the server sends for about 3 s.
BIG_SQL = (
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 60000) "
    "SELECT x AS id, 'the quick brown fox jumps over the lazy dog, again and again "
    "and again' AS words FROM n"
)
MIB = 1024 * 1024


@pytest.fixture
def big_run():
    report = Report.objects.create(name="Big", slug="big", sql=BIG_SQL)
    run = run_report_now(report)
    assert run.status == "succeeded", run.error
    assert run.output_bytes > 4 * MIB
    return run


@pytest.fixture
def token():
    return token_key(make_user("viewer", "view"))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# The shipped configuration; other gunicorns on this machine may own the default
# control socket.
GUNICORN = [
    str(Path(sys.executable).parent / "gunicorn"),
    "reportsvc.wsgi",
    "--config",
    "gunicorn.conf.py",
    "--no-control-socket",
]


@pytest.fixture
def start_gunicorn(outputs_dir, tmp_path):
    """Start gunicorn with the shipped configuration; returns (port, log path)."""
    servers = []

    def start(**settings):
        port = free_port()
        log_path = tmp_path / f"gunicorn-{len(servers)}.log"
        environment = process_environment(
            outputs_dir,
            ALLOWED_HOSTS="127.0.0.1",
            GUNICORN_BIND=f"127.0.0.1:{port}",
            GUNICORN_TIMEOUT=TIMEOUT,
            WEB_CONCURRENCY=1,
            LOG_LEVEL="WARNING",
            **settings,
        )
        if "GUNICORN_THREADS" not in settings:
            environment.pop("GUNICORN_THREADS", None)
        with open(log_path, "w") as log:
            server = subprocess.Popen(
                GUNICORN,
                cwd=PROJECT_DIR,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        servers.append(server)
        deadline = time.monotonic() + 30
        while healthz(port, timeout=1)[0] != 200:
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        return port, log_path

    yield start
    for server in servers:
        server.kill()
        server.wait(10)


def healthz(port, timeout):
    """GET /healthz?scope=web on a new connection: (status or None, seconds)."""
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/healthz?scope=web")
        response = connection.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    except OSError:
        return None, time.monotonic() - started
    finally:
        connection.close()


def send_request(port, path, headers=""):
    """A raw socket that has sent ``GET path``, with a remote client's segment size and
    a small receive window: the kernel buffers hold well under a MiB of its response,
    so the server does wait for it to read."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1460)
    client.settimeout(30)
    client.connect(("127.0.0.1", port))
    client.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n".encode()
    )
    return client


def open_download(port, run, token):
    return send_request(port, f"/api/runs/{run.pk}/download/", f"Authorization: Token {token}\r\n")


def read_slowly(client, rate, result):
    """Read the whole response at ``rate`` bytes a second; the body's size and SHA-256."""
    started = time.monotonic()
    data, body = b"", None
    try:
        while True:
            chunk = client.recv(16 * 1024)
            if not chunk:
                break
            if body is None:
                data += chunk
                if b"\r\n\r\n" in data:
                    head, _, first = data.partition(b"\r\n\r\n")
                    result["status_line"] = head.split(b"\r\n")[0].decode()
                    body = hashlib.sha256(first)
                    result["bytes"] = len(first)
                continue
            body.update(chunk)
            result["bytes"] += len(chunk)
            ahead = result["bytes"] / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    except OSError as error:
        result["error"] = repr(error)
    finally:
        client.close()
    result["sha256"] = body.hexdigest() if body else None
    result["seconds"] = time.monotonic() - started


def test_slow_downloads_outlast_the_timeout_while_healthz_answers(start_gunicorn, big_run, token):
    port, log_path = start_gunicorn()
    results = [{}, {}]
    readers = [
        threading.Thread(
            target=read_slowly, args=(open_download(port, big_run, token), rate * MIB, result)
        )
        for rate, result in zip((1.2, 1.5), results, strict=True)
    ]
    for reader in readers:
        reader.start()
    probes = []
    while any(reader.is_alive() for reader in readers):
        probes.append(healthz(port, timeout=10))
        time.sleep(0.1)
    for reader in readers:
        reader.join()

    for result in results:
        assert result["status_line"] == "HTTP/1.1 200 OK", result
        assert result["bytes"] == big_run.output_bytes, result
        assert result["sha256"] == big_run.output_sha256
        assert result["seconds"] > 1.5 * TIMEOUT
    assert len(probes) > 10
    assert all(status == 200 for status, _ in probes), probes
    assert max(seconds for _, seconds in probes) < 1.0, probes
    assert "WORKER TIMEOUT" not in log_path.read_text()


def test_a_client_that_stops_reading_is_dropped_and_frees_its_thread(
    start_gunicorn, big_run, token
):
    # One thread: while the stalled download holds it, nothing else is answered.
    port, log_path = start_gunicorn(GUNICORN_THREADS=1)
    stalled = open_download(port, big_run, token)
    time.sleep(0.5)  # the request is being served, its thread blocked in sendfile
    status, waited = healthz(port, timeout=20)
    assert status == 200
    # Dropped once it took nothing for TIMEOUT seconds; then the thread waits at most
    # 2 s for the client to close before it is free.
    assert waited < TIMEOUT + 2 + 3
    result = {}
    read_slowly(stalled, 100 * MIB, result)
    assert result["status_line"] == "HTTP/1.1 200 OK"
    assert result["bytes"] < big_run.output_bytes  # the connection was closed early
    assert "WORKER TIMEOUT" not in log_path.read_text()


def test_clients_slow_to_close_do_not_stall_the_server(start_gunicorn):
    # gthread's own close waits up to 2 s for the client to close first. Done on the
    # process's main loop, three such waits in a row would stop it accepting and
    # beating for longer than the timeout: probes would wait, the arbiter would kill it.
    port, log_path = start_gunicorn()
    lazy = [send_request(port, "/healthz?scope=web") for _ in range(3)]
    time.sleep(0.3)  # answered; each of them neither reads nor closes
    probes = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        probes.append(healthz(port, timeout=10))
        time.sleep(0.1)
    for client in lazy:
        assert client.recv(1024).startswith(b"HTTP/1.1 200 OK")
        client.close()
    assert all(status == 200 for status, _ in probes), probes
    assert max(seconds for _, seconds in probes) < 1.0, probes
    assert "WORKER TIMEOUT" not in log_path.read_text()


def test_the_web_refuses_to_start_on_an_unsafe_data_source(outputs_dir, tmp_path):
    # A source on the service's own database can read its tokens: the checks stop gunicorn.
    environment = process_environment(
        outputs_dir,
        GUNICORN_BIND=f"127.0.0.1:{free_port()}",
        REPORTING_DATABASE_URL=process_environment(outputs_dir)["DATABASE_URL"],
    )
    result = subprocess.run(
        GUNICORN,
        cwd=PROJECT_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "(reports.E001) Data source 'default' can read reportsvc's own tables" in (
        result.stdout + result.stderr
    )


def get(port, path, token=None, timeout=30):
    """GET ``path`` on a new connection: (status or None, headers, body, seconds)."""
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Authorization": f"Token {token}"} if token else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        return response.status, dict(response.getheaders()), body, time.monotonic() - started
    except OSError:
        return None, {}, b"", time.monotonic() - started
    finally:
        connection.close()


def test_a_stalled_storage_never_holds_the_web(start_gunicorn, faulty_storage, s3_outputs, token):
    report = Report.objects.create(name="Numbers", slug="numbers", sql="SELECT 1 AS n")
    run = run_report_now(report)
    assert run.status == "succeeded", run.error
    port, log_path = start_gunicorn(
        OUTPUTS_S3_BUCKET=s3_outputs.bucket,
        OUTPUTS_S3_PREFIX=s3_outputs.prefix,
        AWS_S3_ENDPOINT_URL=faulty_storage.url,
        OUTPUTS_S3_PUBLIC_ENDPOINT_URL=s3_outputs.server.gateway.url,
        AWS_ACCESS_KEY_ID=s3.ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=s3.SECRET_KEY,
        AWS_S3_REGION_NAME=s3.REGION,
        AWS_S3_ADDRESSING_STYLE="path",
    )  # one process of 8 threads; the storage's defaults: 3 s, 4 at a time
    download = f"/api/runs/{run.pk}/download/"
    assert get(port, download, token)[0] == 302
    faulty_storage.set_mode(faulty_storage.STALL)
    results = [None] * 30
    clients = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, get(port, download, token)))
        for i in range(len(results))
    ]
    for client in clients:
        client.start()
    # The requests past the bulkhead are answered at once (a burst of CPU on a shared
    # machine); then, while the storage holds 4 threads of the 8, the web answers.
    wait_for(lambda: sum(result is not None for result in results) >= len(results) - 4)
    probes = []
    while any(client.is_alive() for client in clients):
        for path in ("/healthz?scope=web", "/healthz", "/api/runs/"):
            status, _, _, seconds = get(port, path, token, timeout=10)
            probes.append((path, status, seconds))
        time.sleep(0.05)
    for client in clients:
        client.join()

    for status, headers, body, seconds in results:
        assert status == 503, (status, body)
        assert headers["Retry-After"] == "5"
        assert json.loads(body)["detail"].startswith(f"The output file of run {run.pk} cannot")
        # The storage's 3 s at most, for the few that asked it (botocore's own: minutes).
        assert seconds < 3 + 2
    reasons = {json.loads(body)["detail"].partition(": ")[2] for _, _, body, _ in results}
    assert any(reason.startswith("the storage did not answer in time") for reason in reasons)
    assert any(reason.startswith("all 4 of this web process's requests") for reason in reasons)
    assert len(probes) >= 3
    assert all(status in (200, 503) for _, status, _ in probes), probes
    assert all(status == 200 for path, status, _ in probes if path != "/healthz"), probes
    assert max(seconds for _, _, seconds in probes) < 1.0, probes
    faulty_storage.set_mode(faulty_storage.FORWARD)
    assert get(port, download, token)[0] == 302
    assert "WORKER TIMEOUT" not in log_path.read_text()
