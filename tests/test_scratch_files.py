"""Nothing is left behind, and a full or read-only disk is called so.

A run writes on its machine only inside a scratch directory of its own (the output's
staging file, XlsxWriter's temp files), on the outputs' filesystem: removed when the run
ends however it ends, by recovery when its worker was killed. The disk tests mount a
small or read-only tmpfs over OUTPUTS_DIR in a mount namespace of their own
(``unshare``), and run real `manage.py runreport` processes there.
"""

import shlex
import subprocess
import sys
import tempfile

import pytest

from datasources.registry import DEFAULT_SOURCE, connection_for_source
from reports.models import Report
from runs.models import Run, RunStatus
from runs.services.infrastructure import output_storage
from runs.services.runtime.runner import run_report_now
from tests.conftest import enqueue_run, files_under, needs_commits, wait_for
from tests.workers import PROJECT_DIR, WorkerProcess, process_environment

pytestmark = pytest.mark.django_db(databases="__all__")


def vendor():
    return connection_for_source(DEFAULT_SOURCE).vendor


@pytest.fixture
def system_temp(tmp_path, monkeypatch):
    """This process's temp folder (TMPDIR), empty: where XlsxWriter keeps its files
    unless told otherwise."""
    folder = tmp_path / "system-temp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def left_behind(outputs_dir, *folders):
    """Every file under OUTPUTS_DIR, and everything in the scratch folder and in
    ``folders``."""
    scratch = outputs_dir / output_storage.SCRATCH_FOLDER
    found = files_under(outputs_dir)
    for folder in (scratch, *folders):
        found += sorted(folder.rglob("*")) if folder.exists() else []
    return found


TEN_ROWS = (
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 10) SELECT x FROM n"
)
SLOW_QUERIES = {
    "postgresql": "SELECT pg_sleep(10) AS slept",
    "sqlite": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
    "SELECT count(*) FROM n",
}
LONG_VALUES = {
    "postgresql": "SELECT x, repeat('a', 40000) AS text FROM generate_series(1, 3) AS x",
    "sqlite": "SELECT 1 AS x, replace(hex(zeroblob(20000)), '0', 'a') AS text",
}


@pytest.mark.parametrize("failure", ["row limit", "timeout", "value too long"])
def test_a_failed_workbook_leaves_nothing_behind(outputs_dir, system_temp, failure):
    sql, fields, message = {
        "row limit": (TEN_ROWS, {"max_rows": 5}, "The result has more than 5 rows"),
        "timeout": (SLOW_QUERIES[vendor()], {"timeout_seconds": 1}, "Query timed out after 1 s"),
        "value too long": (LONG_VALUES[vendor()], {}, "an XLSX cell holds at most 32,767"),
    }[failure]
    report = Report.objects.create(
        name="Book", slug="book", sql=sql, output_format="xlsx", **fields
    )
    run = run_report_now(report)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert message in run.error
    # XlsxWriter wrote its rows to a temp file as soon as the sheet existed.
    assert left_behind(outputs_dir, system_temp) == []


def test_a_finished_workbook_leaves_its_file_alone(outputs_dir, system_temp):
    report = Report.objects.create(name="Book", slug="book", sql=TEN_ROWS, output_format="xlsx")
    run = run_report_now(report)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert left_behind(outputs_dir, system_temp) == [outputs_dir / run.output.name]


SLOW_SQL = {
    "postgresql": "SELECT 1 AS done FROM pg_sleep(30)",
    "sqlite": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n "
    "WHERE x < 45000000) SELECT count(*) > 0 AS done FROM n",
}


@pytest.mark.long_running
@needs_commits
def test_a_killed_workers_workbook_is_removed_by_recovery(tmp_path, outputs_dir):
    worker_temp = tmp_path / "worker-temp"
    worker_temp.mkdir()
    environment = process_environment(outputs_dir, TMPDIR=worker_temp)
    workers = [WorkerProcess(tmp_path / "killed.log", environment)]
    try:
        report = Report.objects.create(
            name="Book", slug="book", sql=SLOW_SQL[vendor()], output_format="xlsx"
        )
        run = enqueue_run(report, "manual")
        scratch = outputs_dir / output_storage.SCRATCH_FOLDER
        # The run's directory, XlsxWriter's file of rows in it (mkstemp's "tmp…").
        [rows] = wait_for(lambda: list(scratch.glob(f"run{run.pk}-*/tmp*")), timeout=30)
        assert rows.parent.name.startswith(f"run{run.pk}-")
        workers[0].kill()
        # Another worker calls the run lost once its heartbeat is 3 s old, and cleans up.
        workers.append(WorkerProcess(tmp_path / "recovering.log", environment))
        wait_for(lambda: Run.objects.get(pk=run.pk).status == RunStatus.FAILED, timeout=30)
        assert Run.objects.get(pk=run.pk).error.startswith("Worker lost: ")
        wait_for(lambda: left_behind(outputs_dir, worker_temp) == [], timeout=10)
        assert workers[1].stop() == 0
    finally:
        for worker in workers:
            worker.kill()


# --- Full and read-only disks -----------------------------------------------------------


def on_a_small_disk(outputs_dir, script, *, options="size=256k"):
    """Run the shell ``script`` where OUTPUTS_DIR (and TMPDIR) is a fresh tmpfs mounted
    with ``options``, in a mount namespace of its own: ``(exit status, stdout, stderr)``."""
    outputs_dir.mkdir(parents=True, exist_ok=True)
    command = f'mount -t tmpfs -o {options} tmpfs "$OUTPUTS_DIR" && {script}'
    result = subprocess.run(
        ["unshare", "--mount", "--map-root-user", "sh", "-c", command],
        cwd=PROJECT_DIR,
        env=process_environment(outputs_dir, TMPDIR=outputs_dir, LOG_LEVEL="WARNING"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    return result.returncode, result.stdout, result.stderr


def runreport(slug):
    return f"{shlex.quote(sys.executable)} manage.py runreport {slug}"


def numbers_sql(rows):
    if vendor() == "postgresql":
        return f"SELECT x, 'row number ' || x AS text FROM generate_series(1, {rows}) AS x"
    return (
        f"WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {rows}) "
        "SELECT x, 'row number ' || x AS text FROM n"
    )


def disk_full(outputs_dir):
    return (
        f"The output could not be written: the disk of OUTPUTS_DIR ({outputs_dir}) is full "
        "(No space left on device). Free space there or give OUTPUTS_DIR a larger disk, then "
        "run the report again."
    )


@pytest.mark.long_running
@needs_commits
def test_a_full_disk_is_called_full_and_the_next_run_has_its_space(outputs_dir):
    for slug, output_format, rows in [
        ("big-csv", "csv", 20000),
        ("big-book", "xlsx", 20000),
        ("small-book", "xlsx", 3),
    ]:
        Report.objects.create(
            name=slug, slug=slug, sql=numbers_sql(rows), output_format=output_format
        )
    # As a TMPDIR too small for one workbook was: every later XLSX run failed.
    status, output, errors = on_a_small_disk(
        outputs_dir,
        f"{runreport('big-csv')}; {runreport('big-book')}; {runreport('small-book')}; "
        'find "$OUTPUTS_DIR" -mindepth 1 -type f',
    )
    assert status == 0, output + errors
    runs = {run.report.slug: run for run in Run.objects.select_related("report")}
    for slug in ("big-csv", "big-book"):
        assert runs[slug].status == RunStatus.FAILED, (slug, runs[slug].output_bytes)
        assert runs[slug].error == disk_full(outputs_dir), runs[slug].error
    assert runs["small-book"].status == RunStatus.SUCCEEDED, runs["small-book"].error
    # Only the small workbook is left on the disk.
    assert output.strip().splitlines()[-1] == str(outputs_dir / runs["small-book"].output.name)
    assert "Traceback" not in errors and "Internal error" not in errors


@pytest.mark.long_running
@needs_commits
def test_a_read_only_disk_is_called_read_only(outputs_dir):
    Report.objects.create(name="Numbers", slug="numbers", sql=numbers_sql(3))
    status, _, errors = on_a_small_disk(outputs_dir, runreport("numbers"), options="size=64k,ro")
    assert status != 0
    run = Run.objects.get()
    assert run.status == RunStatus.FAILED
    assert run.error == (
        f"The output could not be written: the disk of OUTPUTS_DIR ({outputs_dir}) is mounted "
        "read-only (Read-only file system). Mount it writable, then run the report again."
    )
    assert f"Run {run.pk} failed: {run.error}" in errors
    assert "Traceback" not in errors
