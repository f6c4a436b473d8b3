"""Notification targets: which webhook addresses are allowed, and how targets are shown.

A webhook URL often carries its secret (a Slack path, ``?token=``, ``user:password@``),
so everywhere it is shown to someone who may not change the report, recorded on a
delivery or logged, it is redacted to its scheme and host. Email addresses are shown
as their domain. A delivery's error (an SMTP server's refusal quotes the address, a
receiver's answer may name a URL) is shown to them with the same redaction applied to
every URL and address in its text.

Webhook targets must not reach the worker's own machine or its cloud metadata service:
addresses in ``NOTIFY_WEBHOOK_BLOCKED_NETWORKS`` are refused when a report is saved
(address literals and ``localhost`` names) and again when a webhook is sent, after the
host name is resolved (runs/services/notifications/channels/bounded_post.py).
"""

import functools
import ipaddress
import re
import urllib.parse

from django.conf import settings

from reportsvc.networks import parse_networks

# Names that always mean this machine (RFC 6761), whatever DNS says.
LOOPBACK_ADDRESSES = ("127.0.0.1", "::1")

ELIDED = "…"


@functools.lru_cache(maxsize=8)
def _networks(values):
    return parse_networks(values)


def blocked_networks():
    return _networks(tuple(settings.NOTIFY_WEBHOOK_BLOCKED_NETWORKS))


def blocked_network_of(address):
    """The blocked network ``address`` (an IP address string) is in, or None.

    An IPv4 address written as IPv6 (``::ffff:127.0.0.1``) is checked as IPv4 too.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # without an IPv6 zone
    candidates = [ip]
    if ip.version == 6 and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    for network in blocked_networks():
        if any(candidate in network for candidate in candidates):
            return network
    return None


def is_localhost_name(host):
    host = host.lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost")


def literal_addresses(host):
    """The addresses ``host`` certainly means without asking DNS: an IP literal or a
    localhost name. Empty for other names."""
    try:
        return [str(ipaddress.ip_address(host.split("%", 1)[0]))]
    except ValueError:
        pass
    return list(LOOPBACK_ADDRESSES) if is_localhost_name(host) else []


def blocked_target_problem(url):
    """Why the webhook ``url`` is refused when saved, or None.

    Checks what is known without DNS; names are checked again, resolved, at send time.
    """
    host = urllib.parse.urlsplit(url).hostname or ""
    for address in literal_addresses(host):
        network = blocked_network_of(address)
        if network is not None:
            return (
                f"'{redact_url(url)}' points to {address}, in the blocked network {network} "
                "(NOTIFY_WEBHOOK_BLOCKED_NETWORKS)."
            )
    return None


def redact_url(url):
    """``scheme://host[:port]``, with ``/…`` if anything else (user, password, path,
    query, fragment) was there. Never the secret parts."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
    except ValueError:
        return ELIDED
    host = parts.netloc.rpartition("@")[2]
    if not parts.scheme or not host:
        return ELIDED
    shown = f"{parts.scheme.lower()}://{host}"
    if parts.netloc != host or parts.path not in ("", "/") or parts.query or parts.fragment:
        shown += "/" + ELIDED
    return shown


def redact_email(address):
    local, at, domain = address.strip().rpartition("@")
    return f"{ELIDED}@{domain}" if at and local else ELIDED


# A URL: a scheme, "://", then anything up to white space, a quote or an angle bracket.
# Each pattern starts only where a word starts (the look-behinds): tried at every
# character of a long word instead, it would cost time quadratic in the word's length.
_URL = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
# What ends a URL in prose without being part of it: "(see https://x/y)."
_URL_TRAILER = ").,;:!?]}"
# The local part of an address: a quoted string ("john smith", or \"john smith\" inside
# JSON), or a run of characters that are not white space, brackets or separators:
# quotes and backslashes are taken along (o'brien@…, a repr's \xc3\xa9). Taking a
# character too many before the address costs nothing; one too few would show part
# of it. No part can run past the end of the next (JSON: next escaped) quote, so each
# is tried in time linear in the text.
_ADDRESS = re.compile(
    r"(?:"
    r'(?<!\\)"(?:[^"\\]|\\.)*"'  # "john smith"
    r'|\\"(?:[^"\\]|\\[^"])*\\"'  # \"john smith\"
    r"|(?<![^\s<>()\[\]{},;:@])[^\s<>()\[\]{},;:@]+"  # anything else up to a separator
    r")@"
)
# What an unquoted local part keeps: the quote of a repr ({'x@…}, b'x@…, "x@…).
_QUOTE_BEFORE_ADDRESS = re.compile(r"[bBrRuU]{0,2}['\"]")


def redact_text(text):
    """``text`` with every URL shown as ``redact_url`` shows it and every email address
    as ``redact_email`` does (``…@domain``): for messages that may quote targets, such
    as ``SMTPRecipientsRefused: {'name@corp.example': …}``."""

    def url(match):
        found = match.group(0)
        kept = found.rstrip(_URL_TRAILER)
        return redact_url(kept) + found[len(kept) :]

    def address(match):
        local = match.group(0)
        quote = None if local.endswith('"@') else _QUOTE_BEFORE_ADDRESS.match(local)
        return (quote.group(0) if quote else "") + ELIDED + "@"

    return _ADDRESS.sub(address, _URL.sub(url, text or ""))


def shown_target(delivery, show_addresses):
    """A delivery's target as shown: email addresses in full only if
    ``show_addresses`` (the viewer may change reports); other targets as their channel
    redacts them (URLs as scheme and host, Slack channel ids as they are)."""
    if delivery.channel == "email" and show_addresses:
        return delivery.target
    return _redact(delivery.channel, delivery.target)


def _redact(channel_name, address):
    """``address`` as its channel shows it to people who may not change the report."""
    from runs.services.notifications.channels import get_channel  # the registry, as formats

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
