"""`python -m common.healthcheck [URL]`: the web container's healthcheck (exit 0: /healthz is ok).

A bare `urlopen('http://127.0.0.1:8000/healthz')` fails in production: Django refuses a Host
outside ALLOWED_HOSTS (400) and, behind the TLS proxy, redirects plain HTTP to https (301). So
this asks as the proxy does: the site's own host name and `X-Forwarded-Proto: https`. It reads
only the environment (no Django setup), so it stays cheap every few seconds.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/healthz"


def site_host(allowed_hosts: str) -> str:
    """A Host header ALLOWED_HOSTS accepts (`.example.com` also matches `example.com`)."""
    for host in (h.strip() for h in allowed_hosts.split(",")):
        if host and host != "*":
            return host.lstrip(".")
    return "localhost"


def main(argv: list[str]) -> int:
    url = argv[0] if argv else DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        sys.stderr.write(f"not an http(s) URL: {url}\n")
        return 2
    request = urllib.request.Request(  # noqa: S310  (scheme checked above)
        url,
        headers={
            "Host": site_host(os.environ.get("ALLOWED_HOSTS", "")),
            "X-Forwarded-Proto": "https",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=3) as response:  # noqa: S310
            ok = response.status == 200 and json.load(response) == {"status": "ok"}
    except Exception as exc:
        sys.stderr.write(f"unhealthy: {exc}\n")
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
