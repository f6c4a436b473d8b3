"""Email and webhook notifications, alert conditions, and recorded deliveries."""

import hmac
import json
import threading
import time
from hashlib import sha256

import pytest
from django.core import mail
from django.db import connections

from datasources.registry import DEFAULT_SOURCE, connection_for_source
from reports.models import Report
from runs.models import Delivery, DeliveryStatus, Run, RunStatus
from runs.services.runtime.runner import fail_run, run_report_now
from tests.api_helpers import client_for, make_user
from tests.conftest import executes_reports, needs_commits, wait_for
from tests.receivers import Receiver

pytestmark = pytest.mark.django_db(databases="__all__")


@pytest.fixture(autouse=True)
def fast_notifications(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.NOTIFY_WEBHOOK_TIMEOUT_SECONDS = 1
    settings.NOTIFY_WEBHOOK_RETRIES = 2
    settings.PUBLIC_BASE_URL = "https://reports.example.com"
    # Receivers here listen on 127.0.0.1, which is blocked by default.
    settings.NOTIFY_WEBHOOK_BLOCKED_NETWORKS = ["169.254.0.0/16"]


@pytest.fixture
def receiver():
    servers = []

    def start(**options):
        servers.append(Receiver(**options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def make_report(sql="SELECT 1 AS n", **fields):
    return Report.objects.create(name="Refunds", slug="refunds", sql=sql, **fields)


def test_a_failure_emails_with_error_and_links():
    report = make_report(
        "SELECT * FROM missing_table", notify_emails="a@example.com, b@example.com"
    )
    run = run_report_now(report)
    assert run.status == RunStatus.FAILED
    assert len(mail.outbox) == 2
    message = mail.outbox[0]
    assert message.subject == f"[reportsvc] Refunds: FAILED (run {run.pk})"
    assert "missing_table" in message.body
    assert f"https://reports.example.com/admin/runs/run/{run.pk}/change/" in message.body
    assert message.attachments == []
    assert set(Delivery.objects.values_list("target", "status")) == {
        ("a@example.com", "sent"),
        ("b@example.com", "sent"),
    }


def test_success_with_always_attaches_the_csv():
    run = run_report_now(make_report(notify_emails="a@example.com", notify_when="always"))
    [message] = mail.outbox
    assert message.subject == f"[reportsvc] Refunds: succeeded (run {run.pk}, 1 rows)"
    [(name, content, mimetype)] = message.attachments
    assert name == f"refunds_{run.started_at:%Y-%m-%d_%H%M}_run{run.pk}.csv"
    assert mimetype == "text/csv"
    assert content == "n\n1\n"
    assert f"https://reports.example.com/api/runs/{run.pk}/download/" in message.body


def test_a_large_result_is_linked_and_the_mail_says_why(settings):
    settings.NOTIFY_ATTACH_MAX_BYTES = 3
    run = run_report_now(make_report(notify_emails="a@example.com", notify_when="always"))
    [message] = mail.outbox
    assert message.attachments == []
    assert "larger than the 3-byte attachment limit (NOTIFY_ATTACH_MAX_BYTES)" in message.body
    assert f"/api/runs/{run.pk}/download/" in message.body


@pytest.mark.parametrize(
    ("when", "sql", "mails"),
    [
        ("failure", "SELECT 1", 0),
        ("never", "SELECT * FROM missing_table", 0),
        ("always", "SELECT * FROM missing_table", 1),
    ],
)
def test_when_to_notify(when, sql, mails):
    run_report_now(make_report(sql, notify_emails="a@example.com", notify_when=when))
    assert len(mail.outbox) == mails


@executes_reports
def test_an_alert_fires_when_its_condition_starts_to_hold(source_sql, scratch_tables):
    scratch_tables.append("refunds")
    source_sql("CREATE TABLE refunds (id integer)")
    report = make_report(
        "SELECT id FROM refunds",
        notify_emails="ops@example.com",
        alert_condition="rows_above",
        alert_threshold=1,
    )
    alerts = []
    for rows in [0, 2, 3, 1, 5, 5]:
        source_sql("DELETE FROM refunds")
        for index in range(rows):
            source_sql("INSERT INTO refunds VALUES (%s)", [index])
        before = len(mail.outbox)
        run_report_now(report)
        alerts.append(len(mail.outbox) - before)
    # above 1 at the 2nd run: alert; still above: quiet; back to 1: reset; above: alert
    assert alerts == [0, 1, 0, 0, 1, 0]
    assert mail.outbox[0].subject.startswith("[reportsvc] Refunds: ALERT")
    assert "Row count above the threshold (N = 1)" in mail.outbox[0].body


def test_a_webhook_is_signed_and_slack_compatible(receiver):
    server = receiver()
    report = make_report(notify_webhooks=server.url, notify_when="always")
    run = run_report_now(report)
    [(headers, body)] = server.requests
    expected = "sha256=" + hmac.new(report.webhook_secret.encode(), body, sha256).hexdigest()
    assert headers["X-Reportsvc-Signature"] == expected
    payload = json.loads(body)
    assert payload["report"] == {"slug": "refunds", "name": "Refunds"}
    assert payload["run"]["id"] == run.pk and payload["run"]["status"] == "succeeded"
    assert payload["run"]["row_count"] == 1
    assert payload["run"]["output_sha256"] == run.output_sha256
    assert payload["run"]["download_url"].endswith(f"/api/runs/{run.pk}/download/")
    assert payload["text"].startswith(":white_check_mark: Refunds: succeeded")
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SENT, 1)
    assert delivery.target == f"http://127.0.0.1:{server.server.server_port}/…"  # path hidden


def test_a_webhook_is_retried_after_a_server_error(receiver):
    server = receiver(statuses=[500, 200])
    run_report_now(make_report("SELECT * FROM missing_table", notify_webhooks=server.url))
    assert len(server.requests) == 2
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SENT, 2)


@pytest.mark.long_running
def test_a_webhook_that_times_out_is_given_up_and_recorded(receiver):
    server = receiver(delay=1.5)
    started = time.monotonic()
    run = run_report_now(make_report("SELECT * FROM missing_table", notify_webhooks=server.url))
    assert time.monotonic() - started < 15  # bounded: 3 attempts x 1 s + backoff
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 3)
    assert "timed out" in delivery.last_error
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "missing_table" in run.error


def test_a_client_error_is_not_retried(receiver):
    server = receiver(statuses=[404])
    run_report_now(make_report("SELECT * FROM missing_table", notify_webhooks=server.url))
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_error) == (
        "failed",
        1,
        "HTTP 404 Not Found",
    )


def test_a_failing_mail_server_leaves_the_run_as_it_was(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2
    run = run_report_now(make_report(notify_emails="a@example.com", notify_when="always"))
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED
    assert "Connection refused" in delivery.last_error or "Errno" in delivery.last_error


def test_deliveries_show_in_the_api_and_the_admin(client):
    run = run_report_now(make_report("SELECT * FROM missing_table", notify_emails="a@example.com"))
    viewer = client_for(make_user("viewer", "view"))
    [delivery] = viewer.get(f"/api/runs/{run.pk}/").json()["deliveries"]
    assert delivery["channel"] == "email" and delivery["status"] == "sent"
    assert delivery["reason"] == "failed"
    admin_user = make_user("root", staff=True)
    admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    page = client.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert "a@example.com" in page and "rs-badge rs-sent" in page


def test_invalid_targets_are_refused():
    from django.core.exceptions import ValidationError

    report = Report(
        name="x",
        slug="x",
        sql="SELECT 1",
        notify_emails="not-an-address",
        notify_webhooks="ftp://example.com/hook",
        alert_condition="rows_above",
    )
    with pytest.raises(ValidationError) as error:
        report.full_clean()
    errors = error.value.message_dict
    assert errors["notify_emails"] == ["'not-an-address' is not an email address."]
    assert errors["notify_webhooks"] == ["'ftp://example.com/hook' is not an http(s) URL."]
    assert errors["alert_threshold"] == ["Set N for this alert condition."]


SECOND_LONG_QUERIES = {
    "postgresql": "SELECT 1 AS done FROM pg_sleep(1)",
    "sqlite": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3000000) "
    "SELECT count(*) AS done FROM n",
}


@needs_commits
def test_a_result_discarded_after_the_run_was_given_up_is_logged_as_such(caplog, receiver):
    hook = receiver()
    vendor = connection_for_source(DEFAULT_SOURCE).vendor
    report = Report.objects.create(
        name="Slow",
        slug="slow",
        sql=SECOND_LONG_QUERIES[vendor],
        notify_when="always",
        notify_webhooks=hook.url,
    )

    def run_in_thread():
        try:
            run_report_now(report)
        finally:
            connections.close_all()  # the thread's own sessions end with it

    runner = threading.Thread(target=run_in_thread)
    with caplog.at_level("INFO", logger="reportsvc.events"):
        runner.start()
        run = wait_for(lambda: Run.objects.filter(report=report, status=RunStatus.RUNNING).first())
        # As a worker stopping past its grace time does meanwhile:
        assert fail_run(run, "Worker stopped: given up.")
        runner.join(30)
    run.refresh_from_db()
    assert (run.status, run.error, run.output.name) == (
        RunStatus.FAILED,
        "Worker stopped: given up.",
        "",
    )
    lines = [record.getMessage() for record in caplog.records if record.name.endswith("events")]
    assert lines == [
        f"run_result_discarded run={run.pk} report=slow status=failed: the run ended before "
        "its executor recorded its outcome (Worker stopped: given up.)"
    ]
    # Whoever ended the run speaks for it: the late executor sends nothing.
    assert hook.requests == [] and not Delivery.objects.exists()
