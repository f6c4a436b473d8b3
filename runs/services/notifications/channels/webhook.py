"""Webhook: a signed JSON payload of reportsvc's own format, POSTed to any http(s) URL
that is not in a blocked network (NOTIFY_WEBHOOK_BLOCKED_NETWORKS)."""

import hashlib
import hmac
import json

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from datasources.sandbox import without_statement_text
from runs.services.notifications.channels.addresses import blocked_target_problem, redact_url
from runs.services.notifications.channels.base import (
    Channel,
    TargetProblem,
    delivery_reason,
    report_api_link,
    report_link,
    run_links,
)
from runs.services.notifications.channels.posting import post_with_retries


def signature(secret, body):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def run_payload(run):
    links = run_links(run)
    return {
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
    }


# The payload's text has always used chat short codes.
ICONS = {
    "failure": ":red_circle:",
    "alert": ":warning:",
    "reminder": ":repeat:",
    "stale": ":hourglass:",
    "cancelled": ":no_entry:",
}


def event_payload(event):
    report, run = event.report, event.run
    rows = f", {run.row_count:,} rows" if run is not None and run.row_count is not None else ""
    where = run_links(run)["admin"] if run is not None else report_link(report)
    about = f" (run {run.pk}{rows})" if run is not None else ""
    success = event.kind == "success" and run is not None
    status = run.status if success else delivery_reason(event.kind)
    icon = ICONS.get(event.kind, ":white_check_mark:")
    said = f" {event.note}" if event.note else ""
    payload = {
        "text": f"{icon} {report.name}: {status}{about} {where}{said}",
        "event": delivery_reason(event.kind),
        "kind": event.kind,
        "note": event.note or None,
        "streak": _streak(event),
        "report": {"slug": report.slug, "name": report.name},
        "run": run_payload(run) if run is not None else None,
    }
    if run is None:
        payload["report"]["url"] = report_api_link(report)
    if event.kind in ("stale", "fresh"):
        expected = event.expect_success_within
        last = event.last_success_at
        payload["freshness"] = {
            "expect_success_within_s": expected.total_seconds() if expected else None,
            "last_success_at": last.isoformat() if last else None,
        }
    return payload


def _streak(event):
    """A failing streak's size and start (failure notices, reminders, recoveries)."""
    if event.since is None:
        return None
    return {"failures": event.failures, "since": event.since.isoformat()}


class WebhookChannel(Channel):
    name = "webhook"
    label = "Webhook"
    address_help = "An http(s) URL; the payload is signed with X-Reportsvc-Signature."

    def clean_target(self, address, options):
        url = (address or "").strip()
        try:
            URLValidator(schemes=["http", "https"])(url)
        except ValidationError:
            raise TargetProblem(f"'{url}' is not an http(s) URL.") from None
        problem = blocked_target_problem(url)
        if problem:
            raise TargetProblem(problem)
        return url, self.check_options(options)

    def redact(self, address):
        return redact_url(address)

    def build(self, event, target):
        body = json.dumps(event_payload(event)).encode()
        return {
            "body": body,
            "headers": {
                "Content-Type": "application/json",
                "User-Agent": "reportsvc-webhook",
                "X-Reportsvc-Signature": signature(event.report.webhook_secret, body),
            },
        }

    def send(self, target, message, attempt):
        return post_with_retries(target.address, message["body"], message["headers"], attempt)


CHANNEL = WebhookChannel()
