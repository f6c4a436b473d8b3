"""Targets' addresses: how they are shown without their secrets, and which webhook
addresses are blocked.

A webhook URL often carries its secret (a Slack path, ``?token=``, ``user:password@``),
so everywhere it is shown to someone who may not change the report, recorded on a
delivery or logged, it is redacted to its scheme and host. Email addresses are shown
as their domain. A delivery's error (an SMTP server's refusal quotes the address, a
receiver's answer may name a URL) is shown to them with the same redaction applied to
every URL and address in its text.

Webhook targets must not reach the worker's own machine or its cloud metadata service:
addresses in ``NOTIFY_WEBHOOK_BLOCKED_NETWORKS`` are refused when a report is saved
(address literals and ``localhost`` names) and again when a webhook is sent, after the
host name is resolved (bounded_post.py beside this module).

Like the rest of the channels, this module knows no app: reports.targets and the
channels build on it.
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
