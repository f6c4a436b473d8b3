"""Rate limits that hold across every web process."""

from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.throttling import ScopedRateThrottle


class SharedScopedRateThrottle(ScopedRateThrottle):
    """DRF's scoped per-user throttle, counted in the shared cache (CACHES), one check
    at a time per user.

    DRF reads a user's request history from the cache, appends to it and writes it
    back; two processes doing that at the same moment would both read the same history
    and both pass on the last free slot. Here the check runs in a transaction that
    first locks the user's row, so one user's requests take turns whichever process
    serves them (on SQLite its IMMEDIATE transactions take turns anyway).
    """

    def allow_request(self, request, view):
        with transaction.atomic():
            if request.user and request.user.is_authenticated:
                users = get_user_model().objects.select_for_update()
                list(users.filter(pk=request.user.pk).values_list("pk"))
            return super().allow_request(request, view)


RUN_TRIGGER_SCOPE = "report-runs"


def run_trigger_wait(request):
    """For web forms that queue runs outside the API (the admin's backfill): count this
    request against the user's API run-trigger throttle (API_RUN_THROTTLE_RATE) and
    return the seconds to wait if it is over, else None."""
    throttle = SharedScopedRateThrottle()
    view = type("RunTriggerView", (), {"throttle_scope": RUN_TRIGGER_SCOPE})()
    if throttle.allow_request(request, view):
        return None
    return throttle.wait() or 1
