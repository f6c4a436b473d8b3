"""Notification targets: a report's list of targets, its deprecated email and webhook
fields, and how targets and delivery errors are shown to people who may not change the
report (each channel redacts its own addresses; URLs and email addresses through
runs/services/notifications/channels/addresses.py, which also blocks webhook addresses).
"""

import urllib.parse

from runs.services.notifications.channels import get_channel
from runs.services.notifications.channels.addresses import (
    ELIDED,
    redact_email,
    redact_text,
    redact_url,
)


def shown_target(delivery, show_addresses):
    """A delivery's target as shown: email addresses in full only if
    ``show_addresses`` (the viewer may change reports); other targets as their channel
    redacts them (URLs as scheme and host, Slack channel ids as they are)."""
    if delivery.channel == "email" and show_addresses:
        return delivery.target
    return _redact(delivery.channel, delivery.target)


def _redact(channel_name, address):
    """``address`` as its channel shows it to people who may not change the report."""
    channel = get_channel(channel_name)
    if channel is not None:
        return channel.redact(address)
    return redact_url(address) if "://" in address else ELIDED


def shown_delivery_error(delivery, show_addresses):
    """A delivery's error as shown: in full only if ``show_addresses``; otherwise its
    URLs and addresses redacted like targets."""
    return delivery.last_error if show_addresses else redact_text(delivery.last_error)


def webhook_lines(value):
    return [line.strip() for line in value.splitlines() if line.strip()]


def redacted_webhooks(value):
    """The ``notify_webhooks`` text as someone who may not change the report sees it."""
    return "\n".join(redact_url(url) for url in webhook_lines(value))


def redacted_emails(value):
    """The ``notify_emails`` text as someone who may not change the report sees it."""
    items = [item.strip() for item in value.replace("\n", ",").split(",") if item.strip()]
    return ", ".join(redact_email(item) for item in items)


# --- targets: the report's list of {channel, address, options} ----------------------

# Hosts whose webhooks never understood the generic JSON payload: lines of
# notify_webhooks on them become Slack or Teams targets.
SLACK_WEBHOOK_HOSTS = ("hooks.slack.com", "hooks.slack-gov.com")
TEAMS_WEBHOOK_SUFFIXES = (".logic.azure.com", ".api.powerplatform.com", ".webhook.office.com")


def channel_of_webhook(url):
    """``slack``, ``teams`` or ``webhook``: the channel a webhook URL belongs to."""
    try:
        host = (urllib.parse.urlsplit(url.strip()).hostname or "").lower()
    except ValueError:
        return "webhook"
    if host in SLACK_WEBHOOK_HOSTS:
        return "slack"
    if host.endswith(TEAMS_WEBHOOK_SUFFIXES) or host == "outlook.office.com":
        return "teams"
    return "webhook"


def legacy_views(targets):
    """``(notify_emails, notify_webhooks)`` text of ``targets``: the email targets and
    the (generic) webhook targets, as the deprecated fields show them."""
    return _addresses(targets, "email", ", "), _addresses(targets, "webhook", "\n")


def _well_formed(targets):
    """The items of ``targets`` that are targets at all (the rest is refused on save)."""
    if not isinstance(targets, list):
        return []
    return [t for t in targets if isinstance(t, dict) and isinstance(t.get("address"), str)]


def _addresses(targets, channel, separator):
    return separator.join(
        t["address"] for t in _well_formed(targets) if t.get("channel") == channel
    )


def targets_from_views(targets, emails, webhooks):
    """``targets`` with its email and webhook targets replaced by those of the
    deprecated fields' text; a webhook line on Slack's or Teams' hosts becomes a target
    of that channel. Other targets stay, in their order."""
    split = [item.strip() for item in (emails or "").replace("\n", ",").split(",") if item.strip()]
    kept = [dict(t) for t in _well_formed(targets) if t.get("channel") not in ("email", "webhook")]
    new = [{"channel": "email", "address": address, "options": {}} for address in split]
    for url in webhook_lines(webhooks or ""):
        channel = channel_of_webhook(url)
        if channel != "webhook" and any(t["address"] == url for t in kept):
            continue
        new.append({"channel": channel, "address": url, "options": {}})
    return new + kept


def redacted_targets(targets, show_addresses=False):
    """``targets`` as people who may not change the report see them (and as versions
    keep them): URLs as scheme and host, addresses as their domain unless
    ``show_addresses``."""
    shown = []
    for target in _well_formed(targets):
        address, channel = target.get("address", ""), target.get("channel")
        if not (channel == "email" and show_addresses):
            address = _redact(channel, address)
        shown.append({**target, "address": address})
    return shown
