"""Export benchmark (PostgreSQL): the engine's CSV export against ``psql \\copy``.

Creates a scratch table of N rows with 8 mixed columns, then, alternating, times
the engine exporting ``SELECT * FROM <table>`` (in a fresh process, so its peak
resident memory is its own) and ``psql \\copy`` of the same query to CSV. Prints the
medians, the ratio engine/psql, the engine's peak RSS and whether both files are
byte-for-byte identical, for N (default 2,000,000) and for a small table (100,000)
to show memory does not grow with rows.

    python bench/export.py [--rows 2000000] [--small-rows 100000] [--repeat 5]
    python bench/export.py --s3 [--rows 2000000] [--repeat 5]

``--s3`` measures instead what object storage adds: the upload of the exported file
into an S3 API server (moto's server mode, started on loopback by the benchmark) with
the service's own upload code, against the export of the same rows.

DATABASE_URL (default postgres://postgres@127.0.0.1:5432/reportsvc_bench_export) picks a
scratch database, created if missing. The engine reads it as its default data source
through the superuser opt-in: the database holds only the benchmark's tables.
"""

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/reportsvc_bench_export"

TABLE_SQL = """
CREATE UNLOGGED TABLE {table} AS
SELECT g AS id,
       md5(g::text) AS label,
       (g % 100000) * 1.25::numeric(12, 2) AS amount,
       timestamptz '2026-01-01 00:00:00+00' + g * interval '17 seconds' AS created_at,
       (g % 3 = 0) AS flag,
       g::float8 / 7 AS ratio,
       'note, with "quotes" #' || g AS note,
       date '2026-01-01' + (g % 365) AS day
FROM generate_series(1, {rows}) AS g
"""


def ensure_database(url):
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as server:
        if not server.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            server.execute(f'CREATE DATABASE "{name}"')


def ensure_table(url, rows):
    import psycopg

    table = f"bench_export_{rows}"
    with psycopg.connect(url, autocommit=True) as connection:
        exists = connection.execute("SELECT to_regclass(%s)", [table]).fetchone()[0]
        if exists:
            count = connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            if count == rows:
                return table
            connection.execute(f"DROP TABLE {table}")
        connection.execute(TABLE_SQL.format(table=table, rows=rows))
        connection.execute(f"VACUUM ANALYZE {table}")
    return table


def export_in_this_process(table, output):
    """Child mode: export with the engine, print timings and peak RSS as JSON."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reportsvc.settings")
    os.environ.setdefault("SECRET_KEY", "benchmark")
    sys.path.insert(0, str(PROJECT_DIR))
    import django

    django.setup()
    from reports.datasources import DEFAULT_SOURCE, connection_for_source
    from runs.services.exporter import export_query_to_csv

    connection = connection_for_source(DEFAULT_SOURCE)
    connection.ensure_connection()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with open(output, "wb", buffering=0) as file:
        result = export_query_to_csv(
            connection,
            f"SELECT * FROM {table}",
            file,
            timeout_seconds=3600,
            max_rows=10**9,
        )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows": result.row_count,
                "sha256": result.output_sha256,
                "rss_before_mib": rss_before / 1024,
                "peak_rss_mib": peak / 1024,
            }
        )
    )


def time_engine(url, table, output):
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REPORTING_DATABASE_URL": url,
        "UNSAFE_ALLOW_PRIVILEGED_DATA_SOURCES": "1",
    }
    completed = subprocess.run(
        [sys.executable, __file__, "--child", table, output],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def time_psql(url, table, output):
    command = f"\\copy (SELECT * FROM {table}) TO '{output}' WITH (FORMAT csv, HEADER)"
    started = time.perf_counter()
    subprocess.run(["psql", "-X", "-q", url, "-c", command], check=True)
    return time.perf_counter() - started


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def measure(url, rows, repeat, folder):
    table = ensure_table(url, rows)
    engine_out, psql_out = str(folder / "engine.csv"), str(folder / "psql.csv")
    engine_runs, psql_seconds = [], []
    for _ in range(repeat):
        engine_runs.append(time_engine(url, table, engine_out))
        psql_seconds.append(time_psql(url, table, psql_out))
    identical = engine_runs[-1]["sha256"] == sha256_of(psql_out)
    engine_median = statistics.median(run["seconds"] for run in engine_runs)
    psql_median = statistics.median(psql_seconds)
    return {
        "rows": rows,
        "engine_s": engine_median,
        "psql_s": psql_median,
        "ratio": engine_median / psql_median,
        "peak_rss_mib": max(run["peak_rss_mib"] for run in engine_runs),
        "rss_before_mib": max(run["rss_before_mib"] for run in engine_runs),
        "bytes": os.path.getsize(psql_out),
        "identical": identical,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--small-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--child", nargs=2, metavar=("TABLE", "OUTPUT"), help=argparse.SUPPRESS)
    parser.add_argument("--s3", action="store_true", help="time the upload to S3 storage")
    parser.add_argument("--s3-child", nargs=2, metavar=("FILE", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        export_in_this_process(*args.child)
        return 0
    if args.s3_child:
        upload_in_this_process(*args.s3_child)
        return 0
    url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    if not url.startswith(("postgres://", "postgresql://")):
        parser.error("DATABASE_URL must point at PostgreSQL for this benchmark")
    ensure_database(url)
    if args.s3:
        return measure_s3_upload(url, args.rows, args.repeat)
    with tempfile.TemporaryDirectory(prefix="reportsvc-bench-") as folder:
        results = [measure(url, n, args.repeat, Path(folder)) for n in (args.small_rows, args.rows)]
    print(
        f"{'rows':>10} {'engine s':>9} {'psql s':>8} {'ratio':>6} {'peak RSS':>9} "
        f"{'(startup)':>9} {'CSV MiB':>8}  identical"
    )
    for r in results:
        print(
            f"{r['rows']:>10,} {r['engine_s']:>9.3f} {r['psql_s']:>8.3f} {r['ratio']:>6.3f} "
            f"{r['peak_rss_mib']:>6.1f} MiB {r['rss_before_mib']:>5.1f} MiB "
            f"{r['bytes'] / 2**20:>8.1f}  {'yes' if r['identical'] else 'NO'}"
        )
    small, large = results
    checks = [
        (f"export time <= 1.15 x psql \\copy at {large['rows']:,} rows", large["ratio"] <= 1.15),
        ("peak RSS <= 100 MiB", large["peak_rss_mib"] <= 100),
        (
            f"peak RSS flat in row count (+{large['peak_rss_mib'] - small['peak_rss_mib']:.1f} MiB "
            f"from {small['rows']:,} to {large['rows']:,} rows)",
            large["peak_rss_mib"] - small["peak_rss_mib"] <= 10,
        ),
        ("byte-for-byte identical to psql \\copy", small["identical"] and large["identical"]),
    ]
    for label, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {label}")
    return 0


# --- --s3: what uploading to object storage adds ----------------------------------------

S3_BUCKET = "reportsvc-bench"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}


def start_s3_server():
    """moto's S3 API server on a free loopback port: ``(process, url)``."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
            return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the moto server did not start") from None
            time.sleep(0.05)


def s3_environment(s3_url):
    return {
        **os.environ,
        **S3_KEYS,
        "OUTPUTS_S3_BUCKET": S3_BUCKET,
        "AWS_S3_ENDPOINT_URL": s3_url,
        "AWS_S3_REGION_NAME": "us-east-1",
        "AWS_S3_ADDRESSING_STYLE": "path",
    }


def upload_in_this_process(path, name):
    """Child mode: put the file into the bucket as the runner does, print the timing."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reportsvc.settings")
    os.environ.setdefault("SECRET_KEY", "benchmark")
    sys.path.insert(0, str(PROJECT_DIR))
    import django

    django.setup()
    from runs.services import output_storage

    output_storage._client()  # the client is made once per worker thread, not per run
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    output_storage.store_finished_file(path, name, content_type="text/csv; charset=utf-8")
    seconds = time.perf_counter() - started
    peak_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    body = output_storage.open_output(name)
    digest = hashlib.sha256()
    while block := body.read(1 << 20):
        digest.update(block)
    output_storage.remove_output(name)
    result = {
        "seconds": seconds,
        "sha256": digest.hexdigest(),
        "rss_growth_mib": peak_growth / 1024,
    }
    print(json.dumps(result))


def measure_s3_upload(url, rows, repeat):
    """Export ``rows`` rows, then upload the file: the upload must add at most 1.5x the
    export time. Prints both medians, the ratio and PASS/FAIL."""
    table = ensure_table(url, rows)
    process, s3_url = start_s3_server()
    try:
        import boto3

        boto3.client(
            "s3", endpoint_url=s3_url, region_name="us-east-1", **_lower_keys(S3_KEYS)
        ).create_bucket(Bucket=S3_BUCKET)
        exports, uploads, growth = [], [], 0.0
        with tempfile.TemporaryDirectory(prefix="reportsvc-bench-s3-") as folder:
            output = str(Path(folder) / "export.csv")
            for attempt in range(repeat):
                export = time_engine(url, table, output)
                completed = subprocess.run(
                    [sys.executable, __file__, "--s3-child", output, f"bench/run{attempt}.csv"],
                    env=s3_environment(s3_url),
                    capture_output=True,
                    text=True,
                    check=True,
                )
                upload = json.loads(completed.stdout.strip().splitlines()[-1])
                if upload["sha256"] != export["sha256"]:
                    raise RuntimeError("the object differs from the exported file")
                exports.append(export["seconds"])
                uploads.append(upload["seconds"])
                growth = max(growth, upload["rss_growth_mib"])
            size = os.path.getsize(output)
    finally:
        process.terminate()
        process.wait(timeout=10)
    export_s, upload_s = statistics.median(exports), statistics.median(uploads)
    ratio = upload_s / export_s
    print(f"{'rows':>10} {'CSV MiB':>8} {'export s':>9} {'upload s':>9} {'upload/export':>14}")
    print(
        f"{rows:>10,} {size / 2**20:>8.1f} {export_s:>9.3f} {upload_s:>9.3f} {ratio:>14.2f}"
        f"   ({size / 2**20 / upload_s:.0f} MiB/s, {repeat} runs, object = file: yes)"
    )
    print(f"uploading grew the process's peak RSS by {growth:.1f} MiB at most")
    ok = ratio <= 1.5
    print(f"{'PASS' if ok else 'FAIL'}  upload to S3 adds <= 1.5 x the export time")
    return 0


def _lower_keys(keys):
    return {name.lower(): value for name, value in keys.items()}


if __name__ == "__main__":
    sys.exit(main())
