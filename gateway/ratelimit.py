"""Admission for one gateway request: entitlement, rate limit, quota, spend caps, session.

Everything a warm request needs happens in ONE Redis round trip (`_ADMIT_LUA`): read the cached
entitlement (`tb:ent:<key hash>`, JSON of `dataclasses.asdict(Entitlement)`, written here on a
miss and deleted by billing on change), check status/expiry/listing, the session binding, GCRA
rate limits (the plan's, on tool calls per license; GATEWAY_METHOD_RATE_PER_MINUTE on everything
else per key), the price (billing.pricing), the monthly quota and per-key spend caps, and only
then (all checks passed) reserve the counters and mark the call in flight (`tb:inflight`). A
finished tools/call is recorded with a second script (`_RECORD_LUA`, riding the next
admission's write): XADD to the usage stream, clear the in-flight mark, and refund the
reservations of a call that turned out not billable. The calls of a process that dies in
between are settled by `gateway.usage.inflight_sweep` once the process's heartbeat
(`tb:gw:<id>`) is gone. Counters may be lost (they are protective or re-derivable from the
ledger); the stream is the durable record. Lost quota and spend counters are re-derived on an
entitlement cache miss only (the warm path stays one script call): the script reports them missing
(`RESEED`), one ledger query (`gateway.selectors.usage_counters_for`) computes them, and the
script seeds them with SET NX before it decides.

Failure policy (also in gateway/README.md): every Redis command times out after
GATEWAY_REDIS_TIMEOUT (<= 100 ms) with no retries. When the connection is refused or reset
(Redis down) Redis is skipped for `_BREAKER_SECONDS`; a timeout (Redis frozen, or our own loop
overloaded) costs only that request its <= 100 ms, and nothing ever waits longer. While Redis
is unavailable: the entitlement is the copy this process last saw in Redis if younger than the
cache TTL, else PostgreSQL (then cached in-process for the TTL);
protective limits (rate limit) run on the in-process limiter; anything that spends money or
quota (a tools/call with a price or under a quota) fails closed with 503 + Retry-After; a
session id we cannot verify gets 503; free calls pass and are recorded on the in-process usage
queue. Without REDIS_URL (the demo) the in-process implementation is the whole backend.

Both implementations answer the same questions the same way; tests run the same cases on both.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import logging
import math
import os
import secrets
import socket
import string
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from billing.entitlements import Entitlement, ToolPrice
from billing.pricing import REFUSED_QUOTA, REFUSED_TOOL, call_price
from gateway.resp import RespClient

if TYPE_CHECKING:
    from gateway.selectors import UsageCounters

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

# Admission verdicts (the first element of the script's reply).
OK, MISS, INVALID, WRONG_LISTING, RATE_LIMITED, QUOTA, SPEND_CAP, EXCLUDED, SESSION = range(9)
RESEED = 9  # miss path only: Redis lost counters this entitlement needs (seed from the ledger)
UNAVAILABLE = 99  # ours: Redis is down and the request needs it (503)

KIND_CALL = "call"  # tools/call: the plan's rate limit (per license) + quota + spend
KIND_REQUEST = "req"  # other JSON-RPC requests and GET streams: the per-key method bucket
KIND_FREE = "free"  # notifications, responses, DELETE: the per-key method bucket too
# RateLimit-Policy names: the plan's tool-call limit, and GATEWAY_METHOD_RATE_PER_MINUTE.
POLICY_CALLS, POLICY_METHODS = "tool-calls", "methods"

_BREAKER_SECONDS = 1.0
# A finished call's XADD waits at most this long to share a write with the next admission.
_RECORD_DELAY = 0.002
_QUOTA_TTL = 40 * 86400
_DAY_TTL = 2 * 86400
_NEGATIVE = "0"  # cached "no such key" so garbage keys cannot hammer PostgreSQL
REDIS_FAILURES = (OSError, asyncio.TimeoutError, RedisError)

# ARGV: key hash, listing, kind, tool, session id, now, UTC day, "<call id> <gateway id>"; on a
# cache miss also the entitlement JSON (or '0') and the counter mode ('?' or '=' + 3 values).
# The TTLs are settings, fixed per process: baked into the script ($-placeholders) rather than
# sent with every call.
_ADMIT_LUA = string.Template("""
local function id(x) return string.format('%d', x) end
local ek = 'tb:ent:' .. ARGV[1]
local raw
if ARGV[9] and ARGV[9] ~= '' then
  raw = ARGV[9]
  redis.call('SET', ek, raw, 'EX', $cache_ttl)
else
  raw = redis.call('GET', ek)
end
if not raw then return {1} end
if raw == '0' then return {2} end
local ent = cjson.decode(raw)
local now = tonumber(ARGV[6])
if ent.status ~= 'active' then return {2} end
if type(ent.expires_at) == 'number' and ent.expires_at <= now then return {2} end
if ent.listing_name ~= ARGV[2] then return {3} end
if ARGV[10] then
  -- Miss path only: the counters this entitlement needs. '?' = report when Redis lost any
  -- ({9}); '=' = seed them from the ledger (ARGV[11..13]), never over a live counter.
  local ks, ttl = {}, {$quota_ttl, $day_ttl, $quota_ttl}
  if type(ent.included_calls) == 'number' then
    ks[1] = 'tb:q:' .. id(ent.license_id) .. ':' .. id(ent.period_start)
  end
  if type(ent.daily_spend_cap) == 'number' then
    ks[2] = 'tb:sd:' .. id(ent.key_id) .. ':' .. ARGV[7]
  end
  if type(ent.monthly_spend_cap) == 'number' then
    ks[3] = 'tb:sm:' .. id(ent.key_id) .. ':' .. id(ent.period_start)
  end
  for i = 1, 3 do
    if ks[i] then
      if ARGV[10] == '?' then
        if redis.call('EXISTS', ks[i]) == 0 then return {9} end
      else
        redis.call('SET', ks[i], ARGV[10 + i], 'NX', 'EX', ttl[i])
      end
    end
  end
end
local sid = ARGV[5]
if sid ~= '' then
  local sk = 'tb:sess:' .. sid
  if redis.call('GET', sk) ~= id(ent.key_id) then return {8, raw} end
  redis.call('EXPIRE', sk, $session_ttl)
end
local kind = ARGV[3]
-- The plan's limit counts tool calls of the license (all its keys); every other request
-- (initialize, tools/list, pings, notifications, streams) has its own per-key bucket.
local rl, rk = $method_rate, 'tb:rm:' .. id(ent.key_id) .. ':' .. id(ent.listing_id)
if kind == 'call' then
  rl = tonumber(ent.rate_limit_per_minute) or 0
  rk = 'tb:rl:' .. id(ent.license_id) .. ':' .. id(ent.listing_id)
end
local new_tat, remaining, reset = 0, -1, 0
if rl > 0 then
  local interval = 60 / rl
  local tat = tonumber(redis.call('GET', rk) or '0')
  if tat < now then tat = now end
  new_tat = tat + interval
  if new_tat - 60 > now + 0.001 then
    local wait = math.ceil(new_tat - 60 - now)
    return {4, raw, wait, rl, wait}
  end
  remaining = math.floor((now + 60 - new_tat) / interval + 1e-3)
  reset = math.ceil(new_tat - now)
else
  rk = nil
end
local amount, qleft, incr = 0, -1, {}
if kind == 'call' then
  -- billing.pricing.call_price as a lookup over what billing resolved into the entitlement.
  local tp = ent.tool_prices[ARGV[4]]
  if type(tp) == 'table' then
    if tp.excluded then return {7, raw} end
    amount = tonumber(tp.unit_amount) or 0
  elseif ent.other_tools == false then
    return {7, raw}
  else
    amount = tonumber(ent.unit_amount) or 0
  end
  local qk, dk, mk
  if type(ent.included_calls) == 'number' then
    qk = 'tb:q:' .. id(ent.license_id) .. ':' .. id(ent.period_start)
    local used = tonumber(redis.call('GET', qk) or '0')
    if used < ent.included_calls then
      amount = 0
    elseif ent.hard_cap then
      return {5, raw}
    end
    qleft = math.max(ent.included_calls - used - 1, 0)
  end
  if amount > 0 then
    if type(ent.daily_spend_cap) == 'number' then
      dk = 'tb:sd:' .. id(ent.key_id) .. ':' .. ARGV[7]
      if tonumber(redis.call('GET', dk) or '0') + amount > ent.daily_spend_cap then
        return {6, raw, 1}
      end
    end
    if type(ent.monthly_spend_cap) == 'number' then
      mk = 'tb:sm:' .. id(ent.key_id) .. ':' .. id(ent.period_start)
      if tonumber(redis.call('GET', mk) or '0') + amount > ent.monthly_spend_cap then
        return {6, raw, 2}
      end
    end
  end
  if qk then
    redis.call('INCR', qk); redis.call('EXPIRE', qk, $quota_ttl)
    incr[#incr + 1] = qk; incr[#incr + 1] = 1
  end
  if dk then
    redis.call('INCRBY', dk, amount); redis.call('EXPIRE', dk, $day_ttl)
    incr[#incr + 1] = dk; incr[#incr + 1] = amount
  end
  if mk then
    redis.call('INCRBY', mk, amount); redis.call('EXPIRE', mk, $quota_ttl)
    incr[#incr + 1] = mk; incr[#incr + 1] = amount
  end
  if ARGV[8] ~= '' then
    -- In flight until its record lands ("<call id> <gateway id>"); the sweeper settles the
    -- calls of a gateway process that died (gateway.usage.inflight_sweep).
    local sp = string.find(ARGV[8], ' ', 1, true)
    redis.call('HSET', 'tb:inflight', string.sub(ARGV[8], 1, sp - 1), cjson.encode({
      g = string.sub(ARGV[8], sp + 1), a = now, r = incr, t = ARGV[4], x = amount,
      k = ent.key_id, l = ent.license_id, s = ent.listing_id, p = ent.plan_id,
      cu = ent.currency, sc = ent.stripe_customer_id, m = ent.meter_event_name}))
  end
end
if rk then
  -- At least 1 ms: beyond ~250M calls a minute the interval is below a timestamp's precision
  -- and new_tat == now (no limit in effect), and PX 0 would fail the whole script.
  redis.call('SET', rk, string.format('%.6f', new_tat), 'PX',
    math.max(1, math.ceil((new_tat - now) * 1000)))
end
return {0, raw, amount, qleft, remaining, reset, rl, incr}
""")

_RECORD_LUA = """
local live = redis.call('HDEL', 'tb:inflight', ARGV[4])
redis.call('XADD', ARGV[1], '*', 'e', ARGV[2])
if ARGV[3] == '1' and live == 1 then
  for i = 5, #ARGV, 2 do redis.call('DECRBY', ARGV[i], ARGV[i + 1]) end
end
return 1
"""
# Seconds a gateway process's heartbeat (tb:gw:<id>) lives; refreshed every third of that.
HEARTBEAT_TTL = 30


@dataclass(slots=True)
class Admission:
    """The verdict for one request and what the proxy needs to finish it."""

    verdict: int
    entitlement: Entitlement | None = None
    amount: int = 0  # minor units reserved for a tools/call
    quota_remaining: int | None = None
    rate_limit: int = 0  # per minute; 0 = none applied
    rate_policy: str = POLICY_CALLS  # which bucket rate_limit/remaining/reset describe
    rate_remaining: int = -1
    rate_reset: int = 0
    retry_after: int = 0
    # (counter key, amount) pairs reserved for a call; refunded when it is not billable.
    reserved: list[tuple[str, int]] = field(default_factory=list)
    cap_window: str = ""  # "day" or "month" for SPEND_CAP
    local: bool = False  # decided by the in-process implementation


def entitlement_from_json(raw: str | bytes) -> Entitlement:
    data = json.loads(raw)
    prices = {k: ToolPrice(**v) for k, v in (data.pop("tool_prices", None) or {}).items()}
    return Entitlement(**data, tool_prices=prices)


def entitlement_to_json(ent: Entitlement) -> str:
    return json.dumps(asdict(ent), separators=(",", ":"))


_day_cache: tuple[int, str] = (-1, "")


def day_key(now: float) -> str:
    """The UTC day as YYYYMMDD (formatted once a day, not once a call)."""
    global _day_cache
    day = int(now) // 86400
    if _day_cache[0] != day:
        _day_cache = (day, time.strftime("%Y%m%d", time.gmtime(day * 86400)))
    return _day_cache[1]


def seconds_to_utc_midnight(now: float) -> int:
    return max(1, 86400 - int(now) % 86400)


def seconds_to_period_end(period_start: float, now: float) -> int:
    """Quota months start at `period_start`; the next one starts a calendar month later."""
    start = time.gmtime(period_start)
    year, month = divmod(start.tm_year * 12 + start.tm_mon, 12)  # month after, 0-based
    day = min(start.tm_mday, calendar.monthrange(year, month + 1)[1])
    nxt = calendar.timegm((year, month + 1, day, start.tm_hour, start.tm_min, start.tm_sec))
    return max(1, math.ceil(nxt - now))


EntitlementLoader = Callable[[str], Awaitable[Entitlement | None]]
# (entitlement, now) -> what its quota and spend counters should hold, from the ledger.
CountersLoader = Callable[[Entitlement, float], "Awaitable[UsageCounters]"]


class StoreUnavailable(Exception):
    """PostgreSQL refused or did not answer a cache miss within GATEWAY_DB_TIMEOUT."""


async def from_db(load: Awaitable[_T]) -> _T:
    """`await load` (a query run off the loop) bounded by GATEWAY_DB_TIMEOUT: a hung or
    unreachable database costs a request that timeout and a 503, never an open-ended wait.
    The query's thread may stay blocked; later loads queue behind it and time out alike."""
    from django.db import Error as DatabaseError

    try:
        async with asyncio.timeout(settings.GATEWAY_DB_TIMEOUT):
            return await load
    except (TimeoutError, DatabaseError) as exc:
        raise StoreUnavailable(type(exc).__name__) from None


def _ledger_counters_sync(ent: Entitlement, now: float) -> UsageCounters:
    from django.db import InterfaceError, OperationalError, connection

    from gateway.selectors import usage_counters_for

    day = int(now) - int(now) % 86400  # the UTC day of day_key(now)
    kwargs: dict[str, Any] = {
        "license_id": ent.license_id,
        "key_id": ent.key_id,
        "period_start": datetime.fromtimestamp(ent.period_start, UTC),
        "day_start": datetime.fromtimestamp(day, UTC),
    }
    try:
        return usage_counters_for(**kwargs)
    except (OperationalError, InterfaceError):
        connection.close()  # a dropped connection: reconnect once
        return usage_counters_for(**kwargs)


async def ledger_counters(ent: Entitlement, now: float) -> UsageCounters:
    """The production CountersLoader: one aggregate query on the usage ledger, off the loop."""
    counters: UsageCounters = await from_db(sync_to_async(_ledger_counters_sync)(ent, now))
    return counters


def counter_names(ent: Entitlement, now: float) -> tuple[str, str, str]:
    """The in-process counter names (quota, daily spend, monthly spend); "" = not needed."""
    period = int(ent.period_start)
    return (
        f"q:{ent.license_id}:{period}" if ent.included_calls is not None else "",
        f"sd:{ent.key_id}:{day_key(now)}" if ent.daily_spend_cap is not None else "",
        f"sm:{ent.key_id}:{period}" if ent.monthly_spend_cap is not None else "",
    )


class _Memo:
    """JSON text -> decoded Entitlement, so a warm key is decoded once per process."""

    def __init__(self, size: int = 4096) -> None:
        self._items: OrderedDict[bytes, Entitlement] = OrderedDict()
        self._size = size

    def get(self, raw: bytes) -> Entitlement:
        ent = self._items.get(raw)
        if ent is None:
            ent = entitlement_from_json(raw)
            self._items[raw] = ent
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        return ent


class LocalLimiter:
    """The in-process implementation: the demo's whole backend and Redis's fallback.

    Same rules as `_ADMIT_LUA`, in Python; state lives in this process only. With `counters`
    (the demo), a process seeds each quota and spend counter from the ledger the first time it
    needs it, so a restart does not hand out a fresh quota. As Redis's fallback it never
    spends quota or money (`paid_allowed=False`), so nothing is seeded there.
    """

    def __init__(
        self,
        loader: EntitlementLoader,
        *,
        cache_seconds: float,
        session_ttl: int,
        counters: CountersLoader | None = None,
        method_rate: int = 600,
    ):
        self._loader = loader
        self._counters_loader = counters
        self._method_rate = method_rate
        self._seeded: set[str] = set()
        self._cache_seconds = cache_seconds
        self._session_ttl = session_ttl
        self._ents: dict[str, tuple[float, Entitlement | None]] = {}
        self._tat: dict[str, float] = {}
        self._counters: dict[str, int] = {}
        self._sessions: dict[str, tuple[str, float]] = {}

    async def entitlement(
        self, key_hash: str, now: float, may_load: bool = True
    ) -> Entitlement | None:
        hit = self._ents.get(key_hash)
        if hit is not None and hit[0] > now:
            return hit[1]
        if not may_load:  # a throttled address (gateway.authfail): no PostgreSQL read
            return None
        ent = await self._loader(key_hash)
        if len(self._ents) > 100_000:
            self._ents.clear()
        self._ents[key_hash] = (now + self._cache_seconds, ent)
        return ent

    @property
    def counters(self) -> dict[str, int]:
        """The in-process quota and spend counters (gateway.deferred puts settled calls back)."""
        return self._counters

    def remember(self, key_hash: str, ent: Entitlement, now: float) -> None:
        """Keep the copy Redis just returned, for an outage (at most the cache TTL old)."""
        self._ents[key_hash] = (now + self._cache_seconds, ent)

    def invalidate(self, key_hash: str) -> None:
        self._ents.pop(key_hash, None)

    def session_owner(self, session_id: str, now: float) -> str | None:
        hit = self._sessions.get(session_id)
        return hit[0] if hit is not None and hit[1] > now else None

    def session_bind(self, session_id: str, key_id: int, now: float) -> None:
        self._sessions[session_id] = (str(key_id), now + self._session_ttl)

    def session_forget(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    async def admit(
        self,
        *,
        key_hash: str,
        listing_name: str,
        kind: str,
        tool: str,
        session_id: str,
        now: float,
        call_id: str = "",  # not tracked in flight: this process is the only one that knows it
        paid_allowed: bool = True,
        may_load: bool = True,
    ) -> Admission:
        ent = await self.entitlement(key_hash, now, may_load)
        if ent is None or ent.status != "active":
            return Admission(INVALID, local=True)
        if ent.expires_at is not None and ent.expires_at <= now:
            return Admission(INVALID, local=True)
        if ent.listing_name != listing_name:
            return Admission(WRONG_LISTING, local=True)
        if session_id:
            owner = self.session_owner(session_id, now)
            if owner is None and not paid_allowed:
                return Admission(UNAVAILABLE, ent, retry_after=1, local=True)
            if owner != str(ent.key_id):
                return Admission(SESSION, ent, local=True)
            self.session_bind(session_id, ent.key_id, now)
        names = counter_names(ent, now)
        load = self._counters_loader
        unseeded = any(n and n not in self._seeded for n in names)
        if load is not None and kind == KIND_CALL and paid_allowed and unseeded:
            await self._seed(load, ent, names, now)
        policy = POLICY_CALLS if kind == KIND_CALL else POLICY_METHODS
        adm = Admission(OK, ent, local=True, rate_policy=policy)
        if kind == KIND_CALL:  # the plan's limit: tool calls of the license, all keys together
            rl, rk = ent.rate_limit_per_minute, f"l{ent.license_id}:{ent.listing_id}"
        else:  # everything else: a per-key bucket of its own
            rl, rk = self._method_rate, f"k{ent.key_id}:{ent.listing_id}"
        new_tat = 0.0
        if rl > 0:
            interval = 60 / rl
            tat = max(self._tat.get(rk, 0.0), now)
            new_tat = tat + interval
            if new_tat - 60 > now + 0.001:
                wait = math.ceil(new_tat - 60 - now)
                return Admission(
                    RATE_LIMITED,
                    ent,
                    rate_limit=rl,
                    rate_remaining=0,
                    retry_after=wait,
                    rate_reset=wait,  # RateLimit's t: when the next request is allowed
                    rate_policy=policy,
                    local=True,
                )
            adm.rate_limit, adm.rate_remaining = (
                rl,
                math.floor((now + 60 - new_tat) / interval + 1e-3),
            )
            adm.rate_reset = math.ceil(new_tat - now)
        else:
            rk = ""
        if kind == KIND_CALL:
            qk, dk, mk = names
            used = self._counters.get(qk, 0) if ent.included_calls is not None else 0
            price = call_price(ent, tool, used)
            if price.refused == REFUSED_TOOL:
                return Admission(EXCLUDED, ent, local=True)
            if price.refused == REFUSED_QUOTA:
                return Admission(QUOTA, ent, local=True)
            amount, reserved = price.amount, []
            if ent.included_calls is not None:
                adm.quota_remaining = max(ent.included_calls - used - 1, 0)
                reserved.append((qk, 1))
            if (amount > 0 or ent.included_calls is not None) and not paid_allowed:
                return Admission(UNAVAILABLE, ent, retry_after=1, local=True)
            if amount > 0:
                caps = ((dk, ent.daily_spend_cap, 1), (mk, ent.monthly_spend_cap, 2))
                for ck, cap, which in caps:
                    if cap is not None:
                        if self._counters.get(ck, 0) + amount > cap:
                            window = "day" if which == 1 else "month"
                            return Admission(SPEND_CAP, ent, cap_window=window, local=True)
                        reserved.append((ck, amount))
            for ck, delta in reserved:
                self._counters[ck] = self._counters.get(ck, 0) + delta
            adm.amount, adm.reserved = amount, reserved
        if rk:
            self._tat[rk] = new_tat
        return adm

    def refund(self, reserved: list[tuple[str, int]]) -> None:
        for ck, delta in reserved:
            self._counters[ck] = self._counters.get(ck, 0) - delta

    async def _seed(
        self, load: CountersLoader, ent: Entitlement, names: tuple[str, str, str], now: float
    ) -> None:
        """Add the ledger's totals to counters this process has not seeded yet. Checked again
        after the await, so two first calls racing here add the totals once; what they
        reserve on top is this process's own, not yet in the ledger."""
        got = await load(ent, now)
        for name, value in zip(names, (got.calls, got.spent_today, got.spent_month), strict=True):
            if name and name not in self._seeded:
                self._seeded.add(name)
                self._counters[name] = self._counters.get(name, 0) + value


STALE_PREFIX = "tb:ents:"  # billing deletes it with the cache entry (entitlement_cache_invalidate)
# After PostgreSQL failed a miss, keys with a stale copy skip it this long (then one probe).
_DB_BREAKER_SECONDS = 1.0


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # a lost stale write only shortens the outage window; never raise


class StaleEntitlements:
    """Last-known entitlements for a PostgreSQL outage; the miss path's alone (the warm path
    never sees it: no extra round trip, no per-call CPU).

    Each entitlement PostgreSQL returns on a cache miss is also kept as `tb:ents:<key hash>` for
    `stale_seconds - cache_seconds`, written in the same pipelined write as the admission that
    follows. When PostgreSQL cannot answer a miss, that copy stands in and is re-cached for one
    cache TTL, so a key is served at most `stale_seconds` after PostgreSQL last confirmed it,
    and is refused (503) after that. A key PostgreSQL no longer returns (revoked, expired,
    unknown) loses its copy on that miss, and billing deletes it with the cache entry, so a
    revocation made before the outage holds. After a failed read, keys with a copy skip
    PostgreSQL for `_DB_BREAKER_SECONDS`, then one request probes it while the others keep
    using their copies: an outage costs one request GATEWAY_DB_TIMEOUT per probe, not every
    miss. `stale_seconds <= cache_seconds` turns it off.
    """

    def __init__(self, client: RespClient, *, cache_seconds: int, stale_seconds: int) -> None:
        self.client = client
        self.ttl = int(stale_seconds) - int(cache_seconds)
        self._db_down_until = 0.0
        self._db_failed = False

    async def load(
        self, key_hash: str, loader: EntitlementLoader, now: float
    ) -> tuple[Entitlement | None, str | bytes, bool]:
        """The entitlement for a cache miss, its JSON for the admission script (`_NEGATIVE`
        for none) and whether it is the stale copy. Raises StoreUnavailable when PostgreSQL
        cannot answer and there is no copy young enough."""
        if self.ttl > 0 and now < self._db_down_until:
            raw = await self._copy(key_hash)
            if raw is not None:
                return entitlement_from_json(raw), raw, True
        elif self._db_failed:  # half-open: this request probes, the others use their copies
            self._db_down_until = now + float(settings.GATEWAY_DB_TIMEOUT)
        try:
            ent = await loader(key_hash)
        except StoreUnavailable:
            self._db_failed = True
            self._db_down_until = time.time() + _DB_BREAKER_SECONDS
            raw = await self._copy(key_hash)
            if raw is None:
                raise
            logger.warning("gateway.entitlement_stale")
            return entitlement_from_json(raw), raw, True
        self._db_failed, self._db_down_until = False, 0.0
        text = None if ent is None else entitlement_to_json(ent)
        self._keep(key_hash, text)
        return ent, text or _NEGATIVE, False

    async def _copy(self, key_hash: str) -> bytes | None:
        if self.ttl <= 0:
            return None
        raw: bytes | None = await self.client.call("GET", STALE_PREFIX + key_hash)
        return raw

    def _keep(self, key_hash: str, text: str | None) -> None:
        """Rides the admission's write (deferred); None forgets the copy."""
        if self.ttl <= 0:
            return
        args: tuple[Any, ...] = ("DEL", STALE_PREFIX + key_hash)
        if text is not None:
            args = ("SET", STALE_PREFIX + key_hash, text, "EX", self.ttl)
        try:
            fut = self.client.defer(*args, delay=_RECORD_DELAY)
        except REDIS_FAILURES:
            return
        fut.add_done_callback(_consume)


class RedisLimiter:
    """The shared implementation: one EVALSHA per admission (gateway.resp), Redis-wide state."""

    def __init__(
        self,
        client: RespClient,
        local: LocalLimiter,
        loader: EntitlementLoader,
        *,
        cache_seconds: int,
        session_ttl: int,
        stream: str,
        counters: CountersLoader | None = None,
        method_rate: int = 600,
        stale_seconds: int = 0,
    ) -> None:
        self.client = client
        self.local = local
        self._loader = loader
        self._counters_loader = counters
        self._seeding: dict[tuple[int, int, int, str], asyncio.Future[UsageCounters]] = {}
        self._cache_seconds = cache_seconds
        self._session_ttl = session_ttl
        self._stream = stream
        self._admit = client.script(
            _ADMIT_LUA.substitute(
                cache_ttl=int(cache_seconds),
                session_ttl=int(session_ttl),
                quota_ttl=_QUOTA_TTL,
                day_ttl=_DAY_TTL,
                method_rate=max(0, int(method_rate)),
            )
        )
        self._record = client.script(_RECORD_LUA)
        self._memo = _Memo()
        self._stale = StaleEntitlements(
            client, cache_seconds=cache_seconds, stale_seconds=stale_seconds
        )
        self._down_until = 0.0
        self._tasks: set[asyncio.Future[None]] = set()
        self.gateway_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._heartbeat: asyncio.Future[None] | None = None

    async def _beat(self) -> None:
        """Tell the in-flight sweeper this process is alive (its calls are not lost)."""
        while True:
            with contextlib.suppress(*REDIS_FAILURES):  # the TTL spans three beats
                await self.client.call("SET", f"tb:gw:{self.gateway_id}", 1, "EX", HEARTBEAT_TTL)
            await asyncio.sleep(HEARTBEAT_TTL / 3)

    def available(self, now: float) -> bool:
        return now >= self._down_until

    def mark_down(self, now: float, exc: BaseException) -> None:
        """A refused or reset connection opens the breaker. A timeout does not: on a loaded
        machine the 100 ms can pass in our own event loop while Redis is fine, and opening the
        breaker then would refuse every paid call for a second; a frozen Redis costs each
        request one bounded timeout instead."""
        if isinstance(exc, RedisConnectionError | ConnectionError):
            if now >= self._down_until:
                logger.warning("gateway.redis_unavailable", extra={"error": type(exc).__name__})
            self._down_until = now + _BREAKER_SECONDS
        elif isinstance(exc, ResponseError):  # our script failed: a bug, not an outage
            logger.error("gateway.redis_script_error", extra={"error": str(exc)[:200]})
        else:
            logger.warning("gateway.redis_timeout", extra={"error": type(exc).__name__})

    async def admit(
        self,
        *,
        key_hash: str,
        listing_name: str,
        kind: str,
        tool: str,
        session_id: str,
        now: float,
        call_id: str = "",
        may_load: bool = True,
    ) -> Admission:
        """`may_load=False` (a throttled address, gateway.authfail): a key Redis does not
        know is INVALID rather than looked up in PostgreSQL."""
        if self.available(now):
            try:
                return await self._admit_redis(
                    key_hash, listing_name, kind, tool, session_id, now, call_id, may_load
                )
            except REDIS_FAILURES as exc:
                self.mark_down(now, exc)
        return await self.local.admit(
            key_hash=key_hash,
            listing_name=listing_name,
            kind=kind,
            tool=tool,
            session_id=session_id,
            now=now,
            paid_allowed=False,
            may_load=may_load,
        )

    async def _admit_redis(
        self,
        key_hash: str,
        listing_name: str,
        kind: str,
        tool: str,
        session_id: str,
        now: float,
        call_id: str,
        may_load: bool = True,
    ) -> Admission:
        if self._heartbeat is None:
            self._heartbeat = asyncio.ensure_future(self._beat())
        args: list[Any] = [
            key_hash,
            listing_name,
            kind,
            tool,
            session_id,
            repr(now),
            day_key(now),
            f"{call_id} {self.gateway_id}" if call_id else "",
        ]
        reply = await self._admit(args)
        if reply[0] == MISS and not may_load:
            return Admission(INVALID)
        if reply[0] == MISS:
            ent, text, stale = await self._stale.load(key_hash, self._loader, now)
            args.append(text)
            if ent is not None and self._counters_loader is not None:
                args.append("?")  # the script reports counters Redis lost (RESEED)
            reply = await self._admit(args)
            if reply[0] == RESEED and ent is not None and self._counters_loader is not None:
                try:
                    if stale:  # only the ledger knows the lost counters, and it cannot answer
                        raise StoreUnavailable("counters lost while PostgreSQL is unavailable")
                    got = await self._ledger(self._counters_loader, ent, now)
                except StoreUnavailable:
                    # The script cached the entitlement before it asked for counters; the
                    # warm path must not find it and spend from zero.
                    await self.client.call("DEL", "tb:ent:" + key_hash)
                    raise
                args[9:] = ["=", got.calls, got.spent_today, got.spent_month]
                reply = await self._admit(args)
        verdict = int(reply[0])
        policy = POLICY_CALLS if kind == KIND_CALL else POLICY_METHODS
        if verdict in (INVALID, WRONG_LISTING, MISS):
            return Admission(INVALID if verdict == MISS else verdict)
        ent = self._memo.get(reply[1])
        self.local.remember(key_hash, ent, now)
        if verdict == OK:
            flat = reply[7]
            reserved = [(flat[i].decode(), int(flat[i + 1])) for i in range(0, len(flat), 2)]
            return Admission(
                OK,
                ent,
                amount=int(reply[2]),
                quota_remaining=None if reply[3] < 0 else int(reply[3]),
                rate_remaining=int(reply[4]),
                rate_reset=int(reply[5]),
                rate_limit=int(reply[6]) if reply[4] >= 0 else 0,
                rate_policy=policy,
                reserved=reserved,
            )
        adm = Admission(verdict, ent, rate_policy=policy)
        if verdict == RATE_LIMITED:
            adm.retry_after, adm.rate_limit = int(reply[2]), int(reply[3])
            adm.rate_remaining, adm.rate_reset = 0, int(reply[4])
        elif verdict == SPEND_CAP:
            adm.cap_window = "day" if int(reply[2]) == 1 else "month"
        return adm

    async def _ledger(self, load: CountersLoader, ent: Entitlement, now: float) -> UsageCounters:
        """One ledger query per key and window at a time, however many requests missed
        together (after a Redis restart every key misses at once)."""
        flight = (ent.license_id, ent.key_id, int(ent.period_start), day_key(now))
        fut = self._seeding.get(flight)
        if fut is None:
            fut = asyncio.ensure_future(load(ent, now))
            self._seeding[flight] = fut
            fut.add_done_callback(lambda _: self._seeding.pop(flight, None))
        return await asyncio.shield(fut)

    async def session_bind(self, session_id: str, key_id: int, now: float) -> None:
        self.local.session_bind(session_id, key_id, now)
        if self.available(now):
            try:
                await self.client.call(
                    "SET", f"tb:sess:{session_id}", key_id, "EX", self._session_ttl
                )
            except REDIS_FAILURES as exc:
                self.mark_down(now, exc)

    async def session_forget(self, session_id: str, now: float) -> None:
        self.local.session_forget(session_id)
        if self.available(now):
            try:
                await self.client.call("DEL", f"tb:sess:{session_id}")
            except REDIS_FAILURES as exc:
                self.mark_down(now, exc)

    def record(
        self,
        event_json: bytes,
        *,
        call_id: str,
        refund: bool,
        reserved: list[tuple[str, int]],
        now: float,
        on_failure: Callable[[], None],
    ) -> None:
        """XADD the finished call (and refund its reservations) with the next write to Redis,
        at most `_RECORD_DELAY` from now. If that fails, one awaited retry (which also reloads
        the script after a Redis restart), then `on_failure` (the in-process queue)."""
        args: list[Any] = [self._stream, event_json, "1" if refund else "0", call_id]
        for ck, delta in reserved:
            args += [ck, delta]
        if not self.available(now):
            on_failure()
            return
        try:
            fut = self.client.defer("EVALSHA", self._record.sha, 0, *args, delay=_RECORD_DELAY)
        except REDIS_FAILURES:
            fut = None
        if fut is None:
            self._spawn(self._record_retry(args, now, on_failure))
            return

        def done(f: asyncio.Future[Any]) -> None:
            if f.cancelled() or f.exception() is not None:
                self._spawn(self._record_retry(args, now, on_failure))

        fut.add_done_callback(done)

    async def _record_retry(
        self, args: list[Any], now: float, on_failure: Callable[[], None]
    ) -> None:
        try:
            await self._record(args)
        except REDIS_FAILURES as exc:
            self.mark_down(now, exc)
            on_failure()

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        await self.client.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
