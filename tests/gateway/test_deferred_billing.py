"""Billing answers that arrive later: resumed GET streams and MCP tasks (2025-11-25).

Wire facts these tests rely on (seen with server-everything 2026.8.31 and our mcp_upstream.py
--resumable, mcp 2.3.0):
- A POST tools/call of a 2025-11-25 session answers with SSE whose first event is a priming
  event `id: <event id>` + `data: ` (empty); every later event has an id too. Sessions of
  2025-06-18 get no priming event.
- Dropping the POST stream does not cancel the call: the upstream stores the answer in its
  event store, and `GET` + `Mcp-Session-Id` + `Last-Event-ID` replays it (every GET with the
  same Last-Event-ID replays it again). The resumed GET stream stays open afterwards.
- server-everything replays only what it stored when the GET arrives (an answer produced later
  does not reach that GET), and it replays the whole session after that event id: the answers
  of later POSTs too (already delivered there), and their priming events as `data: {}`.
  mcp_upstream.py --resumable replays only the broken stream, sends a new priming event, then
  follows the stream live (an answer produced after the GET arrives on it).
- mcp_upstream.py's `ask_name` waits for the client's elicitation answer, so the call ends
  only when the test answers: accept {"name": "Ada"} -> success, accept {"name": 5} -> a
  result with isError true.
- Tasks: server-everything's `simulate-research-query` (execution.taskSupport "required")
  with `params.task` answers a CreateTaskResult `{"task": {"taskId", "status": "working",
  "ttl", "pollInterval": 1000, ...}}`; it completes after ~4 s. `tasks/result` blocks until
  the task is terminal, then returns the CallToolResult, and returns it again on every later
  call; `tasks/get` answers the task (status working -> completed). Task ids are per upstream
  session. Its tasks cannot end in an isError result; the scripted upstream's tasks can.
- server-everything logs one "Received MCP ..." stdout line per request, which is how a
  request refused by the gateway is shown not to have reached it.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.models import UsageEvent
from gateway.proxy import RECEIPT_KEY
from marketplace.models import Listing
from tests.gateway.conftest import (
    ALLOWLIST,
    EVERYTHING_PORT,
    PEERS,
    PORT_BASE,
    ROOT,
    UPSTREAMS,
    drain,
    post,
    rpc,
    start,
    start_gateway,
    stop,
    wait_port,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PROTOCOL = "2025-11-25"
RESUMABLE_GATEWAY_PORT, RESUMABLE_PORT = PORT_BASE + 30, PORT_BASE + 31
PRICE = 3
LONG_CALL = {"name": "trigger-long-running-operation", "arguments": {"duration": 1, "steps": 1}}
RESEARCH = "simulate-research-query"


# --- peers -------------------------------------------------------------------------------------


@dataclass
class Everything:
    url: str
    log: Path

    def requests_seen(self) -> int:
        return self.log.read_text().count("Received MCP ")


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Everything]:
    """server-everything at EVERYTHING_PORT, its stdout (one line per request) in a file."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: the npm MCP peers cannot be installed")
    subprocess.run([str(ROOT / "scripts/install-mcp-peers")], check=True, capture_output=True)
    script = PEERS / "node_modules/@modelcontextprotocol/server-everything/dist/index.js"
    env = {
        **os.environ,
        "PORT": str(EVERYTHING_PORT),
        "NODE_OPTIONS": f"--require {UPSTREAMS / 'loopback.cjs'}",
    }
    log = tmp_path_factory.mktemp("everything") / "stdout.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["node", str(script), "streamableHttp"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
    try:
        wait_port(EVERYTHING_PORT, proc)
    except Exception:
        stop(proc)
        raise
    yield Everything(f"http://127.0.0.1:{EVERYTHING_PORT}/mcp", log)
    stop(proc)


@pytest.fixture(scope="module")
def resumable(django_db_setup: None, django_db_blocker: object) -> Iterator[tuple[str, int]]:
    """mcp_upstream.py --resumable and a gateway of its own whose upstream allow-list has it
    (the shared `gateway` allows only conftest's ports): (gateway URL, upstream port)."""
    cmd = [sys.executable, str(UPSTREAMS / "mcp_upstream.py"), "--resumable"]
    upstream = start([*cmd, "--port", str(RESUMABLE_PORT)], RESUMABLE_PORT)
    try:
        allow = f"{ALLOWLIST},127.0.0.1:{RESUMABLE_PORT}"
        gw = start_gateway(RESUMABLE_GATEWAY_PORT, GATEWAY_UPSTREAM_ALLOWLIST=allow)
    except Exception:
        stop(upstream)
        raise
    yield f"http://127.0.0.1:{RESUMABLE_GATEWAY_PORT}", RESUMABLE_PORT
    stop(gw)
    stop(upstream)


# --- the wire ----------------------------------------------------------------------------------


def sse_events(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """SSE events as {field: value}; several data lines are joined with a newline."""
    fields: dict[str, list[str]] = {}
    for line in lines:
        if not line:
            if fields:
                yield {k: "\n".join(v) for k, v in fields.items()}
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value.removeprefix(" "))


def message(event: dict[str, str]) -> dict[str, Any] | None:
    data = event.get("data", "")
    return json.loads(data) if data.startswith("{") else None


def is_answer(msg: dict[str, Any] | None, rid: object) -> bool:
    return msg is not None and "method" not in msg and msg.get("id") == rid


def receipt(msg: dict[str, Any]) -> dict[str, Any] | None:
    meta = msg["result"].get("_meta") or {}
    found: dict[str, Any] | None = meta.get(RECEIPT_KEY)
    return found


@dataclass
class Session:
    """One MCP session through the gateway, spoken with raw HTTP."""

    base: str
    name: str
    key: str
    sid: str = ""

    @property
    def url(self) -> str:
        return f"{self.base}/mcp/{self.name}"

    def headers(self, **extra: str) -> dict[str, str]:
        h = {"Mcp-Session-Id": self.sid, "MCP-Protocol-Version": PROTOCOL, **extra}
        return {k: v for k, v in h.items() if v}

    @classmethod
    def open(
        cls, base: str, name: str, key: str, capabilities: dict[str, Any] | None = None
    ) -> Session:
        params: dict[str, object] = {
            "protocolVersion": PROTOCOL,
            "capabilities": capabilities or {},
            "clientInfo": {"name": "deferred-billing-test", "version": "0"},
        }
        r = post(base, name, rpc("initialize", params, rid=0), key)
        assert r.status_code == 200, r.text
        s = cls(base, name, key, r.headers["mcp-session-id"])
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        done = post(base, name, note, key, headers=s.headers())
        assert done.status_code == 202, done.text
        return s

    def post(self, body: dict[str, Any]) -> httpx.Response:
        return post(self.base, self.name, body, self.key, headers=self.headers())

    def call(self, method: str, params: dict[str, Any], rid: int) -> dict[str, Any]:
        """The answer to one request (JSON or the matching SSE event); asserts HTTP 200."""
        r = self.post(rpc(method, params, rid))
        assert r.status_code == 200, r.text
        if r.headers["content-type"].startswith("application/json"):
            answer: dict[str, Any] = r.json()
            return answer
        for event in sse_events(r.text.splitlines()):
            msg = message(event)
            if msg is not None and is_answer(msg, rid):
                return msg
        raise AssertionError(f"no answer to {rid} in {r.text!r}")

    def call_and_drop(
        self, params: dict[str, Any], rid: int, until: Callable[[dict[str, str]], bool]
    ) -> tuple[str, dict[str, Any] | None]:
        """POST a tools/call, read its SSE stream up to the first event `until` accepts, then
        disconnect. Returns that event's id (the client's Last-Event-ID) and message."""
        body = json.dumps(rpc("tools/call", params, rid)).encode()
        h = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.key}",
            **self.headers(),
        }
        with httpx.stream("POST", self.url, content=body, headers=h, timeout=10) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"].startswith("text/event-stream")
            for event in sse_events(r.iter_lines()):
                assert not is_answer(message(event), rid), "the answer came before the drop"
                if until(event):
                    assert event.get("id"), f"event without an id: {event}"
                    return event["id"], message(event)
        raise AssertionError("the stream ended before the event to drop at")

    def get_stream(
        self, last_event_id: str, read_timeout: float = 1.0
    ) -> AbstractContextManager[httpx.Response]:
        h = {
            "Accept": "text/event-stream",
            "Authorization": f"Bearer {self.key}",
            **self.headers(**{"Last-Event-ID": last_event_id}),
        }
        timeout = httpx.Timeout(10, read=read_timeout)
        return httpx.stream("GET", self.url, headers=h, timeout=timeout)

    def resume(self, last_event_id: str, rids: set[int]) -> dict[int, dict[str, Any]]:
        """GET with Last-Event-ID until the answers to `rids` were replayed. server-everything
        replays only what it already stored, so an early GET is closed and sent again."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            seen: dict[int, dict[str, Any]] = {}
            try:
                with self.get_stream(last_event_id) as r:
                    assert r.status_code == 200, r.read()
                    for event in sse_events(r.iter_lines()):
                        msg = message(event)
                        if msg is not None and "method" not in msg and msg.get("id") in rids:
                            seen[msg["id"]] = msg
                            if set(seen) == rids:
                                return seen
            except httpx.ReadTimeout:
                pass  # nothing more replayed: the answer is not there yet, ask again
        raise AssertionError(f"the answers to {rids} were never replayed")


def is_priming(event: dict[str, str]) -> bool:
    return bool(event.get("id")) and event.get("data") == ""


def is_elicitation(event: dict[str, str]) -> bool:
    msg = message(event)
    return msg is not None and msg.get("method") == "elicitation/create"


# --- the ledger --------------------------------------------------------------------------------


def rows_until(
    name: str, done: Callable[[list[UsageEvent]], bool], timeout: float = 10
) -> list[UsageEvent]:
    """The listing's ledger rows once `done` holds (drained again until then)."""
    listing_id = Listing.objects.get(name=name).pk
    deadline = time.monotonic() + timeout
    while True:
        drain()
        rows = list(UsageEvent.objects.filter(listing_id=listing_id).order_by("occurred_at", "id"))
        if done(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def barrier(s: Session, rid: int, tool: str, arguments: dict[str, Any]) -> list[UsageEvent]:
    """A normal billed call. Once its row is in the ledger, so is whatever the gateway recorded
    before answering it (the usage stream is drained in order), e.g. a second settlement of a
    replay read before. Returns the listing's other rows then."""
    answer = s.call("tools/call", {"name": tool, "arguments": arguments}, rid)
    found = receipt(answer)
    assert found is not None, answer
    assert found["amount"] == PRICE, answer
    rows = rows_until(s.name, lambda rows: any(str(r.call_id) == found["call_id"] for r in rows))
    assert any(str(r.call_id) == found["call_id"] for r in rows), "barrier call never recorded"
    return [r for r in rows if str(r.call_id) != found["call_id"]]


_key_ids = itertools.count(5_000_000)


def new_key(seed_key: Callable[..., str], name: str) -> tuple[str, int]:
    """A key priced PRICE per call, and its id. Its daily spend cap makes the gateway keep the
    key's spend counter, which shows a second charge that the ledger would hide (a settled
    answer's call id is derived from the original, so a second record would share it)."""
    key_id = next(_key_ids)
    raw = seed_key(name, key_id=key_id, unit_amount=PRICE, daily_spend_cap=1_000_000)
    return raw, key_id


def spent_today(redis_client: Any, key_id: int) -> int:
    """The key's daily spend counter (tb:sd:<key id>:<day>): what it was charged today."""
    return sum(int(redis_client.get(k) or 0) for k in redis_client.scan_iter(f"tb:sd:{key_id}:*"))


def interrupted(name: str) -> UsageEvent:
    """The single row of a call whose POST stream was dropped: recorded at once, unbilled."""
    rows = rows_until(name, lambda rows: len(rows) >= 1)
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row.billable, row.unit_amount) == (False, 0)
    assert row.outcome in ("cancelled", "upstream_error", "timeout")
    return row


def settled(name: str, original: UsageEvent) -> UsageEvent:
    """The one row written after `original` (the deferred settlement)."""
    rows = rows_until(name, lambda rows: len(rows) >= 2)
    later = [r for r in rows if r.call_id != original.call_id]
    assert len(later) == 1, [(r.outcome, r.billable, r.tool) for r in rows]
    return later[0]


def assert_billed_with_receipt(
    row: UsageEvent, original: UsageEvent, answer: dict[str, Any], outcome: str
) -> None:
    assert (row.billable, row.outcome, row.unit_amount) == (True, outcome, PRICE)
    assert (row.tool, row.key_id, row.license_id) == (
        original.tool,
        original.key_id,
        original.license_id,
    )
    assert row.call_id != original.call_id
    found = receipt(answer)
    assert found is not None, answer
    assert found["call_id"] == str(row.call_id)
    assert found["amount"] == PRICE


# --- resumed streams: server-everything --------------------------------------------------------


def test_answer_replayed_on_resumed_get_is_billed(gateway, hosted, seed_key, everything):
    name = hosted(port=EVERYTHING_PORT)
    key, _ = new_key(seed_key, name)
    s = Session.open(gateway, name, key)
    last_event_id, _ = s.call_and_drop(LONG_CALL, 7, until=is_priming)
    original = interrupted(name)
    assert original.tool == LONG_CALL["name"]

    answer = s.resume(last_event_id, {7})[7]
    assert "Long running operation completed" in answer["result"]["content"][0]["text"]
    assert_billed_with_receipt(settled(name, original), original, answer, "replayed")


def test_answer_replayed_twice_is_billed_once(gateway, hosted, seed_key, redis_client, everything):
    """The second replay also repeats the answer to a later call that was billed on its own
    POST (server-everything replays the whole session): neither is billed again."""
    name = hosted(port=EVERYTHING_PORT)
    key, key_id = new_key(seed_key, name)
    s = Session.open(gateway, name, key)
    last_event_id, _ = s.call_and_drop(LONG_CALL, 7, until=is_priming)
    original = interrupted(name)
    s.resume(last_event_id, {7})
    assert settled(name, original).billable is True
    echoed = s.call("tools/call", {"name": "echo", "arguments": {"message": "hi"}}, 8)
    assert (receipt(echoed) or {}).get("amount") == PRICE  # billed on its POST, as ever

    again = s.resume(last_event_id, {7, 8})
    assert "Long running operation completed" in again[7]["result"]["content"][0]["text"]
    rows = barrier(s, 9, "echo", {"message": "barrier"})
    billed = sorted((r.tool, r.outcome) for r in rows if r.billable)
    assert billed == [("echo", "success"), (LONG_CALL["name"], "replayed")]
    assert len(rows) == 3  # the interrupted call, its replay, the echo
    assert spent_today(redis_client, key_id) == 3 * PRICE  # replayed, echo, barrier


# --- resumed streams: mcp_upstream.py --resumable ----------------------------------------------


def test_answer_arriving_live_on_resumed_get_is_billed(hosted, seed_key, resumable):
    """The GET resumes before the call has an answer; the answer then comes live on it."""
    base, port = resumable
    name = hosted(port=port)
    key, _ = new_key(seed_key, name)
    s = Session.open(base, name, key, {"elicitation": {}})
    params = {"name": "ask_name", "arguments": {}}
    last_event_id, elicit = s.call_and_drop(params, 7, until=is_elicitation)
    assert elicit is not None
    original = interrupted(name)

    answer = None
    with s.get_stream(last_event_id, read_timeout=10) as r:
        assert r.status_code == 200, r.read()
        accept = {"action": "accept", "content": {"name": "Ada"}}
        done = s.post({"jsonrpc": "2.0", "id": elicit["id"], "result": accept})
        assert done.status_code == 202, done.text
        for event in sse_events(r.iter_lines()):
            if is_answer(msg := message(event), 7):
                answer = msg
                break
    assert answer is not None, "the answer never came on the resumed stream"
    assert answer["result"]["content"][0]["text"] == "hello Ada"
    assert_billed_with_receipt(settled(name, original), original, answer, "replayed")


def test_replayed_tool_error_is_recorded_unbilled_once(hosted, seed_key, redis_client, resumable):
    base, port = resumable
    name = hosted(port=port)
    key, key_id = new_key(seed_key, name)
    s = Session.open(base, name, key, {"elicitation": {}})
    params = {"name": "ask_name", "arguments": {}}
    last_event_id, elicit = s.call_and_drop(params, 7, until=is_elicitation)
    assert elicit is not None
    original = interrupted(name)
    wrong = {"action": "accept", "content": {"name": 5}}  # fails the tool's schema: isError
    done = s.post({"jsonrpc": "2.0", "id": elicit["id"], "result": wrong})
    assert done.status_code == 202, done.text

    answer = s.resume(last_event_id, {7})[7]
    assert answer["result"]["isError"] is True
    row = settled(name, original)
    assert (row.billable, row.outcome, row.unit_amount, row.tool) == (
        False,
        "tool_error",
        0,
        "ask_name",
    )
    assert (receipt(answer) or {}).get("amount", 0) == 0

    s.resume(last_event_id, {7})  # replayed again: still nothing to bill
    rows = barrier(s, 8, "add", {"a": 1, "b": 2})
    assert [r for r in rows if r.billable] == []
    assert sorted(r.outcome for r in rows) == sorted([original.outcome, "tool_error"])
    assert spent_today(redis_client, key_id) == PRICE  # the barrier call only


# --- tasks: server-everything ------------------------------------------------------------------


def create_task(s: Session, rid: int) -> tuple[str, dict[str, Any]]:
    params = {"name": RESEARCH, "arguments": {"topic": "tolls"}, "task": {"ttl": 60000}}
    created = s.call("tools/call", params, rid)
    task = created["result"]["task"]
    assert task["status"] == "working", created
    return task["taskId"], created


def test_task_is_billed_on_tasks_result_once(gateway, hosted, seed_key, redis_client, everything):
    name = hosted(port=EVERYTHING_PORT)
    key, key_id = new_key(seed_key, name)
    s = Session.open(gateway, name, key)
    task_id, created = create_task(s, 20)
    rows = rows_until(name, lambda rows: len(rows) >= 1)
    assert [(r.billable, r.outcome, r.tool, r.unit_amount) for r in rows] == [
        (False, "task_created", RESEARCH, 0)
    ]
    assert (receipt(created) or {}).get("amount", 0) == 0  # nothing charged at creation
    original = rows[0]

    # Poll as a client does (tasks/result would block ~4 s, past the test gateway's idle timeout).
    deadline = time.monotonic() + 30
    for rid in range(21, 100):
        status = s.call("tasks/get", {"taskId": task_id}, rid)["result"]["status"]
        if status != "working" or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert status == "completed"

    answer = s.call("tasks/result", {"taskId": task_id}, 100)
    assert "Research Report: tolls" in answer["result"]["content"][0]["text"]
    assert_billed_with_receipt(settled(name, original), original, answer, "success")

    again = s.call("tasks/result", {"taskId": task_id}, 101)
    assert again["result"]["content"] == answer["result"]["content"]
    rows = barrier(s, 102, "echo", {"message": "barrier"})
    assert sorted((r.outcome, r.billable) for r in rows) == [
        ("success", True),
        ("task_created", False),
    ]
    assert spent_today(redis_client, key_id) == 2 * PRICE  # the task's result, the barrier


def test_task_ending_in_a_tool_error_is_recorded_unbilled_once(
    gateway, hosted, seed_key, redis_client
):
    """The scripted upstream runs `tool_error` as a task: its tasks/result is an isError
    result, which settles the task unbilled (server-everything's tasks cannot fail)."""
    from tests.gateway.conftest import SCRIPTED_PORT

    name = hosted(port=SCRIPTED_PORT)
    key, key_id = new_key(seed_key, name)
    s = Session.open(gateway, name, key)
    params = {"name": "tool_error", "arguments": {}, "task": {"ttl": 60000}}
    task_id = s.call("tools/call", params, 60)["result"]["task"]["taskId"]
    rows = rows_until(name, lambda rows: len(rows) >= 1)
    assert [(r.billable, r.outcome, r.tool) for r in rows] == [
        (False, "task_created", "tool_error")
    ]

    answer = s.call("tasks/result", {"taskId": task_id}, 61)
    assert answer["result"]["isError"] is True
    row = settled(name, rows[0])
    assert (row.billable, row.outcome, row.unit_amount, row.tool) == (
        False,
        "tool_error",
        0,
        "tool_error",
    )
    found = receipt(answer)
    assert found is not None, answer
    assert (found["call_id"], found["amount"]) == (str(row.call_id), 0)

    again = s.call("tasks/result", {"taskId": task_id}, 62)
    assert again["result"]["isError"] is True
    rows = barrier(s, 63, "ok", {})
    assert sorted((r.outcome, r.billable) for r in rows) == [
        ("task_created", False),
        ("tool_error", False),
    ]
    assert spent_today(redis_client, key_id) == PRICE  # the barrier only


def test_task_id_is_refused_for_another_key(gateway, hosted, seed_key, everything):
    name = hosted(port=EVERYTHING_PORT)
    owner = Session.open(gateway, name, new_key(seed_key, name)[0])
    task_id, _ = create_task(owner, 30)
    other = Session.open(gateway, name, new_key(seed_key, name)[0])

    before = everything.requests_seen()
    for rid, method in enumerate(("tasks/get", "tasks/result", "tasks/cancel"), start=31):
        r = other.post(rpc(method, {"taskId": task_id}, rid))
        assert r.status_code == 404, (method, r.status_code, r.text)
        body = r.json()
        assert body["id"] == rid, body
        assert (body["error"]["code"], body["error"]["message"]) == (-32001, "Task not found.")
    assert everything.requests_seen() == before  # none of them reached the upstream

    mine = owner.call("tasks/get", {"taskId": task_id}, 40)
    assert mine["result"]["status"] in ("working", "completed")  # not cancelled by the other key
    assert everything.requests_seen() == before + 1


def test_tasks_list_shows_only_the_keys_own_tasks(gateway, hosted, seed_key, redis_client):
    """The scripted upstream lists three tasks (t-a, t-b, t-c) to everyone, as an upstream
    without sessions would; each key sees only the tasks bound to it, never unknown ones."""
    from billing.keys import key_hash
    from tests.gateway.conftest import SCRIPTED_PORT

    name = hosted(port=SCRIPTED_PORT)
    key_a, key_b = seed_key(name), seed_key(name)
    ent_a = json.loads(redis_client.get(f"tb:ent:{key_hash(key_a)}"))
    ent_b = json.loads(redis_client.get(f"tb:ent:{key_hash(key_b)}"))
    listing_id = ent_a["listing_id"]
    redis_client.hset(f"tb:task:{listing_id}:t-a", mapping={"k": ent_a["key_id"], "r": "{}"})
    redis_client.hset(f"tb:task:{listing_id}:t-b", mapping={"k": ent_b["key_id"], "r": "{}"})

    def listed(key: str) -> list[str]:
        r = post(gateway, name, rpc("tasks/list", {}), key)
        assert r.status_code == 200
        return [t["taskId"] for t in r.json()["result"]["tasks"]]

    assert listed(key_a) == ["t-a"]
    assert listed(key_b) == ["t-b"]
