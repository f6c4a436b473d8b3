"""Failure notices on state changes: the first failure, reminders at most every
NOTIFY_REPEAT_AFTER, "recovered"; every_failure; suppressed notices in the delivery log."""

import importlib
import json
from datetime import timedelta

import pytest
from django.apps import apps
from django.core import mail
from django.core.exceptions import ValidationError
from django.utils import timezone

from reports.models import Report
from runs.models import AlertState, Delivery, DeliveryStatus, RunStatus
from runs.services.domain.alerting import Notice, Streak, decide_run
from runs.services.runtime.runner import run_report_now
from tests.api_helpers import client_for, make_user
from tests.conftest import needs_commits
from tests.receivers import Receiver
from tests.test_settings import settings_in_a_fresh_process

pytestmark = pytest.mark.django_db(databases="__all__")

FAILING, WORKING = "SELECT * FROM missing_table", "SELECT 1 AS n"


@pytest.fixture(autouse=True)
def fast_notifications(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.NOTIFY_WEBHOOK_TIMEOUT_SECONDS = 1
    settings.NOTIFY_WEBHOOK_RETRIES = 0
    settings.PUBLIC_BASE_URL = "https://reports.example.com"
    settings.NOTIFY_WEBHOOK_BLOCKED_NETWORKS = ["169.254.0.0/16"]
    settings.NOTIFY_REPEAT_AFTER = timedelta(hours=1)


def make_report(**fields):
    fields.setdefault("notify_emails", "ops@example.com")
    fields.setdefault("sql", FAILING)
    return Report.objects.create(name="Refunds", slug="refunds", **fields)


def run(report, sql):
    Report.objects.filter(pk=report.pk).update(sql=sql)
    report.refresh_from_db()
    return run_report_now(report)


def set_emails(report, addresses):
    """Change the report's email targets behind its back (no save, no history)."""
    targets = [{"channel": "email", "address": a} for a in addresses.split(",") if a]
    Report.objects.filter(pk=report.pk).update(targets=targets, notify_emails=addresses)


def subjects():
    return [message.subject for message in mail.outbox]


def travel(report, back):
    """As if the last failure notice went ``back`` ago."""
    AlertState.objects.filter(pk=report.pk).update(notified_at=timezone.now() - back)


def test_a_report_that_keeps_failing_tells_once_and_records_what_it_kept_quiet():
    report = make_report()
    runs = [run(report, FAILING) for _ in range(3)]
    assert [r.status for r in runs] == [RunStatus.FAILED] * 3
    assert subjects() == [f"[reportsvc] Refunds: FAILED (run {runs[0].pk})"]
    assert "Further failures are not sent until it recovers" in mail.outbox[0].body
    first, *quiet = (Delivery.objects.get(run=r) for r in runs)
    assert (first.status, first.reason) == (DeliveryStatus.SENT, "failed")
    assert [(d.status, d.reason, d.attempts, d.sent_at) for d in quiet] == [
        (DeliveryStatus.SUPPRESSED, "failed", 0, None)
    ] * 2
    assert quiet[-1].note.startswith("Suppressed: failing since ")
    assert "(3 failures); the next reminder from " in quiet[-1].note
    state = AlertState.objects.get(pk=report.pk)
    assert state.failures == 3 and state.failing_since == runs[0].finished_at


def test_suppressed_deliveries_show_in_the_api_and_on_the_run_page(client):
    report = make_report()
    run(report, FAILING)
    quiet = run(report, FAILING)
    viewer = client_for(make_user("viewer", "view"))
    [delivery] = viewer.get(f"/api/runs/{quiet.pk}/").json()["deliveries"]
    assert delivery["status"] == "suppressed" and delivery["sent_at"] is None
    assert delivery["note"].startswith("Suppressed: failing since")
    assert delivery["target"] == "…@example.com"  # redacted as before
    root = make_user("root", staff=True)
    root.is_superuser = True
    root.save()
    client.force_login(root)
    page = client.get(f"/admin/runs/run/{quiet.pk}/change/").content.decode()
    assert "rs-badge rs-suppressed" in page and "Suppressed: failing since" in page


def test_a_reminder_goes_at_most_every_notify_repeat_after_saying_how_many_since_when():
    report = make_report()
    first = run(report, FAILING)
    run(report, FAILING)
    travel(report, timedelta(minutes=59))
    run(report, FAILING)
    assert len(mail.outbox) == 1  # 59 minutes: still quiet
    travel(report, timedelta(minutes=61))
    reminded = run(report, FAILING)
    since = f"{first.finished_at:%Y-%m-%d %H:%M:%S UTC}"
    assert subjects()[1] == (
        f"[reportsvc] Refunds: STILL FAILING (run {reminded.pk}; 4 failed runs since {since})"
    )
    assert f"Still failing: 4 failed runs since {since}." in mail.outbox[1].body
    assert Delivery.objects.get(run=reminded).reason == "reminder"
    run(report, FAILING)  # the reminder restarted the clock
    assert len(mail.outbox) == 2


def test_a_report_may_remind_more_often_than_the_setting():
    report = make_report(notify_repeat_after=timedelta(minutes=10))
    run(report, FAILING)
    travel(report, timedelta(minutes=11))
    run(report, FAILING)
    assert [s.split(":")[1].split("(")[0].strip() for s in subjects()] == [
        "FAILED",
        "STILL FAILING",
    ]


def test_the_next_success_says_recovered_once_and_a_new_failure_tells_again():
    report = make_report()
    failed = [run(report, FAILING) for _ in range(3)]
    recovered = run(report, WORKING)
    run(report, WORKING)
    again = run(report, FAILING)
    assert subjects() == [
        f"[reportsvc] Refunds: FAILED (run {failed[0].pk})",
        f"[reportsvc] Refunds: RECOVERED (run {recovered.pk}, 1 rows)",
        f"[reportsvc] Refunds: FAILED (run {again.pk})",
    ]
    since = f"{failed[0].finished_at:%Y-%m-%d %H:%M:%S UTC}"
    assert f"Recovered after 3 failed runs since {since}." in mail.outbox[1].body
    assert Delivery.objects.get(run=recovered).reason == "recovered"


def test_every_failure_tells_each_failure_and_no_recovery():
    report = make_report(notify_when="every_failure")
    failed = [run(report, FAILING) for _ in range(3)]
    run(report, WORKING)
    assert subjects() == [f"[reportsvc] Refunds: FAILED (run {r.pk})" for r in failed]
    assert not Delivery.objects.filter(status=DeliveryStatus.SUPPRESSED).exists()


def test_webhooks_get_the_same_events_with_the_streak():
    receiver = Receiver()
    try:
        report = make_report(notify_emails="", notify_webhooks=receiver.url)
        first = run(report, FAILING)
        run(report, FAILING)
        travel(report, timedelta(hours=2))
        run(report, FAILING)
        run(report, WORKING)
        payloads = [json.loads(body) for _, body in receiver.requests]
    finally:
        receiver.close()
    assert [p["event"] for p in payloads] == ["failed", "reminder", "recovered"]
    assert payloads[1]["streak"] == {"failures": 3, "since": first.finished_at.isoformat()}
    assert "Still failing: 3 failed runs since" in payloads[1]["text"]
    assert payloads[2]["run"]["status"] == "succeeded"
    assert [d.status for d in Delivery.objects.order_by("id")] == [
        "sent",
        "suppressed",
        "sent",
        "sent",
    ]


def test_a_report_without_targets_keeps_no_streak_and_a_missed_success_ends_one():
    report = make_report(notify_emails="")
    run(report, FAILING)
    assert not AlertState.objects.exists()  # no query spent on a report nobody hears of
    set_emails(report, "ops@example.com")
    run(report, FAILING)
    set_emails(report, "")
    run(report, WORKING)  # nobody was told, and the streak did not see it
    set_emails(report, "ops@example.com")
    run(report, FAILING)
    assert [s.split(": ")[1][:6] for s in subjects()] == ["FAILED", "FAILED"]
    assert AlertState.objects.get(pk=report.pk).failures == 1


def test_decisions_about_races_and_order():
    now = timezone.now()
    hour = timedelta(hours=1)
    failing = Streak(now - hour, 2, now - hour)
    # A success older than the streak's start ends nothing.
    assert decide_run(failing, "succeeded", now - 2 * hour, "failure", hour, now) == (
        [],
        failing,
    )
    # Skipped runs tell nobody and leave the streak as it is.
    assert decide_run(failing, "skipped", now, "failure", hour, now) == ([], failing)
    # never: the streak counts on, nobody is told.
    notices, after = decide_run(Streak(), "failed", now, "never", hour, now)
    assert notices == [] and after == Streak(now, 1, None)
    # Switched to failure mid-streak: the next failure reminds, with the whole count.
    notices, _ = decide_run(after, "failed", now, "failure", hour, now)
    assert notices == [Notice("reminder", failures=2, since=now, note=notices[0].note)]


# --- bad values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (timedelta(seconds=30), "At least a minute (00:01:00), not 0:00:30"),
        (timedelta(0), "At least a minute (00:01:00), not 0:00:00"),
        (timedelta(days=31), "At most 30 days (30 00:00:00), not 31 days, 0:00:00."),
    ],
)
def test_a_bad_reminder_interval_is_a_field_error(value, message):
    report = Report(name="x", slug="x", sql="SELECT 1", notify_repeat_after=value)
    with pytest.raises(ValidationError) as error:
        report.full_clean()
    [text] = error.value.message_dict["notify_repeat_after"]
    assert text.startswith(message) and text.endswith("Leave it empty for NOTIFY_REPEAT_AFTER.")


def test_the_api_refuses_a_bad_reminder_interval_and_keeps_the_report():
    report = make_report(sql=WORKING, notify_repeat_after=timedelta(hours=2))
    editor = client_for(make_user("editor", "editor"))
    for bad in ("00:00:05", "forever", "-1 00:00:00", "9" * 40):
        response = editor.patch(
            f"/api/reports/{report.slug}/", {"notify_repeat_after": bad}, format="json"
        )
        assert response.status_code == 400, bad
        assert list(response.json()) == ["notify_repeat_after"], response.json()
    report.refresh_from_db()
    assert report.notify_repeat_after == timedelta(hours=2)
    response = editor.patch(
        f"/api/reports/{report.slug}/", {"notify_repeat_after": "PT30M"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["notify_repeat_after"] == "00:30:00"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", "NOTIFY_REPEAT_AFTER: 'soon' is not a duration: e.g. 01:00:00"),
        ("0", "NOTIFY_REPEAT_AFTER: At least a minute (00:01:00), not 0:00:00"),
        ("40 00:00:00", "NOTIFY_REPEAT_AFTER: At most 30 days (30 00:00:00), not 40 days"),
    ],
)
def test_a_bad_notify_repeat_after_stops_the_service_with_its_name(value, message):
    result = settings_in_a_fresh_process(
        "settings.NOTIFY_REPEAT_AFTER", SECRET_KEY="x", NOTIFY_REPEAT_AFTER=value
    )
    assert result.returncode != 0
    assert f"ImproperlyConfigured: {message}" in result.stderr


def test_notify_repeat_after_is_an_hour_by_default_and_takes_durations():
    result = settings_in_a_fresh_process("settings.NOTIFY_REPEAT_AFTER", SECRET_KEY="x")
    assert result.stdout.strip() == "1:00:00", result.stderr
    result = settings_in_a_fresh_process(
        "settings.NOTIFY_REPEAT_AFTER", SECRET_KEY="x", NOTIFY_REPEAT_AFTER="PT2H30M"
    )
    assert result.stdout.strip() == "2:30:00", result.stderr


# --- the upgrade ----------------------------------------------------------------------


def test_the_upgrade_keeps_every_failure_for_reports_that_notify_and_says_so():
    migration = importlib.import_module("reports.migrations.0011_notify_state_changes")
    told = Report.objects.create(name="A", slug="a", sql="SELECT 1", notify_emails="a@x.example")
    hooked = Report.objects.create(
        name="B", slug="b", sql="SELECT 1", notify_webhooks="https://hooks.example.com/x"
    )
    silent = Report.objects.create(name="C", slug="c", sql="SELECT 1")
    always = Report.objects.create(
        name="D", slug="d", sql="SELECT 1", notify_emails="d@x.example", notify_when="always"
    )
    migration.keep_every_failure(apps, None)
    modes = dict(Report.objects.values_list("slug", "notify_when"))
    assert modes == {"a": "every_failure", "b": "every_failure", "c": "failure", "d": "always"}
    for report in (told, hooked):
        newest = report.history.order_by("-history_version").first()
        assert newest.history_version == 2 and newest.history_changes == ["notify_when"]
        assert newest.notify_when == "every_failure"
        assert newest.history_change_reason == migration.MOVED_VIA
    assert silent.history.count() == always.history.count() == 1
    migration.back_to_failure(apps, None)
    assert set(Report.objects.values_list("notify_when", flat=True)) == {"failure", "always"}


@needs_commits
def test_migrating_gives_old_deliveries_their_report_and_keeps_what_failure_meant():
    """Forwards from the schema before (a Delivery needed a run), and back."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before = [("reports", "0010_report_expect_success_within"), ("runs", "0012_run_tallies")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps
        report = old.get_model("reports", "Report").objects.create(
            name="Old", slug="old", sql="SELECT 1", notify_emails="a@x.example"
        )
        run = old.get_model("runs", "Run").objects.create(report=report, trigger="cli")
        old.get_model("runs", "Delivery").objects.create(
            run=run, channel="email", target="a@x.example", reason="failed", status="sent"
        )
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    delivery = Delivery.objects.get()
    assert (delivery.report_id, delivery.run_id) == (report.pk, run.pk)
    assert Report.objects.get().notify_when == "every_failure"


@needs_commits
def test_two_failures_deciding_at_once_tell_once():
    import threading

    from django.db import connections

    from runs.services.domain.alerting import run_notices

    report = make_report(notify_emails="")
    runs = [run(report, FAILING) for _ in range(4)]
    set_emails(report, "ops@example.com")
    barrier, found = threading.Barrier(len(runs)), []

    def decide(failed):
        try:
            failed.report.refresh_from_db()
            barrier.wait(5)
            found.extend(run_notices(failed, has_targets=True))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=decide, args=(failed,)) for failed in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert (
        sorted((n.kind, n.suppressed) for n in found)
        == [("failed", False)] + [("failed", True)] * 3
    )
    assert AlertState.objects.get(pk=report.pk).failures == 4
