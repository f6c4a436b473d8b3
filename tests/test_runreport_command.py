import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from reports.models import Report
from runs.models import Run, RunStatus
from tests.conftest import needs_commits, read_csv
from tests.workers import process_environment

pytestmark = pytest.mark.django_db(databases="__all__")

PROJECT_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture
def numbers_report():
    return Report.objects.create(
        name="Numbers", slug="numbers", sql="SELECT 1 AS n UNION ALL SELECT 2 ORDER BY n"
    )


def test_json_summary_on_the_last_line(numbers_report):
    out = StringIO()
    call_command("runreport", "numbers", "--json", stdout=out)
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    run = Run.objects.get()
    assert summary["run_id"] == run.pk
    assert summary["status"] == "succeeded"
    assert summary["row_count"] == 2
    assert summary["output_sha256"] == run.output_sha256
    assert summary["error"] is None
    assert summary["duration_s"] >= 0
    assert Path(summary["output_path"]).is_absolute()
    assert read_csv(summary["output_path"]) == [["n"], ["1"], ["2"]]
    assert run.trigger == "cli"


def test_human_summary(numbers_report):
    out = StringIO()
    call_command("runreport", "numbers", stdout=out)
    text = out.getvalue()
    assert "succeeded" in text
    assert "2 rows" in text
    assert "Output: /" in text


def test_failed_run_raises_with_the_error_and_still_prints_json():
    Report.objects.create(name="Broken", slug="broken", sql="SELECT * FROM missing_table")
    out = StringIO()
    with pytest.raises(CommandError) as error:
        call_command("runreport", "broken", "--json", stdout=out)
    assert "missing_table" in str(error.value)
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert summary["status"] == "failed"
    assert "missing_table" in summary["error"]
    assert summary["output_path"] is None
    assert Run.objects.get().status == RunStatus.FAILED


def test_unknown_slug_names_the_known_ones(numbers_report):
    with pytest.raises(CommandError) as error:
        call_command("runreport", "nope")
    assert str(error.value) == "No report with slug 'nope'. Known reports: numbers."
    assert Run.objects.count() == 0


@pytest.mark.long_running
@needs_commits
def test_exit_status_as_a_process(numbers_report, tmp_path):
    Report.objects.create(name="Broken", slug="broken", sql="SELECT * FROM missing_table")
    environment = process_environment(tmp_path / "outputs")

    def runreport(slug):
        return subprocess.run(
            [sys.executable, "manage.py", "runreport", slug, "--json"],
            cwd=PROJECT_DIR,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )

    succeeded = runreport("numbers")
    assert succeeded.returncode == 0, succeeded.stderr
    assert json.loads(succeeded.stdout.strip().splitlines()[-1])["status"] == "succeeded"
    failed = runreport("broken")
    assert failed.returncode == 1
    assert "missing_table" in failed.stderr
    assert json.loads(failed.stdout.strip().splitlines()[-1])["status"] == "failed"
