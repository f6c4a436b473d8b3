"""Rate limits that hold across every web process."""

from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.throttling import ScopedRateThrottle, SimpleRateThrottle

# Requests are counted per tenth of the throttle's period.
BUCKETS = 10


class CountedRateThrottle(SimpleRateThrottle):
    """DRF's rate throttle with a history of fixed size in the cache.

    DRF's history is one timestamp per request in the period, written back whole at
    every allowed request: the bytes written grow with the square of the rate, and in
    the database cache each write leaves the previous row version behind (past 2 kB in
    TOAST, which only VACUUM reclaims). Here the history is, per tenth of the period,
    the number of requests and the time of the last one: at most BUCKETS + 1 entries,
    whatever the rate. A tenth's requests count until a period after its last one, so
    none is allowed early, and Retry-After is never more than the period. Within a
    tenth the cache row's expiry (an indexed column) stays the same, so PostgreSQL
    updates the row in place and reclaims the old versions itself (HOT).
    """

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        now = self.timer()
        width = self.duration / BUCKETS
        counts = {
            bucket: (count, last)
            for bucket, count, last in self.cache.get(self.key, [])
            if last > now - self.duration
        }
        self.retry_after = None
        if sum(count for count, _ in counts.values()) >= self.num_requests:
            self.retry_after = self._until_allowed(counts, now)
            return False
        current = int(now // width)
        counts[current] = (counts.get(current, (0, now))[0] + 1, now)
        history = [(bucket, count, last) for bucket, (count, last) in sorted(counts.items())]
        # Until this tenth's last request leaves the period, at the latest; the same for
        # every request of the tenth.
        expires = (current + 1) * width + self.duration
        self.cache.set(self.key, history, expires - now)
        return True

    def _until_allowed(self, counts, now):
        """Seconds until enough of the oldest tenths have left the period."""
        remaining = sum(count for count, _ in counts.values())
        for _, (count, last) in sorted(counts.items()):
            remaining -= count
            if remaining < self.num_requests:
                return max(0.0, last + self.duration - now)
        return 0.0

    def wait(self):
        return self.retry_after


class SharedScopedRateThrottle(ScopedRateThrottle, CountedRateThrottle):
    """DRF's scoped per-user throttle, counted in the shared cache (CACHES) by
    CountedRateThrottle, one check at a time per user.

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
