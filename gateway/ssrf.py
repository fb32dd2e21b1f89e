"""SSRF guard for creators' upstream URLs: checked when saved and again at every connect.

A creator chooses the URL our servers connect to, so it must never reach our own network:
loopback, private, link-local (cloud metadata at 169.254.169.254), carrier-grade NAT,
multicast, reserved and unspecified ranges are refused, also when embedded in IPv6
(IPv4-mapped, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16, Teredo) or written in
the numeric forms `inet_aton` accepts (`2130706433`, `0x7f.1`, `0177.0.0.1`). Names are
resolved and every address is checked; at connect time the same check runs inside the HTTP
client's resolver, so a name that re-resolves to a private address (DNS rebinding) is refused.
`GATEWAY_UPSTREAM_ALLOWLIST` (exact `host:port`) exempts the loopback upstreams of tests and
the demo; `check --deploy` warns while it is set.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
# inet_aton accepts 1-4 parts, each decimal, octal (leading 0) or hex (0x).
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}\.?$", re.I)
_BLOCKED_NAMES = ("localhost", "metadata.google.internal", "metadata")
_BLOCKED_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa")


class UnsafeUpstreamError(ValueError):
    """The URL or one of its addresses is not allowed as an upstream; the message is safe to
    show to the creator who entered it."""


def address_is_public(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses, with IPv6 embeddings unwrapped."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return address_is_public(ip.ipv4_mapped)
        if any(ip in net for net in _NAT64):
            return address_is_public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip in _SIX_TO_FOUR:
            return address_is_public(ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF))
        if ip in _TEREDO:
            return False
        if ip.sixtofour is not None or ip.teredo is not None:
            return False
    if ip in _CGNAT:
        return False
    return bool(ip.is_global) and not (
        ip.is_multicast or ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_reserved
    )


def parse_host_literal(host: str) -> IPAddress | None:
    """The address a host string denotes without DNS (including inet_aton's numeric forms)."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        pass
    if _NUMERIC_HOST.match(bare):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare.rstrip(".")))
        except OSError as exc:
            raise UnsafeUpstreamError("The host is not a valid address.") from exc
    return None


def is_allowlisted(host: str, port: int) -> bool:
    entries = settings.GATEWAY_UPSTREAM_ALLOWLIST
    return bool(entries) and f"{host.lower()}:{port}" in entries


def split_upstream_url(url: str) -> tuple[str, int]:
    """Host and port of an acceptable upstream URL, or UnsafeUpstreamError (shape only)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUpstreamError("Enter a valid http(s) URL.") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeUpstreamError("Only http and https upstream URLs are allowed.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUpstreamError("Put the upstream credential in the secret, not the URL.")
    if parts.fragment:
        raise UnsafeUpstreamError("The upstream URL must not have a fragment.")
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeUpstreamError("The upstream URL needs a host.")
    return host, port or (443 if parts.scheme == "https" else 80)


def check_addresses(host: str, port: int, addresses: list[str]) -> None:
    """Refuse unless every resolved address is public (or host:port is allow-listed)."""
    if is_allowlisted(host, port):
        return
    if not addresses:
        raise UnsafeUpstreamError("The upstream host does not resolve.")
    for raw in addresses:
        if not address_is_public(ipaddress.ip_address(raw.split("%", 1)[0])):
            raise UnsafeUpstreamError("The upstream resolves to a private or reserved address.")


def check_upstream_url(url: str, *, resolve: bool = True) -> None:
    """The save-time check: shape, literal addresses, names, and (resolve=True) DNS."""
    host, port = split_upstream_url(url)
    if is_allowlisted(host, port):
        return
    literal = parse_host_literal(host)
    if literal is not None:
        check_addresses(host, port, [str(literal)])
        return
    if host in _BLOCKED_NAMES or host.endswith(_BLOCKED_SUFFIXES) or "." not in host:
        raise UnsafeUpstreamError("The upstream host must be a public DNS name.")
    if resolve:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise UnsafeUpstreamError("The upstream host does not resolve.") from exc
        check_addresses(host, port, [str(info[4][0]) for info in infos])
