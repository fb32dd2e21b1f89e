"""Page benchmark: p50/p95 latency of the people pages at 50,000 listings.

Builds on search_bench.py (same catalogue generator, same uvicorn setup) in its own database
(default `tb_bench_pages`), then adds what the buyer and creator pages read: a creator owning
200 hosted listings with plans, 5,000 sales, a buyer with 20 licenses and 3 keys each, and
100,000 usage-ledger rows over 30 days (40,000 of them on the license whose page is measured).

It measures, sequentially from one logged-in client (latency, not throughput): the home page,
searches with facets, a hosted listing page with plans, a registry-only listing page, My
licenses, one license's page (keys, usage per day and per tool, client configuration), the
creator dashboard (earnings per month) and a creator's listing page (calls per tool).

    .venv/bin/python benchmarks/pages_bench.py [--listings 50000] [--requests 60] [--reuse]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("BENCH_SEARCH_PORT", "18950")

import search_bench  # noqa: E402

DEFAULT_DB = "tb_bench_pages"
PASSWORD = "bench-password-not-secret"  # noqa: S105 - a throwaway local benchmark account
HOSTED = 200
USAGE_ROWS = 100_000
HOT_LICENSE_ROWS = 40_000
SALES = 5_000


def seed_people() -> dict[str, object]:
    """Creator, buyer, plans, licenses, keys, sales and usage rows, in bulk."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from billing.keys import key_display_prefix, key_generate, key_hash
    from billing.models import (
        ApiKey,
        ConnectAccount,
        Creator,
        License,
        LicenseSource,
        Plan,
        PlanPrice,
        Sale,
    )
    from gateway.models import HostedUpstream, UsageEvent
    from marketplace.models import Listing

    rng = random.Random(11)
    users = get_user_model()
    maker = users.objects.create_user("bench-maker", "maker@example.com", PASSWORD)
    buyer = users.objects.create_user("bench-buyer", "buyer@example.com", PASSWORD)
    creator = Creator.objects.create(user=maker, handle="bench-maker")
    ConnectAccount.objects.create(
        creator=creator,
        stripe_account_id="acct_bench",
        charges_enabled=True,
        payouts_enabled=True,
        details_submitted=True,
    )
    listings = list(Listing.objects.filter(status="active").order_by("name")[:HOSTED])
    Listing.objects.filter(pk__in=[x.pk for x in listings]).update(
        owner=maker, price_models=",free,per_call,"
    )
    now = timezone.now()
    HostedUpstream.objects.bulk_create(
        HostedUpstream(listing=x, url="https://mcp.example.com/mcp") for x in listings
    )
    plans: list[Plan] = []
    for listing in listings:
        plans.append(Plan(listing=listing, kind="free", name="Free", included_calls=100))
        plans.append(
            Plan(listing=listing, kind="per_call", name="PAYG", meter_event_name="bench_meter")
        )
    Plan.objects.bulk_create(plans)
    PlanPrice.objects.bulk_create(
        PlanPrice(
            plan=plan,
            version=1,
            per_call_amount=3 if plan.kind == "per_call" else 0,
            tool_prices={"search": {"unit_amount": 5}, "admin": {"excluded": True}},
            effective_at=now,
        )
        for plan in plans
    )
    licenses = []
    for plan in plans[1 : 1 + 40 : 2]:  # 20 per-call plans
        licenses.append(
            License(
                buyer=buyer,
                listing=plan.listing,
                plan=plan,
                plan_price=plan.prices.get(),
                status_changed_at=now,
                source=LicenseSource.GRANT,
            )
        )
    License.objects.bulk_create(licenses)
    keys = []
    for lic in licenses:
        for _ in range(3):
            raw = key_generate(live=False)
            keys.append(
                ApiKey(license=lic, key_hash=key_hash(raw), display_prefix=key_display_prefix(raw))
            )
    ApiKey.objects.bulk_create(keys)
    tools = ["search", "forecast", "add", "lookup", "summarise", "fetch", "admin", "ping"]
    outcomes = ["success"] * 90 + ["tool_error"] * 6 + ["timeout", "upstream_error"] * 2
    rows = []
    hot = licenses[0]
    for i in range(USAGE_ROWS):
        lic = hot if i < HOT_LICENSE_ROWS else licenses[rng.randrange(len(licenses))]
        outcome = rng.choice(outcomes)
        rows.append(
            UsageEvent(
                call_id=uuid.uuid4(),
                key_id=1,
                license_id=lic.pk,
                listing_id=lic.listing_id,
                plan_id=lic.plan_id,
                tool=rng.choice(tools),
                unit_amount=3 if outcome == "success" else 0,
                currency="usd",
                billable=outcome == "success",
                outcome=outcome,
                latency_ms=rng.randint(5, 900),
                occurred_at=now - timedelta(seconds=rng.randint(0, 30 * 86400)),
                meter_reported_at=now,
            )
        )
        if len(rows) == 5000:
            UsageEvent.objects.bulk_create(rows)
            rows = []
    UsageEvent.objects.bulk_create(rows)
    sales = []
    for i in range(SALES):
        gross = rng.choice([490, 900, 1500])
        fee = gross * 15 // 100
        sales.append(
            Sale(
                kind="one_time",
                source_ref=f"pi_bench_{i}",
                creator=creator,
                buyer=buyer,
                listing=listings[i % len(listings)],
                gross_amount=gross,
                platform_fee_bps=1500,
                platform_fee_amount=fee,
                net_amount=gross - fee,
                currency="usd",
            )
        )
    Sale.objects.bulk_create(sales)
    # created_at is auto_now_add: spread the sales over a year after the insert.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_sale SET created_at = now() - (id % 365) * interval '1 day'")
        for table in ("gateway_usageevent", "billing_sale", "billing_license", "billing_apikey"):
            cursor.execute(f"VACUUM ANALYZE {table}")
    return {"hot_license": hot.pk, "hosted": listings[0].name}


def login(client: object, username: str) -> None:
    import httpx

    if not isinstance(client, httpx.Client):
        raise TypeError("an httpx.Client")
    page = client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    if token is None:
        raise SystemExit("no CSRF token on the login page")
    done = client.post(
        "/accounts/login/",
        data={"csrfmiddlewaretoken": token[1], "username": username, "password": PASSWORD},
    )
    if done.status_code != 302:
        raise SystemExit(f"login as {username} failed: {done.status_code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listings", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=60, help="requests per page kind")
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--reuse", action="store_true", help="keep an already populated database")
    args = parser.parse_args()

    if not args.reuse:
        search_bench.recreate_database(args.db)
    search_bench.setup_django(args.db)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from billing.models import License
    from gateway.models import HostedUpstream
    from marketplace.models import Listing
    from marketplace.services import listings_refresh_from_registry

    call_command("migrate", verbosity=0)
    if not Listing.objects.exists():
        started = time.perf_counter()
        names = search_bench.populate(args.listings, 7)
        listings_refresh_from_registry(names=names)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE marketplace_listing")
            cursor.execute("VACUUM ANALYZE registry_sync_serverversion")
        print(f"catalogue of {len(names)} listings built in {time.perf_counter() - started:.0f} s")
    if not get_user_model().objects.filter(username="bench-buyer").exists():
        started = time.perf_counter()
        seed_people()
        print(f"people data seeded in {time.perf_counter() - started:.0f} s")
    hot = License.objects.filter(buyer__username="bench-buyer").order_by("pk").first()
    if hot is None:
        raise SystemExit("benchmark data is missing: run without --reuse")
    hosted = HostedUpstream.objects.select_related("listing").order_by("listing__name").first()
    if hosted is None:
        raise SystemExit("benchmark data is missing: run without --reuse")
    plain = Listing.objects.filter(owner__isnull=True, status="active").order_by("-name").first()
    if plain is None:
        raise SystemExit("benchmark data is missing: run without --reuse")
    print(f"listings in the catalogue: {Listing.objects.count()}")

    import httpx

    proc = search_bench.start_server(args.db)
    base = f"http://127.0.0.1:{search_bench.PORT}"
    try:
        anonymous = httpx.Client(base_url=base, timeout=10)
        buyer = httpx.Client(base_url=base, timeout=10)
        maker = httpx.Client(base_url=base, timeout=10)
        login(buyer, "bench-buyer")
        login(maker, "bench-maker")
        kinds: list[tuple[str, httpx.Client, list[str]]] = [
            ("home /", anonymous, ["/"]),
            ("search q=common", anonymous, ["/?q=server", "/?q=github", "/?q=weather+forecast"]),
            (
                "search + facets",
                anonymous,
                [
                    "/?q=data&transport=remote&price_model=per_call",
                    "/?price_model=per_call&free_tier=on",
                    "/?package_type=npm&ordering=-updated",
                ],
            ),
            ("search (htmx partial)", anonymous, ["/?q=server"]),
            ("listing, hosted + plans", anonymous, [f"/servers/{quote(hosted.listing.name)}"]),
            ("listing, registry only", anonymous, [f"/servers/{quote(plain.name)}"]),
            ("my licenses", buyer, ["/me/licenses/"]),
            ("license: keys+usage 40k calls", buyer, [f"/me/licenses/{hot.pk}/"]),
            ("creator dashboard 5k sales", maker, ["/creator/"]),
            ("creator listing + tool stats", maker, [f"/creator/listings/{hot.listing.name}/"]),
        ]
        print(f"\n{'page':34} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for label, client, paths in kinds:
            headers = {"HX-Request": "true"} if "htmx" in label else {}
            client.headers.update(headers)
            search_bench.measure(client, paths, 5)  # warm-up: connections, template caches
            timings = search_bench.measure(client, paths, args.requests)
            for key in headers:
                del client.headers[key]
            print(
                f"{label:34} {statistics.median(timings):8.1f} "
                f"{search_bench.percentile(timings, 95):8.1f} {max(timings):8.1f}"
            )
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
