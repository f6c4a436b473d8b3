"""The client's address, as the lockouts count it.

The connecting address (REMOTE_ADDR), unless CLIENT_ADDRESS_HEADER names the header a
trusted proxy writes: then the entry CLIENT_ADDRESS_PROXY_COUNT places from its right
end, the address the outermost proxy saw. Entries further left are whatever the client
sent and are never read. A header that is missing, too short or not an address leaves
the connecting address.
"""

import ipaddress

from django.conf import settings


def _address(text):
    """``text`` as a normalised IP address ("1.2.3.4:80" and "[::1]:80" too), or None."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_ip(request):
    """The client's IP address (an ipaddress object), or None if the server has none."""
    connecting = _address(request.META.get("REMOTE_ADDR", ""))
    header = settings.CLIENT_ADDRESS_HEADER
    if not header:
        return connecting
    value = request.META.get("HTTP_" + header.upper().replace("-", "_"), "")
    entries = value.split(",")
    count = settings.CLIENT_ADDRESS_PROXY_COUNT
    if not value.strip() or len(entries) < count:
        return connecting
    return _address(entries[-count]) or connecting


def lockout_address(request):
    """The address failures are counted for: the client's, an IPv6 client's /64 (as its
    network address), or None. django-axes calls it too (AXES_CLIENT_IP_CALLABLE)."""
    ip = client_ip(request)
    if ip is None:
        return None
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.version == 6:
        ip = ipaddress.ip_network(f"{ip}/64", strict=False).network_address
    return str(ip)
