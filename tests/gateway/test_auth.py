"""Keys, origins and request shape: every invalid key looks the same from outside."""

import json
import socket
import time

import httpx
import pytest

from billing.keys import key_generate
from tests.gateway.conftest import ALLOWED_ORIGIN, PORT_BASE, post, rpc, start_gateway, stop

pytestmark = pytest.mark.django_db(transaction=True)

CALL = rpc("tools/call", {"name": "ok", "arguments": {}}, rid=41)


def _altered(key: str) -> str:
    return key[:20] + ("A" if key[20] != "A" else "B") + key[21:]


def test_every_invalid_key_gets_the_same_401(gateway, hosted, seed_key, redis_client):
    name = hosted()
    other = hosted()
    valid = seed_key(name)
    assert post(gateway, name, CALL, valid).status_code == 200
    revoked = key_generate(live=False)  # billing's selector answers None: negative-cached
    cases = {
        "missing": None,
        "malformed": "not-a-key",
        "altered": _altered(valid),
        "unknown": key_generate(live=False),
        "revoked": revoked,
        "inactive": seed_key(name, status="canceled"),
        "expired": seed_key(name, expires_at=1.0),
        "other listing": seed_key(other),
    }
    responses = {label: post(gateway, name, CALL, key) for label, key in cases.items()}
    bodies = {r.content for r in responses.values()}
    assert {r.status_code for r in responses.values()} == {401}
    assert len(bodies) == 1
    assert json.loads(bodies.pop())["error"]["code"] == -32001
    # One challenge for all, naming where an OAuth client learns how to get a token (RFC 9728).
    challenges = {r.headers["www-authenticate"] for r in responses.values()}
    assert len(challenges) == 1
    challenge = challenges.pop()
    assert challenge.startswith('Bearer resource_metadata="http')
    assert challenge.endswith(f'/.well-known/oauth-protected-resource/mcp/{name}", scope="mcp"')
    # Basic and a bare key are not Bearer.
    basic = post(gateway, name, CALL, headers={"Authorization": f"Basic {valid}"})
    assert basic.status_code == 401
    assert redis_client.get(f"tb:ent:{__import__('billing.keys').keys.key_hash(revoked)}") == b"0"


def test_key_in_query_string_is_refused(gateway, hosted, seed_key):
    name = hosted()
    key = seed_key(name)
    url = f"{gateway}/mcp/{name}"
    for query in (f"?key={key}", f"?access_token={key}", f"?x={key}"):
        r = httpx.post(url + query, json=CALL, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 400
        assert "Authorization header" in r.json()["error"]["message"]


def test_origin_and_host_are_checked(gateway, hosted, seed_key):
    name = hosted()
    key = seed_key(name)
    assert post(gateway, name, CALL, key, {"Host": "evil.example.com"}).status_code == 400
    assert post(gateway, name, CALL, key, {"Host": "gw.example:8000"}).status_code == 200
    assert post(gateway, name, CALL, key, {"Origin": "http://evil.example"}).status_code == 403
    assert post(gateway, name, CALL, key, {"Origin": ALLOWED_ORIGIN}).status_code == 200


def test_body_shape_errors(gateway, hosted, seed_key):
    name = hosted()
    key = seed_key(name)
    batch = post(gateway, name, [CALL, CALL], key)
    assert batch.status_code == 400
    assert batch.json()["error"]["code"] == -32600
    assert "Batch" in batch.json()["error"]["message"]
    bad = post(gateway, name, b"{not json", key)
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, -32700)
    scalar = post(gateway, name, b"42", key)
    assert (scalar.status_code, scalar.json()["error"]["code"]) == (400, -32600)
    big = post(gateway, name, b" " * (4 * 1024 * 1024 + 1), key)
    assert big.status_code == 413
    # A tools/call that is not a request could run the tool without being metered.
    for bad_id in (None, True, {"a": 1}, [1]):
        r = post(gateway, name, {**CALL, "id": bad_id}, key)
        assert (r.status_code, r.json()["error"]["code"], r.json()["id"]) == (400, -32600, None)
    unnumbered = post(gateway, name, {k: v for k, v in CALL.items() if k != "id"}, key)
    assert (unnumbered.status_code, unnumbered.json()["error"]["code"]) == (400, -32600)
    odd_method = post(gateway, name, {**CALL, "method": 7}, key)
    assert (odd_method.status_code, odd_method.json()["error"]["code"]) == (400, -32600)

    # 2026-07-28 routing headers must equal the body: billing reads the body.
    def routed(**h: str) -> int:
        return post(gateway, name, CALL, key, h).status_code

    assert routed(**{"Mcp-Method": "tools/list"}) == 400
    mismatch = post(gateway, name, CALL, key, {"Mcp-Method": "tools/call", "Mcp-Name": "dear"})
    assert (mismatch.status_code, mismatch.json()["error"]["code"]) == (400, -32020)
    assert mismatch.json()["id"] == CALL["id"]
    assert routed(**{"Mcp-Method": "tools/call", "Mcp-Name": "ok"}) == 200
    assert routed(**{"Mcp-Name": "=?base64?b2s=?="}) == 200  # "ok", the SDK's encoded form
    assert routed(**{"Mcp-Name": "=?base64?ZGVhcg==?="}) == 400  # "dear"
    for good_id in ("abc", 0, 2.5):
        assert post(gateway, name, {**CALL, "id": good_id}, key).status_code == 200


def test_unknown_listing_and_method(gateway, hosted, seed_key):
    name = hosted()
    key = seed_key(name)
    assert post(gateway, "io.github.nobody/none", CALL, key).status_code == 404
    r = httpx.put(f"{gateway}/mcp/{name}", json=CALL, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 405


def test_logs_carry_call_ids_and_never_keys(hosted, seed_key, tmp_path, upstream_processes):
    from tests.gateway.conftest import start_gateway, stop

    name = hosted(secret="creator-upstream-secret")
    key = seed_key(name)
    log = tmp_path / "gateway.log"
    base = f"http://127.0.0.1:{PORT_BASE + 27}"
    with log.open("wb") as sink:
        proc = start_gateway(PORT_BASE + 27, stderr=sink, LOG_LEVEL="DEBUG")
        try:
            ok = post(base, name, CALL, key)
            post(base, name, CALL, _altered(key))
            post(base, name, rpc("tools/call", {"name": "http500", "arguments": {}}), key)
        finally:
            stop(proc)
    text = log.read_text()
    call_id = ok.json()["result"]["_meta"]["dev.toolbooth/receipt"]["call_id"]
    assert f"call_id={call_id}" in text
    assert key[8:30] not in text
    assert "creator-upstream-secret" not in text


def test_a_body_that_never_arrives_gets_408(gateway, hosted, seed_key):
    """Headers, then the body withheld or trickled: 408 after GATEWAY_BODY_TIMEOUT (checked
    once a second), not a connection held for ever."""
    port = PORT_BASE + 49
    proc = start_gateway(port, GATEWAY_BODY_TIMEOUT="1")
    name = hosted()
    key = seed_key(name)
    head = (
        f"POST /mcp/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        "Content-Length: 200\r\n\r\n"
    ).encode()
    try:
        for sent in (b"", b'{"jsonrpc": "2.0", '):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                started = time.monotonic()
                s.sendall(head + sent)
                answer = s.recv(4096)
                took = time.monotonic() - started
                while b"\r\n\r\n" in answer and not answer.endswith(b"}"):
                    more = s.recv(4096)  # the body may come in its own segment
                    if not more:
                        break
                    answer += more
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert b"-32600" in answer
            assert 0.9 < took < 3.0
        assert post(f"http://127.0.0.1:{port}", name, CALL, key).status_code == 200
    finally:
        stop(proc)
