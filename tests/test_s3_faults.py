"""A storage having a bad day: unreachable, refusing, stalled, or losing its answers.

The S3 API is moto's server behind tests.s3.FaultyStorageProxy (the ``faulty_storage``
fixture): a TCP proxy that passes bytes, holds them (a stall), drops the answers, or
answers 403 AccessDenied as S3 does for a key without the permission. Runs record what
happened in words and leave nothing behind; downloads answer 503 with the reason and
Retry-After, within seconds, and only a few requests of a process wait on the storage.
"""

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from django.utils import timezone

from reports.models import Report
from runs.models import RunStatus
from runs.naming import output_file_stem
from runs.services.domain.transitions import transition_run
from runs.services.infrastructure import output_storage
from runs.services.infrastructure.preview import preview_rows
from runs.services.runtime.housekeeping import clean_up_object_storage
from runs.services.runtime.runner import fail_run, run_report_now
from tests import s3
from tests.api_helpers import client_for, make_user
from tests.conftest import enqueue_run, needs_commits, wait_for
from tests.test_openapi_contract import assert_matches, fetch_schema

pytestmark = pytest.mark.django_db(databases="__all__")

NUMBERS = "SELECT 1 AS n, 'a' AS text UNION ALL SELECT 2, 'b' ORDER BY n"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def run_numbers(slug="numbers"):
    report = Report.objects.create(name=slug.title(), slug=slug, sql=NUMBERS)
    run = run_report_now(report)
    run.refresh_from_db()
    return run


def key_of(s3_outputs, run, extension="csv"):
    return f"{s3_outputs.prefix}/{run.report.slug}/{output_file_stem(run)}.{extension}"


def scratch_left():
    folder = Path(settings.VAR_DIR) / output_storage.REMOTE_SCRATCH_FOLDER
    return sorted(folder.rglob("*")) if folder.exists() else []


def assert_in_words(error):
    assert "Internal error" not in error and "Traceback" not in error


# --- Runs ------------------------------------------------------------------------------


def test_storage_clients_wait_as_configured(s3_outputs, settings):
    s3_outputs.use(connect_timeout=2, read_timeout=7, max_attempts=4)
    settings.OUTPUTS_S3_WEB_TIMEOUT_SECONDS = 4
    worker = output_storage._client().meta.config
    assert (worker.connect_timeout, worker.read_timeout) == (2, 7)
    assert worker.retries == {"mode": "standard", "total_max_attempts": 4}
    web = output_storage._short_client().meta.config
    assert (web.connect_timeout, web.read_timeout) == (1, 3)  # 4 s in all
    assert web.retries == {"mode": "standard", "total_max_attempts": 1}


def test_a_refused_upload_is_recorded_as_refused(faulty_storage, s3_outputs):
    faulty_storage.set_mode(faulty_storage.REFUSE)
    run = run_numbers()
    assert run.status == RunStatus.FAILED
    assert run.error == (
        f"The output could not be stored in the bucket {s3_outputs.bucket} as "
        f"{key_of(s3_outputs, run)}: the storage refused access (AccessDenied: Access Denied)."
    )
    assert_in_words(run.error)
    assert not run.output and scratch_left() == []
    faulty_storage.set_mode(faulty_storage.FORWARD)
    assert s3_outputs.keys() == [] and s3_outputs.uploads() == []


def test_an_unreachable_storage_is_recorded_as_unreachable(s3_outputs):
    s3_outputs.use(endpoint_url=f"http://127.0.0.1:{s3.free_port()}", max_attempts=1)
    run = run_numbers()
    assert run.status == RunStatus.FAILED
    assert run.error.startswith(
        f"The output could not be stored in the bucket {s3_outputs.bucket} as "
        f"{key_of(s3_outputs, run)}: the storage could not be reached (Could not connect "
        'to the endpoint URL: "http://127.0.0.1:'
    )
    assert_in_words(run.error)
    assert scratch_left() == []


@pytest.mark.long_running
def test_a_stalled_storage_fails_the_upload_in_bounded_time_and_leaves_nothing(
    faulty_storage, s3_outputs
):
    faulty_storage.set_mode(faulty_storage.STALL)
    started = time.monotonic()
    run = run_numbers()
    waited = time.monotonic() - started
    assert run.status == RunStatus.FAILED
    assert run.error.startswith(
        f"The output could not be stored in the bucket {s3_outputs.bucket} as "
        f"{key_of(s3_outputs, run)}: the storage did not answer in time (Read timeout on "
        "endpoint URL:"
    )
    assert_in_words(run.error)
    # Two attempts of (1 s for the 100-continue, 1 s to read) with a backoff between,
    # then a 1 s attempt at removing the object: never botocore's 60 s reads.
    assert waited < 12, waited
    assert scratch_left() == []
    # The storage comes back and completes the requests it held, the PUTs among them:
    # whatever landed, housekeeping removes at once, as the run failed.
    faulty_storage.set_mode(faulty_storage.FORWARD)
    faulty_storage.wait_until_idle()
    assert ("PUT", f"/{s3_outputs.bucket}/{key_of(s3_outputs, run)}") in faulty_storage.requests
    clean_up_object_storage()
    assert s3_outputs.keys() == [] and s3_outputs.uploads() == []


@pytest.mark.long_running
def test_a_put_whose_answer_was_lost_is_deleted_once_the_failure_is_recorded(
    faulty_storage, s3_outputs
):
    faulty_storage.set_mode(faulty_storage.DROP_ANSWERS)
    run = run_numbers()
    assert run.status == RunStatus.FAILED
    assert "the storage did not answer in time" in run.error
    path = f"/{s3_outputs.bucket}/{key_of(s3_outputs, run)}"
    # The storage stored the object each time; nobody heard it. The delete that follows
    # the recorded failure takes effect, its answer lost too.
    assert faulty_storage.requests[-1] == ("DELETE", path)
    assert ("PUT", path) in faulty_storage.requests[:-1]
    faulty_storage.set_mode(faulty_storage.FORWARD)
    assert s3_outputs.keys() == [] and s3_outputs.uploads() == []


def running_run(report, started):
    run = enqueue_run(report, "api")
    transition_run(run, RunStatus.RUNNING, worker="w:1", started_at=started, heartbeat_at=started)
    run.refresh_from_db()
    return run


def test_housekeeping_removes_what_lands_for_a_failed_run_at_any_age(s3_outputs):
    succeeded = run_numbers()
    report = succeeded.report
    now = timezone.now()
    failed, running = running_run(report, now), running_run(report, now)
    assert fail_run(failed, "The output could not be stored …")
    # After the failure was recorded, a PUT given up on completes, and another upload
    # was still open.
    late = key_of(s3_outputs, failed)
    s3_outputs.put(late)
    s3_outputs.client.create_multipart_upload(Bucket=s3_outputs.bucket, Key=late + ".part")
    in_progress = key_of(s3_outputs, running)
    s3_outputs.put(in_progress)  # uploaded, being recorded right now
    unknown = f"{s3_outputs.prefix}/numbers/numbers_20261126T000000Z_run999999.csv"
    s3_outputs.put(unknown)  # no such run: waits for the cleanup age
    assert output_storage.remove_stray_objects() == (1, 1)
    assert s3_outputs.keys() == sorted([key_of(s3_outputs, succeeded), in_progress, unknown])
    assert s3_outputs.uploads() == []
    later = timezone.now() + timedelta(seconds=settings.OUTPUTS_S3_CLEANUP_AFTER_SECONDS + 60)
    assert output_storage.remove_stray_objects(later) == (0, 2)
    assert s3_outputs.keys() == [key_of(s3_outputs, succeeded)]


def test_the_cleanup_age_outlasts_uploads_and_nothing_stays_a_day():
    age, housekeeping = (
        settings.OUTPUTS_S3_CLEANUP_AFTER_SECONDS,
        settings.HOUSEKEEPING_INTERVAL_SECONDS,
    )
    assert age >= 4 * 3600  # hours beyond any one upload
    assert age + housekeeping < 24 * 3600  # the pass after it comes within the day


# --- Downloads -------------------------------------------------------------------------


@pytest.fixture
def viewer():
    return make_user("viewer", "view")


def download(user, run, **headers):
    started = time.monotonic()
    response = client_for(user).get(f"/api/runs/{run.pk}/download/", **headers)
    return response, time.monotonic() - started


def assert_unavailable(response, run, reason):
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == str(output_storage.RETRY_AFTER_SECONDS)
    assert "Location" not in response
    detail = response.json()["detail"]
    assert detail.startswith(f"The output file of run {run.pk} cannot be fetched now: {reason}")
    assert detail.endswith(f". Try again in {output_storage.RETRY_AFTER_SECONDS} s.")


def test_a_download_from_an_unreachable_storage_is_a_503_saying_so(s3_outputs, viewer):
    run = run_numbers()
    s3_outputs.use(endpoint_url=f"http://127.0.0.1:{s3.free_port()}")
    response, waited = download(viewer, run)
    assert_unavailable(response, run, "the storage could not be reached (Could not connect")
    assert waited < 3
    # As documented.
    assert_matches(fetch_schema(viewer), "/api/runs/{id}/download/", "get", response)


def test_a_download_from_a_storage_that_refuses_is_a_503_saying_so(faulty_storage, viewer):
    run = run_numbers()
    faulty_storage.set_mode(faulty_storage.REFUSE)
    response, _ = download(viewer, run)
    assert_unavailable(response, run, "the storage refused access (403")
    faulty_storage.set_mode(faulty_storage.FORWARD)
    response, _ = download(viewer, run)
    assert response.status_code == 302


def test_a_download_waits_on_a_stalled_storage_its_budget_then_answers_503(faulty_storage, viewer):
    run = run_numbers()
    faulty_storage.set_mode(faulty_storage.STALL)
    response, waited = download(viewer, run)
    assert_unavailable(response, run, "the storage did not answer in time (Read timeout")
    assert 0.4 < waited < 2.5  # OUTPUTS_S3_WEB_TIMEOUT_SECONDS (1 s here) in all, one attempt


@pytest.mark.long_running
@needs_commits
def test_requests_past_the_bulkhead_are_answered_at_once(faulty_storage, viewer, settings):
    settings.OUTPUTS_S3_WEB_TIMEOUT_SECONDS = 3
    settings.OUTPUTS_S3_WEB_CONCURRENCY = 2
    run = run_numbers()
    client = client_for(viewer)
    faulty_storage.set_mode(faulty_storage.STALL)
    waiting, before = [], faulty_storage.connections

    def wait_on_the_storage():
        try:
            waiting.append(client.get(f"/api/runs/{run.pk}/download/"))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=wait_on_the_storage) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_for(lambda: faulty_storage.connections >= before + 2)  # both slots are taken
    response, waited = download(viewer, run)
    assert_unavailable(
        response,
        run,
        "all 2 of this web process's requests to the storage are waiting on it already",
    )
    assert waited < 0.5
    for thread in threads:
        thread.join()
    assert [response.status_code for response in waiting] == [503, 503]
    # The slots are free again: the next request asks the storage.
    faulty_storage.set_mode(faulty_storage.FORWARD)
    response, _ = download(viewer, run)
    assert response.status_code == 302


def test_a_missing_object_is_still_a_409(faulty_storage, s3_outputs, viewer):
    run = run_numbers()
    s3_outputs.client.delete_object(Bucket=s3_outputs.bucket, Key=key_of(s3_outputs, run))
    response, _ = download(viewer, run)
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"The output file of run {run.pk} is missing from storage."
    }


def test_a_browser_following_the_admins_link_gets_a_page(faulty_storage, admin_client):
    run = run_numbers()
    link = f"/api/runs/{run.pk}/download/"
    assert link in admin_client.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    faulty_storage.set_mode(faulty_storage.REFUSE)
    page = admin_client.get(link, HTTP_ACCEPT=BROWSER_ACCEPT)
    assert page.status_code == 503
    assert page["Content-Type"].startswith("text/html")
    assert page["Retry-After"] == str(output_storage.RETRY_AFTER_SECONDS)
    html = page.content.decode()
    assert (
        f"The output file of run {run.pk} cannot be fetched now: the storage refused access" in html
    )
    assert f'href="/admin/runs/run/{run.pk}/change/"' in html
    # API clients keep their JSON.
    assert admin_client.get(link, HTTP_ACCEPT="application/json").json()["detail"]


def test_the_run_page_answers_while_the_storage_stalls(faulty_storage, admin_client):
    run = run_numbers()
    faulty_storage.set_mode(faulty_storage.STALL)
    started = time.monotonic()
    page = admin_client.get(f"/admin/runs/run/{run.pk}/change/")
    assert page.status_code == 200
    assert time.monotonic() - started < 3
    assert "The output file cannot be read now: the storage did not answer in time" in (
        page.content.decode()
    )
    faulty_storage.set_mode(faulty_storage.FORWARD)
    assert [cell.text for cell in preview_rows(run).header] == ["n", "text"]
