"""Notification channels: the registry, targets in the API, Slack (Block Kit, bot token
uploads with slack-sdk, rate limits), Teams (Adaptive Card), the HTML email, and
hostile rows, receivers and input. Slack and Teams are a local server behaving like
their endpoints (tests/chat_servers.py), reached through the real HTTP path."""

import importlib
import json

import pytest
from django.apps import apps

from reports.models import Report
from runs.services.notifications.channels import CHANNEL_MODULES, channels, get_channel
from runs.services.notifications.channels.base import EVENT_KINDS, Event, Target, summarize
from runs.services.runner import run_report_now
from tests.api_helpers import client_for, make_user
from tests.chat_servers import ChatServer

pytestmark = pytest.mark.django_db(databases="__all__")

HOSTILE = [
    "<!channel>",
    "<@U024BE7LH> *bold* _it_ ~gone~ `code` ```block```",
    '**md** [click](https://evil.example) ${secret} {"type": "Action.Submit"}',
    "<script>alert(1)</script><b>html</b>&amp;",
]
HOSTILE_SQL = (
    "SELECT '<!channel>' AS a, '<@U024BE7LH> *bold* _it_ ~gone~ `code` ```block```' AS b, "
    '\'**md** [click](https://evil.example) ${secret} {"type": "Action.Submit"}\' AS c, '
    "'<script>alert(1)</script><b>html</b>&amp;' AS d, CAST(NULL AS TEXT) AS e, '' AS f"
)


@pytest.fixture(autouse=True)
def quick(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.NOTIFY_WEBHOOK_TIMEOUT_SECONDS = 1
    settings.NOTIFY_WEBHOOK_RETRIES = 1
    settings.NOTIFY_RETRY_AFTER_MAX_SECONDS = 2
    settings.NOTIFY_RATE_LIMIT_RETRIES = 2
    settings.PUBLIC_BASE_URL = "https://reports.example.com"


@pytest.fixture
def chat(settings):
    server = ChatServer()
    settings.NOTIFY_CHAT_TEST_ORIGIN = server.origin
    yield server
    server.close()


def make_report(sql="SELECT 1 AS n", **fields):
    fields.setdefault("notify_when", "always")
    return Report.objects.create(name="Refunds", slug="refunds", sql=sql, **fields)


def texts(value):
    """Every string in a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from texts(item)


def objects(value):
    """Every object in a JSON value."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from objects(item)
    elif isinstance(value, list):
        for item in value:
            yield from objects(item)


# --- the registry --------------------------------------------------------------------------


def test_the_registry_has_one_module_per_channel_each_implementing_the_interface():
    assert list(channels()) == list(CHANNEL_MODULES) == ["email", "webhook", "slack", "teams"]
    for channel in channels().values():
        for method in ("clean_target", "redact", "build", "send"):
            assert getattr(type(channel), method) is not getattr(
                type(channel).__mro__[-2], method
            ), (channel.name, method)


ADDRESSES = {
    "email": "ops@example.com",
    "webhook": "https://receiver.example/hook",
    "slack": "https://hooks.slack.com/services/T000/B000/XXX",
    "teams": "https://prod-01.westeurope.logic.azure.com/workflows/abc/triggers/manual/paths/invoke",
}


@pytest.mark.parametrize("kind", EVENT_KINDS)
@pytest.mark.parametrize("name", CHANNEL_MODULES)
@pytest.mark.parametrize("with_run", [True, False])
def test_every_channel_has_a_message_for_every_kind_of_event(kind, name, with_run):
    report = make_report(notify_when="never")
    run = run_report_now(report) if with_run else None
    event = Event(kind, report, run, note="failing since 06:00 (3 runs)")
    message = get_channel(name).build(event, Target(name, ADDRESSES[name]))
    summary = summarize(event)
    if name == "email":
        html = message["email"].alternatives[0][0]
        assert summary.status in message["email"].subject or summary.status in html
        assert "failing since 06:00" in message["email"].body and "failing since" in html
    else:
        shown = " ".join(
            texts(message["payload"] if "payload" in message else json.loads(message["body"]))
        )
        assert "Refunds" in shown


# --- targets in the API --------------------------------------------------------------------


def test_targets_are_written_and_read_through_the_api_and_the_old_fields_follow(chat):
    editor = client_for(make_user("editor", "editor"))
    targets = [
        {"channel": "email", "address": "ops@example.com"},
        {"channel": "slack", "address": chat.slack_webhook},
        {"channel": "teams", "address": chat.teams_workflow},
        {"channel": "webhook", "address": "https://receiver.example/hook"},
    ]
    response = editor.post(
        "/api/reports/",
        {"name": "R", "slug": "r", "sql": "SELECT 1 AS n", "targets": targets},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["targets"] == [{**target, "options": {}} for target in targets]
    assert data["notify_emails"] == "ops@example.com"
    assert data["notify_webhooks"] == "https://receiver.example/hook"

    # The deprecated field still writes: it replaces the email targets only.
    response = editor.patch(
        "/api/reports/r/",
        {"notify_emails": "a@example.com, b@example.com"},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    shown = response.json()["targets"]
    assert [(t["channel"], t["address"]) for t in shown] == [
        ("email", "a@example.com"),
        ("email", "b@example.com"),
        ("webhook", "https://receiver.example/hook"),
        ("slack", chat.slack_webhook),
        ("teams", chat.teams_workflow),
    ]

    viewer = client_for(make_user("viewer", "view"))
    seen = viewer.get("/api/reports/r/").json()["targets"]
    assert [t["address"] for t in seen] == [
        "…@example.com",
        "…@example.com",
        "https://receiver.example/…",
        f"{chat.origin}/…",
        f"{chat.origin}/…",
    ]
    assert "SECRETPATH" not in viewer.get("/api/reports/").content.decode()


def test_a_slack_url_written_to_notify_webhooks_becomes_a_slack_target():
    report = make_report(
        notify_webhooks="https://hooks.slack.com/services/T1/B1/abc\nhttps://receiver.example/h"
    )
    assert report.targets == [
        {
            "channel": "slack",
            "address": "https://hooks.slack.com/services/T1/B1/abc",
            "options": {},
        },
        {"channel": "webhook", "address": "https://receiver.example/h", "options": {}},
    ]
    report.refresh_from_db()
    assert report.notify_webhooks == "https://receiver.example/h"


def test_the_schema_marks_the_old_fields_deprecated_and_describes_targets():
    schema = client_for(make_user("viewer", "view")).get("/api/schema/?format=json").json()
    properties = schema["components"]["schemas"]["Report"]["properties"]
    assert properties["notify_emails"]["deprecated"] is True
    assert properties["notify_webhooks"]["deprecated"] is True
    assert properties["targets"]["type"] == "array"


BAD_TARGETS = [
    (
        {"channel": "slack", "address": "https://chat.example.com/services/T/B/X"},
        "is neither a Slack incoming-webhook URL",
    ),
    ({"channel": "slack", "address": "c-general"}, "is neither a Slack incoming-webhook URL"),
    ({"channel": "slack", "address": "C0123456789"}, "needs a bot token (SLACK_BOT_TOKEN)"),
    (
        {"channel": "teams", "address": "https://corp.webhook.office.com/webhookb2/x"},
        "Office 365 connector URL: Microsoft retired them",
    ),
    (
        {"channel": "teams", "address": "https://evil.example/workflows/x"},
        "not a Teams Workflows URL",
    ),
    ({"channel": "pager", "address": "x"}, "is not a channel (email, webhook, slack, teams)"),
    ({"channel": "email", "address": "not-an-address"}, "is not an email address"),
    ({"channel": "webhook", "address": "http://127.0.0.1/h"}, "blocked network"),
    ({"channel": "email", "address": "a@example.com", "options": {"x": 1}}, "unknown option 'x'"),
]


@pytest.mark.parametrize(("target", "message"), BAD_TARGETS)
def test_bad_targets_get_a_field_error_and_nothing_changes(target, message):
    report = make_report(notify_emails="kept@example.com")
    editor = client_for(make_user("editor", "editor"))
    response = editor.patch(
        "/api/reports/refunds/", {"targets": [target]}, content_type="application/json"
    )
    assert response.status_code == 400
    [error] = response.json()["targets"]
    assert error.startswith("targets[0].") and message in error, error
    report.refresh_from_db()
    assert report.notify_emails == "kept@example.com"
    assert [t["address"] for t in report.targets] == ["kept@example.com"]


def test_the_migration_moves_slack_and_teams_webhooks_to_their_channels():
    migration = importlib.import_module("reports.migrations.0011_report_targets")
    report = make_report()
    lines = [
        "https://hooks.slack.com/services/T1/B1/abc",
        "https://receiver.example/h",
        "https://prod-01.westeurope.logic.azure.com:443/workflows/x/triggers/manual/paths/invoke",
        "https://corp.webhook.office.com/webhookb2/old",
    ]
    Report.objects.filter(pk=report.pk).update(
        targets=[], notify_emails="a@example.com", notify_webhooks="\n".join(lines)
    )
    migration.fill_targets(apps, None)
    report.refresh_from_db()
    assert [(t["channel"], t["address"]) for t in report.targets] == [
        ("email", "a@example.com"),
        ("slack", lines[0]),
        ("webhook", lines[1]),
        ("teams", lines[2]),
        ("teams", lines[3]),
    ]
    assert report.notify_webhooks == "https://receiver.example/h"
