"""The leader's freshness check: the stale and fresh-again alerts
(runs.services.domain.alerting) claimed under the scheduler lease."""

from django.db import transaction

from runs.services.domain.alerting import claim_freshness_events
from runs.services.runtime.leadership import fence


def check_freshness(lease, now=None):
    """The ReportEvents ("stale", "fresh") to send now. Fenced by the scheduler lease in
    the transaction that claims them: a former leader is refused with LeaseLost and
    claims nothing."""
    with transaction.atomic():
        fence(lease)
        return claim_freshness_events(now)
