"""The webhook signing secret of a report: replaced by a random one, never typed in."""

import logging

from reports.history import recorded
from reports.models import new_webhook_secret

events = logging.getLogger("reportsvc.events")


def rotate_webhook_secret(report, *, by=None, via=""):
    """Give ``report`` a new random webhook secret and return it.

    Webhooks sent from now on are signed with it (the worker reads the secret just
    before sending); receivers need the new one. The secret itself is never logged, and
    the report's history records the rotation (who, when, via) without it.
    """
    secret = new_webhook_secret()
    report.webhook_secret = secret
    with recorded(by, via):
        report.save(update_fields=["webhook_secret", "updated_at"])
    fields = {
        "event": "webhook_secret_rotated",
        "report": report.slug,
        "user": getattr(by, "username", None),
    }
    events.info("webhook_secret_rotated report=%(report)s user=%(user)s", fields, extra=fields)
    return secret
