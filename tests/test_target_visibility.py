"""Who sees notification targets and the webhook secret, and rotating the secret."""

import hmac
import importlib
import time
from hashlib import sha256

import pytest
from django.apps import apps
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission

from reports.models import Report
from runs.models import Delivery
from runs.services.notifications.channels.addresses import redact_text
from runs.services.runtime.runner import run_report_now
from tests.api_helpers import client_for, make_user
from tests.receivers import Receiver

pytestmark = pytest.mark.django_db(databases="__all__")

SLACK = "https://hooks.slack.com/services/T000/B000/XXXXSECRETPATH"
TOKEN_URL = "https://chat.internal.example:8443/hooks?token=tok-123"
USERINFO_URL = "https://hook-user:pa55word@receiver.example/notify"
SECRET_PARTS = ["XXXXSECRETPATH", "T000", "tok-123", "hook-user", "pa55word", "/notify"]
# The Slack URL became a Slack target: notify_webhooks shows the generic webhooks.
SHOWN = "https://chat.internal.example:8443/…\nhttps://receiver.example/…"
SHOWN_TARGETS = [
    {"channel": "email", "address": "…@example.com", "options": {}},
    {"channel": "email", "address": "…@corp.example", "options": {}},
    {"channel": "slack", "address": "https://hooks.slack.com/…", "options": {}},
    {"channel": "webhook", "address": "https://chat.internal.example:8443/…", "options": {}},
    {"channel": "webhook", "address": "https://receiver.example/…", "options": {}},
]


@pytest.fixture
def report():
    return Report.objects.create(
        name="Numbers",
        slug="numbers",
        sql="SELECT 1 AS n",
        notify_emails="alice@example.com, bob@corp.example",
        notify_webhooks=f"{SLACK}\n{TOKEN_URL}\n{USERINFO_URL}",
    )


def assert_no_secrets(text, report):
    for part in [*SECRET_PARTS, report.webhook_secret, "alice@", "bob@"]:
        assert part not in text, part


# --- API ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["view", "run", "sql"])
def test_api_users_who_may_not_change_reports_see_targets_redacted(report, role):
    client = client_for(make_user("reader", role))
    for response in (client.get("/api/reports/numbers/"), client.get("/api/reports/")):
        assert response.status_code == 200
        assert_no_secrets(response.content.decode(), report)
    data = client.get("/api/reports/numbers/").json()
    assert data["notify_webhooks"] == SHOWN
    assert data["notify_emails"] == "…@example.com, …@corp.example"
    assert data["targets"] == SHOWN_TARGETS
    assert "webhook_secret" not in data


def test_api_users_who_may_change_reports_see_targets_but_never_the_secret(report):
    editor = client_for(make_user("editor", "editor"))
    response = editor.get("/api/reports/numbers/")
    data = response.json()
    assert data["notify_webhooks"] == f"{TOKEN_URL}\n{USERINFO_URL}"
    assert [target["address"] for target in data["targets"]] == [
        "alice@example.com",
        "bob@corp.example",
        SLACK,
        TOKEN_URL,
        USERINFO_URL,
    ]
    assert data["notify_emails"] == "alice@example.com, bob@corp.example"
    assert "webhook_secret" not in data
    assert report.webhook_secret not in response.content.decode()


def test_deliveries_show_email_addresses_only_to_those_who_may_change_reports(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    report = Report.objects.create(
        name="Broken", slug="broken", sql="SELECT * FROM nope", notify_emails="alice@example.com"
    )
    run = run_report_now(report)
    viewer = client_for(make_user("viewer", "view"))
    editor = client_for(make_user("editor", "editor"))
    [seen] = viewer.get(f"/api/runs/{run.pk}/").json()["deliveries"]
    assert seen["target"] == "…@example.com"
    [seen] = editor.get(f"/api/runs/{run.pk}/").json()["deliveries"]
    assert seen["target"] == "alice@example.com"


# --- API: rotating the secret ------------------------------------------------------------


def test_an_editor_rotates_the_secret_and_webhooks_are_signed_with_the_new_one(report, settings):
    settings.NOTIFY_WEBHOOK_BLOCKED_NETWORKS = []  # the receiver listens on 127.0.0.1
    old = report.webhook_secret
    editor = client_for(make_user("editor", "editor"))
    response = editor.post("/api/reports/numbers/rotate-webhook-secret/")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    new = response.json()["webhook_secret"]
    assert list(response.json()) == ["webhook_secret"]
    assert len(new) == 64 and new != old
    report.refresh_from_db()
    assert report.webhook_secret == new

    receiver = Receiver()
    try:
        report.refresh_from_db()
        report.notify_webhooks, report.notify_emails = receiver.url, ""
        report.notify_when = "always"
        report.save()
        run_report_now(report)
    finally:
        receiver.close()
    [(headers, body)] = receiver.requests
    assert (
        headers["X-Reportsvc-Signature"]
        == "sha256=" + hmac.new(new.encode(), body, sha256).hexdigest()
    )


@pytest.mark.parametrize(
    ("role", "status"),
    [(None, 401), ("view", 403), ("run", 403), ("sql", 403)],
)
def test_only_users_who_may_change_reports_can_rotate_the_secret(report, role, status):
    client = client_for(make_user("someone", role) if role else None)
    response = client.post("/api/reports/numbers/rotate-webhook-secret/")
    assert response.status_code == status
    if status == 403:
        assert response.json() == {
            "detail": "You may view this report but not change it "
            "(needs the change_report permission)."
        }
    assert Report.objects.get().webhook_secret == report.webhook_secret


def test_rotating_needs_post_and_an_existing_report(report):
    editor = client_for(make_user("editor", "editor"))
    assert editor.get("/api/reports/numbers/rotate-webhook-secret/").status_code == 405
    assert editor.post("/api/reports/nope/rotate-webhook-secret/").status_code == 404
    assert Report.objects.get().webhook_secret == report.webhook_secret


def test_the_schema_documents_rotation_and_the_redaction():
    reader = client_for(make_user("schema-reader", "view"))  # the schema needs a login
    schema = reader.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    document = schema.json()
    operation = document["paths"]["/api/reports/{slug}/rotate-webhook-secret/"]["post"]
    assert "only place the API shows the secret" in operation["description"]
    assert set(operation["responses"]) >= {"200", "401", "403", "404"}
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/WebhookSecret"
    report_fields = document["components"]["schemas"]["Report"]["properties"]
    assert "only for users with change_report" in report_fields["notify_webhooks"]["description"]
    assert "webhook_secret" not in report_fields


# --- admin -------------------------------------------------------------------------------


def staff_login(client, *codenames):
    user = make_user("staff-" + "-".join(codenames), staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return client


def test_staff_with_only_view_permission_see_targets_redacted_and_no_secret(client, report):
    staff_login(client, "view_report")
    page = client.get(f"/admin/reports/report/{report.pk}/change/").content.decode()
    assert "https://hooks.slack.com/…" in page
    assert "https://chat.internal.example:8443/…" in page
    assert "…@example.com, …@corp.example" in page
    assert_no_secrets(page, report)
    assert 'id="rotate-webhook-secret"' not in page
    assert 'id="webhook-secret"' not in page


def test_staff_with_only_view_permission_cannot_rotate(client, report):
    staff_login(client, "view_report")
    response = client.post(f"/admin/reports/report/{report.pk}/rotate-webhook-secret/")
    assert response.status_code == 302
    assert Report.objects.get().webhook_secret == report.webhook_secret
    page = client.get(response["Location"]).content.decode()
    assert "You are not allowed to change this report." in page
    response = client.post(
        "/admin/reports/report/",
        {"action": "rotate_webhook_secrets", "_selected_action": [report.pk]},
    )
    assert Report.objects.get().webhook_secret == report.webhook_secret


def test_staff_who_may_change_see_targets_and_secret_and_rotate_it(client, report):
    staff_login(client, "view_report", "change_report")
    page = client.get(f"/admin/reports/report/{report.pk}/change/").content.decode()
    assert "XXXXSECRETPATH" in page and "tok-123" in page and "alice@example.com" in page
    assert f"<code id='webhook-secret'>{report.webhook_secret}</code>" in page
    assert 'id="rotate-webhook-secret"' in page
    response = client.post(f"/admin/reports/report/{report.pk}/rotate-webhook-secret/")
    assert response.status_code == 302
    new = Report.objects.get().webhook_secret
    assert new != report.webhook_secret and len(new) == 64
    assert LogEntry.objects.get().change_message == "Rotated the webhook secret."
    page = client.get(response["Location"]).content.decode()
    assert "New webhook secret" in page and new in page


def test_the_admin_action_rotates_the_selected_reports(client, report):
    other = Report.objects.create(name="Other", slug="other", sql="SELECT 1")
    before = {r.pk: r.webhook_secret for r in Report.objects.all()}
    staff_login(client, "view_report", "change_report")
    response = client.post(
        "/admin/reports/report/",
        {"action": "rotate_webhook_secrets", "_selected_action": [report.pk, other.pk]},
        follow=True,
    )
    assert "New webhook secret for 2 report(s)" in response.content.decode()
    after = {r.pk: r.webhook_secret for r in Report.objects.all()}
    assert all(after[pk] != before[pk] for pk in before)


def test_the_secret_cannot_be_typed_in_through_the_admin_form(admin_client_for_reports, report):
    from tests.test_admin import form_data

    response = admin_client_for_reports.post(
        f"/admin/reports/report/{report.pk}/change/",
        form_data(name="Numbers", slug="numbers", webhook_secret="weak"),
    )
    assert response.status_code == 302
    assert Report.objects.get().webhook_secret == report.webhook_secret


@pytest.fixture
def admin_client_for_reports(client):
    return staff_login(client, "view_report", "change_report")


def test_run_pages_show_email_addresses_only_to_those_who_may_change_reports(client, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    report = Report.objects.create(
        name="Broken", slug="broken", sql="SELECT * FROM nope", notify_emails="alice@example.com"
    )
    run = run_report_now(report)
    staff_login(client, "view_report", "view_run")
    page = client.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert "…@example.com" in page and "alice@example.com" not in page
    staff_login(client, "view_report", "view_run", "change_report")
    page = client.get(f"/admin/runs/run/{run.pk}/change/").content.decode()
    assert "alice@example.com" in page


# --- delivery errors: the addresses and URLs in them are redacted like targets ----------


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (
            "SMTPRecipientsRefused: {'private.name@corp.example': (550, b'5.1.1 "
            "<private.name@corp.example>: Recipient address rejected')}",
            "SMTPRecipientsRefused: {'…@corp.example': (550, b'5.1.1 <…@corp.example>: "
            "Recipient address rejected')}",
        ),
        # other encodings and positions of an address
        ("SMTPSenderRefused: (553, b'bad', \"o'brien@corp.example\")", None),
        ("b'pr\\xc3\\xadv\\xc3\\xa9@corp.example'", "b'…@corp.example'"),
        ('{\'"john smith"@corp.example\': (550, b"no")}', "{'…@corp.example': (550, b\"no\")}"),
        ("mailto:private.name@corp.example", "mailto:…@corp.example"),
        ("to=<Private.Name+tag@corp.example>,", "to=<…@corp.example>,"),
        ("ünïcødé@bücher.example", "…@bücher.example"),
        # URLs lose user, password, path, query and fragment; the host stays
        (
            "HTTP 502 see https://status.example/incident/42?key=k-123).",
            "HTTP 502 see https://status.example/…).",
        ),
        ("<HTTPS://user:pa55@Hooks.Example:8443/T0/B0#x>", "<https://Hooks.Example:8443/…>"),
        ("'http://[::1]:9/a?b'", "'http://[::1]:9/…'"),
        ("https://status.example", "https://status.example"),
        ("connection refused", "connection refused"),
        ('{"o\'brien@corp.example": 1}', '{"…@corp.example": 1}'),
        ('JSON: {"to": "\\"john smith\\"@corp.example"}', 'JSON: {"to": "…@corp.example"}'),
        ("", ""),
    ],
)
def test_delivery_errors_are_redacted_like_targets(error, shown):
    redacted = redact_text(error)
    if shown is not None:
        assert redacted == shown
    for secret in ("private", "Private", "brien", "john", "smith", "k-123", "42", "pa55", "user"):
        assert secret not in redacted.replace("…", ""), secret
    assert redact_text(redacted) == redacted  # shown once, shown the same


@pytest.mark.parametrize(
    "hostile",
    ["a" * 30_000, "x@" * 15_000, '\\"a' * 10_000, '"' + '\\"' * 15_000, "http:/" * 5_000],
    ids=["one-word", "at-signs", "escaped-quotes", "one-open-quote", "schemes"],
)
def test_redacting_a_long_error_takes_time_linear_in_its_length(hostile):
    """No pattern is tried from every character of a long word: a quadratic one took
    15 s for 20,000 characters; these take milliseconds."""
    started = time.perf_counter()
    redact_text(hostile)
    assert time.perf_counter() - started < 1


# --- deliveries recorded before redaction covered user, password and query -------------


def test_old_delivery_targets_are_redacted_by_the_migration(report):
    run = run_report_now(Report.objects.create(name="X", slug="x", sql="SELECT 1"))
    old = [
        "https://hook-user:pa55word@receiver.example/…",
        "https://chat.internal.example?token=tok-123",
        "https://hooks.slack.com/…",
        "alice@example.com",
    ]
    for target in old:
        channel = "email" if "://" not in target else "webhook"
        Delivery.objects.create(run=run, channel=channel, target=target, reason="x", status="sent")
    migration = importlib.import_module("runs.migrations.0004_redact_delivery_targets")
    migration.redact_stored_targets(apps, None)
    assert list(Delivery.objects.order_by("id").values_list("target", flat=True)) == [
        "https://receiver.example/…",
        "https://chat.internal.example/…",
        "https://hooks.slack.com/…",
        "alice@example.com",
    ]
