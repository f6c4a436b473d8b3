"""POST a message with bounded retries: after 5xx answers, timeouts and connection
errors with backoff, and after 429 when its Retry-After is short enough to wait.

Every attempt is bounded as a whole (NOTIFY_WEBHOOK_TIMEOUT_SECONDS, see
bounded_post.py beside this module); waits end when the worker stops. The attempts are
returned (or carried by DeliveryFailed) and so recorded on the delivery.
"""

import logging

from django.conf import settings

from runs.services.notifications.channels.addresses import redact_url
from runs.services.notifications.channels.base import DeliveryFailed
from runs.services.notifications.channels.bounded_post import WebhookFailed, post_webhook

logger = logging.getLogger("reportsvc.notify")


def post_with_retries(url, body, headers, attempt, *, allowed_host=None, describe=None):
    """POST ``body`` to ``url``; the number of attempts it took, or DeliveryFailed.

    ``describe(failure)`` may reword a failure (a Slack answer such as ``no_service``)."""
    retries = settings.NOTIFY_WEBHOOK_RETRIES
    limited = settings.NOTIFY_RATE_LIMIT_RETRIES
    wait_most = settings.NOTIFY_RETRY_AFTER_MAX_SECONDS
    attempts = rate_limited = backoffs = 0
    while True:
        attempts += 1
        try:
            post_webhook(
                url,
                body,
                headers,
                timeout=settings.NOTIFY_WEBHOOK_TIMEOUT_SECONDS,
                allowed_host=allowed_host,
            )
            return attempts
        except WebhookFailed as failure:
            error = failure
        except Exception as failure:  # never let a URL reach a traceback in the log
            error = WebhookFailed(f"unexpected {type(failure).__name__}", retry=False)
            logger.warning("POST to %s failed: %s", redact_url(url), error)
        message = describe(error) if describe else str(error)
        if error.retry_after is not None or message.startswith("HTTP 429"):
            # Rate limited: wait as asked, a bounded number of times, never too long.
            wait = error.retry_after if error.retry_after is not None else 1.0
            if rate_limited >= limited:
                raise DeliveryFailed(
                    f"{message}: still rate limited after {limited} waits "
                    "(NOTIFY_RATE_LIMIT_RETRIES)",
                    attempts,
                )
            if wait > wait_most:
                raise DeliveryFailed(
                    f"{message}: Retry-After {wait:g} s is longer than the {wait_most:g} s "
                    "waited (NOTIFY_RETRY_AFTER_MAX_SECONDS)",
                    attempts,
                )
            rate_limited += 1
        elif not error.retry or backoffs >= retries:
            raise DeliveryFailed(message, attempts)
        else:
            wait = 0.5 * 2**backoffs
            backoffs += 1
        logger.info("POST to %s: %s; retrying in %g s", redact_url(url), message, wait)
        if attempt.wait(wait):
            raise DeliveryFailed(f"{message}; not retried: the worker stopped", attempts)
