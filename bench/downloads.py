"""Download benchmark: slow clients through gunicorn with the shipped configuration.

Makes a ~50 MiB CSV output with a real report run (PostgreSQL, its own
reportsvc_bench_downloads database), starts gunicorn with gunicorn.conf.py on
127.0.0.1 with a short GUNICORN_TIMEOUT, then downloads the output with
3 x WEB_CONCURRENCY clients at once, each reading at its own pace between 1 and
2 MiB/s, so every download lasts several times GUNICORN_TIMEOUT. Meanwhile it probes
GET /healthz?scope=web and GET /api/runs/, each on a new connection as a health check
or an integration would. Prints per download its time, bytes and whether its SHA-256
is the run's output_sha256; probe latency (p50, max) before and during the transfer;
the RSS of every gunicorn process before and at its peak during the transfer; the
connections each process held; PASS/MISS lines. Exits 1 on a miss.

    python bench/downloads.py [--megabytes 50] [--timeout 5] [--workers 3]
    python bench/downloads.py --worker-class sync   # the old sync workers, to compare

With --stalled-storage the output is an object in an S3 API server (moto's server mode
on loopback) reached through a TCP proxy; once the probes have an idle reference the
proxy stalls (holds every byte, as a storage that stopped answering), and --clients
(default 30) clients ask for the download for --seconds, each request on a new
connection, each client again after the Retry-After it is given, while the probes go
on. Prints how the downloads were answered (status,
reason, time) and the probes' latency; PASS/MISS lines: every download answered 503
(none waited on the storage past OUTPUTS_S3_WEB_TIMEOUT_SECONDS, beyond what the
server's queue adds), every probe within a second, and a download redirects again once
the storage answers.

    python bench/downloads.py --stalled-storage [--clients 30] [--seconds 10]
"""

import argparse
import collections
import hashlib
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get("BENCH_SERVER_URL", "postgres://postgres@127.0.0.1:5432")
DATABASE = "reportsvc_bench_downloads"
DATABASE_URL = f"{SERVER_URL}/{DATABASE}"
WEB_APPLICATION_NAME = "reportsvc-bench-web"
MIB = 1024 * 1024
# About 100 bytes a row: an id, two md5 hex strings and some padding.
OUTPUT_SQL = (
    "SELECT g AS id, md5(g::text) AS a, md5((g * 7)::text) AS b, repeat('x', 24) AS pad "
    "FROM generate_series(1, {rows}) AS g"
)
BYTES_PER_ROW = 100
PROBES = ("/healthz?scope=web", "/api/runs/?page_size=20")
PROBE_LIMIT = 1.0  # seconds


def setup_django(outputs_dir):
    os.environ.update(
        DATABASE_URL=DATABASE_URL,
        SECRET_KEY="benchmark",
        OUTPUTS_DIR=str(outputs_dir),
        LOG_LEVEL="WARNING",
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reportsvc.settings")
    sys.path.insert(0, str(PROJECT_DIR))
    import psycopg

    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {DATABASE}")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def make_output(megabytes):
    """A succeeded run whose CSV is about ``megabytes`` MiB, made by the real runner."""
    from django.contrib.auth import get_user_model

    from access.services.tokens import create_token
    from reports.models import Report
    from runs.services.runtime.runner import run_report_now

    rows = int(megabytes * MIB / BYTES_PER_ROW)
    report = Report.objects.create(
        name="Big", slug="big", sql=OUTPUT_SQL.format(rows=rows), max_rows=rows + 1
    )
    run = run_report_now(report)
    assert run.status == "succeeded", run.error
    user = get_user_model().objects.create_superuser("bench", password="bench-password-1")
    _, key = create_token(user, "bench")  # the service keeps only its digest
    return run, key


def start_gunicorn(port, timeout, workers, extra_arguments, log_path):
    environment = {
        **os.environ,
        "DATABASE_URL": f"{DATABASE_URL}?application_name={WEB_APPLICATION_NAME}",
        "ALLOWED_HOSTS": "127.0.0.1",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_TIMEOUT": str(timeout),
        "WEB_CONCURRENCY": str(workers),
    }
    log = open(log_path, "w")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "reportsvc.wsgi",
            "--config",
            "gunicorn.conf.py",
            "--access-logfile",
            "/dev/null",
            # Another gunicorn on this machine may own the default control socket.
            "--no-control-socket",
            *extra_arguments,
        ],
        cwd=PROJECT_DIR,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if get(port, PROBES[0])[0] == 200 and len(worker_pids(server.pid)) == workers:
                return server
        except OSError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"gunicorn did not start; see {log_path}")


def get(port, path, token=None, timeout=30):
    """One GET on a new connection: (status, seconds)."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Authorization": f"Token {token}"} if token else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - started
    finally:
        connection.close()


def worker_pids(arbiter_pid):
    try:
        children = Path(f"/proc/{arbiter_pid}/task/{arbiter_pid}/children").read_text()
    except OSError:
        return []
    return [int(pid) for pid in children.split()]


def rss_mib(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def connections_per_process(port, pids):
    """Established connections to ``port`` held by each of ``pids``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # ESTABLISHED
                inodes.add(fields[9])
    counts = {}
    for pid in pids:
        count = 0
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    count += 1
        except OSError:
            pass
        counts[pid] = count
    return counts


def slow_download(port, path, token, rate, result):
    """GET ``path`` on a raw socket, reading at most ``rate`` bytes a second."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A remote client's segment size and a small receive window: loopback's 64 KiB
    # segments would let the kernel buffer megabytes, and the server finish early.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1460)
    sock.settimeout(60)
    digest, received, status, length = hashlib.sha256(), 0, None, None
    started = time.monotonic()
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {token}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(16 * 1024)
            if not chunk:
                raise ConnectionError("closed before the headers")
            head += chunk
        head, _, body = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        digest.update(body)
        received = len(body)
        while length is None or received < length:
            ahead = received / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
            chunk = sock.recv(16 * 1024)
            if not chunk:
                break
            digest.update(chunk)
            received += len(chunk)
        error = ""
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()
    result.update(
        seconds=time.monotonic() - started,
        bytes=received,
        sha256=digest.hexdigest(),
        status=status,
        length=length,
        error=error,
    )


class Prober(threading.Thread):
    """Probes each path on a new connection every ``interval`` until stopped."""

    def __init__(self, port, token, interval=0.2):
        super().__init__(daemon=True)
        self.port, self.token, self.interval = port, token, interval
        self.samples = {path: [] for path in PROBES}
        self.failures = []
        self.stopped = threading.Event()

    def probe_once(self):
        for path in PROBES:
            try:
                status, seconds = get(self.port, path, self.token, timeout=30)
            except OSError as exc:
                self.failures.append(f"{path}: {type(exc).__name__}: {exc}")
                continue
            self.samples[path].append(seconds)
            if status != 200:
                self.failures.append(f"{path}: {status}")

    def run(self):
        while not self.stopped.is_set():
            self.probe_once()
            self.stopped.wait(self.interval)


class Sampler(threading.Thread):
    """Peak RSS and connections of every gunicorn process, peak web database sessions."""

    def __init__(self, arbiter_pid, port, interval=0.5):
        super().__init__(daemon=True)
        self.arbiter_pid, self.port, self.interval = arbiter_pid, port, interval
        self.peak_rss, self.peak_connections, self.pids_seen = {}, {}, set()
        self.peak_database_sessions = 0
        self.stopped = threading.Event()

    def sample(self):
        from django.db import connection

        pids = worker_pids(self.arbiter_pid)
        self.pids_seen.update(pids)
        for pid in [self.arbiter_pid, *pids]:
            self.peak_rss[pid] = max(self.peak_rss.get(pid, 0.0), rss_mib(pid))
        for pid, count in connections_per_process(self.port, pids).items():
            self.peak_connections[pid] = max(self.peak_connections.get(pid, 0), count)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                [WEB_APPLICATION_NAME],
            )
            sessions = cursor.fetchone()[0]
        self.peak_database_sessions = max(self.peak_database_sessions, sessions)

    def run(self):
        while not self.stopped.is_set():
            self.sample()
            self.stopped.wait(self.interval)


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def latency_line(label, samples):
    if not samples:
        return f"{label:<40} no answer"
    return (
        f"{label:<40} {len(samples):>5} {statistics.median(samples) * 1000:>8.1f}ms "
        f"{percentile(samples, 0.95) * 1000:>8.1f}ms {max(samples) * 1000:>8.1f}ms"
    )


# --- --stalled-storage: downloads while the object storage does not answer ---------------


def start_stalled_storage():
    """moto's S3 server, its bucket, and the proxy in front of it: ``(process, proxy)``;
    the web's settings point at the proxy (os.environ, before Django starts)."""
    sys.path.insert(0, str(PROJECT_DIR))
    from tests import s3

    process, url = s3.start_moto_server(os.devnull)
    s3.create_bucket(s3.client_for(url), "reportsvc-bench")
    proxy = s3.FaultyStorageProxy(url)
    os.environ.update(
        OUTPUTS_S3_BUCKET="reportsvc-bench",
        AWS_S3_ENDPOINT_URL=proxy.url,
        AWS_ACCESS_KEY_ID=s3.ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=s3.SECRET_KEY,
        AWS_S3_REGION_NAME=s3.REGION,
        AWS_S3_ADDRESSING_STYLE="path",
    )
    return process, proxy


def ask_for_download(port, path, token, until, answers):
    """GET ``path`` on a new connection until ``until``, as a client that honours
    Retry-After does: after a 503 it waits that long (a random part of it the first
    time, so 30 clients started together do not stay in step)."""
    first = True
    while time.monotonic() < until:
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        retry_after = 1.0
        try:
            connection.request("GET", path, headers={"Authorization": f"Token {token}"})
            response = connection.getresponse()
            body = response.read()
            status = response.status
            detail = json.loads(body).get("detail", "") if status >= 400 else ""
            retry_after = float(response.getheader("Retry-After") or retry_after)
        except (OSError, ValueError) as exc:
            status, detail = None, f"{type(exc).__name__}: {exc}"
        finally:
            connection.close()
        answers.append((status, detail, time.perf_counter() - started))
        time.sleep(retry_after * (random.random() if first else 1))
        first = False


def reason_of(detail):
    """The kind of answer, without the run's number: what follows "cannot be fetched now: "."""
    reason = detail.partition(" now: ")[2] or detail
    return reason.partition(" (")[0]


def stalled_storage_main(args):
    from django.conf import settings

    clients = args.clients or 30
    process, proxy = start_stalled_storage()
    workdir = Path(tempfile.mkdtemp(prefix="reportsvc-bench-stalled-"))
    server = None
    try:
        setup_django(workdir / "outputs")
        run, token = make_output(args.megabytes)
        print(f"output: run {run.pk}, an object of {run.output_bytes:,} bytes in the bucket")
        server = start_gunicorn(args.port, args.timeout, args.workers, [], workdir / "g.log")
        wait = settings.OUTPUTS_S3_WEB_TIMEOUT_SECONDS
        print(
            f"gunicorn: gunicorn.conf.py, WEB_CONCURRENCY={args.workers}; the web waits on the "
            f"storage {wait:g} s, {settings.OUTPUTS_S3_WEB_CONCURRENCY} requests per process at "
            f"once; {clients} clients for {args.seconds:g} s while the storage stalls"
        )
        path = f"/api/runs/{run.pk}/download/"
        before = get(args.port, path, token)[0]
        idle = Prober(args.port, token)
        for _ in range(5):
            idle.probe_once()
        idle.samples = {probe: [] for probe in PROBES}
        for _ in range(20):
            idle.probe_once()

        proxy.set_mode(proxy.STALL)
        answers = []
        until = time.monotonic() + args.seconds
        askers = [
            threading.Thread(target=ask_for_download, args=(args.port, path, token, until, answers))
            for _ in range(clients)
        ]
        prober = Prober(args.port, token)
        for thread in askers:
            thread.start()
        prober.start()
        for thread in askers:
            thread.join()
        prober.stopped.set()
        prober.join()
        proxy.set_mode(proxy.FORWARD)
        after = get(args.port, path, token)[0]

        print(f"\n{'downloads while stalled':<64} {'n':>5} {'p50':>9} {'max':>9}")
        kinds = collections.defaultdict(list)
        for status, detail, seconds in answers:
            kinds[(status, reason_of(detail))].append(seconds)
        for (status, reason), samples in sorted(kinds.items(), key=lambda kind: -len(kind[1])):
            print(
                f"{status} {reason[:60]:<60} {len(samples):>5} "
                f"{statistics.median(samples) * 1000:>7.0f}ms {max(samples) * 1000:>7.0f}ms"
            )
        print(f"\n{'probe (new connection each)':<40} {'n':>5} {'p50':>10} {'p95':>10} {'max':>10}")
        for probe in PROBES:
            print(latency_line(f"GET {probe}, idle", idle.samples[probe]))
            print(latency_line(f"GET {probe}, stalled", prober.samples[probe]))
        for failure in prober.failures[:10]:
            print("probe failed:", failure)
        during = [seconds for samples in prober.samples.values() for seconds in samples]
        slowest = max(seconds for _, _, seconds in answers)
        worst = max(during) if during else float("inf")
        checks = [
            (f"a download redirects before the stall ({before})", before == 302),
            (
                f"all {len(answers)} downloads during the stall answered 503, none left "
                f"waiting (slowest {slowest * 1000:.0f} ms, queueing included)",
                all(status == 503 for status, _, _ in answers),
            ),
            (
                f"every probe answered 200 within {PROBE_LIMIT:.0f} s during the stall "
                f"(max {worst * 1000:.0f} ms)",
                not prober.failures and worst < PROBE_LIMIT,
            ),
            (f"a download redirects again once the storage answers ({after})", after == 302),
        ]
        print()
        for label, ok in checks:
            print(f"{'PASS' if ok else 'MISS'}  {label}")
        return 0 if all(ok for _, ok in checks) else 1
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(40)
            except subprocess.TimeoutExpired:
                server.kill()
        proxy.close()
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=50, help="output size (MiB)")
    parser.add_argument("--timeout", type=int, default=5, help="GUNICORN_TIMEOUT (s)")
    parser.add_argument("--workers", type=int, default=3, help="WEB_CONCURRENCY")
    parser.add_argument("--clients", type=int, help="default: 3 x WEB_CONCURRENCY")
    parser.add_argument("--min-rate", type=float, default=1.0, help="slowest client (MiB/s)")
    parser.add_argument("--max-rate", type=float, default=2.0, help="fastest client (MiB/s)")
    parser.add_argument("--port", type=int, help="default: a free one")
    parser.add_argument("--worker-class", help="another worker class (one thread), to compare")
    parser.add_argument(
        "--stalled-storage", action="store_true", help="downloads from an S3 that stalls"
    )
    parser.add_argument("--seconds", type=float, default=20, help="with --stalled-storage")
    args = parser.parse_args()
    if args.port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            args.port = probe.getsockname()[1]
    if args.stalled_storage:
        if args.megabytes == parser.get_default("megabytes"):
            args.megabytes = 1  # the size does not matter: nothing is sent
        return stalled_storage_main(args)
    clients = args.clients or 3 * args.workers
    extra = []
    if args.worker_class:
        # gunicorn turns sync workers with more than one thread into gthread workers.
        extra = ["--worker-class", args.worker_class, "--threads", "1"]

    workdir = Path(tempfile.mkdtemp(prefix="reportsvc-bench-downloads-"))
    server = None
    try:
        setup_django(workdir / "outputs")
        started = time.perf_counter()
        run, token = make_output(args.megabytes)
        print(
            f"output: run {run.pk}, {run.output_bytes:,} bytes ({run.output_bytes / MIB:.1f} MiB)"
            f", made in {time.perf_counter() - started:.1f} s"
        )
        server = start_gunicorn(
            args.port, args.timeout, args.workers, extra, workdir / "gunicorn.log"
        )
        print(
            f"gunicorn: gunicorn.conf.py{' ' + ' '.join(extra) if extra else ''}, "
            f"WEB_CONCURRENCY={args.workers}, GUNICORN_TIMEOUT={args.timeout}; "
            f"{clients} clients at {args.min_rate}-{args.max_rate} MiB/s"
        )
        pids_before = worker_pids(server.pid)
        # Reference: the same probes with no download under way (after a warm-up).
        idle = Prober(args.port, token)
        for _ in range(5):
            idle.probe_once()
        idle.samples = {path: [] for path in PROBES}
        for _ in range(20):
            idle.probe_once()
        rss_before = {pid: rss_mib(pid) for pid in [server.pid, *pids_before]}

        path = f"/api/runs/{run.pk}/download/"
        results = [{} for _ in range(clients)]
        rates = [
            args.min_rate + (args.max_rate - args.min_rate) * i / max(1, clients - 1)
            for i in range(clients)
        ]
        downloads = [
            threading.Thread(
                target=slow_download, args=(args.port, path, token, rate * MIB, result)
            )
            for rate, result in zip(rates, results, strict=True)
        ]
        sampler, prober = Sampler(server.pid, args.port), Prober(args.port, token)
        for thread in downloads:
            thread.start()
        sampler.start()
        prober.start()
        for thread in downloads:
            thread.join()
        prober.stopped.set()
        sampler.stopped.set()
        prober.join()
        sampler.join()

        print(f"\n{'download':<9} {'rate':>9} {'time':>8} {'bytes':>12}  sha256  status")
        complete = 0
        for index, (rate, result) in enumerate(zip(rates, results, strict=True), 1):
            same = result["sha256"] == run.output_sha256 and result["bytes"] == run.output_bytes
            complete += same
            print(
                f"{index:<9} {rate:>5.2f}MiB/s {result['seconds']:>7.1f}s "
                f"{result['bytes']:>12,}  {'match' if same else 'DIFFERS'}   "
                f"{result['status']} {result['error']}"
            )
        longest = max(result["seconds"] for result in results)

        print(f"\n{'probe (new connection each)':<40} {'n':>5} {'p50':>10} {'p95':>10} {'max':>10}")
        for probe in PROBES:
            print(latency_line(f"GET {probe}, idle", idle.samples[probe]))
            print(latency_line(f"GET {probe}, during", prober.samples[probe]))
        during = [s for samples in prober.samples.values() for s in samples]
        idle_all = [s for samples in idle.samples.values() for s in samples]
        worst = max(during) if during else float("inf")
        print(
            f"probe p50 during / idle: "
            f"{statistics.median(during) / statistics.median(idle_all):.2f}x"
            if during
            else ""
        )
        for failure in prober.failures[:10]:
            print("probe failed:", failure)

        print(
            f"\n{'process':<18} {'RSS before':>11} {'RSS peak during':>16} {'growth':>8} "
            f"{'peak connections':>17}"
        )
        growths = []
        for pid in [server.pid, *sorted(sampler.pids_seen)]:
            role = "arbiter" if pid == server.pid else "worker"
            before = rss_before.get(pid)
            peak = sampler.peak_rss.get(pid, 0.0)
            growth = peak - before if before is not None else None
            if role == "worker" and growth is not None:
                growths.append(growth)
            print(
                f"{role + ' ' + str(pid):<18} "
                f"{f'{before:.1f} MiB' if before is not None else 'new':>11} "
                f"{peak:>12.1f} MiB {f'{growth:+.1f}' if growth is not None else '':>8} "
                f"{sampler.peak_connections.get(pid, '') if role == 'worker' else '':>17}"
            )
        print(f"peak database sessions of the web: {sampler.peak_database_sessions}")
        log = (workdir / "gunicorn.log").read_text()
        timeouts = log.count("WORKER TIMEOUT")
        restarted = set(sampler.pids_seen) - set(pids_before)
        print(
            f"worker timeouts in the gunicorn log: {timeouts}; processes replaced: {len(restarted)}"
        )

        errors = [line for line in log.splitlines() if "[CRITICAL]" in line or "[ERROR]" in line]
        for line in errors[:6]:
            print("gunicorn log:", line)
        output_mib = run.output_bytes / MIB
        rss_limit = max(4.0, output_mib / 10)
        max_growth = max(growths) if growths else 0.0
        checks = [
            (f"all {clients} downloads complete and byte-identical", complete == clients),
            (
                f"the longest download lasted {longest / args.timeout:.1f}x GUNICORN_TIMEOUT"
                " (at least 3x)",
                longest >= 3 * args.timeout,
            ),
            (
                f"every probe answered 200 within {PROBE_LIMIT:.0f} s during the transfer "
                f"(max {worst * 1000:.0f} ms)",
                not prober.failures and worst < PROBE_LIMIT,
            ),
            ("no worker timed out or was replaced", not timeouts and not restarted),
            (
                f"worker RSS grew by at most {max_growth:.1f} MiB while serving a "
                f"{output_mib:.0f} MiB output (limit {rss_limit:.1f} MiB)",
                max_growth < rss_limit,
            ),
        ]
        print()
        for label, ok in checks:
            print(f"{'PASS' if ok else 'MISS'}  {label}")
        return 0 if all(ok for _, ok in checks) else 1
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(40)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
