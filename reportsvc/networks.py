"""IP networks named in settings (CIDR lists): plain data, no Django imports, so the
settings read them without importing an app."""

import ipaddress

# Loopback, link-local (cloud metadata services live there), unspecified, multicast.
DEFAULT_BLOCKED_NETWORKS = (
    "127.0.0.0/8",
    "::1/128",
    "169.254.0.0/16",
    "fe80::/10",
    "0.0.0.0/8",
    "::/128",
    "224.0.0.0/4",
    "ff00::/8",
)


def parse_networks(values):
    """``values`` (CIDR strings) as networks; ValueError names the bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"'{value}' is not a network in CIDR notation (e.g. 127.0.0.0/8, fe80::/10)"
            ) from None
    return tuple(networks)
