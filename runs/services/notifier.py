"""Tell people about finished runs through the report's targets, each delivery recorded.

The channels (email, webhook, Slack, Teams) are modules of
runs/services/notifications/channels/; ``send_event`` sends any event through them.

Called after the run's outcome is stored, never inside its transaction; a failing
notification is recorded as a failed Delivery and never changes the run. No database
connection is held while waiting on a mail server or a webhook receiver. The worker
calls this on its notification lanes (runs/services/notification_lanes.py).
"""

import logging

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone

from reports.models import AlertCondition, NotifyWhen, Report
from reports.targets import redact_url
from runs.models import FINISHED_STATUSES, Delivery, DeliveryStatus, Run, RunStatus
from runs.services.notifications.channels import email as email_channel
from runs.services.notifications.channels import get_channel
from runs.services.notifications.channels import webhook as webhook_channel
from runs.services.notifications.channels.base import (
    INLINE_ROWS_MAX,
    Attempt,
    DeliveryFailed,
    Event,
    Target,
    delivery_reason,
    kind_of_reason,
    run_links,
)
from runs.services.preview import preview_rows

logger = logging.getLogger("reportsvc.notify")
events = logging.getLogger("reportsvc.events")

NOTIFY_TARGET_FIELDS = [
    "targets",
    "notify_emails",
    "notify_webhooks",
    "webhook_secret",
    "inline_rows",
]
email_attachment = email_channel.email_attachment
signature = webhook_channel.signature


def alert_holds(report, row_count):
    condition, threshold = report.alert_condition, report.alert_threshold
    if condition == AlertCondition.HAS_ROWS:
        return row_count > 0
    if condition == AlertCondition.EMPTY:
        return row_count == 0
    if condition == AlertCondition.ROWS_ABOVE:
        return threshold is not None and row_count > threshold
    if condition == AlertCondition.ROWS_BELOW:
        return threshold is not None and row_count < threshold
    return False


def notification_reason(run):
    """Why this finished run notifies ("failed", "finished", "alert"), or None.

    Updates the report's alert state: an alert fires when its condition starts to
    hold, and can fire again only after a successful run where it did not hold.
    """
    report = run.report
    if run.status == RunStatus.FAILED:
        return "failed" if report.notify_when != NotifyWhen.NEVER else None
    if run.status != RunStatus.SUCCEEDED:
        return None
    reason = "finished" if report.notify_when == NotifyWhen.ALWAYS else None
    if report.alert_condition:
        holds = alert_holds(report, run.row_count or 0)
        with transaction.atomic():
            # Only the first of two racing runs flips the state (and alerts).
            flipped = Report.objects.filter(pk=report.pk, alert_active=not holds).update(
                alert_active=holds
            )
        if holds and flipped:
            reason = "alert"
    return reason


def log_run_outcome(run):
    fields = {
        "event": "run_finished",
        "run_id": run.pk,
        "report": run.report.slug,
        "status": run.status,
        "trigger": run.trigger,
        "duration_s": round(run.duration_seconds, 3) if run.duration_seconds is not None else None,
        "rows": run.row_count,
        "bytes": run.output_bytes,
    }
    events.info(
        "run_finished run=%(run_id)s report=%(report)s status=%(status)s trigger=%(trigger)s "
        "duration_s=%(duration_s)s rows=%(rows)s bytes=%(bytes)s",
        fields,
        extra=fields,
    )


def log_discarded_result(run):
    """The executor's outcome was not recorded: someone ended the run first (a worker
    giving up on it, recovery calling it lost). Say so, with the status it has."""
    stored = Run.objects.filter(pk=run.pk).values_list("status", "error").first()
    status, error = stored if stored else ("deleted", "")
    fields = {"event": "run_result_discarded", "run_id": run.pk, "report": run.report.slug}
    fields.update(status=status, error=error)
    events.warning(
        "run_result_discarded run=%(run_id)s report=%(report)s status=%(status)s: the run "
        "ended before its executor recorded its outcome (%(error)s)",
        fields,
        extra=fields,
    )


def notify_finished_run(run, stopping=None):
    """Log the outcome and send the notifications a finished run calls for.

    ``run`` is the in-memory run its executor just recorded (report loaded), so a
    report without targets or alert costs no query. Its targets and webhook secret are
    read again before sending: an edit or a rotated secret applies at once. Once the
    ``stopping`` event is set, nothing more is sent. A run whose outcome its executor
    could not record (it was ended elsewhere meanwhile, and whoever ended it speaks
    for it) is logged as such, and notifies nothing.
    """
    if run.status not in FINISHED_STATUSES:
        log_discarded_result(run)
        return []
    log_run_outcome(run)
    reason = notification_reason(run)
    report = run.report
    if reason is None or not report.targets:
        return []
    report.refresh_from_db(fields=NOTIFY_TARGET_FIELDS)
    return send_event(Event(kind_of_reason(reason), report, run), stopping)


def send_event(event, stopping=None):
    """Send ``event`` (any kind of EVENT_KINDS) to every target of its report; one
    recorded Delivery per target. The report's first rows (``inline_rows``) are read
    once from the run's stored file, through the admin preview's bounded reader, for
    the channels that show them; the query is never run again."""
    targets = report_targets(event.report)
    if not targets:
        return []
    limit = min(event.report.inline_rows or 0, INLINE_ROWS_MAX)
    shows_rows = any(getattr(get_channel(t.channel), "shows_rows", False) for t in targets)
    if limit and shows_rows and event.run is not None and event.rows is None:
        event.rows = preview_rows(event.run, limit=limit)
    deliveries = []
    for target in targets:
        if stopping is not None and stopping.is_set():
            return deliveries
        deliveries.append(deliver(event, target, stopping))
    return deliveries


def report_targets(report):
    return [
        Target(item["channel"], item["address"], item.get("options") or {})
        for item in report.targets or []
    ]


def deliver(event, target, stopping=None):
    """Build and send ``event``'s message to one target; the recorded Delivery. Never
    raises: a failure of any kind is the delivery's error."""
    channel = get_channel(target.channel)
    attempts, error = 0, None
    if channel is None:
        error = f"unknown channel {target.channel!r}"
    else:
        try:
            message = channel.build(event, target)
        except Exception as failure:  # a message that cannot be built is recorded
            logger.exception(
                "building the %s message of report %s failed", target.channel, event.report.slug
            )
            error = f"the message could not be built ({type(failure).__name__})"
    if error is None:
        if target.channel != "email":
            _hang_up_database()
        try:
            attempts = channel.send(target, message, Attempt(stopping))
        except DeliveryFailed as failure:
            attempts, error = failure.attempts, str(failure)
        except Exception as failure:  # never let a target reach a traceback in the log
            attempts, error = 1, f"unexpected {type(failure).__name__}"
            logger.warning(
                "%s delivery of report %s failed: %s", target.channel, event.report.slug, error
            )
    return _record(event, target, attempts, error=error, stopping=stopping)


def _hang_up_database():
    """Close this thread's database connection before a network wait (unless a
    transaction needs it): a slow receiver must not hold a database session."""
    connection = connections[DEFAULT_DB_ALIAS]
    if not connection.in_atomic_block:
        connection.close()


def _links(run):
    return run_links(run)


def _email_body(run, reason, links, attach_note):
    return email_channel.text_body(Event(kind_of_reason(reason), run.report, run), attach_note)


def send_email(run, address, reason):
    return deliver(Event(kind_of_reason(reason), run.report, run), Target("email", address))


def send_webhook(run, url, reason, stopping=None):
    return deliver(Event(kind_of_reason(reason), run.report, run), Target("webhook", url), stopping)


def webhook_payload(run, reason):
    return webhook_channel.event_payload(Event(kind_of_reason(reason), run.report, run))


def _record(event, target, attempts, error=None, stopping=None):
    channel = get_channel(target.channel)
    shown = target.address
    if target.channel != "email":
        # user, password, path and query of a URL often are the secret
        shown = channel.redact(target.address) if channel else redact_url(target.address)
    run = event.run
    delivery = Delivery(
        run=run,
        channel=target.channel,
        target=shown[:500],
        reason=delivery_reason(event.kind),
        attempts=attempts,
        status=DeliveryStatus.FAILED if error else DeliveryStatus.SENT,
        last_error=error or "",
        sent_at=None if error else timezone.now(),
    )
    # Once the worker has stopped waiting for notifications (it is exiting and has
    # listed them as unsent), an attempt that ends late is only logged.
    if stopping is None or not stopping.is_set():
        delivery.save()
    fields = {
        "event": "delivery",
        "run_id": run.pk if run is not None else None,
        "report": event.report.slug,
        "channel": target.channel,
        "target": shown,
        "reason": delivery.reason,
        "status": delivery.status,
        "attempts": attempts,
        "error": delivery.last_error,
    }
    events.info(
        "delivery run=%(run_id)s channel=%(channel)s target=%(target)s reason=%(reason)s "
        "status=%(status)s attempts=%(attempts)s error=%(error)s",
        fields,
        extra=fields,
    )
    return delivery
