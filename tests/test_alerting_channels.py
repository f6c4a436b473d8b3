"""Alerting through every channel: what alerting decides (failures on state changes,
suppressed repeats, reminders with the streak, recoveries, stale/fresh) reaches every
target of a report, Slack and Teams included, one Delivery per target. Slack and Teams
are a local server behaving like their endpoints (tests/chat_servers.py)."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from reports.models import Report
from runs.models import AlertState, Delivery, DeliveryStatus
from runs.services.notifications.notifier import notify
from runs.services.runtime.freshness import check_freshness
from runs.services.runtime.leadership import acquire_lease
from runs.services.runtime.runner import run_report_now

pytestmark = pytest.mark.django_db(databases="__all__")

FAILING = "SELECT * FROM missing_table"
WORKING = "SELECT 1 AS n"


@pytest.fixture(autouse=True)
def quick(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.NOTIFY_WEBHOOK_TIMEOUT_SECONDS = 1
    settings.NOTIFY_WEBHOOK_RETRIES = 0
    settings.NOTIFY_RATE_LIMIT_RETRIES = 0
    settings.PUBLIC_BASE_URL = "https://reports.example.com"


def targets(chat):
    return [
        {"channel": "email", "address": "ops@example.com"},
        {"channel": "slack", "address": chat.slack_webhook},
        {"channel": "teams", "address": chat.teams_workflow},
    ]


def make_report(chat, name="Refunds", **fields):
    return Report.objects.create(
        name=name, slug="refunds", sql=FAILING, targets=targets(chat), **fields
    )


def run(report, sql):
    Report.objects.filter(pk=report.pk).update(sql=sql)
    report.refresh_from_db()
    return run_report_now(report)


def slack_titles(chat):
    return [message["text"] for message in chat.bodies("/services/")]


def teams_texts(chat):
    """Every text of every Teams card, one string per card."""
    found = []
    for message in chat.bodies("/workflows/"):
        found.append(repr(message["attachments"][0]["content"]))
    return found


def test_state_changes_reminders_and_recoveries_reach_every_channel(chat):
    report = make_report(chat)
    first = run(report, FAILING)
    quiet = run(report, FAILING)
    AlertState.objects.filter(pk=report.pk).update(notified_at=timezone.now() - timedelta(hours=2))
    run(report, FAILING)
    run(report, WORKING)

    assert slack_titles(chat) == [
        "\U0001f534 Refunds: FAILED",
        "\U0001f501 Refunds: still failing",
        "\U0001f7e2 Refunds: recovered",
    ]
    assert len(chat.bodies("/workflows/")) == 3
    since = f"{first.finished_at:%Y-%m-%d %H:%M:%S UTC}"
    reminder = chat.bodies("/services/")[1]
    assert f"Still failing: 3 failed runs since {since}." in repr(reminder["blocks"])
    assert f"Still failing: 3 failed runs since {since}." in teams_texts(chat)[1]
    assert f"Recovered after 3 failed runs since {since}." in teams_texts(chat)[2]
    assert [m.subject.split(": ")[1].split(" (")[0] for m in mail.outbox] == [
        "FAILED",
        "STILL FAILING",
        "RECOVERED",
    ]
    # The repeat in between: recorded for each target, sent to none.
    suppressed = Delivery.objects.filter(run=quiet).order_by("pk")
    assert [(d.channel, d.status, d.attempts) for d in suppressed] == [
        ("email", DeliveryStatus.SUPPRESSED, 0),
        ("slack", DeliveryStatus.SUPPRESSED, 0),
        ("teams", DeliveryStatus.SUPPRESSED, 0),
    ]
    assert all(d.note.startswith("Suppressed: failing since") for d in suppressed)
    assert all(d.report_id == report.pk for d in Delivery.objects.all())
    assert Delivery.objects.filter(status=DeliveryStatus.SENT).count() == 9


def test_stale_and_fresh_reach_slack_and_teams_as_deliveries_of_the_report(chat):
    report = make_report(chat, expect_success_within=timedelta(hours=1), notify_when="never")
    Report.objects.filter(pk=report.pk).update(created_at=timezone.now() - timedelta(hours=2))
    lease = acquire_lease("leader-a:1", 60)
    [stale] = check_freshness(lease)
    notify(stale)
    assert slack_titles(chat) == ["\u23f3 Refunds: STALE"]
    link = f"https://reports.example.com/admin/reports/report/{report.pk}/change/"
    [card] = teams_texts(chat)
    assert "Stale: no run has succeeded since the report was created" in card and link in card
    assert mail.outbox[0].subject == "[reportsvc] Refunds: STALE"

    run(report, WORKING)  # notify_when never: the run itself tells nobody
    [fresh] = check_freshness(lease)
    notify(fresh)
    assert slack_titles(chat)[1:] == ["\U0001f7e2 Refunds: fresh again"]
    assert mail.outbox[1].subject == "[reportsvc] Refunds: FRESH AGAIN"
    deliveries = Delivery.objects.order_by("pk")
    assert [(d.reason, d.channel, d.status) for d in deliveries] == [
        ("stale", "email", "sent"),
        ("stale", "slack", "sent"),
        ("stale", "teams", "sent"),
        ("fresh", "email", "sent"),
        ("fresh", "slack", "sent"),
        ("fresh", "teams", "sent"),
    ]
    assert {(d.run_id, d.report_id) for d in deliveries} == {(None, report.pk)}
    assert {d.target for d in deliveries if d.channel != "email"} == {f"{chat.origin}/…"}


def test_a_refusing_chat_target_fails_alone_and_a_hostile_name_stays_text(chat):
    chat.webhook = [(404, "no_service")]
    report = make_report(chat, name="<!channel> *now*")
    run(report, FAILING)
    [slack, teams] = [Delivery.objects.get(channel=name) for name in ("slack", "teams")]
    assert slack.status == "failed" and "404" in slack.last_error
    assert teams.status == "sent" and len(mail.outbox) == 1
    [message] = chat.bodies("/services/")
    assert message["mrkdwn"] is False
    assert message["blocks"][0]["text"]["type"] == "plain_text"
