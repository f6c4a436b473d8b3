"""Who may read ``GET /metrics``: a bearer token (METRICS_TOKEN), listed networks
(METRICS_ALLOWED_NETWORKS), or both. Neither set: nobody.

Checked without the database, so refusing a flood of scrapes costs no query.
"""

import functools
import hashlib
import hmac
from http import HTTPStatus

from django.conf import settings

from access.client_address import client_ip
from reportsvc.networks import parse_networks


@functools.lru_cache(maxsize=8)
def _networks(values):
    return parse_networks(values)


def _digest(text):
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def bearer_token(request):
    """The credentials of an ``Authorization: Bearer …`` header, or None."""
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip()


def metrics_refusal(request):
    """Why ``request`` may not read the metrics, as an HTTP status; None if it may.

    404 while neither setting is given: the endpoint is off and looks like any unknown
    address. 403 from an address outside METRICS_ALLOWED_NETWORKS (when set). 401 without
    the token, or with another one (when METRICS_TOKEN is set). With both settings, both
    must hold. Tokens are compared as SHA-256 digests in constant time: neither the
    token's length nor how much of a guess was right shows in the time taken.
    """
    token, networks = settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS
    if not token and not networks:
        return HTTPStatus.NOT_FOUND
    if networks:
        address = client_ip(request)
        if address is not None and address.version == 6 and address.ipv4_mapped:
            address = address.ipv4_mapped
        allowed = _networks(tuple(networks))
        if address is None or not any(address in network for network in allowed):
            return HTTPStatus.FORBIDDEN
    if token:
        given = bearer_token(request)
        if given is None or not hmac.compare_digest(_digest(given), _digest(token)):
            return HTTPStatus.UNAUTHORIZED
    return None
