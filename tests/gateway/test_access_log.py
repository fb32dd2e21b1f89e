"""A key sent in the query string is refused and written to no log: the server runs as
production runs it (uvicorn, access log on, INFO) and the test reads everything it printed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile

import httpx
import pytest

from billing.keys import key_generate
from tests.gateway.conftest import PORT_BASE, ROOT, gateway_env, stop, wait_port

pytestmark = pytest.mark.django_db(transaction=True)

PORT = PORT_BASE + 160


def test_query_string_secrets_reach_no_log(hosted):
    name = hosted()
    key = key_generate(live=False)
    token = "oauth-access-token-9f1c2b7d4e"  # a made-up secret to look for
    base = f"http://127.0.0.1:{PORT}"
    cmd = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(PORT)]
    cmd += ["--host", "127.0.0.1", "--log-level", "info"]  # access log on: uvicorn's default
    with tempfile.TemporaryFile() as out:
        env = {**os.environ, **gateway_env(LOG_LEVEL="INFO")}
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_port(PORT, proc)
            refused = httpx.post(
                f"{base}/mcp/{name}?key={key}",
                json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                headers={"Accept": "application/json, text/event-stream"},
            )
            other = httpx.get(f"{base}/mcp/{name}?access_token={token}")
            page = httpx.get(f"{base}/?access_token={token}&key={key}")
            # The catalogue's GET is a stream: only its request line matters here.
            with contextlib.suppress(httpx.ReadTimeout):
                httpx.get(f"{base}/mcp-catalog?access_token={token}", timeout=0.5)
        finally:
            stop(proc)
        out.seek(0)
        printed = out.read().decode()

    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "Send the key in the Authorization header only."
    assert other.status_code == 400
    assert page.status_code in (200, 302)
    # The access log was on and wrote these requests, without their query strings.
    assert f'"POST /mcp/{name}?[redacted] HTTP/1.1" 400' in printed
    assert f'"GET /mcp/{name}?[redacted] HTTP/1.1" 400' in printed
    assert '"GET /?[redacted] HTTP/1.1"' in printed
    for secret in (key, key[8:], token):
        assert secret not in printed
