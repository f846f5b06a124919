"""Whether a host name or address stays on this machine: one rule for every check that asks.

Names are not resolved: ``localhost`` and its usual aliases, and any loopback address (IPv4,
IPv6, with or without brackets).
"""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True for a loopback address or name."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
