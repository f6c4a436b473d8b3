"""Outputs on S3-compatible object storage, against a real S3 API server on loopback.

moto's server mode in its own process (tests/s3.py), reached over HTTP by boto3 as any
S3 service would be; downloads go through a gateway that checks presigned URLs as S3
does. Nothing of boto3 is mocked.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from io import StringIO
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.conf import settings
from django.core import mail
from django.core.exceptions import SuspiciousFileOperation
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

from datasources.registry import DEFAULT_SOURCE, connection_for_source
from reports.models import Report
from runs.models import Run, RunStatus
from runs.naming import download_file_name, interval_label, output_file_stem, output_name
from runs.services.domain.transitions import transition_run
from runs.services.formats import get_format
from runs.services.infrastructure import output_storage
from runs.services.infrastructure.preview import PREVIEW_MAX_BYTES, preview_rows
from runs.services.notifications.notifier import send_email
from runs.services.runtime.housekeeping import purge_expired_runs, run_housekeeping
from runs.services.runtime.recovery import fail_lost_runs
from runs.services.runtime.runner import fail_run, run_report_now
from tests import s3
from tests.api_helpers import client_for, make_user, token_key
from tests.conftest import enqueue_run, execute_run, files_under, needs_commits, parse_csv_text
from tests.workers import PROJECT_DIR, process_environment

pytestmark = pytest.mark.django_db(databases="__all__")

NUMBERS = "SELECT 1 AS n, 'a,b' AS text UNION ALL SELECT 2, 'say \"hi\"' ORDER BY n"
SLOW_QUERIES = {
    "postgresql": "SELECT pg_sleep(10)",
    "sqlite": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
    "SELECT count(*) FROM n",
}
# About a second of work on either database, then one row.
SECOND_LONG_QUERIES = {
    "postgresql": "SELECT 1 AS done FROM pg_sleep(1)",
    "sqlite": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3000000) "
    "SELECT count(*) AS done FROM n",
}


def vendor():
    return connection_for_source(DEFAULT_SOURCE).vendor


def run_sql(sql, slug="numbers", **fields):
    report = Report.objects.create(name=slug.title(), slug=slug, sql=sql, **fields)
    run = run_report_now(report)
    run.refresh_from_db()
    return run


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def local_temp_folder():
    return Path(settings.VAR_DIR) / "partial-outputs"


def leftover_temp_files(run):
    """What the run left in this machine's scratch folder (its directory, or anything)."""
    folder = local_temp_folder()
    return sorted(folder.rglob("*")) if folder.exists() else []


# --- Runs ------------------------------------------------------------------------------


def test_a_run_stores_one_private_object_with_the_runs_checksum(s3_outputs, outputs_dir):
    run = run_sql(NUMBERS)
    assert run.status == RunStatus.SUCCEEDED, run.error
    key = f"{s3_outputs.prefix}/numbers/{output_file_stem(run)}.csv"
    assert s3_outputs.keys() == [key]
    body = s3_outputs.body(key)
    assert parse_csv_text(body.decode()) == [["n", "text"], ["1", "a,b"], ["2", 'say "hi"']]
    assert sha256(body) == run.output_sha256 and len(body) == run.output_bytes
    head = s3_outputs.client.head_object(Bucket=s3_outputs.bucket, Key=key)
    assert head["ContentType"] == "text/csv; charset=utf-8"
    assert s3_outputs.uploads() == []
    assert files_under(outputs_dir) == [] and leftover_temp_files(run) == []
    # Private: the storage refuses a request without a signature.
    anonymous = requests.get(f"{s3_outputs.server.url}/{s3_outputs.bucket}/{key}", timeout=10)
    assert anonymous.status_code == 403


def test_a_big_output_is_uploaded_in_parts_and_arrives_whole(s3_outputs, settings):
    # 20 MiB of rows: above the 16 MiB part size, so a multipart upload.
    sql = (
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 200000) "
        "SELECT x, printf('%.90d', x) AS padding FROM n"
        if vendor() == "sqlite"
        else "SELECT x, lpad(x::text, 90, '0') AS padding FROM generate_series(1, 200000) AS x"
    )
    run = run_sql(sql, slug="big")
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.output_bytes > output_storage.UPLOAD_PART_BYTES
    [key] = s3_outputs.keys()
    head = s3_outputs.client.head_object(Bucket=s3_outputs.bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-2")  # S3's mark of an object made of 2 parts
    assert sha256(s3_outputs.body(key)) == run.output_sha256


@pytest.mark.parametrize("failure", ["error", "timeout", "row limit"])
def test_a_failed_run_leaves_no_object_and_no_upload(s3_outputs, failure):
    sql, fields = {
        "error": ("SELECT * FROM no_such_table", {}),
        "timeout": (SLOW_QUERIES[vendor()], {"timeout_seconds": 1}),
        "row limit": (
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 10) "
            "SELECT x FROM n",
            {"max_rows": 5},
        ),
    }[failure]
    run = run_sql(sql, **fields)
    assert run.status == RunStatus.FAILED
    assert not run.output
    assert s3_outputs.keys() == [] and s3_outputs.uploads() == []
    assert leftover_temp_files(run) == []


@needs_commits
def test_a_run_given_up_while_it_exports_leaves_no_object(s3_outputs):
    report = Report.objects.create(name="Slow", slug="slow", sql=SECOND_LONG_QUERIES[vendor()])
    run = enqueue_run(report, "api")
    outcome = {}

    def run_in_thread():
        try:
            outcome["ok"] = execute_run(run)
        finally:
            connections.close_all()  # the thread's own sessions end with it

    thread = threading.Thread(target=run_in_thread)
    thread.start()
    # As a worker stopping past its grace time (or recovery) does meanwhile:
    wait = time.monotonic() + 10
    while Run.objects.get(pk=run.pk).status != RunStatus.RUNNING:
        assert time.monotonic() < wait
        time.sleep(0.02)
    assert fail_run(Run.objects.get(pk=run.pk), "Worker stopped: given up.")
    thread.join(timeout=30)
    run.refresh_from_db()
    assert (run.status, run.error) == (RunStatus.FAILED, "Worker stopped: given up.")
    assert s3_outputs.keys() == [] and s3_outputs.uploads() == []


def test_an_unreachable_storage_fails_the_run_with_a_clear_message(s3_outputs):
    s3_outputs.use(endpoint_url=f"http://127.0.0.1:{s3.free_port()}")
    run = run_sql(NUMBERS)
    assert run.status == RunStatus.FAILED
    assert run.error.startswith(
        f"The output could not be stored in the bucket {s3_outputs.bucket} as "
        f"{s3_outputs.prefix}/numbers/"
    )
    assert "Could not connect to the endpoint URL" in run.error
    assert leftover_temp_files(run) == []


@needs_commits
def test_runreport_json_gives_the_bucket_and_key_from_the_environment(s3_outputs, outputs_dir):
    Report.objects.create(name="Numbers", slug="numbers", sql=NUMBERS)
    environment = process_environment(
        outputs_dir,
        OUTPUTS_S3_BUCKET=s3_outputs.bucket,
        OUTPUTS_S3_PREFIX=s3_outputs.prefix,
        AWS_S3_ENDPOINT_URL=s3_outputs.server.url,
        AWS_ACCESS_KEY_ID=s3.ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=s3.SECRET_KEY,
        AWS_S3_REGION_NAME=s3.REGION,
        AWS_S3_ADDRESSING_STYLE="path",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "runreport", "numbers", "--json"],
        cwd=PROJECT_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    run = Run.objects.get()
    key = f"{s3_outputs.prefix}/numbers/{output_file_stem(run)}.csv"
    assert summary["storage"] == "s3"
    assert (summary["output_bucket"], summary["output_key"]) == (s3_outputs.bucket, key)
    assert summary["output_path"] is None
    assert summary["output_sha256"] == run.output_sha256 == sha256(s3_outputs.body(key))
    assert files_under(outputs_dir) == []


def test_runreport_in_words_names_the_object(s3_outputs):
    Report.objects.create(name="Numbers", slug="numbers", sql=NUMBERS)
    out = StringIO()
    call_command("runreport", "numbers", stdout=out)
    [key] = s3_outputs.keys()
    assert f"Output: s3://{s3_outputs.bucket}/{key}\n" in out.getvalue()


# --- Dead uploads, lost runs, retention ------------------------------------------------

KILLED_UPLOAD = """
import os, signal, sys, threading, time
import django
django.setup()
from runs.services.infrastructure import output_storage

path, name = sys.argv[1:]
client, bucket = output_storage._client(), output_storage._bucket()
key = output_storage.object_key(name)

def kill_once_uploading():
    while not client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads"):
        time.sleep(0.005)
    os.kill(os.getpid(), signal.SIGKILL)

threading.Thread(target=kill_once_uploading, daemon=True).start()
output_storage.store_finished_file(path, name, content_type="text/csv")
print("the upload finished before the kill")
"""


def test_an_upload_killed_midway_leaves_no_object_and_housekeeping_aborts_it(
    s3_outputs, outputs_dir, tmp_path
):
    big = tmp_path / "big.csv"
    big.write_bytes(os.urandom(1 << 20) * 64)  # 64 MiB: four parts
    environment = process_environment(
        outputs_dir,
        DJANGO_SETTINGS_MODULE="reportsvc.settings",
        OUTPUTS_S3_BUCKET=s3_outputs.bucket,
        OUTPUTS_S3_PREFIX=s3_outputs.prefix,
        AWS_S3_ENDPOINT_URL=s3_outputs.server.url,
        AWS_ACCESS_KEY_ID=s3.ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=s3.SECRET_KEY,
        AWS_S3_REGION_NAME=s3.REGION,
        AWS_S3_ADDRESSING_STYLE="path",
    )
    result = subprocess.run(
        [sys.executable, "-c", KILLED_UPLOAD, str(big), "numbers/numbers_killed_run1.csv"],
        cwd=PROJECT_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    assert s3_outputs.uploads() == [f"{s3_outputs.prefix}/numbers/numbers_killed_run1.csv"]
    assert s3_outputs.keys() == []
    # Uploads of other prefixes are not the service's: they stay.
    other = s3_outputs.client.create_multipart_upload(
        Bucket=s3_outputs.bucket, Key="elsewhere/file.csv"
    )
    try:
        run_housekeeping()
        assert s3_outputs.uploads() == []
        answer = s3_outputs.client.list_multipart_uploads(
            Bucket=s3_outputs.bucket, Prefix="elsewhere/"
        )
        assert [upload["Key"] for upload in answer["Uploads"]] == ["elsewhere/file.csv"]
    finally:
        s3_outputs.client.abort_multipart_upload(
            Bucket=s3_outputs.bucket, Key="elsewhere/file.csv", UploadId=other["UploadId"]
        )


def test_housekeeping_deletes_old_objects_no_run_records_and_keeps_the_rest(s3_outputs, settings):
    run = run_sql(NUMBERS)
    [recorded] = s3_outputs.keys()
    stray = f"{s3_outputs.prefix}/numbers/numbers_20261126T000000Z_run999999.csv"
    s3_outputs.put(stray)
    outside = f"{s3_outputs.prefix}-not-ours/file.csv"
    s3_outputs.put(outside)
    grace = settings.OUTPUTS_S3_CLEANUP_AFTER_SECONDS
    # Younger than the grace period: an upload whose run is being recorded right now.
    assert output_storage.remove_stray_objects() == (0, 0)
    assert s3_outputs.keys() == sorted([recorded, stray])
    later = timezone.now() + timedelta(seconds=grace + 60)
    assert output_storage.remove_stray_objects(later) == (0, 1)
    assert s3_outputs.keys() == [recorded]
    assert s3_outputs.body(recorded) and run.output_sha256 == sha256(s3_outputs.body(recorded))
    assert s3_outputs.keys(f"{s3_outputs.prefix}-not-ours") == [outside]


def test_a_lost_run_has_its_unfinished_upload_and_unrecorded_object_removed(s3_outputs):
    report = Report.objects.create(name="Numbers", slug="numbers", sql=NUMBERS)
    run = enqueue_run(report, "schedule")
    long_ago = timezone.now() - timedelta(minutes=10)
    transition_run(
        run, RunStatus.RUNNING, worker="gone:1", started_at=long_ago, heartbeat_at=long_ago
    )
    run.refresh_from_db()
    key = f"{s3_outputs.prefix}/numbers/{output_file_stem(run)}.csv"
    s3_outputs.client.create_multipart_upload(Bucket=s3_outputs.bucket, Key=key)
    s3_outputs.put(key)  # or the upload finished and the worker died before recording it
    # Named for the interval its SQL used, which a lost run never recorded.
    s3_outputs.put(f"{s3_outputs.prefix}/numbers/numbers_2026-11-25_run{run.pk}.xlsx")
    neighbour = f"{s3_outputs.prefix}/numbers/{output_file_stem(run)}0.csv"
    s3_outputs.put(neighbour)  # run 10 when this is run 1: not this run's
    scratch = local_temp_folder() / f"run{run.pk}-abc"
    scratch.mkdir(parents=True)
    (scratch / "output.xlsx").write_text("n\n1\n")
    (scratch / "tmp1234").write_text("<row/>")  # XlsxWriter's rows
    earlier = local_temp_folder() / f".partial-run{run.pk}-abc.csv"  # an earlier version's
    earlier.write_text("n\n1\n")
    [lost] = fail_lost_runs(60)
    assert lost.pk == run.pk
    assert s3_outputs.uploads() == []
    assert s3_outputs.keys() == [neighbour]
    assert leftover_temp_files(run) == []


def test_a_starting_worker_removes_local_temp_files_of_runs_that_ended(s3_outputs):
    report = Report.objects.create(name="Numbers", slug="numbers", sql=NUMBERS)
    running, failed = enqueue_run(report, "api"), enqueue_run(report, "api")
    now = timezone.now()
    for run in (running, failed):
        transition_run(run, RunStatus.RUNNING, worker="w:1", started_at=now, heartbeat_at=now)
    fail_run(failed, "Worker lost.")
    scratch = {run: local_temp_folder() / f"run{run.pk}-abc" for run in (running, failed)}
    for directory in scratch.values():
        directory.mkdir(parents=True)
        (directory / "output.csv").write_text("n\n")
    earlier = local_temp_folder() / f".partial-run{failed.pk}-abc.csv"  # an earlier version's
    earlier.write_text("n\n")
    removed = output_storage.remove_local_partial_files()
    assert sorted(removed) == sorted([scratch[failed], earlier])
    assert leftover_temp_files(running) == [scratch[running], scratch[running] / "output.csv"]


@needs_commits
def test_retention_deletes_the_objects_of_expired_runs(s3_outputs):
    old = run_sql(NUMBERS)
    recent = run_report_now(old.report)
    Run.objects.filter(pk=old.pk).update(queued_at=timezone.now() - timedelta(days=91))
    assert len(s3_outputs.keys()) == 2
    assert purge_expired_runs() == 1
    recent.refresh_from_db()
    assert s3_outputs.keys() == [output_storage.object_key(recent.output.name)]


@needs_commits
def test_deleting_a_report_deletes_its_objects(s3_outputs):
    run = run_sql(NUMBERS)
    run_report_now(run.report)
    assert len(s3_outputs.keys()) == 2
    run.report.delete()
    assert s3_outputs.keys() == []


# --- Downloads -------------------------------------------------------------------------


@pytest.fixture
def viewer():
    return make_user("viewer", "view")


def test_a_download_redirects_to_a_short_lived_presigned_url_with_name_and_type(s3_outputs, viewer):
    run = run_sql(NUMBERS)
    response = client_for(viewer).get(f"/api/runs/{run.pk}/download/")
    assert response.status_code == 302
    assert response["ETag"] == f'"{run.output_sha256}"'
    assert response["Cache-Control"] == "private, no-store"
    location = response["Location"]
    assert location.startswith(f"{s3_outputs.server.gateway.url}/{s3_outputs.bucket}/")
    query = parse_qs(urlsplit(location).query)
    assert query["X-Amz-Expires"] == ["60"]
    assert query["response-content-type"] == ["text/csv; charset=utf-8"]
    file_name = f"numbers_{run.started_at:%Y-%m-%d_%H%M}_run{run.pk}.csv"
    assert query["response-content-disposition"] == [f'attachment; filename="{file_name}"']
    fetched = requests.get(location, timeout=10)
    assert fetched.status_code == 200
    assert sha256(fetched.content) == run.output_sha256
    assert fetched.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert fetched.headers["Content-Disposition"] == f'attachment; filename="{file_name}"'


def test_clients_that_prefer_octet_stream_get_it_from_the_storage(s3_outputs, viewer):
    run = run_sql(NUMBERS)
    response = client_for(viewer).get(
        f"/api/runs/{run.pk}/download/", HTTP_ACCEPT="application/octet-stream"
    )
    assert response.status_code == 302
    fetched = requests.get(response["Location"], timeout=10)
    assert fetched.headers["Content-Type"] == "application/octet-stream"
    assert sha256(fetched.content) == run.output_sha256


@needs_commits
def test_a_client_following_redirects_gets_the_same_bytes(s3_outputs, viewer, live_server):
    run = run_sql(NUMBERS)
    headers = {"Authorization": f"Token {token_key(viewer)}"}
    for path in (f"/api/runs/{run.pk}/download/", "/api/reports/numbers/latest.csv"):
        # requests drops the Authorization header when a redirect leaves the host, as
        # curl -L does: S3 refuses a second credential next to the signature.
        response = requests.get(f"{live_server.url}{path}", headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        assert [step.status_code for step in response.history] == [302]
        assert sha256(response.content) == run.output_sha256
        assert response.headers["Content-Disposition"].startswith('attachment; filename="numbers_')


def test_a_matching_etag_gets_304_without_a_redirect(s3_outputs, viewer):
    run = run_sql(NUMBERS)
    for path in (f"/api/runs/{run.pk}/download/", "/api/reports/numbers/latest.csv"):
        response = client_for(viewer).get(path, HTTP_IF_NONE_MATCH=f'W/"{run.output_sha256}"')
        assert response.status_code == 304
        assert response["ETag"] == f'"{run.output_sha256}"'
        assert "Location" not in response


def test_a_missing_object_gives_409_not_a_redirect(s3_outputs, viewer):
    run = run_sql(NUMBERS)
    s3_outputs.client.delete_object(
        Bucket=s3_outputs.bucket, Key=output_storage.object_key(run.output.name)
    )
    response = client_for(viewer).get(f"/api/runs/{run.pk}/download/")
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"The output file of run {run.pk} is missing from storage."
    }
    assert "Location" not in response


def test_users_without_permission_get_no_presigned_url(s3_outputs):
    run = run_sql(NUMBERS)
    nobody = make_user("nobody")
    for path in (f"/api/runs/{run.pk}/download/", "/api/reports/numbers/latest.csv"):
        forbidden = client_for(nobody).get(path)
        assert forbidden.status_code == 403
        assert "Location" not in forbidden and "X-Amz" not in forbidden.content.decode()
        anonymous = client_for().get(path)
        assert anonymous.status_code == 401 and "Location" not in anonymous


def test_the_admin_download_links_redirect_to_the_storage(s3_outputs, admin_client):
    run = run_sql(NUMBERS)
    link = f"/api/runs/{run.pk}/download/"
    for page in (f"/admin/runs/run/{run.pk}/change/", "/admin/reports/report/"):
        response = admin_client.get(page)
        assert response.status_code == 200 and link in response.content.decode()
    response = admin_client.get(link)
    assert response.status_code == 302
    assert sha256(requests.get(response["Location"], timeout=10).content) == run.output_sha256


@pytest.mark.long_running
def test_a_presigned_url_expires_after_its_lifetime(s3_outputs, viewer):
    s3_outputs.use(url_expire_seconds=1)
    run = run_sql(NUMBERS)
    location = client_for(viewer).get(f"/api/runs/{run.pk}/download/")["Location"]
    assert parse_qs(urlsplit(location).query)["X-Amz-Expires"] == ["1"]
    time.sleep(2.1)
    expired = requests.get(location, timeout=10)
    assert expired.status_code == 403
    assert b"Request has expired" in expired.content


def test_a_changed_presigned_url_is_refused(s3_outputs, viewer):
    run = run_sql(NUMBERS)
    location = client_for(viewer).get(f"/api/runs/{run.pk}/download/")["Location"]
    # Another file name, or another object, than the ones signed for.
    for changed in (
        location.replace("filename%3D%22numbers_", "filename%3D%22other_"),
        location.replace(f"_run{run.pk}.csv", f"_run{run.pk + 1}.csv"),
    ):
        assert changed != location
        refused = requests.get(changed, timeout=10)
        assert refused.status_code == 403 and b"SignatureDoesNotMatch" in refused.content


# --- Preview and mail read from the bucket ---------------------------------------------


def test_the_preview_reads_the_head_of_the_object_only(s3_outputs, admin_client):
    run = run_sql(NUMBERS)
    preview = preview_rows(run)
    assert [cell.text for cell in preview.header] == ["n", "text"]
    assert [[cell.text for cell in row] for row in preview.rows] == [
        ["1", "a,b"],
        ["2", 'say "hi"'],
    ]
    big = "numbers/big.csv"
    s3_outputs.put(output_storage.object_key(big), b"a\n" + b"x" * (PREVIEW_MAX_BYTES * 2))
    with output_storage.open_output(big, head_bytes=PREVIEW_MAX_BYTES + 1) as stream:
        assert len(stream.read()) == PREVIEW_MAX_BYTES + 1  # a range request, not the whole
    Run.objects.filter(pk=run.pk).update(output=big)
    run.refresh_from_db()
    preview = preview_rows(run)
    assert preview.cut_short and preview.problem == ""
    s3_outputs.client.delete_object(Bucket=s3_outputs.bucket, Key=output_storage.object_key(big))
    assert "is missing from storage" in preview_rows(run).problem
    page = admin_client.get(f"/admin/runs/run/{run.pk}/change/")
    assert page.status_code == 200 and "is missing from storage" in page.content.decode()


def test_mail_attaches_the_object(s3_outputs, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    run = run_sql(NUMBERS)
    send_email(run, "ops@example.com", "finished")
    [message] = mail.outbox
    [(name, content, media_type)] = message.attachments
    assert (name, media_type) == (download_file_name(run), "text/csv")
    assert name == f"numbers_{run.started_at:%Y-%m-%d_%H%M}_run{run.pk}.csv"
    assert sha256(content.encode() if isinstance(content, str) else content) == run.output_sha256


@pytest.mark.parametrize(
    "output_format, suffix, media_type",
    [
        ("csv_gz", ".csv.gz", "application/gzip"),
        ("xlsx", ".xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ],
)
def test_every_format_is_stored_served_previewed_and_mailed_from_the_bucket(
    s3_outputs, viewer, settings, output_format, suffix, media_type
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    run = run_sql(NUMBERS, output_format=output_format)
    assert run.status == RunStatus.SUCCEEDED and run.output.name.endswith(suffix)
    stored = s3_outputs.client.get_object(
        Bucket=s3_outputs.bucket, Key=output_storage.object_key(run.output.name)
    )
    assert stored["ContentType"] == media_type
    assert sha256(stored["Body"].read()) == run.output_sha256
    response = client_for(viewer).get(f"/api/reports/numbers/latest{suffix}")
    assert response.status_code == 302
    fetched = requests.get(response["Location"], timeout=10)
    assert fetched.headers["Content-Type"] == media_type
    assert fetched.headers["Content-Disposition"].endswith(f'{suffix}"')
    assert sha256(fetched.content) == run.output_sha256
    # The preview reads a CSV head through gzip, and a workbook whole (a zip reads from its end).
    preview = preview_rows(run)
    assert preview.problem == ""
    assert [cell.text for cell in preview.header] == ["n", "text"]
    assert [[cell.text for cell in row] for row in preview.rows] == [
        ["1", "a,b"],
        ["2", 'say "hi"'],
    ]
    send_email(run, "ops@example.com", "finished")
    [message] = mail.outbox
    [(name, content, attached_type)] = message.attachments
    assert name.endswith(suffix) and attached_type == media_type
    assert sha256(content) == run.output_sha256


# --- Setting up ------------------------------------------------------------------------


def test_createoutputbucket_creates_the_bucket_once(s3_outputs, settings):
    import uuid

    from django.core.management import CommandError

    from reportsvc.object_storage import s3_storages

    bucket = f"reportsvc-new-{uuid.uuid4().hex[:12]}"
    settings.STORAGES = s3_storages(
        bucket,
        endpoint_url=s3_outputs.server.url,
        access_key=s3.ACCESS_KEY,
        secret_key=s3.SECRET_KEY,
        region_name=s3.REGION,
        addressing_style="path",
    )
    for expected in ("created", "already exists"):
        out = StringIO()
        call_command("createoutputbucket", stdout=out)
        assert out.getvalue() == f"bucket {bucket} {expected}\n"
    s3_outputs.client.head_bucket(Bucket=bucket)
    s3_outputs.client.delete_bucket(Bucket=bucket)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    }
    with pytest.raises(CommandError, match="Outputs are on the filesystem: set OUTPUTS_S3_BUCKET"):
        call_command("createoutputbucket")


def test_createoutputbucket_says_when_the_storage_is_unreachable(s3_outputs):
    from django.core.management import CommandError

    s3_outputs.use(endpoint_url=f"http://127.0.0.1:{s3.free_port()}")
    with pytest.raises(CommandError, match="Cannot reach the storage: Could not connect"):
        call_command("createoutputbucket")


@pytest.mark.parametrize("name", ["../outside.csv", "numbers/../../outside.csv", "/outside.csv"])
def test_an_output_name_that_leaves_the_prefix_gets_no_url(s3_outputs, viewer, name):
    run = run_sql(NUMBERS)
    s3_outputs.put(f"{s3_outputs.prefix.rsplit('/', 1)[0]}/outside.csv")  # a neighbour's
    Run.objects.filter(pk=run.pk).update(output=name)
    response = client_for(viewer).get(f"/api/runs/{run.pk}/download/")
    assert response.status_code == 409 and "Location" not in response
    with pytest.raises(SuspiciousFileOperation):
        output_storage.object_key(name)


def test_sessions_share_the_parsed_service_description_and_keep_their_own_credentials():
    from reportsvc.s3_storage import new_session

    first = new_session(aws_access_key_id="first", aws_secret_access_key="one")
    second = new_session(aws_access_key_id="second", aws_secret_access_key="two")
    loader = first._session.get_component("data_loader")
    assert second._session.get_component("data_loader") is loader
    assert first.get_credentials().access_key == "first"
    assert second.get_credentials().access_key == "second"
    # Each boto3 session adds its own data folder to its loader's paths: not to the
    # shared one's, once per session.
    paths = loader.search_paths
    new_session()
    assert loader.search_paths == paths
    assert len(set(paths)) == len(paths)


def test_a_lost_run_named_for_its_interval_has_its_objects_removed(s3_outputs):
    """The worker names the output for the interval the SQL uses, from the values it
    records only when the run ends: recovery finds the name by the run's id."""
    report = Report.objects.create(
        name="Daily", slug="daily", sql="SELECT {{ interval_start }} AS day", timezone="Asia/Tokyo"
    )
    run = enqueue_run(report, "schedule")
    long_ago = timezone.now() - timedelta(minutes=10)
    transition_run(
        run, RunStatus.RUNNING, worker="gone:1", started_at=long_ago, heartbeat_at=long_ago
    )
    run.refresh_from_db()
    as_named = Run.objects.get(pk=run.pk)  # as the worker had it when it named the output
    as_named.parameters = {"interval_start": as_named.interval_start.isoformat()}
    name = output_name(as_named, get_format("csv"))
    assert interval_label(as_named) in name and output_file_stem(run) not in name
    key = f"{s3_outputs.prefix}/{name}"
    s3_outputs.client.create_multipart_upload(Bucket=s3_outputs.bucket, Key=key)
    s3_outputs.put(key)
    other = enqueue_run(report, "schedule")
    other.started_at = long_ago
    kept = f"{s3_outputs.prefix}/{output_name(other, get_format('csv'))}"
    s3_outputs.put(kept)  # another run's object
    [lost] = fail_lost_runs(60)
    assert lost.pk == run.pk
    assert s3_outputs.uploads() == []
    assert s3_outputs.keys() == [kept]


def test_the_email_shows_the_first_rows_read_from_the_object(s3_outputs, settings):
    from runs.services.notifications.channels.base import Event
    from runs.services.notifications.notifier import send_event

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    run = run_sql(NUMBERS, notify_when="never", inline_rows=5, notify_emails="ops@example.com")
    [delivery] = send_event(Event("success", run.report, run))
    assert delivery.status == "sent"
    [message] = mail.outbox
    html = message.alternatives[0][0]
    assert '<td class="short"' in html and 'say "hi"' in html and "a,b" in html
