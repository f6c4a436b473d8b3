"""Export benchmark: each output format against a reference measured in the same run.

PostgreSQL: a scratch table of N rows with 8 mixed columns. Alternating, it times the
engine exporting ``SELECT * FROM <table>`` (each export in a fresh process, so its peak
resident memory is its own) and ``psql \\copy`` of the same query to CSV, and prints the
medians, the ratio engine/psql, the engine's peak RSS and whether the bytes match:

- csv at the small size (default 100,000) and at N (default 2,000,000): memory flat in
  row count, byte-for-byte what psql writes;
- csv_gz at N: the compressed size, and the decompressed bytes against psql's;
- csv with escape_formulas and with csv_bom at N (figures only);
- xlsx at ``--xlsx-rows`` (default N / 2): rows/s and peak RSS; the small size's file
  is opened by LibreOffice (``soffice --headless --convert-to csv``) and its values
  compared with psql's CSV (skipped with a message when soffice is absent); and the
  two streaming XLSX writers compared on the same rows (XlsxWriter's constant_memory,
  openpyxl's write-only).

SQLite: a file of ``--sqlite-rows`` (default N / 2) rows and 8 columns, the engine's CSV
against ``sqlite3 -csv -header`` of the same query.

    python bench/export.py [--rows 2000000] [--small-rows 100000] [--repeat 5]
                           [--xlsx-rows N] [--sqlite-rows N] [--only csv,csv_gz,xlsx,sqlite]
                           [--gzip-levels 1,6]
    python bench/export.py --s3 [--rows 2000000] [--repeat 5]
    python bench/export.py --mysql [--rows 1000000] [--repeat 5] [--drivers]

``--s3`` measures instead what object storage adds: the upload of the exported file
into an S3 API server (moto's server mode, started on loopback by the benchmark) with
the service's own upload code, against the export of the same rows.

``--mysql`` exports a MariaDB/MySQL table of N rows and the same 8 column kinds, read as
root over the local socket (``MYSQL_BENCH_SOCKET``, default /run/mysqld/mysqld.sock;
database ``reportsvc_bench_export``, created if missing), against ``mariadb --batch
--raw -e "<same query>" > file`` in the same run, and checks every value against the
CLI's. ``--drivers`` also times fetching the same rows into CSV with each MySQL driver
installed (mysqlclient, PyMySQL, mysql-connector-python), unbuffered.

DATABASE_URL (default postgres://postgres@127.0.0.1:5432/reportsvc_bench_export) picks a
scratch database, created if missing. The engine reads it as its default data source
through the superuser opt-in: the database holds only the benchmark's tables.
"""

import argparse
import csv
import gzip
import hashlib
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/reportsvc_bench_export"
SECTIONS = ("csv", "csv_gz", "xlsx", "sqlite")
BOM = "\ufeff".encode()
ZONE = UTC  # the engine shows time stamps in UTC (the default WriterOptions zone)

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


def sqlite_rows(rows):
    """The PostgreSQL table's rows, made in Python for SQLite (same 8 columns)."""
    start, first_day = datetime(2026, 1, 1), date(2026, 1, 1)
    for g in range(1, rows + 1):
        yield (
            g,
            hashlib.md5(str(g).encode()).hexdigest(),
            (g % 100000) * 1.25,
            (start + timedelta(seconds=17 * g)).isoformat(sep=" ") + "+00",
            int(g % 3 == 0),
            g / 7,
            f'note, with "quotes" #{g}',
            (first_day + timedelta(days=g % 365)).isoformat(),
        )


def ensure_sqlite_file(folder, rows):
    """The SQLite table, made by a child process: a parent grown by making it would
    pass its peak memory on to the engine's children (ru_maxrss survives fork + exec)."""
    path = folder / f"bench_export_{rows}.sqlite3"
    subprocess.run([sys.executable, __file__, "--make-sqlite", str(path), str(rows)], check=True)
    return path


def make_sqlite_file(path, rows):
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE bench (id integer, label text, amount real, created_at text, "
        "flag integer, ratio real, note text, day text)"
    )
    connection.executemany("INSERT INTO bench VALUES (?, ?, ?, ?, ?, ?, ?, ?)", sqlite_rows(rows))
    connection.commit()
    connection.close()


# --- the engine, in a child process ---------------------------------------------------


def export_in_this_process(table, output, output_format, options):
    """Child mode: export with the engine, print timings and peak RSS as JSON."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reportsvc.settings")
    os.environ.setdefault("SECRET_KEY", "benchmark")
    sys.path.insert(0, str(PROJECT_DIR))
    import django

    django.setup()
    from datasources.registry import DEFAULT_SOURCE, connection_for_source
    from runs.services.formats import WriterOptions, get_format
    from runs.services.formats import csv_gz as csv_gz_format
    from runs.services.infrastructure.exporter import export_query

    if "gzip_level" in options:
        csv_gz_format.COMPRESSION_LEVEL = options["gzip_level"]
    connection = connection_for_source(DEFAULT_SOURCE)
    connection.ensure_connection()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with open(output, "wb", buffering=0) as file:
        result = export_query(
            connection,
            f"SELECT * FROM {table}",
            file,
            timeout_seconds=3600,
            max_rows=10**9,
            output_format=get_format(output_format),
            options=WriterOptions(
                escape_formulas=options.get("escape_formulas", False),
                csv_bom=options.get("csv_bom", False),
            ),
        )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows": result.row_count,
                "bytes": result.output_bytes,
                "sha256": result.output_sha256,
                "rss_before_mib": rss_before / 1024,
                "peak_rss_mib": peak / 1024,
            }
        )
    )


def time_engine(source_url, table, output, output_format="csv", **options):
    env = {
        **os.environ,
        "DATABASE_URL": os.environ.get("BENCH_SERVICE_URL", source_url),
        "REPORTING_DATABASE_URL": source_url,
        "UNSAFE_ALLOW_PRIVILEGED_DATA_SOURCES": "1",
    }
    completed = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            table,
            output,
            "--child-format",
            output_format,
            "--child-options",
            json.dumps(options),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        raise SystemExit(f"engine export failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --- references ---------------------------------------------------------------------------


def time_psql(url, table, output):
    command = f"\\copy (SELECT * FROM {table}) TO '{output}' WITH (FORMAT csv, HEADER)"
    started = time.perf_counter()
    subprocess.run(["psql", "-X", "-q", url, "-c", command], check=True)
    return time.perf_counter() - started


def time_sqlite_cli(path, output):
    started = time.perf_counter()
    with open(output, "wb") as file:
        subprocess.run(
            ["sqlite3", "-csv", "-header", str(path), "SELECT * FROM bench"],
            stdout=file,
            check=True,
        )
    return time.perf_counter() - started


def sha256_of(path, opener=open, skip=0):
    digest = hashlib.sha256()
    with opener(path, "rb") as file:
        if skip:
            file.read(skip)
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def alternate(repeat, engine, reference):
    """Run engine and reference in turn, ``repeat`` times; their results."""
    engine_runs, reference_seconds = [], []
    for _ in range(repeat):
        engine_runs.append(engine())
        reference_seconds.append(reference())
    return engine_runs, reference_seconds


def summary(engine_runs, reference_seconds, **extra):
    engine_median = statistics.median(run["seconds"] for run in engine_runs)
    reference_median = statistics.median(reference_seconds)
    return {
        "engine_s": engine_median,
        "reference_s": reference_median,
        "ratio": engine_median / reference_median,
        "peak_rss_mib": max(run["peak_rss_mib"] for run in engine_runs),
        "rss_before_mib": max(run["rss_before_mib"] for run in engine_runs),
        "bytes": engine_runs[-1]["bytes"],
        "rows": engine_runs[-1]["rows"],
        **extra,
    }


# --- sections -------------------------------------------------------------------------------


def measure_csv(url, table, repeat, folder, output_format="csv", **options):
    """An engine format against psql \\copy; identical: the (decompressed) bytes match."""
    engine_out, psql_out = str(folder / "engine.out"), str(folder / "psql.csv")
    engine_runs, psql_seconds = alternate(
        repeat,
        lambda: time_engine(url, table, engine_out, output_format, **options),
        lambda: time_psql(url, table, psql_out),
    )
    opener = gzip.open if output_format == "csv_gz" else open
    skip = len(BOM) if options.get("csv_bom") else 0  # the BOM, then psql's bytes
    engine_csv = sha256_of(engine_out, opener, skip)
    identical = engine_csv == sha256_of(psql_out)
    return summary(engine_runs, psql_seconds, identical=identical)


def print_table(title, reference, results):
    print(f"\n== {title}")
    print(
        f"{'rows':>10} {'engine s':>9} {reference + ' s':>10} {'ratio':>6} {'peak RSS':>9} "
        f"{'(startup)':>9} {'file MiB':>9}  identical"
    )
    for label, r in results:
        identical = {True: "yes", False: "NO", None: "-"}[r.get("identical")]
        print(
            f"{r['rows']:>10,} {r['engine_s']:>9.3f} {r['reference_s']:>10.3f} "
            f"{r['ratio']:>6.3f} {r['peak_rss_mib']:>6.1f} MiB {r['rss_before_mib']:>5.1f} MiB "
            f"{r['bytes'] / 2**20:>9.1f}  {identical}  {label}"
        )


def xlsx_writer_comparison(rows):
    """XlsxWriter (constant_memory) and openpyxl (write-only) writing the same rows in
    this process: seconds each."""
    import openpyxl
    import xlsxwriter

    def values():
        start = datetime(2026, 1, 1)
        for g in range(1, rows + 1):
            yield (
                g,
                hashlib.md5(str(g).encode()).hexdigest(),
                float(Decimal(g % 100000) * Decimal("1.25")),
                start + timedelta(seconds=17 * g),
                g % 3 == 0,
                g / 7,
                f'note, with "quotes" #{g}',
                start + timedelta(days=g % 365),
            )

    timings = {}
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        book = xlsxwriter.Workbook(f"{folder}/a.xlsx", {"constant_memory": True})
        sheet = book.add_worksheet()
        stamp = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        day = book.add_format({"num_format": "yyyy-mm-dd"})
        for index, row in enumerate(values()):
            sheet.write_number(index, 0, row[0])
            sheet.write_string(index, 1, row[1])
            sheet.write_number(index, 2, row[2])
            sheet.write_datetime(index, 3, row[3], stamp)
            sheet.write_boolean(index, 4, row[4])
            sheet.write_number(index, 5, row[5])
            sheet.write_string(index, 6, row[6])
            sheet.write_datetime(index, 7, row[7], day)
        book.close()
        timings["XlsxWriter constant_memory"] = time.perf_counter() - started

        started = time.perf_counter()
        book = openpyxl.Workbook(write_only=True)
        sheet = book.create_sheet()
        for row in values():
            sheet.append(row)
        book.save(f"{folder}/b.xlsx")
        timings["openpyxl write_only"] = time.perf_counter() - started
    return timings


def compare_writers_in_a_child(rows):
    """xlsx_writer_comparison in a process of its own: this one stays small, so the
    engine's children measure their own peak memory (ru_maxrss survives fork + exec)."""
    completed = subprocess.run(
        [sys.executable, __file__, "--compare-writers", str(rows)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def libreoffice_check(xlsx_path, psql_csv, folder):
    """Open the workbook with LibreOffice and compare its values with psql's CSV;
    (ok, message)."""
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        return None, "soffice not found (apt-get install -y libreoffice-calc-nogui): skipped"
    out_dir = folder / "soffice"
    out_dir.mkdir(exist_ok=True)
    profile = folder / "soffice-profile"
    subprocess.run(
        [
            soffice,
            f"-env:UserInstallation=file://{profile}",
            "--headless",
            "--convert-to",
            "csv:Text - txt - csv (StarCalc):44,34,76,1",
            "--outdir",
            str(out_dir),
            str(xlsx_path),
        ],
        check=True,
        capture_output=True,
        timeout=1800,
    )
    with open(out_dir / (xlsx_path.stem + ".csv"), newline="", encoding="utf-8") as file:
        office = list(csv.reader(file))
    with open(psql_csv, newline="", encoding="utf-8") as file:
        expected = list(csv.reader(file))
    if len(office) != len(expected):
        return False, f"{len(office)} lines from LibreOffice, {len(expected)} from psql"
    for line, (got, want) in enumerate(zip(office, expected, strict=True)):
        if not same_values(got, want, header=line == 0):
            return False, f"line {line + 1} differs: {got} != {want}"
    return True, f"LibreOffice read {len(office) - 1:,} rows with psql's values"


def same_values(office, psql, header):
    """One line of LibreOffice's CSV (as shown: dates as formatted, booleans as
    TRUE/FALSE, numbers in full) against psql's: the same values."""
    if header:
        return office == psql
    identifier, label, amount, moment, flag, ratio, note, day = psql
    zoned = datetime.fromisoformat(moment).astimezone(ZONE).replace(tzinfo=None)
    return (
        office[0] == identifier
        and office[1] == label
        and Decimal(office[2]) == Decimal(amount)
        and office[3] == zoned.isoformat(sep=" ")
        and office[4] == {"t": "TRUE", "f": "FALSE"}[flag]
        and abs(float(office[5]) - float(ratio)) <= 1e-9 * abs(float(ratio))
        and office[6] == note
        and office[7] == day
    )


def measure_xlsx(url, table, small_table, repeat, folder):
    engine_out, psql_out = str(folder / "engine.xlsx"), str(folder / "psql.csv")
    engine_runs, psql_seconds = alternate(
        repeat,
        lambda: time_engine(url, table, engine_out, "xlsx"),
        lambda: time_psql(url, table, psql_out),
    )
    result = summary(engine_runs, psql_seconds, identical=None)
    result["rows_per_s"] = result["rows"] / result["engine_s"]
    small_xlsx, small_csv = folder / "small.xlsx", folder / "small.csv"
    time_engine(url, small_table, str(small_xlsx), "xlsx")
    time_psql(url, small_table, str(small_csv))
    result["office"] = libreoffice_check(small_xlsx, small_csv, folder)
    return result


# --- --mysql: a MySQL/MariaDB source against the mariadb CLI ------------------------------

MYSQL_SOCKET = os.environ.get("MYSQL_BENCH_SOCKET", "/run/mysqld/mysqld.sock")
MYSQL_DATABASE = "reportsvc_bench_export"
MYSQL_TABLE_SQL = """
CREATE TABLE {table} (
    id int PRIMARY KEY, label char(32), amount decimal(12, 2), created_at datetime(6),
    flag tinyint(1), ratio double, note varchar(40), day date)
SELECT seq AS id, md5(seq) AS label, (seq % 100000) * 1.25 AS amount,
       TIMESTAMP '2026-01-01 00:00:00' + INTERVAL seq * 17 SECOND AS created_at,
       seq % 3 = 0 AS flag, seq / 7e0 AS ratio,
       concat('note, with "quotes" #', seq) AS note,
       DATE '2026-01-01' + INTERVAL seq % 365 DAY AS day
FROM seq_1_to_{rows}
"""


def mysql_cli():
    return shutil.which("mariadb") or shutil.which("mysql")


def mysql_admin(statement, database=None):
    command = [mysql_cli(), f"--socket={MYSQL_SOCKET}", "--user=root", "--batch", "--raw"]
    if database:
        command.append(database)
    return subprocess.run(
        [*command, "-e", statement], check=True, capture_output=True, text=True
    ).stdout


def ensure_mysql_table(rows):
    table = f"bench_export_{rows}"
    mysql_admin(f"CREATE DATABASE IF NOT EXISTS {MYSQL_DATABASE}")
    found = mysql_admin(
        "SELECT TABLE_ROWS FROM information_schema.TABLES "
        f"WHERE TABLE_SCHEMA = '{MYSQL_DATABASE}' AND TABLE_NAME = '{table}'"
    )
    if found.strip():
        count = mysql_admin(f"SELECT COUNT(*) FROM {table}", MYSQL_DATABASE).split()[-1]
        if int(count) == rows:
            return table
        mysql_admin(f"DROP TABLE {table}", MYSQL_DATABASE)
    mysql_admin(MYSQL_TABLE_SQL.format(table=table, rows=rows), MYSQL_DATABASE)
    return table


def mysql_source_url():
    return f"mysql://root@localhost/{MYSQL_DATABASE}?unix_socket={MYSQL_SOCKET}"


def time_mysql_cli(table, output):
    started = time.perf_counter()
    with open(output, "wb") as file:
        subprocess.run(
            [
                mysql_cli(),
                f"--socket={MYSQL_SOCKET}",
                "--user=root",
                "--batch",
                "--raw",
                "--default-character-set=utf8mb4",
                MYSQL_DATABASE,
                "-e",
                f"SELECT * FROM {table}",
            ],
            stdout=file,
            check=True,
        )
    return time.perf_counter() - started


def same_as_cli(engine_csv, cli_tsv):
    """Every value of the engine's CSV is the CLI's (NULL: empty), row for row."""
    with open(engine_csv, newline="", encoding="utf-8") as ours, open(cli_tsv, "rb") as theirs:
        for row, line in zip(csv.reader(ours), theirs, strict=True):
            values = line.rstrip(b"\n").split(b"\t")
            if row != ["" if value == b"NULL" else value.decode() for value in values]:
                return False
    return True


def measure_mysql(rows, repeat, folder):
    table = ensure_mysql_table(rows)
    engine_out, cli_out = str(folder / "engine-mysql.csv"), str(folder / "cli.tsv")
    engine_runs, cli_seconds = alternate(
        repeat,
        lambda: time_engine(mysql_source_url(), table, engine_out),
        lambda: time_mysql_cli(table, cli_out),
    )
    return summary(engine_runs, cli_seconds, identical=same_as_cli(engine_out, cli_out))


def fetch_with_driver(driver, table, output):
    """Child mode: fetch ``table`` unbuffered with ``driver`` and write it as CSV with
    the csv module, as a backend on that driver would; seconds taken."""
    started = time.perf_counter()
    query = f"SELECT * FROM {table}"
    if driver == "mysqlclient":
        import MySQLdb
        import MySQLdb.cursors

        connection = MySQLdb.connect(
            unix_socket=MYSQL_SOCKET, user="root", database=MYSQL_DATABASE, charset="utf8mb4"
        )
        cursor = connection.cursor(MySQLdb.cursors.SSCursor)
    elif driver == "PyMySQL":
        import pymysql
        import pymysql.cursors

        connection = pymysql.connect(
            unix_socket=MYSQL_SOCKET, user="root", database=MYSQL_DATABASE, charset="utf8mb4"
        )
        cursor = connection.cursor(pymysql.cursors.SSCursor)
    else:
        import mysql.connector

        connection = mysql.connector.connect(
            unix_socket=MYSQL_SOCKET, user="root", database=MYSQL_DATABASE, charset="utf8mb4"
        )
        cursor = connection.cursor(raw=False, buffered=False)
    cursor.execute(query)
    with open(output, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow([column[0] for column in cursor.description])
        while rows := cursor.fetchmany(4096):
            writer.writerows(rows)
    connection.close()
    return time.perf_counter() - started


def compare_mysql_drivers(rows, folder):
    """Seconds per driver to fetch the table into CSV (a child process each)."""
    import importlib.util

    table = ensure_mysql_table(rows)
    modules = {"mysqlclient": "MySQLdb", "PyMySQL": "pymysql", "mysql-connector": "mysql.connector"}
    found = {}
    for driver, module in modules.items():
        try:
            present = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            present = False
        if not present:
            found[driver] = None
            continue
        completed = subprocess.run(
            [sys.executable, __file__, "--driver-child", driver, table, str(folder / "d.csv")],
            capture_output=True,
            text=True,
            check=True,
        )
        found[driver] = float(completed.stdout.strip().splitlines()[-1])
    return found


def mysql_main(args):
    if not mysql_cli():
        raise SystemExit("--mysql needs the mariadb (or mysql) client")
    rows = args.rows if args.rows_given else 1_000_000
    checks = []
    with tempfile.TemporaryDirectory(prefix="reportsvc-bench-") as folder_name:
        folder = Path(folder_name)
        # The engine's own database: a file of its own (nothing in it is read).
        os.environ["BENCH_SERVICE_URL"] = f"sqlite:///{folder / 'service.sqlite3'}"
        result = measure_mysql(rows, args.repeat, folder)
        print_table("MySQL/MariaDB csv against mariadb --batch --raw", "mariadb", [("csv", result)])
        checks += [
            (
                f"MySQL csv time <= 2.0 x mariadb CLI at {result['rows']:,} rows "
                f"({result['ratio']:.2f})",
                result["ratio"] <= 2.0,
            ),
            (
                f"MySQL csv peak RSS <= 100 MiB ({result['peak_rss_mib']:.1f})",
                result["peak_rss_mib"] <= 100,
            ),
            ("MySQL csv values = the mariadb CLI's", result["identical"]),
        ]
        if args.drivers:
            print(f"\n== drivers: {rows:,} rows fetched unbuffered into csv.writer")
            for driver, seconds in compare_mysql_drivers(rows, folder).items():
                shown = "not installed" if seconds is None else f"{seconds:.2f} s"
                print(f"   {driver:<16} {shown}")
    print()
    for label, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    return 0


def measure_sqlite(rows, repeat, folder):
    path = ensure_sqlite_file(folder, rows)
    engine_out, cli_out = str(folder / "engine-sqlite.csv"), str(folder / "cli.csv")
    engine_runs, cli_seconds = alternate(
        repeat,
        lambda: time_engine(f"sqlite:///{path}", "bench", engine_out),
        lambda: time_sqlite_cli(path, cli_out),
    )
    with open(engine_out, newline="", encoding="utf-8") as file:
        lines = sum(1 for _ in csv.reader(file))
    return summary(engine_runs, cli_seconds, identical=None, lines=lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int)
    parser.add_argument("--small-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--xlsx-rows", type=int, help="default: --rows / 2")
    parser.add_argument("--sqlite-rows", type=int, help="default: --rows / 2")
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections to run")
    parser.add_argument(
        "--gzip-levels", default="", help="also time csv_gz at these levels, e.g. 1,3,6"
    )
    parser.add_argument("--child", nargs=2, metavar=("TABLE", "OUTPUT"), help=argparse.SUPPRESS)
    parser.add_argument("--s3", action="store_true", help="time the upload to S3 storage")
    parser.add_argument("--s3-child", nargs=2, metavar=("FILE", "NAME"), help=argparse.SUPPRESS)
    parser.add_argument("--child-format", default="csv", help=argparse.SUPPRESS)
    parser.add_argument("--child-options", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--make-sqlite", nargs=2, metavar=("PATH", "ROWS"), help=argparse.SUPPRESS)
    parser.add_argument("--compare-writers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mysql", action="store_true", help="a MySQL/MariaDB source")
    parser.add_argument("--drivers", action="store_true", help="--mysql: compare drivers")
    parser.add_argument("--driver-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.rows_given = args.rows is not None
    if args.rows is None:
        args.rows = 2_000_000
    if args.driver_child:
        print(fetch_with_driver(*args.driver_child))
        return 0
    if args.compare_writers:
        print(json.dumps(xlsx_writer_comparison(args.compare_writers)))
        return 0
    if args.make_sqlite:
        make_sqlite_file(args.make_sqlite[0], int(args.make_sqlite[1]))
        return 0
    if args.child:
        export_in_this_process(*args.child, args.child_format, json.loads(args.child_options))
        return 0
    if args.s3_child:
        upload_in_this_process(*args.s3_child)
        return 0
    if args.mysql:
        return mysql_main(args)
    sections = [section for section in args.only.split(",") if section]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    if not url.startswith(("postgres://", "postgresql://")):
        parser.error("DATABASE_URL must point at PostgreSQL for this benchmark")
    os.environ["BENCH_SERVICE_URL"] = url
    ensure_database(url)
    if args.s3:
        return measure_s3_upload(url, args.rows, args.repeat)
    xlsx_rows = args.xlsx_rows or args.rows // 2
    sqlite_rows_count = args.sqlite_rows or args.rows // 2
    checks = []
    with tempfile.TemporaryDirectory(prefix="reportsvc-bench-") as folder_name:
        folder = Path(folder_name)
        small_table = ensure_table(url, args.small_rows)
        large_table = ensure_table(url, args.rows)
        if "csv" in sections:
            small = measure_csv(url, small_table, args.repeat, folder)
            large = measure_csv(url, large_table, args.repeat, folder)
            escaped = measure_csv(url, large_table, args.repeat, folder, escape_formulas=True)
            bom = measure_csv(url, large_table, args.repeat, folder, csv_bom=True)
            print_table(
                "csv (PostgreSQL COPY) against psql \\copy",
                "psql",
                [
                    ("csv", small),
                    ("csv", large),
                    ("csv, escape_formulas", escaped),
                    ("csv, csv_bom", bom),
                ],
            )
            checks += [
                (
                    f"csv time <= 1.15 x psql \\copy at {large['rows']:,} rows "
                    f"({large['ratio']:.2f})",
                    large["ratio"] <= 1.15,
                ),
                (
                    f"csv peak RSS <= 100 MiB ({large['peak_rss_mib']:.1f})",
                    large["peak_rss_mib"] <= 100,
                ),
                (
                    f"csv peak RSS flat in row count "
                    f"(+{large['peak_rss_mib'] - small['peak_rss_mib']:.1f} MiB "
                    f"from {small['rows']:,} to {large['rows']:,} rows)",
                    large["peak_rss_mib"] - small["peak_rss_mib"] <= 10,
                ),
                (
                    "csv byte-for-byte identical to psql \\copy",
                    small["identical"] and large["identical"],
                ),
            ]
        if "csv_gz" in sections:
            packed = measure_csv(url, large_table, args.repeat, folder, "csv_gz")
            rows = [("csv_gz", packed)]
            for level in filter(None, args.gzip_levels.split(",")):
                rows.append(
                    (
                        f"csv_gz at level {level}",
                        measure_csv(
                            url, large_table, args.repeat, folder, "csv_gz", gzip_level=int(level)
                        ),
                    )
                )
            print_table("csv_gz against psql \\copy (of the CSV)", "psql", rows)
            for label, result in rows:
                print(f"   {label}: {result['bytes']:,} bytes compressed")
            checks += [
                (
                    f"csv_gz time <= 1.6 x psql \\copy at {packed['rows']:,} rows "
                    f"({packed['ratio']:.2f})",
                    packed["ratio"] <= 1.6,
                ),
                (
                    f"csv_gz peak RSS <= 100 MiB ({packed['peak_rss_mib']:.1f})",
                    packed["peak_rss_mib"] <= 100,
                ),
                ("csv_gz decompressed = psql \\copy's bytes", packed["identical"]),
            ]
        # SQLite before XLSX: the LibreOffice check grows this process, and a child's
        # peak memory starts at its parent's (ru_maxrss survives fork + exec).
        if "sqlite" in sections:
            lite = measure_sqlite(sqlite_rows_count, args.repeat, folder)
            print_table(
                "SQLite csv against the sqlite3 CLI (-csv -header)", "sqlite3", [("csv", lite)]
            )
            checks += [
                (
                    f"SQLite csv time <= 2.5 x sqlite3 CLI at {lite['rows']:,} rows "
                    f"({lite['ratio']:.2f})",
                    lite["ratio"] <= 2.5,
                ),
                (
                    f"SQLite csv has every row ({lite['lines'] - 1:,})",
                    lite["lines"] - 1 == lite["rows"],
                ),
            ]
        if "xlsx" in sections:
            xlsx_table = ensure_table(url, xlsx_rows)
            book = measure_xlsx(url, xlsx_table, small_table, max(1, min(args.repeat, 3)), folder)
            print_table(
                "xlsx (PostgreSQL, typed rows) against psql \\copy of the CSV",
                "psql",
                [("xlsx", book)],
            )
            print(f"   {book['rows_per_s']:,.0f} rows/s")
            writers = compare_writers_in_a_child(min(xlsx_rows, 100_000))
            fastest = min(writers, key=writers.get)
            for name, seconds in writers.items():
                rate = min(xlsx_rows, 100_000) / seconds
                print(f"   writer {name}: {seconds:.2f} s, {rate:,.0f} rows/s")
            ok, message = book["office"]
            print(f"   LibreOffice: {message}")
            checks += [
                (
                    f"xlsx peak RSS <= 150 MiB ({book['peak_rss_mib']:.1f})",
                    book["peak_rss_mib"] <= 150,
                ),
                (
                    f"the faster XLSX writer is XlsxWriter ({fastest})",
                    fastest.startswith("XlsxWriter"),
                ),
            ]
            if ok is not None:
                checks.append(("xlsx opens in LibreOffice with psql's values", ok))
    print()
    for label, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
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
    from runs.services.infrastructure import output_storage

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
