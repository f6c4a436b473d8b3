"""Tell people about finished runs and stale reports, each delivery recorded.

What to say is decided by runs.services.domain.alerting (failures on state changes, reminders,
recoveries, alerts, stale/fresh); every notice becomes an Event that the channels (email,
webhook, Slack, Teams: runs/services/notifications/channels/) build and send to every
target of the report, one Delivery per target. A suppressed notice is recorded for each
target and sent to none.

Called after the run's outcome is stored, never inside its transaction; a failing
notification is recorded as a failed Delivery and never changes the run. No database
connection is held while waiting on a mail server or a webhook receiver. The worker
calls this on its notification lanes (runs/services/notifications/lanes.py).
"""

import functools
import logging

from django.db import DEFAULT_DB_ALIAS, connections
from django.utils import timezone

from runs.models import FINISHED_STATUSES, Delivery, DeliveryStatus, Run
from runs.naming import download_file_name
from runs.services.domain.alerting import ReportEvent, run_notices
from runs.services.formats import format_of_file
from runs.services.infrastructure.output_storage import open_output
from runs.services.infrastructure.preview import preview_rows
from runs.services.notifications.channels import email as email_channel
from runs.services.notifications.channels import get_channel
from runs.services.notifications.channels import webhook as webhook_channel
from runs.services.notifications.channels.addresses import redact_url
from runs.services.notifications.channels.base import (
    INLINE_ROWS_MAX,
    Attempt,
    DeliveryFailed,
    Event,
    StoredFile,
    Target,
    delivery_reason,
    kind_of_reason,
    run_links,
)

logger = logging.getLogger("reportsvc.notify")
events = logging.getLogger("reportsvc.events")

NOTIFY_TARGET_FIELDS = [
    "targets",
    "notify_emails",
    "notify_webhooks",
    "webhook_secret",
    "inline_rows",
]
signature = webhook_channel.signature


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
    report = run.report
    has_targets = bool(report.targets)
    # What to say (runs.services.domain.alerting), the report's alert state moved on.
    notices = run_notices(run, has_targets=has_targets)
    if not notices or not has_targets:
        return []
    report.refresh_from_db(fields=NOTIFY_TARGET_FIELDS)
    deliveries, rows = [], None
    for notice in notices:
        if stopping is not None and stopping.is_set():
            break
        event = Event(
            kind_of_reason(notice.reason),
            report,
            run,
            note=notice.note,
            rows=rows,  # the file's first rows, read once for all the run's notices
            failures=notice.failures,
            since=notice.since,
        )
        deliveries += send_event(event, stopping, suppressed=notice.suppressed)
        rows = event.rows
    return deliveries


def notify_report_event(report_event, stopping=None):
    """Send a report-level notice (a freshness alert: ``ReportEvent``) to the report's
    targets, read afresh; each delivery recorded against the report, without a run."""
    report, notice = report_event.report, report_event.notice
    try:
        report.refresh_from_db(fields=NOTIFY_TARGET_FIELDS)
    except type(report).DoesNotExist:
        return []  # deleted since: nobody to tell about it
    event = Event(
        notice.kind,
        report,
        note=notice.note,
        expect_success_within=report_event.expect_success_within,
        last_success_at=report_event.last_success_at,
    )
    return send_event(event, stopping, suppressed=notice.suppressed)


def notify(item, stopping=None):
    """A finished run's notifications, or a report-level event's."""
    if isinstance(item, ReportEvent):
        return notify_report_event(item, stopping)
    return notify_finished_run(item, stopping)


def send_event(event, stopping=None, suppressed=False):
    """Send ``event`` (any kind of EVENT_KINDS) to every target of its report; one
    recorded Delivery per target (``suppressed``: recorded as such, sent to none). The
    report's first rows (``inline_rows``) are read once from the run's stored file,
    through the admin preview's bounded reader, for the channels that show them; the
    query is never run again."""
    targets = report_targets(event.report)
    if not targets:
        return []
    if suppressed:
        return [_record(event, target, 0, stopping=stopping, suppressed=True) for target in targets]
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


def stored_file(run):
    """The run's output as channels attach or upload it (named as its download is), or
    None when it has none."""
    if not run.output:
        return None
    name = run.output.name
    return StoredFile(
        download_file_name(run),
        format_of_file(name),
        run.output_bytes,
        functools.partial(open_output, name),
    )


def email_attachment(run, content):
    """(file name, content, media type) of ``run``'s file attached to an email."""
    return email_channel.email_attachment(stored_file(run), content)


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
            if event.run is not None and event.file is None:
                event.file = stored_file(event.run)
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


def _record(event, target, attempts, error=None, stopping=None, suppressed=False):
    """Record one delivery of ``event`` to ``target``: about its run, or (run None)
    about its report; ``suppressed``, one that was not sent on purpose."""
    channel = get_channel(target.channel)
    shown = target.address
    if target.channel != "email":
        # user, password, path and query of a URL often are the secret
        shown = channel.redact(target.address) if channel else redact_url(target.address)
    run = event.run
    if suppressed:
        status = DeliveryStatus.SUPPRESSED
    else:
        status = DeliveryStatus.FAILED if error else DeliveryStatus.SENT
    delivery = Delivery(
        run=run,
        report_id=event.report.pk,
        channel=target.channel,
        target=shown[:500],
        reason=delivery_reason(event.kind),
        attempts=attempts,
        status=status,
        last_error=error or "",
        note=event.note[:500],
        sent_at=None if error or suppressed else timezone.now(),
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
        "delivery run=%(run_id)s report=%(report)s channel=%(channel)s target=%(target)s "
        "reason=%(reason)s status=%(status)s attempts=%(attempts)s error=%(error)s",
        fields,
        extra=fields,
    )
    return delivery
