"""Answers that arrive after their request: billed once, when they arrive.

Two cases (shared/mcp/README.md section 3):

- Resumption: a tools/call's POST stream breaks before the answer (the client went away, the
  stream died). The call is recorded unbilled at once, as any unanswered call, and remembered
  per session (`tb:pend:<session id>`, field = the JSON-RPC id as JSON). When the answer later
  passes on a GET stream of that session (the client resumed with Last-Event-ID and the
  upstream replayed it), it is billed then, with outcome `replayed`.
- Tasks (2025-11-25): a tools/call that returns a CreateTaskResult is recorded unbilled
  (`task_created`) and the task id is bound to the key (`tb:task:<listing id>:<task id>`,
  field `k`). tasks/get, tasks/result and tasks/cancel for a task of another key, or one we
  never saw created, are refused without reaching the upstream. The answer to tasks/result
  settles the task: billed unless it is an error.

Settling is one script: it removes the pending entry and, only if it was still there, writes
the record to the usage stream (and puts the quota and spend counters back), so however many
gateways see the same answer, and however often it is replayed, it is billed once. A settled
answer's record has its own call id, derived from the original one (uuid5), which the ledger
keeps unique as well. Without Redis (the demo) the same rules run on in-process dicts.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from gateway import fastjson
from gateway.resp import RespClient

logger = logging.getLogger(__name__)

_NAMESPACE = uuid.UUID("0b6f1c1e-5f0e-4d59-9a43-6f1d2b8c7a10")
TASK_TTL_DEFAULT = 24 * 3600
TASK_TTL_MAX = 7 * 24 * 3600

_SETTLE_LUA = """
if redis.call('HDEL', ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XADD', ARGV[3], '*', 'e', ARGV[4])
for i = 5, #ARGV, 2 do
  redis.call('INCRBY', ARGV[i], ARGV[i + 1])
  redis.call('EXPIRE', ARGV[i], 3456000)
end
return 1
"""


def settled_call_id(call_id: str) -> str:
    """The settled answer's call id: derived, so anyone can trace it to the original."""
    return str(uuid.uuid5(_NAMESPACE, call_id))


def rpc_id_key(rpc_id: Any) -> str:
    """A JSON-RPC id as a map key that keeps 1 and "1" apart."""
    return fastjson.dumps(rpc_id).decode()


def task_ttl(task: dict[str, Any]) -> int:
    """How long we keep a task's binding: the task's own ttl (ms) if given, bounded."""
    ttl = task.get("ttl")
    if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0:
        return int(min(max(ttl / 1000, 3600), TASK_TTL_MAX))
    return TASK_TTL_DEFAULT


def settled_record(template: dict[str, Any], *, billable: bool, outcome: str) -> dict[str, Any]:
    """The usage record for a settled answer, from the pending call's record."""
    record = dict(template)
    reserved = record.pop("reserved", None) or []
    record["reserved_back"] = reserved if billable else []
    record["call_id"] = settled_call_id(template["call_id"])
    record["billable"] = billable
    record["outcome"] = outcome
    record["unit_amount"] = template["amount"] if billable else 0
    record.pop("amount", None)
    record["occurred_at"] = time.time()
    return record


class RedisDeferred:
    """Pending answers in Redis, shared by every gateway process."""

    def __init__(self, client: RespClient, *, stream: str, session_ttl: int) -> None:
        self.client = client
        self.stream = stream
        self.session_ttl = session_ttl
        self._settle = client.script(_SETTLE_LUA)

    async def remember_call(self, session_id: str, rpc_id: Any, template: dict[str, Any]) -> None:
        key = f"tb:pend:{session_id}"
        await self.client.call("HSET", key, rpc_id_key(rpc_id), fastjson.dumps(template))
        await self.client.call("EXPIRE", key, self.session_ttl)

    async def pending_calls(self, session_id: str) -> dict[str, dict[str, Any]]:
        flat = await self.client.call("HGETALL", f"tb:pend:{session_id}")
        return {flat[i].decode(): fastjson.loads(flat[i + 1]) for i in range(0, len(flat or []), 2)}

    async def settle_call(self, session_id: str, rpc_id: Any, record: dict[str, Any]) -> bool:
        return await self._run_settle(f"tb:pend:{session_id}", rpc_id_key(rpc_id), record)

    async def remember_task(
        self, listing_id: int, task_id: str, key_id: int, template: dict[str, Any], ttl: int
    ) -> None:
        key = f"tb:task:{listing_id}:{task_id}"
        await self.client.call("HSET", key, "k", key_id, "r", fastjson.dumps(template))
        await self.client.call("EXPIRE", key, ttl)

    async def task(self, listing_id: int, task_id: str) -> tuple[int, dict[str, Any] | None] | None:
        """(owner key id, pending record or None once settled), or None for an unknown task."""
        owner, raw = await self.client.call("HMGET", f"tb:task:{listing_id}:{task_id}", "k", "r")
        if owner is None:
            return None
        return int(owner), (fastjson.loads(raw) if raw is not None else None)

    async def task_owners(self, listing_id: int, task_ids: list[str]) -> dict[str, int]:
        """task id -> the key id that created it, for the ids we know."""
        owners = await asyncio.gather(
            *(self.client.call("HGET", f"tb:task:{listing_id}:{t}", "k") for t in task_ids)
        )
        return {t: int(o) for t, o in zip(task_ids, owners, strict=True) if o is not None}

    async def settle_task(self, listing_id: int, task_id: str, record: dict[str, Any]) -> bool:
        return await self._run_settle(f"tb:task:{listing_id}:{task_id}", "r", record)

    async def _run_settle(self, key: str, field: str, record: dict[str, Any]) -> bool:
        args: list[Any] = [key, field, self.stream, fastjson.dumps(record)]
        if record["billable"]:
            for counter, delta in record.get("reserved_back", []):
                args += [counter, delta]
        record.pop("reserved_back", None)
        return bool(await self._settle(args))


class LocalDeferred:
    """The in-process twin (the demo without Redis): same rules, this process only."""

    def __init__(self, counters: dict[str, int], put: Any) -> None:
        self._calls: dict[str, dict[str, dict[str, Any]]] = {}
        self._tasks: dict[tuple[int, str], tuple[int, dict[str, Any] | None]] = {}
        self._counters = counters
        self._put = put  # the in-process usage queue's put

    async def remember_call(self, session_id: str, rpc_id: Any, template: dict[str, Any]) -> None:
        self._calls.setdefault(session_id, {})[rpc_id_key(rpc_id)] = template

    async def pending_calls(self, session_id: str) -> dict[str, dict[str, Any]]:
        return dict(self._calls.get(session_id, {}))

    async def settle_call(self, session_id: str, rpc_id: Any, record: dict[str, Any]) -> bool:
        pending = self._calls.get(session_id, {})
        if pending.pop(rpc_id_key(rpc_id), None) is None:
            return False
        self._write(record)
        return True

    async def remember_task(
        self, listing_id: int, task_id: str, key_id: int, template: dict[str, Any], ttl: int
    ) -> None:
        self._tasks[(listing_id, task_id)] = (key_id, template)

    async def task(self, listing_id: int, task_id: str) -> tuple[int, dict[str, Any] | None] | None:
        return self._tasks.get((listing_id, task_id))

    async def task_owners(self, listing_id: int, task_ids: list[str]) -> dict[str, int]:
        hits = {t: self._tasks.get((listing_id, t)) for t in task_ids}
        return {t: hit[0] for t, hit in hits.items() if hit is not None}

    async def settle_task(self, listing_id: int, task_id: str, record: dict[str, Any]) -> bool:
        hit = self._tasks.get((listing_id, task_id))
        if hit is None or hit[1] is None:
            return False
        self._tasks[(listing_id, task_id)] = (hit[0], None)
        self._write(record)
        return True

    def _write(self, record: dict[str, Any]) -> None:
        if record["billable"]:
            for counter, delta in record.get("reserved_back", []):
                self._counters[counter] = self._counters.get(counter, 0) + delta
        record.pop("reserved_back", None)
        self._put(record)
