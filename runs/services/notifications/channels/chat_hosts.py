"""Where Slack and Teams messages may go: fixed lists of official hosts.

These replace the blocked-network check for Slack and Teams targets (slack-sdk makes its
own connections). ``NOTIFY_CHAT_TEST_ORIGIN`` (tests only) adds one local origin that
stands in for all of them.
"""

import urllib.parse

from django.conf import settings

SLACK_WEBHOOK_HOSTS = ("hooks.slack.com", "hooks.slack-gov.com")
SLACK_API_URL = "https://slack.com/api/"
# Teams Workflows ("Post to a channel when a webhook request is received"): Power
# Automate's Logic Apps hosts and the newer Power Platform environment hosts.
TEAMS_HOST_SUFFIXES = (".logic.azure.com", ".api.powerplatform.com")
# Office 365 connectors (retired): recognised to say so, never sent to.
TEAMS_RETIRED_SUFFIXES = (".webhook.office.com",)


def test_origin():
    """(scheme, host, port) of NOTIFY_CHAT_TEST_ORIGIN, or None."""
    origin = settings.NOTIFY_CHAT_TEST_ORIGIN
    if not origin:
        return None
    parts = urllib.parse.urlsplit(origin)
    return parts.scheme, parts.hostname, parts.port


def is_test_origin(scheme, host, port):
    origin = test_origin()
    return origin is not None and (scheme, (host or "").lower(), port) == origin


def slack_api_url():
    origin = settings.NOTIFY_CHAT_TEST_ORIGIN
    return origin.rstrip("/") + "/api/" if origin else SLACK_API_URL


def host_of(url):
    """(scheme, host, port) of ``url``; None for what is not a URL."""
    try:
        parts = urllib.parse.urlsplit((url or "").strip())
        return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None


def slack_webhook_host(scheme, host, port):
    return (scheme == "https" and host in SLACK_WEBHOOK_HOSTS and port in (None, 443)) or (
        is_test_origin(scheme, host, port)
    )


def teams_host(scheme, host, port):
    official = scheme == "https" and port in (None, 443)
    return (official and host.endswith(TEAMS_HOST_SUFFIXES)) or is_test_origin(scheme, host, port)


def teams_retired_host(host):
    return host.endswith(TEAMS_RETIRED_SUFFIXES) or host == "outlook.office.com"


def refusal(label, allowed):
    """An ``allowed_host`` function for post_webhook: why a host is refused, or None."""

    def check(scheme, host, port):
        if allowed(scheme, (host or "").lower(), port):
            return None
        return f"refused: {host} is not one of {label}'s hosts"

    return check
