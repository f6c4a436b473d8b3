"""Notification channels: the registry, targets in the API, Slack (Block Kit, bot token
uploads with slack-sdk, rate limits), Teams (Adaptive Card), the HTML email, and
hostile rows, receivers and input. Slack and Teams are a local server behaving like
their endpoints (tests/chat_servers.py), reached through the real HTTP path."""

import email
import importlib
import json
import time
from html.parser import HTMLParser

import pytest
from django.apps import apps
from django.core import mail

from reports.models import Report
from runs.models import Delivery, RunStatus
from runs.services.notifications.channels import CHANNEL_MODULES, channels, get_channel
from runs.services.notifications.channels.base import EVENT_KINDS, Event, Target, summarize
from runs.services.notifications.channels.email import HTML_MAX_BYTES
from runs.services.notifications.lanes import NotificationLanes
from runs.services.notifications.notifier import send_event
from runs.services.runtime.runner import run_report_now
from tests.api_helpers import client_for, make_user
from tests.chat_servers import ChatServer
from tests.conftest import executes_reports, needs_commits, wait_for

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
    (
        {"channel": "slack", "address": "https://hooks.slack.com/triggers/T/1/x"},
        "is neither a Slack incoming-webhook URL",
    ),
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


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ({"channel": "email"}, "A list of {channel, address, options} objects."),
        (["ops@example.com"], "targets[0]: an object with channel and address."),
        ([{"channel": "email"}], "targets[0]: an object with channel and address."),
        ([{"channel": "email", "address": 5}], "targets[0]: an object with channel and address."),
        (
            [{"channel": "email", "address": "a@example.com", "to": "b"}],
            "targets[0].to: not a target field.",
        ),
    ],
)
def test_malformed_targets_are_refused_with_a_message(targets, message):
    make_report(notify_emails="kept@example.com")
    editor = client_for(make_user("editor", "editor"))
    response = editor.patch(
        "/api/reports/refunds/", {"targets": targets}, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json() == {"targets": [message]}
    assert Report.objects.get().notify_emails == "kept@example.com"


def test_huge_target_lists_and_addresses_are_refused():
    editor = client_for(make_user("editor", "editor"))
    make_report(notify_emails="kept@example.com")
    many = [{"channel": "email", "address": f"a{i}@example.com"} for i in range(10_000)]
    response = editor.patch(
        "/api/reports/refunds/", {"targets": many}, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json() == {"targets": ["At most 50 targets (10,000 given)."]}
    long = [{"channel": "webhook", "address": "https://receiver.example/" + "x" * 1_000_000}]
    response = editor.patch(
        "/api/reports/refunds/", {"targets": long}, content_type="application/json"
    )
    assert response.json() == {
        "targets": ["targets[0].address: at most 2,000 characters (1,000,025 given)."]
    }
    response = editor.patch(
        "/api/reports/refunds/", {"inline_rows": 51}, content_type="application/json"
    )
    assert response.status_code == 400 and "inline_rows" in response.json()
    assert Report.objects.get().targets == [
        {"channel": "email", "address": "kept@example.com", "options": {}}
    ]


def test_people_who_may_not_change_reports_cannot_set_targets(chat):
    make_report(notify_emails="kept@example.com")
    for role in ("view", "run", "sql"):
        client = client_for(make_user(f"user-{role}", role))
        response = client.patch(
            "/api/reports/refunds/",
            {"targets": [{"channel": "slack", "address": chat.slack_webhook}]},
            content_type="application/json",
        )
        assert response.status_code == 403
    assert [t["channel"] for t in Report.objects.get().targets] == ["email"]


def test_the_migration_moves_slack_and_teams_webhooks_to_their_channels():
    migration = importlib.import_module("reports.migrations.0012_report_targets")
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


# --- Slack: incoming webhooks ----------------------------------------------------------------


def test_slack_gets_a_block_kit_message_with_hostile_rows_as_text(chat):
    report = make_report(
        HOSTILE_SQL, targets=[{"channel": "slack", "address": chat.slack_webhook}], inline_rows=5
    )
    run = run_report_now(report)
    [message] = chat.bodies("/services/")
    assert message["mrkdwn"] is False
    assert message["text"] == "\u2705 Refunds: succeeded"
    header, _, facts, *rest = message["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "\u2705 Refunds: succeeded", "emoji": False},
    }
    shown_facts = [field["text"] for field in facts["fields"]]
    assert "Status: succeeded" in shown_facts and "Rows: 1" in shown_facts
    assert any(text.startswith("Duration: ") for text in shown_facts)
    # The rows: a preformatted rich_text block, each value literally there.
    [table] = [block for block in rest if block["type"] == "rich_text"]
    text = table["elements"][0]["elements"][0]["text"]
    assert table["elements"][0]["elements"][0]["type"] == "text"
    for value in HOSTILE:
        assert value in text
    assert "NULL" in text
    # Nothing that Slack would read as mrkdwn carries report text.
    for block in objects(message["blocks"]):
        assert block.get("type") != "mrkdwn"
    buttons = next(block for block in rest if block["type"] == "actions")["elements"]
    assert [(b["text"]["text"], b["url"]) for b in buttons] == [
        ("Open the run", f"https://reports.example.com/admin/runs/run/{run.pk}/change/"),
        ("Download", f"https://reports.example.com/api/runs/{run.pk}/download/"),
    ]
    [delivery] = Delivery.objects.all()
    assert (delivery.channel, delivery.status, delivery.attempts) == ("slack", "sent", 1)
    assert delivery.target == f"{chat.origin}/…"


def test_a_slack_failure_shows_the_first_line_of_the_reason_as_viewers_see_it(chat):
    report = make_report(
        "SELECT * FROM missing_table", targets=[{"channel": "slack", "address": chat.slack_webhook}]
    )
    run = run_report_now(report)
    assert run.status == RunStatus.FAILED
    [message] = chat.bodies("/services/")
    assert message["blocks"][0]["text"]["text"] == "\U0001f534 Refunds: FAILED"
    [reason] = [block for block in message["blocks"] if block["type"] == "rich_text"]
    line = reason["elements"][0]["elements"][0]["text"]
    assert "missing_table" in line and "\n" not in line


def test_slack_rate_limits_are_waited_out_as_asked_and_recorded(chat):
    chat.webhook = [(429, "rate_limited", {"Retry-After": "1"})]
    report = make_report(targets=[{"channel": "slack", "address": chat.slack_webhook}])
    started = time.monotonic()
    run_report_now(report)
    assert time.monotonic() - started >= 1
    [delivery] = Delivery.objects.all()
    assert (delivery.status, delivery.attempts) == ("sent", 2)
    assert len(chat.bodies("/services/")) == 2


def test_slack_rate_limits_are_retried_a_bounded_number_of_times(chat):
    chat.webhook = [(429, "rate_limited", {"Retry-After": "0"})] * 5
    run = run_report_now(make_report(targets=[{"channel": "slack", "address": chat.slack_webhook}]))
    [delivery] = Delivery.objects.all()
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    assert delivery.last_error == (
        "HTTP 429 Too Many Requests rate_limited: still rate limited after 2 waits "
        "(NOTIFY_RATE_LIMIT_RETRIES)"
    )
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED


def test_a_retry_after_longer_than_allowed_is_not_waited_for(chat):
    chat.webhook = [(429, "rate_limited", {"Retry-After": "600"})]
    started = time.monotonic()
    run_report_now(make_report(targets=[{"channel": "slack", "address": chat.slack_webhook}]))
    assert time.monotonic() - started < 5
    [delivery] = Delivery.objects.all()
    assert delivery.attempts == 1
    assert "Retry-After 600 s is longer than the 2 s waited" in delivery.last_error


def test_a_revoked_slack_webhook_is_a_failed_delivery_saying_so(chat):
    chat.webhook = [(404, "no_service")]
    run = run_report_now(make_report(targets=[{"channel": "slack", "address": chat.slack_webhook}]))
    [delivery] = Delivery.objects.all()
    assert delivery.status == "failed"
    assert (
        delivery.last_error
        == "HTTP 404 Not Found no_service (the webhook was removed or its app uninstalled)"
    )
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED


def test_slack_targets_reach_only_slack_hosts_even_if_stored_otherwise(chat, settings):
    report = make_report()
    Report.objects.filter(pk=report.pk).update(
        targets=[
            {"channel": "slack", "address": "http://127.0.0.1:9/services/T/B/X", "options": {}}
        ]
    )
    report.refresh_from_db()
    run_report_now(report)
    [delivery] = Delivery.objects.all()
    assert delivery.status == "failed"
    assert (
        delivery.last_error == "refused: 127.0.0.1 is not one of Slack's incoming-webhook's hosts"
    )


def test_a_slow_slack_receiver_is_cut_off_at_the_deadline(settings):
    server = ChatServer(delay=3)
    settings.NOTIFY_CHAT_TEST_ORIGIN = server.origin
    settings.NOTIFY_WEBHOOK_RETRIES = 0
    try:
        started = time.monotonic()
        run = run_report_now(
            make_report(targets=[{"channel": "slack", "address": server.slack_webhook}])
        )
        assert time.monotonic() - started < 2.5
    finally:
        server.close()
    [delivery] = Delivery.objects.all()
    assert (delivery.status, delivery.last_error) == ("failed", "timed out after 1 s")
    assert run.status == RunStatus.SUCCEEDED


@needs_commits
def test_a_slow_slack_receiver_holds_up_only_its_own_report(settings, chat):
    settings.NOTIFY_WEBHOOK_TIMEOUT_SECONDS = 5
    chat.slow_paths["/services/TSLOW/"] = 2
    runs = []
    for slug in ("slow", "quick"):
        report = Report.objects.create(
            name=slug, slug=slug, sql="SELECT 1 AS n", notify_when="never"
        )
        runs.append(run_report_now(report))
        report.notify_when = "always"
        report.targets = [
            {"channel": "slack", "address": f"{chat.origin}/services/T{slug.upper()}/B/X"}
        ]
        report.save()
    lanes = NotificationLanes()
    started = time.monotonic()
    lanes.submit(runs[0])
    lanes.submit(runs[1])
    wait_for(lambda: Delivery.objects.filter(run=runs[1], status="sent").exists(), timeout=5)
    assert time.monotonic() - started < 1.5  # not behind the slow report's 2 s
    assert not Delivery.objects.filter(run=runs[0]).exists()
    assert lanes.close(timeout=10) == []
    assert Delivery.objects.get(run=runs[0]).status == "sent"


def test_a_stalled_slack_web_api_is_left_behind_at_the_deadline(settings):
    server = ChatServer(delay=3)
    settings.NOTIFY_CHAT_TEST_ORIGIN = server.origin
    settings.SLACK_BOT_TOKEN = "xoxb-test-token"
    settings.NOTIFY_SLACK_UPLOAD_TIMEOUT_SECONDS = 1
    settings.NOTIFY_WEBHOOK_TIMEOUT_SECONDS = 10  # slack-sdk's own timeout comes later
    try:
        started = time.monotonic()
        run = run_report_now(make_report(targets=[{"channel": "slack", "address": "C0123456"}]))
        assert time.monotonic() - started < 2.5
    finally:
        server.close()
    [delivery] = Delivery.objects.all()
    assert (delivery.status, delivery.last_error) == (
        "failed",
        "Slack API: timed out after 1 s (NOTIFY_SLACK_UPLOAD_TIMEOUT_SECONDS)",
    )
    assert run.status == RunStatus.SUCCEEDED


# --- Slack: a bot token, files_upload_v2 ---------------------------------------------------------


@pytest.fixture
def bot(chat, settings):
    settings.SLACK_BOT_TOKEN = "xoxb-test-token"
    return chat


def test_with_a_bot_token_the_message_is_posted_and_the_file_uploaded_in_its_thread(bot):
    report = make_report(
        "SELECT 1 AS n UNION ALL SELECT 2", targets=[{"channel": "slack", "address": "C0123456"}]
    )
    run = run_report_now(report)
    assert bot.calls == [
        "chat.postMessage",
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
    ]
    assert "files.upload" not in bot.calls
    [posted] = bot.api_params("chat.postMessage")
    assert posted["channel"] == "C0123456" and posted["blocks"]
    [(_, headers, _)] = [r for r in bot.requests if r[0] == "/api/chat.postMessage"]
    assert headers["Authorization"] == "Bearer xoxb-test-token"
    [asked] = bot.api_params("files.getUploadURLExternal")
    assert int(asked["length"]) == run.output_bytes
    assert asked["filename"].startswith("refunds_") and asked["filename"].endswith(".csv")
    assert list(bot.uploads.values()) == [b"n\n1\n2\n"]
    [completed] = bot.api_params("files.completeUploadExternal")
    assert completed["channel_id"] == "C0123456"
    assert completed["thread_ts"] == "1700000000.000100"
    [delivery] = Delivery.objects.all()
    assert (delivery.channel, delivery.target, delivery.status) == ("slack", "C0123456", "sent")


def test_a_file_over_the_attachment_limit_is_linked_not_uploaded(bot, settings):
    settings.NOTIFY_ATTACH_MAX_BYTES = 3
    run_report_now(make_report(targets=[{"channel": "slack", "address": "C0123456"}]))
    assert bot.calls == ["chat.postMessage"]
    assert bot.uploads == {}
    assert Delivery.objects.get().status == "sent"


def test_a_revoked_token_is_a_failed_delivery_and_the_run_stays_as_it_was(bot):
    bot.revoked.add("xoxb-test-token")
    run = run_report_now(make_report(targets=[{"channel": "slack", "address": "C0123456"}]))
    [delivery] = Delivery.objects.all()
    assert (delivery.status, delivery.last_error) == (
        "failed",
        "Slack API chat.postMessage: token_revoked",
    )
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED


def test_a_channel_id_target_without_a_bot_token_is_not_sent(chat):
    report = make_report()
    Report.objects.filter(pk=report.pk).update(
        targets=[{"channel": "slack", "address": "C0123456", "options": {}}]
    )
    report.refresh_from_db()
    run_report_now(report)
    assert chat.calls == []
    [delivery] = Delivery.objects.all()
    assert (delivery.status, delivery.attempts) == ("failed", 0)
    assert (
        delivery.last_error
        == "not sent: posting to a channel id needs a bot token (SLACK_BOT_TOKEN)"
    )


def test_a_channel_id_slack_does_not_know_is_a_failed_delivery(bot):
    report = make_report()
    Report.objects.filter(pk=report.pk).update(
        targets=[{"channel": "slack", "address": "G0000000", "options": {}}]
    )
    report.refresh_from_db()
    run_report_now(report)
    assert Delivery.objects.get().last_error == "Slack API chat.postMessage: channel_not_found"


def test_the_web_api_rate_limit_is_honoured_and_counted(bot):
    bot.api = [(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})]
    run_report_now(make_report(targets=[{"channel": "slack", "address": "C0123456"}]))
    assert bot.calls[:2] == ["chat.postMessage", "chat.postMessage"]
    [delivery] = Delivery.objects.all()
    assert (delivery.status, delivery.attempts) == ("sent", 2)


# --- Teams -------------------------------------------------------------------------------------


def test_teams_gets_an_adaptive_card_with_hostile_rows_as_text_runs(chat):
    report = make_report(
        HOSTILE_SQL, targets=[{"channel": "teams", "address": chat.teams_workflow}], inline_rows=5
    )
    run = run_report_now(report)
    [message] = chat.bodies("/workflows/")
    assert message["type"] == "message"
    [attachment] = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.5"
    runs = [each["text"] for each in objects(card["body"]) if each.get("type") == "TextRun"]
    assert "\u2705 Refunds: succeeded" in runs
    for value in HOSTILE:
        assert value in runs
    assert "NULL" in runs and "" in runs
    # Markdown is read only by TextBlock and FactSet: the card has neither.
    assert not [each for each in objects(card) if each.get("type") in ("TextBlock", "FactSet")]
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "Open the run",
            "url": f"https://reports.example.com/admin/runs/run/{run.pk}/change/",
        },
        {
            "type": "Action.OpenUrl",
            "title": "Download",
            "url": f"https://reports.example.com/api/runs/{run.pk}/download/",
        },
    ]
    assert Delivery.objects.get().status == "sent"


def test_a_teams_workflow_that_refuses_is_recorded(chat):
    chat.teams = [(400, "BadRequest")]
    run_report_now(make_report(targets=[{"channel": "teams", "address": chat.teams_workflow}]))
    [delivery] = Delivery.objects.all()
    assert (delivery.status, delivery.last_error) == ("failed", "HTTP 400 Bad Request")
    assert delivery.target == f"{chat.origin}/…"


def test_a_retired_office_connector_target_is_not_sent_to():
    report = make_report()
    Report.objects.filter(pk=report.pk).update(
        targets=[
            {
                "channel": "teams",
                "address": "https://corp.webhook.office.com/webhookb2/x",
                "options": {},
            }
        ]
    )
    report.refresh_from_db()
    run_report_now(report)
    [delivery] = Delivery.objects.all()
    assert delivery.status == "failed" and "retired" in delivery.last_error


# --- email ------------------------------------------------------------------------------------


class Cells(HTMLParser):
    """The rows table of an HTML email: (tag, attributes, text) of each cell."""

    def __init__(self):
        super().__init__()
        self.cells, self.styled, self.in_rows, self.current = [], 0, False, None
        self.text_parts = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "style" in attrs:
            self.styled += 1
        if tag == "table" and "rows" in (attrs.get("class") or ""):
            self.in_rows = True
        if self.in_rows and tag in ("td", "th"):
            self.current = [tag, attrs, ""]

    def handle_endtag(self, tag):
        if tag == "table":
            self.in_rows = False
        if self.current and tag in ("td", "th"):
            self.cells.append(tuple(self.current))
            self.current = None

    def handle_data(self, data):
        self.text_parts.append(data)
        if self.current:
            self.current[2] += data


def html_of(message):
    parsed = email.message_from_bytes(message.message().as_bytes())
    [html] = [part for part in parsed.walk() if part.get_content_type() == "text/html"]
    assert any(part.get_content_type() == "multipart/alternative" for part in parsed.walk())
    return html.get_payload(decode=True).decode()


def test_the_html_email_carries_the_first_rows_escaped_with_inlined_style():
    sql = HOSTILE_SQL + ", REPLACE(printf('%.300c', 'x'), ' ', 'x') AS g"
    report = make_report(
        HOSTILE_SQL + ", '" + "x" * 300 + "' AS g", notify_emails="ops@example.com", inline_rows=5
    )
    del sql
    run_report_now(report)
    [message] = mail.outbox
    assert "First rows:" in message.body  # the text part has them too
    html = html_of(message)
    assert "<style" not in html  # inlined into style attributes
    assert "<script>" not in html and "&lt;script&gt;" in html
    parser = Cells()
    parser.feed(html)
    assert parser.styled > 10
    header = [text for tag, _, text in parser.cells if tag == "th"]
    assert header == ["a", "b", "c", "d", "e", "f", "g"]
    row = [(attrs.get("class"), text) for tag, attrs, text in parser.cells if tag == "td"]
    assert [text for _, text in row[:4]] == HOSTILE
    assert row[4] == ("null", "NULL")  # NULL marked apart from ''
    assert row[5] == ("short", "")
    assert row[6][1] == "x" * 100 + "… (300 chars)"
    assert all("style" in attrs for tag, attrs, _ in parser.cells)


@executes_reports  # tables the report connection reads
def test_the_html_email_stays_under_100_kb_and_says_how_it_was_cut(source_sql, scratch_tables):
    scratch_tables.append("wide_rows")
    columns = ", ".join(f"c{i} TEXT" for i in range(25))
    source_sql(f"CREATE TABLE wide_rows ({columns})")
    value = "<&>" * 60
    for _ in range(60):
        source_sql(f"INSERT INTO wide_rows VALUES ({', '.join(['%s'] * 25)})", [value] * 25)
    report = make_report("SELECT * FROM wide_rows", notify_emails="ops@example.com", inline_rows=50)
    run_report_now(report)
    html = html_of(mail.outbox[0])
    assert len(html.encode()) < HTML_MAX_BYTES
    parser = Cells()
    parser.feed(html)
    assert len([1 for tag, _, _ in parser.cells if tag == "th"]) == 20
    text = " ".join(parser.text_parts)
    assert "of the first 50 rows shown: the message is kept under 100 KB, as Gmail clips" in text
    assert "5 more columns not shown." in text


@executes_reports
@pytest.mark.parametrize("output_format", ["csv", "csv_gz", "xlsx"])
def test_rows_come_from_the_stored_file_never_from_the_query_again(
    output_format, source_sql, scratch_tables, chat
):
    scratch_tables.append("changing")
    source_sql("CREATE TABLE changing (label TEXT)")
    source_sql("INSERT INTO changing VALUES ('before')")
    report = make_report(
        "SELECT label FROM changing",
        notify_when="never",
        output_format=output_format,
        inline_rows=3,
        targets=[
            {"channel": "email", "address": "ops@example.com"},
            {"channel": "slack", "address": chat.slack_webhook},
            {"channel": "teams", "address": chat.teams_workflow},
        ],
    )
    run = run_report_now(report)
    source_sql("UPDATE changing SET label = 'after'")
    deliveries = send_event(Event("success", report, run))
    assert [d.status for d in deliveries] == ["sent"] * 3
    assert "before" in html_of(mail.outbox[0]) and "after" not in html_of(mail.outbox[0])
    slack, teams = chat.bodies("/services/")[0], chat.bodies("/workflows/")[0]
    assert "before" in " ".join(texts(slack)) and "after" not in " ".join(texts(slack))
    assert "before" in list(texts(teams)) and "after" not in list(texts(teams))


def test_without_inline_rows_no_channel_reads_the_file(chat, settings):
    report = make_report(
        targets=[{"channel": "slack", "address": chat.slack_webhook}], notify_when="never"
    )
    run = run_report_now(report)
    run.output.storage.delete(run.output.name)  # reading it would be noticed
    [delivery] = send_event(Event("success", report, run))
    assert delivery.status == "sent"
    assert not [b for b in chat.bodies("/services/")[0]["blocks"] if b["type"] == "rich_text"]


def test_the_migration_back_returns_slack_and_teams_urls_to_notify_webhooks():
    migration = importlib.import_module("reports.migrations.0012_report_targets")
    report = make_report(
        targets=[
            {"channel": "email", "address": "a@example.com"},
            {"channel": "webhook", "address": "https://receiver.example/h"},
            {"channel": "slack", "address": "https://hooks.slack.com/services/T1/B1/abc"},
        ]
    )
    migration.empty_targets(apps, None)
    report.refresh_from_db()
    assert report.notify_webhooks == (
        "https://receiver.example/h\nhttps://hooks.slack.com/services/T1/B1/abc"
    )
    assert report.notify_emails == "a@example.com"
