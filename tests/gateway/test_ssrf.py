"""The SSRF guard on upstream URLs, the save service, and the deploy check."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from common.exceptions import ApplicationError
from gateway.services import hosted_upstream_set
from gateway.ssrf import UnsafeUpstreamError, check_addresses, check_upstream_url
from tests.factories import ListingFactory

REFUSED = [
    "http://127.0.0.1/mcp",
    "http://127.1/mcp",
    "http://2130706433/mcp",  # decimal
    "http://0x7f000001/mcp",  # hex
    "http://0177.0.0.1/mcp",  # octal
    "http://0/mcp",
    "http://[::1]/mcp",
    "http://[::ffff:127.0.0.1]/mcp",  # IPv4-mapped
    "http://[::ffff:7f00:1]/mcp",
    "http://10.0.0.8/mcp",
    "http://172.16.3.4/mcp",
    "http://192.168.1.1/mcp",
    "http://169.254.169.254/latest/meta-data",  # cloud metadata
    "http://[fd00:ec2::254]/",  # AWS IPv6 metadata (ULA)
    "http://100.64.0.1/mcp",  # carrier-grade NAT
    "http://100.100.100.200/",  # Alibaba metadata (CGNAT range)
    "http://[64:ff9b::a00:1]/mcp",  # NAT64 of 10.0.0.1
    "http://[64:ff9b::7f00:1]/mcp",  # NAT64 of 127.0.0.1
    "http://[2002:7f00:1::]/mcp",  # 6to4 of 127.0.0.1
    "http://[2002:a9fe:a9fe::]/mcp",  # 6to4 of 169.254.169.254
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
    "http://[fe80::1]/mcp",  # link-local
    "http://0.0.0.0/mcp",
    "http://224.0.0.1/mcp",  # multicast
    "http://240.0.0.1/mcp",  # reserved
    "http://255.255.255.255/mcp",
    "http://localhost/mcp",
    "http://api.localhost/mcp",
    "http://metadata.google.internal/",
    "http://intranet/mcp",  # single label
    "ftp://example.com/mcp",
    "file:///etc/passwd",
    "gopher://example.com/",
    "http://user:pw@example.com/mcp",
    "http:///mcp",
]
ALLOWED = [
    "https://8.8.8.8/mcp",
    "http://1.1.1.1:8080/mcp",
    "https://[2606:4700:4700::1111]/mcp",
    "http://[64:ff9b::808:808]/mcp",  # NAT64 of a public address
    "http://[2002:808:808::]/mcp",  # 6to4 of a public address
]


@pytest.mark.parametrize("url", REFUSED)
def test_refused(url, settings):
    settings.GATEWAY_UPSTREAM_ALLOWLIST = []
    with pytest.raises(UnsafeUpstreamError):
        check_upstream_url(url, resolve=False)


@pytest.mark.parametrize("url", ALLOWED)
def test_allowed(url, settings):
    settings.GATEWAY_UPSTREAM_ALLOWLIST = []
    check_upstream_url(url, resolve=False)


def test_resolved_names_are_checked_address_by_address(settings):
    settings.GATEWAY_UPSTREAM_ALLOWLIST = []
    check_addresses("mcp.example.com", 443, ["8.8.8.8", "2606:4700::1"])
    with pytest.raises(UnsafeUpstreamError):  # one private answer poisons the set (rebinding)
        check_addresses("mcp.example.com", 443, ["8.8.8.8", "10.1.2.3"])
    with pytest.raises(UnsafeUpstreamError):
        check_addresses("mcp.example.com", 443, [])


def test_allowlist_is_exact_host_and_port(settings):
    settings.GATEWAY_UPSTREAM_ALLOWLIST = ["127.0.0.1:18080"]
    check_upstream_url("http://127.0.0.1:18080/mcp")
    with pytest.raises(UnsafeUpstreamError):
        check_upstream_url("http://127.0.0.1:18081/mcp")


@pytest.mark.django_db
def test_hosted_upstream_set_checks_owner_and_url(django_user_model, settings):
    settings.GATEWAY_UPSTREAM_ALLOWLIST = []
    owner = django_user_model.objects.create_user("owner")
    stranger = django_user_model.objects.create_user("stranger")
    listing = ListingFactory(owner=owner)
    with pytest.raises(ApplicationError) as denied:
        hosted_upstream_set(listing=listing, actor=stranger, url="https://8.8.8.8/mcp")
    assert denied.value.status_code == 403
    with pytest.raises(ApplicationError) as unsafe:
        hosted_upstream_set(listing=listing, actor=owner, url="http://169.254.169.254/")
    assert "url" in unsafe.value.extra["fields"]
    up = hosted_upstream_set(listing=listing, actor=owner, url="https://8.8.8.8/mcp", secret="s3")
    assert up.secret_encrypted
    assert "s3" not in up.secret_encrypted
    from gateway.crypto import secret_decrypt

    assert secret_decrypt(up.secret_encrypted) == "s3"
    again = hosted_upstream_set(listing=listing, actor=owner, url="https://8.8.8.8/mcp")
    assert again.pk == up.pk
    assert secret_decrypt(again.secret_encrypted) == "s3"


def test_check_deploy_flags_allowlist_keyless_mode_and_open_metrics(settings):
    settings.GATEWAY_UPSTREAM_ALLOWLIST = ["127.0.0.1:18080"]
    settings.GATEWAY_REQUIRE_KEY = False
    settings.GATEWAY_METRICS_TOKEN = ""
    from gateway.checks import gateway_deploy_check

    ids = {m.id for m in gateway_deploy_check()}
    assert ids == {"gateway.W001", "gateway.E001", "gateway.W002"}
    with pytest.raises(SystemCheckError, match=r"gateway\.E001"):
        call_command("check", "--deploy", "--fail-level", "ERROR", "--tag", "security")
    settings.GATEWAY_UPSTREAM_ALLOWLIST = []
    settings.GATEWAY_REQUIRE_KEY = True
    settings.GATEWAY_METRICS_TOKEN = "scrape-token"
    assert gateway_deploy_check() == []


def test_connect_time_check_refuses_private_answers(settings):
    """The upstream client re-checks what a name resolves to on every connect (DNS rebinding):
    `localhost` answers 127.0.0.1, refused unless that host:port is allow-listed."""
    import asyncio

    from gateway.http1 import UpstreamPool

    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
        await writer.drain()
        writer.close()

    async def fetch() -> bytes:
        server = await asyncio.start_server(hello, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings.GATEWAY_UPSTREAM_ALLOWLIST = []
        pool = UpstreamPool(pool_size=2, connect_timeout=2)
        try:
            with pytest.raises(UnsafeUpstreamError):
                await pool.request("GET", f"http://localhost:{port}/", headers={}, timeout=2)
            settings.GATEWAY_UPSTREAM_ALLOWLIST = [f"localhost:{port}"]
            resp = await pool.request("GET", f"http://localhost:{port}/", headers={}, timeout=2)
            body = await resp.read(2, 100)
            resp.release()
            return body
        finally:
            await pool.close()
            server.close()

    assert asyncio.run(fetch()) == b"hi"


@pytest.mark.django_db(transaction=True)
def test_gateway_refuses_an_unsafe_stored_url(gateway, hosted, seed_key):
    """A row written around the service (or before a rule changed) is still refused."""
    from gateway.models import HostedUpstream
    from tests.gateway.conftest import PORT_BASE, post, rpc

    name = hosted()
    HostedUpstream.objects.filter(listing__name=name).update(
        url=f"http://127.0.0.1:{PORT_BASE + 99}/mcp"
    )
    key = seed_key(name)
    r = post(gateway, name, rpc("tools/call", {"name": "ok", "arguments": {}}), key)
    assert r.status_code == 404
