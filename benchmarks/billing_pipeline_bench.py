"""Billing pipeline benchmark: sustained metered load through one gateway process, with the real
Celery worker and beat draining the usage stream into the ledger and reporting it to Stripe
(the fake Stripe, over HTTP, through the real `stripe` client); then the time until Stripe's
meter totals equal the ledger.

    .venv/bin/python benchmarks/billing_pipeline_bench.py [--seconds 60] [--customers 20]
                                                            [--connections 16]

Every call is a paid tools/call (1 cent, pay per call) by one of `--customers` buyers (one
key, one Stripe customer each), to the no-op upstream. Printed: calls served per second, the
usage backlog while the load runs (stream entries not yet in the ledger, sealed reports not yet
sent), then after the load stops the seconds until the ledger holds every call and until
Stripe's totals equal the ledger, the meter events sent, and the checks that nothing was
counted twice (upstream answers = billable ledger rows = Stripe's total). Then a burst
(`--burst`, default 120,000: a minute at 2,000 calls/s) of finished calls goes straight onto
the usage stream, to measure what the drain and the reporter sustain beyond what one gateway
process serves on this machine. Needs wrk,
redis-server and PostgreSQL on 127.0.0.1:5432. Ports 18590-18594. Results also go to
benchmarks/results/billing_pipeline_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_bench import (
    ADD_SCHEMA,
    fresh_database,
    gateway_cmd,
    parse_wrk,
    redis_cmd,
    wait_port,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REDIS_PORT, NOOP_PORT, GW_PORT, STRIPE_PORT = 18590, 18591, 18592, 18593
DB_NAME = "tb_billing_bench"
METER = "bench_calls"
STRIPE_KEY = "sk_test_billing_bench"
ENV = {
    **os.environ,
    "DJANGO_SETTINGS_MODULE": "config.settings.base",
    "DEBUG": "0",
    "SECRET_KEY": "bench-only-secret-key",
    "LICENSE_KEY_PEPPER": "bench-only-pepper",
    "GATEWAY_IDENTITY_SECRET": "bench-only-identity",
    "GATEWAY_UPSTREAM_SECRET_KEY": "bench-only-upstream-key",
    "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    "REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
    "CELERY_BROKER_URL": f"redis://127.0.0.1:{REDIS_PORT}/1",
    "STRIPE_API_BASE": f"http://127.0.0.1:{STRIPE_PORT}",
    "STRIPE_SECRET_KEY": STRIPE_KEY,
    "GATEWAY_UPSTREAM_ALLOWLIST": f"127.0.0.1:{NOOP_PORT}",
    "LOG_LEVEL": "WARNING",
}


def setup_database(customers: int) -> list[str]:
    """A fresh database: one hosted pay-per-call listing, and per buyer a metered
    subscription (its Stripe customer made on the fake Stripe) with one key."""
    fresh_database(DB_NAME, ENV)
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from billing.models import (
        Creator,
        CreatorSubscription,
        LicenseSource,
        Plan,
        PlanKind,
        PlanPrice,
    )
    from billing.services.licenses import api_key_create, license_issue
    from billing.stripe_client import get_client
    from gateway.manifest import manifest_hash, tool_hashes
    from gateway.models import HostedUpstream, ToolManifest
    from marketplace.models import Listing

    stripe = get_client()
    stripe.v1.billing.meters.create(
        {
            "display_name": "bench calls",
            "event_name": METER,
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    users = get_user_model().objects
    owner = users.create_user("bench-owner")
    creator = Creator.objects.create(user=owner, handle="bench")
    listing = Listing.objects.create(name="io.github.bench/billing", owner=owner)
    HostedUpstream.objects.create(listing=listing, url=f"http://127.0.0.1:{NOOP_PORT}/mcp")
    # Its creator approved the tool (the gateway refuses every call of a listing whose tools
    # were never approved: the rug-pull guard).
    tools = [{"name": "add", "description": "Add two integers.", "inputSchema": ADD_SCHEMA}]
    ToolManifest.objects.create(
        listing=listing,
        version=1,
        manifest_hash=manifest_hash(tool_hashes(tools)),
        tools=tools,
        tool_hashes=tool_hashes(tools),
        approved_by=owner,
        approved_at=timezone.now(),
    )
    plan = Plan.objects.create(
        listing=listing,
        kind=PlanKind.PER_CALL,
        name="bench",
        rate_limit_per_minute=100_000,
        meter_event_name=METER,
    )
    price = PlanPrice.objects.create(
        plan=plan, version=1, per_call_amount=1, effective_at=timezone.now()
    )
    keys = []
    for i in range(customers):
        buyer = users.create_user(f"bench-buyer-{i}")
        customer = stripe.v1.customers.create({"email": f"buyer{i}@example.com"}).id
        sub = CreatorSubscription.objects.create(
            buyer=buyer,
            creator=creator,
            stripe_subscription_id=f"sub_bench_{i}",
            stripe_customer_id=customer,
            status="active",
            platform_fee_bps=0,
        )
        lic = license_issue(
            buyer=buyer,
            plan=plan,
            plan_price=price,
            source=LicenseSource.GRANT,
            reason="bench",
            creator_subscription=sub,
        )
        keys.append(api_key_create(license=lic)[1])
    return keys


def noop_count() -> int:
    """POSTs the no-op upstream answered (each a billable result)."""
    with socket.create_connection(("127.0.0.1", NOOP_PORT)) as s:
        s.sendall(b"GET /count HTTP/1.1\r\nHost: x\r\n\r\n")
        return int(s.recv(4096).split(b"\r\n\r\n", 1)[1])


def wrk_script(tmp: Path, keys: list[str]) -> Path:
    """Each request takes the next key, so every customer calls all the time."""
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add"}}
    )
    script = tmp / "calls.lua"
    script.write_text(
        f"keys = {{{', '.join(json.dumps(k) for k in keys)}}}\n"
        "i = 0\n"
        "request = function()\n"
        "  i = i % #keys + 1\n"
        "  return wrk.format('POST', nil, {['Content-Type'] = 'application/json',\n"
        "    ['Accept'] = 'application/json, text/event-stream',\n"
        "    ['Authorization'] = 'Bearer ' .. keys[i]}, " + json.dumps(body) + ")\n"
        "end\n"
    )
    return script


def backlog() -> dict[str, int]:
    """What is not in Stripe yet: stream entries, open and sealed-but-unsent reports."""
    import redis
    from django.db.models import Count

    from gateway.models import MeterReport

    by_status = dict(
        MeterReport.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n")
    )
    stream = redis.Redis(port=REDIS_PORT).xlen("tb:usage")
    return {
        "stream": int(stream),
        "open": by_status.get("open", 0),
        "pending": by_status.get("pending", 0),
        "sent": by_status.get("sent", 0),
        "parked": by_status.get("parked", 0),
    }


def totals(customers: list[str], start: int, end: int) -> tuple[int, int, int]:
    """(billable ledger rows, ledger sum, Stripe's summed meter totals) over [start, end)."""
    from django.db.models import Count, Sum

    from billing.stripe_client import get_client
    from gateway.models import UsageEvent

    agg = UsageEvent.objects.filter(billable=True).aggregate(n=Count("id"), s=Sum("unit_amount"))
    stripe = get_client()
    meter_id = next(
        m.id for m in stripe.v1.billing.meters.list().auto_paging_iter() if m.event_name == METER
    )
    theirs = 0.0
    for customer in customers:
        summaries = stripe.v1.billing.meters.event_summaries.list(
            meter_id, {"customer": customer, "start_time": start, "end_time": end}
        )
        theirs += sum(float(s.aggregated_value) for s in summaries.auto_paging_iter())
    return int(agg["n"] or 0), int(agg["s"] or 0), int(theirs)


def burst(customers: list[str], n: int) -> float:
    """Put `n` finished paid calls of the last minute straight onto the usage stream (what a
    gateway fleet writes at n/60 calls a second for a minute); returns when they were written."""
    import uuid

    import redis

    from billing.models import License

    licenses = {
        lic.creator_subscription.stripe_customer_id: lic
        for lic in License.objects.select_related("creator_subscription")
        if lic.creator_subscription is not None
    }
    client = redis.Redis(port=REDIS_PORT)
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        lic = licenses[customers[i % len(customers)]]
        record = {
            "call_id": str(uuid.uuid4()),
            "key_id": 0,
            "license_id": lic.pk,
            "listing_id": lic.listing_id,
            "plan_id": lic.plan_id,
            "tool": "add",
            "unit_amount": 1,
            "currency": "usd",
            "billable": True,
            "outcome": "success",
            "latency_ms": 1,
            "occurred_at": now - 60 + 60 * i / n,
            "stripe_customer_id": customers[i % len(customers)],
            "meter_event_name": METER,
        }
        pipe.xadd("tb:usage", {"e": json.dumps(record)})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    return time.time()


def catch_up(
    customers: list[str], window: tuple[int, int], expected: int, deadline: float
) -> tuple[float | None, float | None, tuple[int, int, int]]:
    """Seconds from now until the ledger holds `expected` billable calls, and until Stripe's
    totals equal the ledger."""
    t0 = time.time()
    ledger_at = equal_at = None
    got = (0, 0, 0)
    while time.time() - t0 < deadline:
        got = totals(customers, *window)
        if ledger_at is None and got[0] >= expected:
            ledger_at = time.time() - t0
        if ledger_at is not None and got[2] == got[1]:
            equal_at = time.time() - t0
            break
        time.sleep(2)
    return ledger_at, equal_at, got


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--deadline", type=int, default=300, help="give up after this long")
    parser.add_argument(
        "--burst",
        type=int,
        default=120_000,
        help="then this many calls of one minute straight onto the stream (0: skip): the "
        "pipeline's own capacity, beyond what one gateway process serves here",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="tb-billing-bench-"))
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(name: str, cmd: list[str], port: int | None = None) -> None:
        log = (tmp / f"{name}.log").open("wb")
        procs[name] = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=log, stderr=log)
        if port:
            wait_port(port)

    py = str(BIN / "python")
    try:
        spawn("redis", redis_cmd(REDIS_PORT, tmp), REDIS_PORT)
        spawn(
            "stripe", [py, "manage.py", "run_fake_stripe", "--port", str(STRIPE_PORT)], STRIPE_PORT
        )
        keys = setup_database(args.customers)
        from billing.models import CreatorSubscription

        customers = list(CreatorSubscription.objects.values_list("stripe_customer_id", flat=True))
        spawn("upstream", [py, "benchmarks/noop_upstream.py", "--port", str(NOOP_PORT)], NOOP_PORT)
        spawn(
            "gateway",
            gateway_cmd(GW_PORT),
            GW_PORT,
        )
        celery = [str(BIN / "celery"), "-A", "config"]
        spawn(
            "worker",
            [
                *celery,
                "worker",
                "-c",
                "2",
                "-l",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
        )
        spawn("beat", [*celery, "beat", "-l", "WARNING", "-s", str(tmp / "beat-schedule")])
        time.sleep(3)  # beat and the worker connect

        started = time.time()
        script = wrk_script(tmp, keys)
        load = subprocess.Popen(
            [
                "wrk",
                "-t1",
                f"-c{args.connections}",
                f"-d{args.seconds}s",
                "--latency",
                "-s",
                str(script),
                f"http://127.0.0.1:{GW_PORT}/mcp/io.github.bench/billing",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        peaks: dict[str, int] = {}
        samples = []
        while load.poll() is None:
            time.sleep(5)
            b = backlog()
            samples.append({"t": round(time.time() - started), **b})
            for k in ("stream", "open", "pending"):
                peaks[k] = max(peaks.get(k, 0), b[k])
            print(f"  t={samples[-1]['t']:>3}s  {b}", flush=True)
        out = load.communicate()[0]
        stopped = time.time()
        result = parse_wrk(out)
        served = noop_count()
        window = (int(started) // 60 * 60, (int(stopped) // 60 + 2) * 60)
        ledger_at, equal_at, (n, s, theirs) = catch_up(customers, window, served, args.deadline)
        final = backlog()
        report = {
            "seconds": args.seconds,
            "customers": args.customers,
            "connections": args.connections,
            "calls_per_second": round(result["rps"], 1),
            "requests": result["requests"],
            "non_2xx": result["errors"],
            "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"],
            "upstream_answers": served,
            "ledger_billable_rows": n,
            "ledger_sum": s,
            "stripe_total": theirs,
            "peak_backlog": peaks,
            "ledger_complete_after_s": round(ledger_at, 1) if ledger_at is not None else None,
            "stripe_equals_ledger_after_s": round(equal_at, 1) if equal_at is not None else None,
            "meter_events_sent": final["sent"],
            "meter_events_parked": final["parked"],
        }
        print(json.dumps(report, indent=2))
        ok = served == n == s == theirs
        print(
            f"billable calls {n} at {result['rps']:.0f}/s; Stripe equals the ledger "
            f"{report['stripe_equals_ledger_after_s']} s after the load stopped; "
            f"{final['sent']} meter events for {n} calls; "
            + ("nothing lost or counted twice" if ok else "MISMATCH")
        )
        if args.burst:
            burst_started = time.time()
            written = burst(customers, args.burst)
            burst_window = (window[0], (int(written) // 60 + 2) * 60)
            b_ledger, b_equal, (bn, bs, btheirs) = catch_up(
                customers, burst_window, n + args.burst, args.deadline
            )
            report["burst"] = {
                "calls": args.burst,
                "xadd_seconds": round(written - burst_started, 1),
                "ledger_complete_after_s": round(b_ledger, 1) if b_ledger is not None else None,
                # from the first XADD, so the drain's head start is not counted
                "drain_calls_per_second": (
                    round(args.burst / (written - burst_started + b_ledger)) if b_ledger else None
                ),
                "stripe_equals_ledger_after_s": round(b_equal, 1) if b_equal is not None else None,
                "ledger_sum": bs,
                "stripe_total": btheirs,
                "meter_events_sent": backlog()["sent"],
            }
            ok = ok and bn == n + args.burst == bs == btheirs
            print(
                f"burst: {args.burst} calls of one minute onto the stream; in the ledger after "
                f"{report['burst']['ledger_complete_after_s']} s "
                f"({report['burst']['drain_calls_per_second']} calls/s), Stripe equals the ledger "
                f"after {report['burst']['stripe_equals_ledger_after_s']} s; "
                + ("nothing lost or counted twice" if ok else "MISMATCH")
            )
        results = ROOT / "benchmarks" / "results"
        results.mkdir(exist_ok=True)
        (results / "billing_pipeline_bench.json").write_text(
            json.dumps({**report, "samples": samples}, indent=2)
        )
        if not ok:
            sys.exit(1)
    finally:
        for proc in reversed(list(procs.values())):
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
