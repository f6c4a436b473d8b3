"""Tell people about finished runs: email and webhooks, each delivery recorded.

Called after the run's outcome is stored, never inside its transaction; a failing
notification is recorded as a failed Delivery and never changes the run. No database
connection is held while waiting on a mail server or a webhook receiver. The worker
calls this on its notification lanes (runs/services/notification_lanes.py).
"""

import hashlib
import hmac
import json
import logging
import time

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import DEFAULT_DB_ALIAS, connections
from django.urls import reverse
from django.utils import timezone

from datasources.sandbox import without_statement_text
from reports.targets import redact_url, webhook_lines
from reports.validators import split_list
from runs.models import FINISHED_STATUSES, Delivery, DeliveryChannel, DeliveryStatus, Run
from runs.naming import download_file_name, output_format_of
from runs.services.alerting import ReportEvent, run_notices, streak_text
from runs.services.output_storage import open_output
from runs.services.webhooks import WebhookFailed, post_webhook

logger = logging.getLogger("reportsvc.notify")
events = logging.getLogger("reportsvc.events")

NOTIFY_TARGET_FIELDS = ["notify_emails", "notify_webhooks", "webhook_secret"]


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
    has_targets = bool(report.notify_emails or report.notify_webhooks)
    # What to say (runs.services.alerting), the report's alert state moved on.
    notices = run_notices(run, has_targets=has_targets)
    if not notices or not has_targets:
        return []
    report.refresh_from_db(fields=NOTIFY_TARGET_FIELDS)
    deliveries = []
    for notice in notices:
        for address in split_list(report.notify_emails):
            if stopping is not None and stopping.is_set():
                return deliveries
            if notice.suppressed:
                deliveries.append(_record(run, DeliveryChannel.EMAIL, address, notice, 0))
            else:
                deliveries.append(send_email(run, address, notice.reason, notice))
        for url in webhook_lines(report.notify_webhooks):
            if stopping is not None and stopping.is_set():
                return deliveries
            if notice.suppressed:
                deliveries.append(_record(run, DeliveryChannel.WEBHOOK, url, notice, 0))
            else:
                deliveries.append(send_webhook(run, url, notice.reason, stopping, notice))
    return deliveries


def notify_report_event(event, stopping=None):
    """Send a report-level notice (a freshness alert: ``ReportEvent``) to the report's
    targets, read afresh; each delivery recorded against the report."""
    report = event.report
    try:
        report.refresh_from_db(fields=NOTIFY_TARGET_FIELDS)
    except type(report).DoesNotExist:
        return []  # deleted since: nobody to tell about it
    deliveries = []
    for address in split_list(report.notify_emails):
        if stopping is not None and stopping.is_set():
            return deliveries
        deliveries.append(send_report_email(event, address))
    for url in webhook_lines(report.notify_webhooks):
        if stopping is not None and stopping.is_set():
            return deliveries
        deliveries.append(send_report_webhook(event, url, stopping))
    return deliveries


def notify(item, stopping=None):
    """A finished run's notifications, or a report-level event's."""
    if isinstance(item, ReportEvent):
        return notify_report_event(item, stopping)
    return notify_finished_run(item, stopping)


def _hang_up_database():
    """Close this thread's database connection before a network wait (unless a
    transaction needs it): a slow receiver must not hold a database session."""
    connection = connections[DEFAULT_DB_ALIAS]
    if not connection.in_atomic_block:
        connection.close()


def _links(run):
    base = settings.PUBLIC_BASE_URL
    return {
        "admin": base + reverse("admin:runs_run_change", args=[run.pk]),
        "api": base + reverse("run-detail", args=[run.pk]),
        "download": base + reverse("run-download", args=[run.pk]) if run.output else None,
    }


SUBJECT_LABELS = {
    "failed": "FAILED",
    "reminder": "STILL FAILING",
    "recovered": "RECOVERED",
    "alert": "ALERT",
    "stale": "STALE",
    "fresh": "FRESH AGAIN",
}


def _subject(run, reason, notice=None):
    label = SUBJECT_LABELS.get(reason, run.status)
    rows = f", {run.row_count:,} rows" if run.row_count is not None else ""
    if reason == "reminder" and notice is not None:
        rows += f"; {streak_text(notice.failures, notice.since)}"
    return f"[reportsvc] {run.report.name}: {label} (run {run.pk}{rows})"


def _email_body(run, reason, links, attach_note, notice=None):
    report = run.report
    lines = [notice.note, ""] if notice is not None and notice.note else []
    lines += [
        f"Report:    {report.name} ({report.slug})",
        f"Run:       {run.pk} ({run.trigger})",
        f"Status:    {run.status}",
    ]
    if reason == "alert":
        lines.append(
            f"Alert:     {report.get_alert_condition_display()}"
            + (f" (N = {report.alert_threshold})" if report.alert_threshold is not None else "")
        )
    lines += [
        f"Started:   {run.started_at:%Y-%m-%d %H:%M:%S %Z}" if run.started_at else "Started:   -",
        f"Finished:  {run.finished_at:%Y-%m-%d %H:%M:%S %Z}" if run.finished_at else "Finished:  -",
        f"Duration:  {run.duration_seconds:.2f} s"
        if run.duration_seconds is not None
        else "Duration:  -",
        f"Rows:      {run.row_count:,}" if run.row_count is not None else "Rows:      -",
    ]
    if run.interval_start and run.interval_end:
        lines.append(
            f"Interval:  {run.interval_start:%Y-%m-%d %H:%M:%S %Z} to "
            f"{run.interval_end:%Y-%m-%d %H:%M:%S %Z}"
        )
    if run.parameters:
        lines += ["", "Parameters:"]
        lines += [
            f"  {name} = {json.dumps(value, ensure_ascii=False)}"
            for name, value in run.parameters.items()
        ]
    if run.error:
        lines += ["", "Error:", without_statement_text(run.error)]
    lines += ["", f"Run in the admin: {links['admin']}", f"Run in the API:   {links['api']}"]
    if links["download"]:
        lines.append(f"Download ({output_format_of(run).label}): {links['download']}")
    if attach_note:
        lines += ["", attach_note]
    return "\n".join(lines) + "\n"


def send_email(run, address, reason, notice=None):
    links = _links(run)
    attach, note = False, ""
    if run.output and run.output_bytes is not None:
        limit = settings.NOTIFY_ATTACH_MAX_BYTES
        label = output_format_of(run).label
        if run.output_bytes <= limit:
            attach, note = True, f"The file ({label}) is attached."
        else:
            note = (
                f"The file ({label}, {run.output_bytes:,} bytes) is larger than the "
                f"{limit:,}-byte attachment limit (NOTIFY_ATTACH_MAX_BYTES), so it is not "
                "attached: download it with the link above."
            )
    message = EmailMessage(
        _subject(run, reason, notice),
        _email_body(run, reason, links, note, notice),
        to=[address],
    )
    try:
        if attach:
            with open_output(run.output.name) as file:
                message.attach(*email_attachment(run, file.read()))
        _hang_up_database()
        message.send()
    except Exception as error:  # SMTP, network, a missing file: record, never raise
        return _record(run, DeliveryChannel.EMAIL, address, notice or reason, 1, error=error)
    return _record(run, DeliveryChannel.EMAIL, address, notice or reason, 1)


def email_attachment(run, content):
    """(file name, content, media type) of the run's file attached to an email: named as
    its download is, so a run over an interval arrives as ``daily-revenue_2026-11-25.csv``."""
    return download_file_name(run), content, output_format_of(run).media_type


ICONS = {
    "failed": ":red_circle:",
    "reminder": ":red_circle:",
    "stale": ":hourglass:",
    "alert": ":warning:",
}


def webhook_payload(run, reason, notice=None):
    links = _links(run)
    report = run.report
    icon = ICONS.get(reason, ":white_check_mark:")
    rows = f", {run.row_count:,} rows" if run.row_count is not None else ""
    said = f" {notice.note}" if notice is not None and notice.note else ""
    return {
        "text": f"{icon} {report.name}: {reason if reason != 'finished' else run.status}"
        f" (run {run.pk}{rows}) {links['admin']}{said}",
        "event": reason,
        "streak": _streak_payload(notice),
        "report": {"slug": report.slug, "name": report.name},
        "run": {
            "id": run.pk,
            "status": run.status,
            "trigger": run.trigger,
            "scheduled_for": run.scheduled_for.isoformat() if run.scheduled_for else None,
            "interval_start": run.interval_start.isoformat() if run.interval_start else None,
            "interval_end": run.interval_end.isoformat() if run.interval_end else None,
            "parameters": run.parameters or {},
            "rerun_of": run.rerun_of_id,
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "duration_s": run.duration_seconds,
            "row_count": run.row_count,
            "output_sha256": run.output_sha256 or None,
            "download_url": links["download"],
            "url": links["api"],
            "error": without_statement_text(run.error) or None,
        },
    }


def signature(secret, body):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _streak_payload(notice):
    """A failing streak's size and start, for failure notices, reminders, recoveries."""
    if notice is None or notice.since is None:
        return None
    return {"failures": notice.failures, "since": notice.since.isoformat()}


def send_webhook(run, url, reason, stopping=None, notice=None):
    """POST the run's payload to ``url``; retried after 5xx answers, timeouts and
    connection errors, with backoff; never after 3xx/4xx or a refused target."""
    body = json.dumps(webhook_payload(run, reason, notice)).encode()
    attempts, error = _post_signed(run.report, url, body, stopping)
    return _record(
        run,
        DeliveryChannel.WEBHOOK,
        url,
        notice or reason,
        attempts,
        error=error,
        stopping=stopping,
    )


def _post_signed(report, url, body, stopping=None):
    """POST ``body`` signed with the report's secret; ``(attempts, error or None)``."""
    request_headers = {
        "Content-Type": "application/json",
        "User-Agent": "reportsvc-webhook",
        "X-Reportsvc-Signature": signature(report.webhook_secret, body),
    }
    _hang_up_database()
    retries = settings.NOTIFY_WEBHOOK_RETRIES
    attempts, error = 0, None
    for attempt in range(retries + 1):
        attempts = attempt + 1
        try:
            post_webhook(
                url, body, request_headers, timeout=settings.NOTIFY_WEBHOOK_TIMEOUT_SECONDS
            )
            return attempts, None
        except WebhookFailed as failure:
            error = failure
        except Exception as failure:  # never let a URL reach a traceback in the log
            error = WebhookFailed(f"unexpected {type(failure).__name__}", retry=False)
            logger.warning("webhook to %s failed: %s", redact_url(url), error)
        if not error.retry or attempt == retries:
            break
        backoff = 0.5 * 2**attempt
        if stopping is None:
            time.sleep(backoff)
        elif stopping.wait(backoff):
            error = WebhookFailed(f"{error}; not retried: the worker stopped", retry=False)
            break
    return attempts, error


# --- report-level events (freshness) -------------------------------------------------


def _report_links(report):
    base = settings.PUBLIC_BASE_URL
    return {
        "admin": base + reverse("admin:reports_report_change", args=[report.pk]),
        "api": base + reverse("report-detail", args=[report.slug]),
    }


def _event_lines(event):
    notice, report = event.notice, event.report
    last = (
        f"{event.last_success_at:%Y-%m-%d %H:%M:%S %Z}"
        if event.last_success_at
        else f"never (created {report.created_at:%Y-%m-%d %H:%M:%S %Z})"
    )
    lines = [notice.note, ""] if notice.note else []
    lines += [f"Report:        {report.name} ({report.slug})"]
    if event.expect_success_within is not None:
        lines.append(f"Expected:      a success within {event.expect_success_within}")
    lines.append(f"Last success:  {last}")
    return lines


def send_report_email(event, address):
    report, links = event.report, _report_links(event.report)
    label = SUBJECT_LABELS[event.notice.kind]
    lines = _event_lines(event)
    lines += ["", f"Report in the admin: {links['admin']}", f"Report in the API:   {links['api']}"]
    message = EmailMessage(
        f"[reportsvc] {report.name}: {label}", "\n".join(lines) + "\n", to=[address]
    )
    try:
        _hang_up_database()
        message.send()
    except Exception as error:  # SMTP, network: record, never raise
        return _record(None, DeliveryChannel.EMAIL, address, event.notice, 1, error, report=report)
    return _record(None, DeliveryChannel.EMAIL, address, event.notice, 1, report=report)


def report_event_payload(event):
    report, notice, links = event.report, event.notice, _report_links(event.report)
    icon = ICONS.get(notice.kind, ":white_check_mark:")
    expected = event.expect_success_within
    return {
        "text": f"{icon} {report.name}: {notice.kind} {links['admin']} {notice.note}".rstrip(),
        "event": notice.kind,
        "report": {"slug": report.slug, "name": report.name, "url": links["api"]},
        "run": None,
        "freshness": {
            "expect_success_within_s": expected.total_seconds() if expected else None,
            "last_success_at": event.last_success_at.isoformat() if event.last_success_at else None,
        },
    }


def send_report_webhook(event, url, stopping=None):
    body = json.dumps(report_event_payload(event)).encode()
    attempts, error = _post_signed(event.report, url, body, stopping)
    return _record(
        None,
        DeliveryChannel.WEBHOOK,
        url,
        event.notice,
        attempts,
        error,
        stopping=stopping,
        report=event.report,
    )


def _record(run, channel, target, notice, attempts, error=None, stopping=None, report=None):
    """Record one delivery: ``notice`` a Notice (a suppressed one is never sent), or
    a reason; about ``run``, or (run None) about ``report``."""
    if channel == DeliveryChannel.WEBHOOK:
        target = redact_url(target)  # user, password, path and query often are the secret
    reason = notice if isinstance(notice, str) else notice.reason
    suppressed = not isinstance(notice, str) and notice.suppressed
    if suppressed:
        status = DeliveryStatus.SUPPRESSED
    else:
        status = DeliveryStatus.FAILED if error else DeliveryStatus.SENT
    delivery = Delivery(
        run=run,
        report_id=run.report_id if run is not None else report.pk,
        channel=channel,
        target=target,
        reason=reason,
        attempts=attempts,
        status=status,
        last_error=_describe(error) if error else "",
        note="" if isinstance(notice, str) else notice.note[:500],
        sent_at=None if error or suppressed else timezone.now(),
    )
    # Once the worker has stopped waiting for notifications (it is exiting and has
    # listed them as unsent), an attempt that ends late is only logged.
    if stopping is None or not stopping.is_set():
        delivery.save()
    fields = {
        "event": "delivery",
        "run_id": run.pk if run is not None else None,
        "report": run.report.slug if run is not None else report.slug,
        "channel": channel,
        "target": target,
        "reason": reason,
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


def _describe(error):
    if isinstance(error, WebhookFailed):
        return str(error)
    return f"{type(error).__name__}: {error}"
