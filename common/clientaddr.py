"""The client address a request came from, for per-address limits.

Behind a reverse proxy every request arrives from the proxy, and the client's own address is
in `X-Forwarded-For`, which anyone can also send. The header is read only when the peer is one
of the TRUSTED_PROXIES (addresses or networks), and then from the right: the first address
that is not itself a trusted proxy is the client (entries further left were written by the
client and prove nothing). uvicorn may already have done this for its FORWARDED_ALLOW_IPS
(`--proxy-headers`); applying the rule again to its result changes nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Parse TRUSTED_PROXIES; a bad entry fails at startup rather than trusting nothing silently."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(scope: dict[str, Any], networks: tuple[Network, ...]) -> str:
    """The client's address ("" for a Unix socket peer with no trusted header)."""
    client = scope.get("client")
    peer = str(client[0]) if client else ""
    if not networks or not _trusted(peer, networks):
        return peer
    forwarded = b",".join(v for k, v in scope.get("headers", []) if k == b"x-forwarded-for")
    for raw in reversed(forwarded.decode("latin-1").split(",")):
        hop = raw.strip()
        if hop and not _trusted(hop, networks):
            return hop[:64]
    return peer
