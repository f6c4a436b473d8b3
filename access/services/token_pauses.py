"""Invalid API tokens, counted per client address: past TOKEN_FAILURE_LIMIT in one
window of TOKEN_COOLOFF_SECONDS, every token from that address is refused until the
window ends.

Only that address pays: clients elsewhere, with valid tokens or not, are not counted
with it. While an address is paused nothing is written for it, so a flood costs one
indexed read per request. IPv6 clients count by their /64, which one subscriber
usually holds whole, so that hopping through its addresses does not start anew.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from access.models import TokenFailureWindow

logger = logging.getLogger("reportsvc.access")


def _window():
    return timedelta(seconds=settings.TOKEN_COOLOFF_SECONDS)


def seconds_paused(address, now=None):
    """Seconds until tokens from ``address`` are accepted again; 0 if they are now."""
    now = now or timezone.now()
    started = (
        TokenFailureWindow.objects.filter(
            address=address,
            failures__gte=settings.TOKEN_FAILURE_LIMIT,
            started_at__gt=now - _window(),
        )
        .values_list("started_at", flat=True)
        .first()
    )
    if started is None:
        return 0
    return max(1, int((started + _window() - now).total_seconds() + 0.999))


def record_invalid_token(address, now=None):
    """Count one invalid token from ``address``; forget windows that have ended."""
    now = now or timezone.now()
    ended = now - _window()
    windows = TokenFailureWindow.objects
    with transaction.atomic():
        if windows.filter(address=address, started_at__gt=ended).update(failures=F("failures") + 1):
            failures = windows.filter(address=address).values_list("failures", flat=True).get()
        else:
            windows.filter(started_at__lte=ended).delete()
            windows.update_or_create(address=address, defaults={"failures": 1, "started_at": now})
            failures = 1
    if failures == settings.TOKEN_FAILURE_LIMIT:
        logger.warning(
            "token_pause %s: %s invalid tokens; its tokens are refused for up to %s s",
            address,
            failures,
            settings.TOKEN_COOLOFF_SECONDS,
            extra={"event": "token_pause", "address": address},
        )


def lift_pause(address):
    """Accept tokens from ``address`` again now; True if it was counted."""
    deleted, _ = TokenFailureWindow.objects.filter(address=address).delete()
    return bool(deleted)
