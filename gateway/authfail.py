"""Throttle floods of invalid keys, per client address, on the failure path only.

Every request with a missing, malformed, unknown, revoked or other listing's key counts once
against its client address (common.clientaddr) in a fixed one-minute window: one Redis round
trip (`_FAIL_LUA`, INCR + EXPIRE) after the 401 was decided, so a valid key's warm path does not
change. Past GATEWAY_AUTH_FAILURES_PER_MINUTE failures the address's invalid-key answers are
429 + Retry-After (to the window's end) instead of 401, and this process remembers the address
until then, so that while it is throttled:
- a missing or malformed key is refused before anything else (no Redis, no PostgreSQL);
- a well-formed key is admitted as usual when Redis knows it (a key owner behind the same
  address keeps working), but a cache miss is not loaded from PostgreSQL (429), so a flood of
  made-up keys costs no database reads.
The limit is per address, never per key or key prefix: guessing at someone's key prefix from
elsewhere cannot lock its owner out. Other processes learn of the throttle at the address's
next failure there (the counter is shared in Redis). Without Redis (the demo), or while it
fails, the count is kept in process.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from gateway.ratelimit import REDIS_FAILURES

if TYPE_CHECKING:
    from gateway.resp import RespClient

logger = logging.getLogger(__name__)

WINDOW = 60  # seconds: "N failures a minute"
_FAIL_LUA = """
local n = redis.call('INCR', ARGV[1])
if n == 1 then redis.call('EXPIRE', ARGV[1], ARGV[2]) end
return n
"""
_MAX_TRACKED = 100_000  # addresses remembered in process; cleared past it (a flood of sources)


class AuthFailures:
    """Counts invalid-key answers per client address; says when to answer 429 instead."""

    def __init__(self, client: RespClient | None, limit: int) -> None:
        self.limit = limit
        self._script = client.script(_FAIL_LUA) if client is not None else None
        self._client = client
        # address -> end of the window in which it went past the limit (this process's view)
        self.blocked: dict[str, float] = {}
        self._local: dict[str, tuple[int, int]] = {}  # address -> (window, count): no Redis

    def retry_after(self, address: str, now: float) -> int:
        """Seconds until `address` may fail again (0: not throttled). A dict lookup."""
        until = self.blocked.get(address)
        if until is None:
            return 0
        if until <= now:
            del self.blocked[address]
            return 0
        return max(math.ceil(until - now), 1)

    async def failed(self, address: str, now: float) -> int:
        """Count one failure; the Retry-After to answer with when over the limit, else 0."""
        if self.limit <= 0:
            return 0
        window = int(now // WINDOW)
        count = 0
        if self._script is not None:
            try:
                count = int(await self._script([f"tb:af:{address}:{window}", WINDOW * 2]))
            except REDIS_FAILURES:
                logger.warning("gateway.auth_failures_unavailable")
        if count == 0:  # no Redis, or it failed: this process's own count
            seen, n = self._local.get(address, (window, 0))
            count = n + 1 if seen == window else 1
            if len(self._local) > _MAX_TRACKED:
                self._local.clear()
            self._local[address] = (window, count)
        if count <= self.limit:
            return 0
        until = (window + 1) * WINDOW
        if address not in self.blocked:
            if len(self.blocked) > _MAX_TRACKED:
                self.blocked.clear()
            logger.warning(
                "gateway.auth_failures_throttled", extra={"address": address, "failures": count}
            )
        self.blocked[address] = until
        return max(math.ceil(until - now), 1)
