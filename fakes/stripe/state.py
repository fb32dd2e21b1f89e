"""The fake's in-memory store: plain wire-format dicts per collection, one re-entrant lock.

Objects are kept exactly as the API returns them (JSON-safe dicts), so persisting is a JSON dump
and rendering is a deep copy plus a few live references (a subscription item's price).
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import string
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

JSON = dict[str, Any]

# Which collection holds an id with this prefix (longest prefix wins, `cs_test_` before `cs_`).
PREFIXES: dict[str, str] = {
    "cus_": "customers",
    "prod_": "products",
    "price_": "prices",
    "mtr_": "meters",
    "cs_test_": "checkout_sessions",
    "sub_": "subscriptions",
    "in_": "invoices",
    "pi_": "payment_intents",
    "ch_": "charges",
    "dp_": "disputes",
    "acct_": "accounts",
    "tr_": "transfers",
    "trr_": "transfer_reversals",
    "fee_": "application_fees",
    "re_": "refunds",
    "txn_": "balance_transactions",
    "inpay_": "invoice_payments",
    "evt_": "events",
    "bpc_": "billing_portal_configurations",
    "bps_": "billing_portal_sessions",
}
COLLECTIONS: tuple[str, ...] = (*PREFIXES.values(), "checkout_line_items", "meter_events")
_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """A random id with Stripe's real prefix (`cus_`, `cs_test_`, `evt_`, ...)."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def now() -> int:
    return int(time.time())


class FakeStripeState:
    """Every object the fake knows, guarded by `lock` (re-entrant: handlers nest calls)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.lock = threading.RLock()
        self.path = Path(path) if path else None
        self.collections: dict[str, dict[str, Any]] = {name: {} for name in COLLECTIONS}
        # Idempotency records: scope key -> {"fingerprint", "status", "body"}.
        self.idempotency: dict[str, JSON] = {}
        # Recent API requests: method, path, Stripe-Account, Idempotency-Key (for tests).
        self.requests: deque[JSON] = deque(maxlen=10_000)
        self.meter_event_seq = 0
        if self.path and self.path.exists():
            self._load()

    # -- collections -------------------------------------------------------------------------

    def collection_for(self, object_id: str) -> str | None:
        for prefix in sorted(PREFIXES, key=len, reverse=True):
            if object_id.startswith(prefix):
                return PREFIXES[prefix]
        return None

    def get(self, collection: str, object_id: str) -> JSON | None:
        with self.lock:
            obj = self.collections[collection].get(object_id)
            return obj if isinstance(obj, dict) else None

    def find(self, object_id: str) -> JSON | None:
        """Look an object up by its id prefix alone (for `expand`)."""
        collection = self.collection_for(object_id)
        return self.get(collection, object_id) if collection else None

    def put(self, collection: str, obj: JSON, key: str | None = None) -> JSON:
        with self.lock:
            self.collections[collection][key or obj["id"]] = obj
            return obj

    def all(self, collection: str) -> list[JSON]:
        """Newest first, like Stripe's list endpoints."""
        with self.lock:
            items = [v for v in self.collections[collection].values() if isinstance(v, dict)]
        return sorted(items, key=lambda o: (o.get("created") or 0, o.get("_seq", 0)), reverse=True)

    def count(self, collection: str) -> int:
        with self.lock:
            return len(self.collections[collection])

    def meter_events(self) -> list[JSON]:
        with self.lock:
            return list(self.collections["meter_events"].values())

    # -- persistence -------------------------------------------------------------------------

    def snapshot(self) -> JSON:
        with self.lock:
            return copy.deepcopy(
                {
                    "collections": self.collections,
                    "idempotency": self.idempotency,
                    "meter_event_seq": self.meter_event_seq,
                }
            )

    def save(self) -> None:
        """Write the store atomically to `path` (no-op without one)."""
        if not self.path:
            return
        with self.lock:
            data = json.dumps(self.snapshot(), separators=(",", ":"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".fake_stripe.")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(data)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _load(self) -> None:
        if self.path is None:
            return
        data = json.loads(self.path.read_text())
        for name, items in data.get("collections", {}).items():
            if name in self.collections and isinstance(items, dict):
                self.collections[name] = items
        self.idempotency = data.get("idempotency", {})
        self.meter_event_seq = int(data.get("meter_event_seq", 0))
