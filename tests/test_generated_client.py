"""A client generated from the live schema drives the whole API, as integrators do.

openapi-python-client generates the client (once per module) into a temporary folder;
the tests import it from there and use nothing else to talk to the server: nothing in
the generated code is edited. A report runs on the project's own worker functions,
called in this process between two polls.
"""

import gzip
import hashlib
import importlib
import io
import json
import os
import subprocess
import sys
import urllib.request
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import openpyxl
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from reports.models import Report
from runs.models import Run, RunStatus
from runs.services.domain.queue import claim_runs
from runs.services.runtime.runner import perform_run, run_report_now
from tests.api_helpers import make_user, token_key
from tests.conftest import enqueue_run, executes_reports

# One test process for both tests: the client is generated once.
pytestmark = [executes_reports, pytest.mark.xdist_group("generated-client")]

PACKAGE = "reportsvc_client"
FINISHED = {"succeeded", "failed", "skipped", "cancelled"}
SQL = "SELECT 1 AS n, 'héllo, \"world\"' AS word UNION ALL SELECT 2, 'two'"

# The generator's default post-hooks format its output with ruff; the client does not
# need that. Nothing else in it may reach the network: every proxy points at a closed
# port, so an attempt fails the generation.
GENERATOR_CONFIG = {"post_hooks": []}
NO_NETWORK = {name: "http://127.0.0.1:9" for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")} | {
    "NO_PROXY": "",
    "no_proxy": "",
}


def fetch_schema(base_url, token):
    """The schema as an integrator fetches it: with a token (it may need a login)."""
    request = urllib.request.Request(
        f"{base_url}/api/schema/",
        headers={
            "Authorization": f"Token {token}",
            "Accept": "application/vnd.oai.openapi+json",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


@pytest.fixture(scope="module")
def generated(live_server, django_db_setup, django_db_blocker, tmp_path_factory):
    folder = tmp_path_factory.mktemp("generated-client")
    with django_db_blocker.unblock():
        reader = get_user_model().objects.create_user("schema-reader")
        try:
            schema = fetch_schema(live_server.url, token_key(reader))
        finally:
            reader.delete()
    (folder / "openapi.json").write_bytes(schema)
    (folder / "config.json").write_text(json.dumps(GENERATOR_CONFIG))
    command = [
        str(Path(sys.executable).parent / "openapi-python-client"),
        "generate",
        "--path=openapi.json",
        "--config=config.json",
        "--meta=none",
        f"--output-path={PACKAGE}",
        "--fail-on-warning",
    ]
    result = subprocess.run(
        command,
        cwd=folder,
        env={**os.environ, **NO_NETWORK},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(folder))
    try:
        yield Generated(importlib.import_module(PACKAGE), json.loads(schema))
    finally:
        sys.path.remove(str(folder))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


class Generated:
    """The generated package: its client class, models and endpoint modules."""

    def __init__(self, package, schema):
        self.package = package
        self.schema = schema
        self.models = importlib.import_module(f"{PACKAGE}.models")
        self.types = importlib.import_module(f"{PACKAGE}.types")
        self.operations = {}
        for path_item in schema["paths"].values():
            for operation in path_item.values():
                tag = operation["tags"][0]
                name = operation["operationId"]
                self.operations[name] = importlib.import_module(f"{PACKAGE}.api.{tag}.{name}")

    def client(self, base_url, user):
        return self.package.AuthenticatedClient(
            base_url=base_url,
            token=token_key(user),
            prefix="Token",
            raise_on_unexpected_status=True,
        )

    def call(self, operation, client, **arguments):
        return self.operations[operation].sync_detailed(client=client, **arguments)


@pytest.fixture
def numbers():
    return Report.objects.create(
        name="Numbers",
        slug="numbers",
        sql=SQL,
        timeout_seconds=30,
        notify_emails="ops@example.com",
        notify_webhooks="https://user:secret@hooks.example.com/T000/B000",  # to redact
        notify_when="never",  # and never to call
    )


def work_off_queue():
    """What the worker does between two polls: claim the queued runs and execute them."""
    for run in claim_runs(10, "test-worker:1"):
        perform_run(run)


def poll_until_finished(generated, client, run_id):
    statuses = []
    for _ in range(5):
        run = generated.call("runs_retrieve", client, id=run_id).parsed
        statuses.append(run.status.value)
        if run.status.value in FINISHED:
            return run, statuses
        work_off_queue()
    raise AssertionError(f"run {run_id} did not finish: {statuses}")


def drive_the_read_and_run_workflow(generated, client, report, *, sees_sql):
    """List and read reports, trigger a run, poll it, download it, page through runs."""
    unset = generated.types.Unset

    listed = generated.call("reports_list", client)
    assert listed.status_code == 200
    assert [item.slug for item in listed.parsed] == [report.slug]
    assert listed.parsed[0].last_run is None  # never ran yet: null, and the client copes

    fetched = generated.call("reports_retrieve", client, slug=report.slug).parsed
    assert fetched.name == "Numbers" and fetched.timeout_seconds == 30
    if sees_sql:
        assert fetched.sql == SQL
    else:
        assert isinstance(fetched.sql, unset)  # left out, as the schema says it may be
        assert fetched.notify_emails == "…@example.com"
        assert fetched.notify_webhooks == "https://hooks.example.com/…"

    # Trigger with an Idempotency-Key; the retry of the same request is the same run.
    first = generated.call("reports_run_create", client, slug=report.slug, idempotency_key="k-1")
    assert first.status_code == 202
    queued = first.parsed
    assert queued.status.value == "queued"
    assert first.headers["Location"] == queued.url
    assert "Idempotent-Replayed" not in first.headers
    again = generated.call("reports_run_create", client, slug=report.slug, idempotency_key="k-1")
    assert again.status_code == 202
    assert again.parsed.id == queued.id
    assert again.headers["Idempotent-Replayed"] == "true"

    # A download before the run is done: 409, read by the client as the Error object.
    early = generated.call("runs_download_retrieve", client, id=queued.id)
    assert early.status_code == 409
    assert early.parsed.detail == f"Run {queued.id} is queued; its output is not ready yet."

    finished, statuses = poll_until_finished(generated, client, queued.id)
    assert statuses == ["queued", "succeeded"]
    assert finished.row_count == 2 and finished.error == ""
    assert (finished.sql == report.sql.strip()) if sees_sql else isinstance(finished.sql, unset)

    download = generated.call("runs_download_retrieve", client, id=finished.id)
    assert download.status_code == 200
    body = download.parsed.payload.read()
    assert isinstance(body, bytes)
    assert hashlib.sha256(body).hexdigest() == finished.output_sha256
    assert len(body) == finished.output_bytes
    assert body.decode().splitlines()[:2] == ["n,word", '1,"héllo, ""world"""']
    assert download.headers["ETag"] == f'"{finished.output_sha256}"'
    assert download.headers["Content-Disposition"].startswith('attachment; filename="numbers_')
    not_modified = generated.call(
        "runs_download_retrieve", client, id=finished.id, if_none_match=download.headers["ETag"]
    )
    assert not_modified.status_code == 304

    latest = generated.call("reports_latest_csv_retrieve", client, slug=report.slug)
    assert latest.status_code == 200 and latest.parsed.payload.read() == body
    # The newest output is CSV: latest.xlsx says where it is, read as the Error object.
    elsewhere = generated.call("reports_latest_xlsx_retrieve", client, slug=report.slug)
    assert elsewhere.status_code == 409
    assert elsewhere.parsed.detail.endswith(f"/api/reports/{report.slug}/latest.csv")

    summary = generated.call("reports_retrieve", client, slug=report.slug).parsed.last_run
    assert summary.id == finished.id and summary.download_url == finished.download_url
    return finished


def download_each_format(generated, client, report):
    """The report set to each format through the client, run, and its file downloaded
    as bytes from the run and from latest.<extension>."""
    bodies = {}
    for output_format in ("csv", "csv_gz", "xlsx"):
        patch = generated.models.PatchedReportRequest(
            output_format=generated.models.OutputFormatEnum(output_format)
        )
        patched = generated.call("reports_partial_update", client, slug=report.slug, body=patch)
        assert patched.status_code == 200 and patched.parsed.output_format.value == output_format
        assert patched.parsed.latest_output_url.endswith(
            f"/latest.{output_format.replace('_', '.')}"
        )
        queued = generated.call(
            "reports_run_create", client, slug=report.slug, idempotency_key=output_format
        ).parsed
        finished, _ = poll_until_finished(generated, client, queued.id)
        download = generated.call("runs_download_retrieve", client, id=finished.id)
        assert download.status_code == 200
        body = download.parsed.payload.read()
        assert hashlib.sha256(body).hexdigest() == finished.output_sha256
        operation = f"reports_latest_{output_format}_retrieve"
        latest = generated.call(operation, client, slug=report.slug)
        assert latest.status_code == 200 and latest.parsed.payload.read() == body
        bodies[output_format] = body
    assert gzip.decompress(bodies["csv_gz"]) == bodies["csv"]
    rows = openpyxl.load_workbook(io.BytesIO(bodies["xlsx"])).active.iter_rows(values_only=True)
    assert list(rows) == [("n", "word"), (1, 'héllo, "world"'), (2, "two")]


def page_through_runs(generated, client, **filters):
    """Every run the filters select, following the cursor of each page's next link."""
    ids, cursor, pages = [], generated.types.UNSET, 0
    while True:
        page = generated.call("runs_list", client, page_size=2, cursor=cursor, **filters).parsed
        ids += [run.id for run in page.results]
        pages += 1
        if page.next_ is None:  # "next" shadows a builtin: the generator adds "_"
            return ids, pages
        (cursor,) = parse_qs(urlsplit(page.next_).query)["cursor"]


def add_history(report, other):
    """Older runs to page through: succeeded and failed ones of two reports."""
    now = timezone.now()
    for minutes, (run_of, status) in enumerate(
        [(report, "succeeded"), (report, "failed"), (other, "succeeded")] * 3, start=10
    ):
        Run.objects.create(
            report=run_of,
            trigger="schedule",
            status=status,
            scheduled_for=now - timedelta(minutes=minutes),
            queued_at=now - timedelta(minutes=minutes),
        )


def check_paging(generated, client, report):
    other = Report.objects.create(name="Other", slug="other", sql="SELECT 2 AS n")
    add_history(report, other)
    status = generated.models.RunsListStatus("succeeded")
    ids, pages = page_through_runs(generated, client, report=report.slug, status=status)
    expected = Run.objects.filter(report=report, status=RunStatus.SUCCEEDED).order_by(
        "-queued_at", "-id"
    )
    assert ids == [run.id for run in expected] and len(ids) == 4
    assert pages == 2
    trigger = generated.models.RunsListTrigger("schedule")
    since = timezone.now() - timedelta(minutes=15, seconds=30)  # the 6 runs 10-15 min old
    ids, _ = page_through_runs(generated, client, trigger=trigger, created_after=since)
    assert ids == list(
        Run.objects.filter(trigger="schedule", queued_at__gte=since)
        .order_by("-queued_at", "-id")
        .values_list("id", flat=True)
    )
    assert len(ids) == 6


def test_a_user_who_may_view_and_run_reports_works_with_the_generated_client(
    generated, live_server, numbers
):
    client = generated.client(live_server.url, make_user("runner", "run"))
    drive_the_read_and_run_workflow(generated, client, numbers, sees_sql=False)
    check_paging(generated, client, numbers)

    # What this user may not do comes back as the documented Error object.
    body = generated.models.ReportRequest(name="X", slug="x", sql="SELECT 1")
    refused = generated.call("reports_create", client, body=body)
    assert refused.status_code == 403
    assert refused.parsed.detail == "You do not have permission to perform this action."
    assert not Report.objects.filter(slug="x").exists()

    # A queued run cancelled, again (the same answer), and one that ended: the 409.
    queued = enqueue_run(numbers, "api")
    for _ in range(2):
        cancelled = generated.call("runs_cancel_create", client, id=queued.pk)
        assert cancelled.status_code == 202
        assert cancelled.parsed.status.value == "cancelled"
        assert cancelled.parsed.cancelled_by == "runner"
    ended = Run.objects.filter(report=numbers, status="succeeded").first()
    conflict = generated.call("runs_cancel_create", client, id=ended.pk)
    assert conflict.status_code == 409
    assert conflict.parsed.detail.startswith(f"Run {ended.pk} has already ended: it succeeded")


def test_an_admin_works_with_the_generated_client(generated, live_server, numbers):
    admin = make_user("admin", staff=True)
    admin.is_superuser = True
    admin.save()
    client = generated.client(live_server.url, admin)
    drive_the_read_and_run_workflow(generated, client, numbers, sees_sql=True)
    check_paging(generated, client, numbers)
    formats = Report.objects.create(name="Formats", slug="formats", sql=SQL)
    download_each_format(generated, client, formats)
    models = generated.models

    body = models.ReportRequest(
        name="Orders",
        slug="orders",
        sql="SELECT 3 AS n",
        schedule="*/15 * * * *",
        timezone="Europe/Berlin",
        timeout_seconds=60,
        max_rows=1000,
    )
    created = generated.call("reports_create", client, body=body)
    assert created.status_code == 201
    assert created.parsed.schedule_description == "Every 15 minutes"
    assert created.parsed.last_run is None

    # null clears a nullable setting: the request is JSON, so null stays null.
    patch = models.PatchedReportRequest(timeout_seconds=None, enabled=False)
    patched = generated.call("reports_partial_update", client, slug="orders", body=patch)
    assert patched.status_code == 200
    assert patched.parsed.timeout_seconds is None and patched.parsed.enabled is False
    assert Report.objects.get(slug="orders").timeout_seconds is None

    # A report as fetched can be sent back whole (its null integers included).
    fetched = generated.call("reports_retrieve", client, slug="orders").parsed
    replacement = models.ReportRequest.from_dict(fetched.to_dict())
    replacement.name = "Orders (all)"
    replaced = generated.call("reports_update", client, slug="orders", body=replacement)
    assert replaced.status_code == 200, replaced.content
    assert replaced.parsed.name == "Orders (all)"
    assert replaced.parsed.timeout_seconds is None and replaced.parsed.max_rows == 1000

    invalid = models.PatchedReportRequest(schedule="0 25 * * *")
    refused = generated.call("reports_partial_update", client, slug="orders", body=invalid)
    assert refused.status_code == 400
    assert refused.parsed.additional_properties == {
        "schedule": ["Invalid schedule '0 25 * * *': hour: 25 is out of range 0-23."]
    }

    deleted = generated.call("reports_destroy", client, slug="orders")
    assert deleted.status_code == 204
    assert not Report.objects.filter(slug="orders").exists()
    gone = generated.call("reports_retrieve", client, slug="orders")
    assert gone.status_code == 404 and gone.parsed.detail == "No Report matches the given query."


def test_the_generated_client_follows_the_redirect_to_object_storage(
    generated, live_server, numbers, s3_outputs
):
    run = run_report_now(numbers)
    key = token_key(make_user("viewer", "view"))

    def client(**options):
        return generated.package.AuthenticatedClient(
            base_url=live_server.url,
            token=key,
            prefix="Token",
            raise_on_unexpected_status=True,
            **options,
        )

    redirect = generated.call("runs_download_retrieve", client(), id=run.pk)
    assert redirect.status_code == 302
    assert redirect.headers["Location"].startswith(s3_outputs.server.gateway.url)
    assert redirect.headers["ETag"] == f'"{run.output_sha256}"'
    # httpx, like requests and curl, leaves the token behind when the host changes.
    for operation, arguments in [
        ("runs_download_retrieve", {"id": run.pk}),
        ("reports_latest_csv_retrieve", {"slug": numbers.slug}),
    ]:
        followed = generated.call(operation, client(follow_redirects=True), **arguments)
        assert followed.status_code == 200
        body = followed.parsed.payload.read()
        assert hashlib.sha256(body).hexdigest() == run.output_sha256
        assert followed.headers["Content-Disposition"].startswith('attachment; filename="numbers_')
