"""Gateway writes: hosting config for a listing, the usage ledger, meter reports."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, F, Q, Sum

from common.exceptions import ApplicationError
from common.services import model_update
from gateway.crypto import secret_encrypt
from gateway.manifest import (
    TOOL_CHANGES_KEY,
    manifest_build,
    manifest_hash,
    tool_canonical,
    tool_hash,
    tool_hashes,
)
from gateway.models import (
    HostedUpstream,
    MeterReconciliation,
    MeterReport,
    MeterReportStatus,
    ToolChange,
    ToolChangeKind,
    ToolChangeSource,
    ToolChangeStatus,
    ToolManifest,
    UsageEvent,
    UsageOutcome,
)
from gateway.ssrf import UnsafeUpstreamError, check_upstream_url

logger = logging.getLogger(__name__)

# Stripe refuses meter events older than 35 days; park those instead of sending them (an hour
# early, so an event is never refused for having aged while it waited in a chunk).
METER_EVENT_MAX_AGE = timedelta(days=35) - timedelta(hours=1)
# A minute is sealed this long after it ends: the drain runs every 5 s, so calls of the minute
# are in the ledger by then; a later one goes out as a correction event.
REPORT_SEAL_GRACE = 10.0
SEAL_BATCH = 2000
# Events sent per chunk, concurrently (Stripe takes ~1,000 meter events a second; one chunk of
# 8 in flight stays far below), and the lease is renewed between chunks.
REPORT_CHUNK = 200
REPORT_CONCURRENCY = 8
# One run stops after this long; beat starts the next one 10 s later.
REPORT_TIME_BUDGET = 50.0


def hosted_upstream_set(
    *, listing: Any, actor: Any, url: str, secret: str | None = None, enabled: bool = True
) -> HostedUpstream:
    """Create or update the upstream a listing is served from.

    Only the listing's owner or staff may; the URL must pass the SSRF guard (the same check
    runs again at every connect, against DNS rebinding). `secret=None` keeps the stored one.
    Idempotent: saving the same values changes nothing.
    """
    is_owner = listing.owner_id is not None and actor.pk == listing.owner_id
    if not (getattr(actor, "is_staff", False) or is_owner):
        raise ApplicationError("Only the listing's owner can set its upstream.", status_code=403)
    url = url.strip()
    try:
        check_upstream_url(url)
    except UnsafeUpstreamError as exc:
        raise ApplicationError(str(exc), extra={"fields": {"url": [str(exc)]}}) from exc
    data: dict[str, Any] = {"url": url, "enabled": enabled}
    if secret is not None:
        data["secret_encrypted"] = secret_encrypt(secret)
    upstream = HostedUpstream.objects.filter(listing=listing).first()
    if upstream is None:
        upstream = HostedUpstream(listing=listing, **data)
        upstream.full_clean()
        upstream.save()
    else:
        upstream, _ = model_update(instance=upstream, fields=list(data), data=data)
    logger.info("gateway.upstream_set", extra={"listing_id": listing.pk})
    if enabled:  # ask the (possibly new) upstream for its tools once this save is visible
        listing_id = listing.pk
        transaction.on_commit(lambda: _tools_refresh_enqueue(listing_id=listing_id))
    return upstream


def _tools_refresh_enqueue(*, listing_id: int) -> None:
    from gateway.tasks import hosted_upstream_tools_refresh_task

    try:
        hosted_upstream_tools_refresh_task.delay(listing_id)
    except Exception as exc:  # a broker outage must not fail the save; the daily refresh retries
        logger.warning(
            "gateway.tools_enqueue_failed",
            extra={"listing_id": listing_id, "error": type(exc).__name__},
        )


def usage_events_write(*, records: Iterable[dict[str, Any]]) -> int:
    """Insert finished calls into the ledger; returns how many were new.

    Idempotent on call_id (unique; conflicts ignored), so a re-delivered batch after a worker
    death is harmless. Also moves the keys' last_used_at forward (billing's batched update).
    One transaction so the caller may acknowledge the batch only after both are committed.
    """
    rows: list[UsageEvent] = []
    last_used: dict[int, datetime] = {}
    for r in records:
        occurred = datetime.fromtimestamp(float(r["occurred_at"]), tz=UTC)
        rows.append(
            UsageEvent(
                call_id=uuid.UUID(r["call_id"]),
                key_id=r["key_id"],
                license_id=r["license_id"],
                listing_id=r["listing_id"],
                plan_id=r["plan_id"],
                tool=r["tool"],
                unit_amount=r["unit_amount"],
                currency=r["currency"],
                billable=r["billable"],
                outcome=r["outcome"],
                latency_ms=r["latency_ms"],
                occurred_at=occurred,
                stripe_customer_id=r.get("stripe_customer_id") or "",
                meter_event_name=r.get("meter_event_name") or "",
            )
        )
        if r["key_id"] > 0 and occurred > last_used.get(r["key_id"], occurred - timedelta(1)):
            last_used[r["key_id"]] = occurred
    if not rows:
        return 0
    ids = [row.call_id for row in rows]
    with transaction.atomic():  # ledger rows, reports, last_used and health move together
        before = UsageEvent.objects.filter(call_id__in=ids).count()
        _meter_reports_attach(rows)
        UsageEvent.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
        _keys_mark_used(last_used)
        _upstream_health_update(rows)
    from gateway.notices import usage_batch_notify

    usage_batch_notify(rows)  # 80 % of a quota, an upstream that started failing (emails)
    return len(set(ids)) - before


def _window_start(occurred: datetime) -> datetime:
    return occurred.replace(second=0, microsecond=0)


def _meter_reports_attach(rows: list[UsageEvent]) -> None:
    """Point each collectible call at the open report of its (customer, meter, minute).

    One upsert per batch takes (or creates) the open reports and locks them until the ledger
    rows are committed, so the reporter's seal waits for this batch and sums it whole; a minute
    sealed already gets a new open report (the partial unique index allows one open report per
    window), which goes out as a correction. Locks are taken in one sorted order.
    Call inside the transaction that writes `rows`.
    """
    collectible = [
        r
        for r in rows
        if r.billable and r.unit_amount > 0 and r.stripe_customer_id and r.meter_event_name
    ]
    if not collectible:
        return
    windows = sorted(
        {
            (r.stripe_customer_id, r.meter_event_name, _window_start(r.occurred_at))
            for r in collectible
        }
    )
    table = MeterReport._meta.db_table
    adapt = connection.ops.adapt_datetimefield_value
    now = adapt(datetime.now(tz=UTC))
    values, params = [], []
    for customer, meter, window in windows:
        values.append("(%s, %s, %s, %s, %s, 0, 0, 0, '', %s)")
        identifier = f"tbw_{int(window.timestamp()) // 60}_{uuid.uuid4().hex}"
        params += [customer, meter, adapt(window), identifier, MeterReportStatus.OPEN.value, now]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (stripe_customer_id, meter_event_name, window_start, "  # noqa: S608
            "identifier, status, value, calls, attempts, last_error, created_at) VALUES "
            + ", ".join(values)
            + " ON CONFLICT (stripe_customer_id, meter_event_name, window_start)"
            " WHERE status = 'open' DO UPDATE SET status = EXCLUDED.status",
            params,
        )
    open_reports = MeterReport.objects.filter(
        status=MeterReportStatus.OPEN,
        window_start__in={w for _, _, w in windows},
        stripe_customer_id__in={c for c, _, _ in windows},
    ).values_list("pk", "stripe_customer_id", "meter_event_name", "window_start")
    by_window = {(c, m, w): pk for pk, c, m, w in open_reports}
    for r in collectible:
        key = (r.stripe_customer_id, r.meter_event_name, _window_start(r.occurred_at))
        r.meter_report_id = by_window[key]


_UPSTREAM_FAILURES = {UsageOutcome.UPSTREAM_ERROR, UsageOutcome.TIMEOUT}


def _upstream_health_update(rows: list[UsageEvent]) -> None:
    """Health fields from the calls' outcomes, off the hot path: the last success and failure,
    and failures since the last success. A repeated batch can count a failure twice in
    `consecutive_failures` (a health hint, not billing)."""
    by_listing: dict[int, list[UsageEvent]] = {}
    for row in sorted(rows, key=lambda r: r.occurred_at):
        by_listing.setdefault(row.listing_id, []).append(row)
    for listing_id, events in by_listing.items():
        ok = [e.occurred_at for e in events if e.outcome not in _UPSTREAM_FAILURES]
        failed = [e for e in events if e.outcome in _UPSTREAM_FAILURES]
        trailing = sum(1 for e in failed if not ok or e.occurred_at > ok[-1])
        update: dict[str, Any] = {}
        if ok:
            update["last_ok_at"] = ok[-1]
            update["consecutive_failures"] = trailing
        else:
            update["consecutive_failures"] = F("consecutive_failures") + trailing
        if failed:
            update["last_error_at"] = failed[-1].occurred_at
            update["last_error"] = failed[-1].outcome
        HostedUpstream.objects.filter(listing_id=listing_id).update(**update)


def _keys_mark_used(last_used: dict[int, datetime]) -> None:
    try:
        from billing.services.licenses import keys_mark_used
    except ImportError:  # billing without keys (should not happen once billing has landed)
        return
    keys_mark_used(last_used=last_used)


def usage_report(
    *,
    now: datetime | None = None,
    keep_alive: Callable[[], bool] | None = None,
    time_budget: float = REPORT_TIME_BUDGET,
) -> ReportRun:
    """Seal the minutes that are over, park what Stripe would refuse, send what is due.

    One meter event per (customer, meter, minute): the cost grows with customers x time, not
    with calls. Each event's identifier was stored with its report before the first send, so a
    resend after a crash (or a second reporter that overlapped a lost lease) is deduplicated by
    Stripe, and a report is marked sent only after Stripe accepted it. `keep_alive` renews the
    caller's lease between chunks; when it answers False the run stops.
    """
    started = time.monotonic()
    run = ReportRun()
    now = now or datetime.now(tz=UTC)
    run.sealed = meter_reports_seal(now=now)
    run.parked += _meter_reports_park_too_old(now=now)
    client = None
    while time.monotonic() - started < time_budget:
        if keep_alive is not None and not keep_alive():
            run.stopped = "lease lost"
            break
        due = list(
            MeterReport.objects.filter(status=MeterReportStatus.PENDING)
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            .order_by("window_start", "pk")[:REPORT_CHUNK]
        )
        if not due:
            break
        if client is None:
            from billing.stripe_client import get_client

            client = get_client()
        if not _meter_reports_send(client=client, reports=due, run=run):
            break
    return run


@dataclass
class ReportRun:
    """What one reporter run did (logged by the task, read by tests and the benchmark)."""

    sealed: int = 0
    sent: int = 0
    parked: int = 0
    retrying: int = 0
    stopped: str = ""


def meter_reports_seal(*, now: datetime) -> int:
    """Close the open reports of minutes that ended `REPORT_SEAL_GRACE` ago and sum them.

    The FOR UPDATE waits for drains that attached calls to these reports and have not
    committed; the sums run in a later statement, whose snapshot sees those calls. A drain that
    comes after the seal finds no open report for the minute and opens a new one (a correction
    event). Reports left without calls (a re-delivered batch whose calls were in the ledger
    already) are deleted: there is nothing to send.
    """
    cutoff = now - timedelta(seconds=60 + REPORT_SEAL_GRACE)
    sealed = 0
    while True:
        # One batch per transaction: the sealed rows' locks are held briefly.
        with transaction.atomic():
            ids = list(
                MeterReport.objects.select_for_update()
                .filter(status=MeterReportStatus.OPEN, window_start__lte=cutoff)
                .order_by("pk")
                .values_list("pk", flat=True)[:SEAL_BATCH]
            )
            if not ids:
                return sealed
            MeterReport.objects.filter(pk__in=ids).update(
                status=MeterReportStatus.PENDING, sealed_at=now
            )
            sums = {
                row["meter_report_id"]: row
                for row in UsageEvent.objects.filter(meter_report_id__in=ids)
                .values("meter_report_id")
                .annotate(value=Sum("unit_amount"), calls=Count("id"))
            }
            reports = list(MeterReport.objects.filter(pk__in=ids))
            for report in reports:
                agg = sums.get(report.pk)
                report.value = int(agg["value"]) if agg else 0
                report.calls = int(agg["calls"]) if agg else 0
            MeterReport.objects.bulk_update(reports, ["value", "calls"], batch_size=1000)
            MeterReport.objects.filter(pk__in=[r.pk for r in reports if r.calls == 0]).delete()
            sealed += sum(1 for r in reports if r.calls)
        if len(ids) < SEAL_BATCH:
            return sealed


def _meter_reports_park_too_old(*, now: datetime) -> int:
    """Park what Stripe refuses for its age (timestamps older than 35 days) before sending it;
    an admin sees it (admin list, error log) and the rest keeps flowing."""
    too_old = now - METER_EVENT_MAX_AGE
    parked = list(
        MeterReport.objects.filter(
            status=MeterReportStatus.PENDING, window_start__lt=too_old
        ).values_list("pk", "identifier")
    )
    if parked:
        MeterReport.objects.filter(
            pk__in=[pk for pk, _ in parked], status=MeterReportStatus.PENDING
        ).update(
            status=MeterReportStatus.PARKED,
            parked_at=now,
            last_error="older than the 35 days Stripe accepts meter events for",
        )
        for pk, identifier in parked:
            logger.error(
                "gateway.meter_report_parked",
                extra={"meter_report_id": pk, "identifier": identifier, "reason": "too_old"},
            )
    return len(parked)


def meter_reports_unpark(*, ids: list[int]) -> int:
    """Queue parked reports to be sent again, once a person fixed what Stripe refused (a
    customer, a meter). Reports too old for Stripe stay parked: a resend would be refused."""
    too_old = datetime.now(tz=UTC) - METER_EVENT_MAX_AGE
    count = MeterReport.objects.filter(
        pk__in=ids, status=MeterReportStatus.PARKED, window_start__gte=too_old
    ).update(status=MeterReportStatus.PENDING, parked_at=None, next_attempt_at=None, attempts=0)
    logger.info("gateway.meter_reports_unparked", extra={"n": count})
    return count


def _meter_event_params(report: MeterReport) -> dict[str, Any]:
    return {
        "event_name": report.meter_event_name,
        "identifier": report.identifier,
        "timestamp": int(report.window_start.timestamp()),
        "payload": {
            "stripe_customer_id": report.stripe_customer_id,
            "value": str(report.value),
        },
    }


def _meter_reports_send(*, client: Any, reports: list[MeterReport], run: ReportRun) -> bool:
    """Send one chunk concurrently; record each outcome. Returns False when the run should
    stop (Stripe rate-limits us, cannot be reached, or refuses our credentials)."""

    def send(report: MeterReport) -> Exception | None:
        try:
            client.v1.billing.meter_events.create(_meter_event_params(report))
        except Exception as exc:
            return exc
        return None

    with ThreadPoolExecutor(max_workers=REPORT_CONCURRENCY) as pool:
        results = list(pool.map(send, reports))
    now = datetime.now(tz=UTC)
    accepted: list[int] = []
    keep_going = True
    for report, exc in zip(reports, results, strict=True):
        verdict = "sent" if exc is None else _stripe_verdict(exc)
        if exc is None or verdict == "sent":
            accepted.append(report.pk)
            continue
        message = str(getattr(exc, "user_message", None) or exc)[:300]
        if verdict == "permanent":
            run.parked += MeterReport.objects.filter(
                pk=report.pk, status=MeterReportStatus.PENDING
            ).update(
                status=MeterReportStatus.PARKED,
                parked_at=now,
                last_error=message,
                attempts=F("attempts") + 1,
            )
            logger.error(
                "gateway.meter_report_parked",
                extra={
                    "meter_report_id": report.pk,
                    "identifier": report.identifier,
                    "reason": type(exc).__name__,
                },
            )
            continue
        delay = _retry_delay(report.attempts, exc)
        MeterReport.objects.filter(pk=report.pk, status=MeterReportStatus.PENDING).update(
            attempts=F("attempts") + 1,
            next_attempt_at=now + timedelta(seconds=delay),
            last_error=message,
        )
        run.retrying += 1
        logger.warning(
            "gateway.meter_report_retry",
            extra={"meter_report_id": report.pk, "error": type(exc).__name__, "delay": delay},
        )
        if verdict == "stop":
            keep_going = False
            run.stopped = type(exc).__name__
    if accepted:
        run.sent += MeterReport.objects.filter(
            pk__in=accepted, status=MeterReportStatus.PENDING
        ).update(status=MeterReportStatus.SENT, sent_at=now, last_error="")
    return keep_going


def _stripe_verdict(exc: Exception) -> str:
    """sent: Stripe has it already (a resend); permanent: Stripe refuses this event for good,
    park it alone; stop: nothing will pass now (rate limited, unreachable, our credentials),
    retry later with the same identifier; retry: a transient error for this event."""
    import stripe

    if _is_duplicate_identifier(exc):
        return "sent"
    if isinstance(exc, stripe.RateLimitError | stripe.APIConnectionError):
        return "stop"
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        logger.error("gateway.meter_report_credentials", extra={"error": type(exc).__name__})
        return "stop"
    status = getattr(exc, "http_status", None) or 0
    if isinstance(exc, stripe.InvalidRequestError) and 400 <= status < 500 and status != 409:
        return "permanent"
    return "retry"


def _is_duplicate_identifier(exc: Exception) -> bool:
    """Stripe refuses a reused meter event identifier: it already counted this report."""
    code = getattr(exc, "code", None) or ""
    message = str(getattr(exc, "user_message", "") or exc)
    return "identifier" in message.lower() and (
        "already" in message.lower() or code in {"resource_already_exists", "idempotency_error"}
    )


def _retry_delay(attempts: int, exc: Exception) -> float:
    """Exponential backoff from 10 s to an hour, never sooner than Stripe's Retry-After."""
    backoff = min(10.0 * 2**attempts, 3600.0)
    headers = getattr(exc, "headers", None) or {}
    try:
        retry_after = float(headers.get("retry-after") or headers.get("Retry-After") or 0)
    except (TypeError, ValueError):
        retry_after = 0.0
    return float(max(backoff, min(retry_after, 3600.0)))


def usage_reconcile(
    *, meter_id: str, meter_event_name: str, stripe_customer_id: str, start: datetime, end: datetime
) -> MeterReconciliation:
    """Compare what we reported for one customer and meter in [start, end) with Stripe's event
    summaries; stores the comparison (append-only) and logs a mismatch. Ours is the sum of the
    sent reports whose minute lies in the range (and calls reported one by one before reports
    existed); bounds on whole minutes compare like with like."""
    from billing.stripe_client import get_client

    pair = {"meter_event_name": meter_event_name, "stripe_customer_id": stripe_customer_id}
    ours = int(
        MeterReport.objects.filter(
            **pair, status=MeterReportStatus.SENT, window_start__gte=start, window_start__lt=end
        ).aggregate(total=Sum("value"))["total"]
        or 0
    ) + int(
        UsageEvent.objects.filter(
            **pair,
            meter_report__isnull=True,
            meter_reported_at__isnull=False,
            occurred_at__gte=start,
            occurred_at__lt=end,
        ).aggregate(total=Sum("unit_amount"))["total"]
        or 0
    )
    summaries = get_client().v1.billing.meters.event_summaries.list(
        meter_id,
        {
            "customer": stripe_customer_id,
            "start_time": int(start.timestamp()),
            "end_time": int(end.timestamp()),
        },
    )
    theirs = int(sum(float(s.aggregated_value) for s in summaries.auto_paging_iter()))
    rec = MeterReconciliation.objects.create(
        stripe_customer_id=stripe_customer_id,
        meter_event_name=meter_event_name,
        window_start=start,
        window_end=end,
        ours=ours,
        stripe=theirs,
        matches=ours == theirs,
    )
    if not rec.matches:
        logger.warning(
            "gateway.meter_mismatch",
            extra={"reconciliation_id": rec.pk, "ours": ours, "stripe": theirs},
        )
    return rec


# --- the tool manifest (rug-pull guard) ------------------------------------------------------

TOOL_CHANGES_BATCH = 500  # fields per drain run; a backlog is finished by the next runs


def tool_manifest_approve(*, listing: Any, actor: Any, expected_hash: str) -> ToolManifest:
    """Pin the tools the creator reviewed: the listing's discovered manifest becomes the newest
    approved version, and its pending changes are approved.

    `expected_hash` is the manifest hash the page showed; if the upstream's tools changed since
    (discovery or the gateway recorded something new), nothing is approved: what is pinned is
    exactly what the creator saw. Approving the version already in force with nothing pending
    adds no version (idempotent). Only the owner or staff may.
    """
    from gateway.toolscan import manifest_scan

    is_owner = listing.owner_id is not None and actor.pk == listing.owner_id
    if not (getattr(actor, "is_staff", False) or is_owner):
        raise ApplicationError("Only the listing's owner can approve its tools.", status_code=403)
    now = datetime.now(tz=UTC)
    # The upstream row lock serialises approvals (version numbers) with recordings of changes.
    with transaction.atomic():
        upstream = HostedUpstream.objects.select_for_update().filter(listing=listing).first()
        if upstream is None or not upstream.manifest:
            raise ApplicationError("No tools were discovered yet; nothing to approve.")
        if upstream.manifest_hash != expected_hash:
            raise ApplicationError(
                "The upstream's tools changed while you were reviewing them; "
                "review the new list and approve again.",
                status_code=409,
            )
        current = ToolManifest.objects.filter(listing=listing).order_by("-version").first()
        pending = ToolChange.objects.filter(listing=listing, status=ToolChangeStatus.PENDING)
        if current is not None and current.manifest_hash == expected_hash:
            manifest = current
        else:
            tools = list(upstream.manifest)
            manifest = ToolManifest(
                listing=listing,
                version=(current.version + 1) if current is not None else 1,
                manifest_hash=upstream.manifest_hash,
                tools=tools,
                tool_hashes=tool_hashes(tools),
                findings=manifest_scan(tools),
                approved_by=actor if getattr(actor, "pk", None) else None,
                approved_at=now,
            )
            manifest.full_clean()
            manifest.save()
        pending.update(status=ToolChangeStatus.APPROVED, resolved_at=now, resolved_by=actor)
    logger.info(
        "gateway.tool_manifest_approved",
        extra={"listing_id": listing.pk, "version": manifest.version},
    )
    return manifest


def _manifest_merge(
    manifest: list[dict[str, Any]], observed: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The discovered manifest with tools the gateway saw replacing (or joining) their names,
    within the manifest's bounds."""
    by_name = {t["name"]: t for t in manifest}
    for tool in observed:
        by_name[tool["name"]] = tool
    merged, _ = manifest_build(list(by_name.values()))
    return merged


def tool_changes_record(
    *,
    listing_id: int,
    observed: list[dict[str, Any]],
    source: str,
    complete: bool,
    now: datetime | None = None,
) -> list[ToolChange]:
    """Compare tools the upstream serves (canonical, gateway.manifest) with the approved manifest
    and keep the differences as pending ToolChange rows; returns the rows created.

    `complete`: `observed` is the upstream's whole list (discovery), so approved tools missing
    from it were removed, and pending changes of tools that now match or are gone are closed
    as reverted. Partial observations (a tools/list page the gateway saw) only add or update,
    and are merged into the listing's discovered manifest so the creator approves what agents
    were offered. One pending row per tool: a tool that changes again updates its row without
    a new notification. The creator and admins are emailed once per batch of new rows, after commit.
    """
    from gateway.toolscan import tool_scan

    now = now or datetime.now(tz=UTC)
    created: list[ToolChange] = []
    with transaction.atomic():  # the upstream row lock orders this with approvals
        upstream = HostedUpstream.objects.select_for_update().filter(listing_id=listing_id).first()
        current = ToolManifest.objects.filter(listing_id=listing_id).order_by("-version").first()
        if upstream is None or current is None:
            return []  # nothing approved yet: nothing to compare with
        if not complete and observed:
            merged = _manifest_merge(list(upstream.manifest), observed)
            hashes = tool_hashes(merged)
            upstream.manifest, upstream.manifest_hash = merged, manifest_hash(hashes)
            upstream.save(update_fields=["manifest", "manifest_hash", "updated_at"])
        approved = {t["name"]: t for t in current.tools}
        approved_hashes: dict[str, str] = current.tool_hashes
        pending = {
            c.name: c
            for c in ToolChange.objects.filter(
                listing_id=listing_id, status=ToolChangeStatus.PENDING
            )
        }
        diffs: dict[str, tuple[str, dict[str, Any] | None, str]] = {}
        matching: set[str] = set()
        for tool in observed:
            name = tool["name"]
            h = tool_hash(tool)
            if name not in approved:
                diffs[name] = (ToolChangeKind.ADDED, tool, h)
            elif h != approved_hashes.get(name):
                diffs[name] = (ToolChangeKind.CHANGED, tool, h)
            else:
                matching.add(name)
        if complete:
            seen = {t["name"] for t in observed}
            for name in approved:
                if name not in seen:
                    diffs[name] = (ToolChangeKind.REMOVED, None, "")
        reverted = [
            c.pk
            for name, c in pending.items()
            if name in matching or (complete and name not in diffs)
        ]
        if reverted:
            ToolChange.objects.filter(pk__in=reverted).update(
                status=ToolChangeStatus.REVERTED, resolved_at=now
            )
        for name, (kind, seen_tool, h) in diffs.items():
            findings = [f.as_dict() for f in tool_scan(seen_tool)] if seen_tool else []
            row = pending.get(name)
            if row is not None:
                if row.observed_hash != h or row.kind != kind:
                    row.kind, row.observed, row.observed_hash = kind, seen_tool, h
                    row.findings, row.last_seen_at = findings, now
                    row.save(
                        update_fields=[
                            "kind",
                            "observed",
                            "observed_hash",
                            "findings",
                            "last_seen_at",
                        ]
                    )
                continue
            row = ToolChange(
                listing_id=listing_id,
                manifest=current,
                name=name[:200],
                kind=kind,
                source=source,
                approved=approved.get(name),
                observed=seen_tool,
                observed_hash=h,
                findings=findings,
                detected_at=now,
                last_seen_at=now,
            )
            row.save()
            created.append(row)
        if created:  # queued with the rows; sent after commit
            tool_changes_notify(change_ids=[c.pk for c in created])
    if created:
        logger.warning(
            "gateway.tool_changes_detected",
            extra={"listing_id": listing_id, "n": len(created), "source": source},
        )
    return created


def tool_changes_drain(*, client: Any) -> int:
    """Move the changes gateway processes saw (TOOL_CHANGES_KEY) into ToolChange rows.

    Fields are deleted only after their listing's rows are committed, so a crash re-reads them
    (recording is idempotent: one pending row per tool). Malformed fields are dropped.
    """
    from gateway import fastjson

    fields: list[Any] = []
    cursor: Any = 0
    while len(fields) < TOOL_CHANGES_BATCH:
        cursor, page = client.hscan(TOOL_CHANGES_KEY, cursor, count=100)
        fields += list(page.items())
        if not int(cursor):
            break
    by_listing: dict[int, list[tuple[Any, dict[str, Any]]]] = {}
    bad: list[Any] = []
    for field_name, raw in fields[:TOOL_CHANGES_BATCH]:
        try:
            item = fastjson.loads(raw)
            listing_id = int(item["listing_id"])
            tool = tool_canonical(item["tool"])
        except (ValueError, KeyError, TypeError):
            tool = None
        if tool is None:
            bad.append(field_name)
            continue
        by_listing.setdefault(listing_id, []).append((field_name, tool))
    recorded = 0
    for listing_id, items in by_listing.items():
        tools = list({t["name"]: t for _, t in items}.values())  # the last seen per name
        created = tool_changes_record(
            listing_id=listing_id,
            observed=tools,
            source=ToolChangeSource.GATEWAY,
            complete=False,
        )
        client.hdel(TOOL_CHANGES_KEY, *[f for f, _ in items])
        if created:  # a full discovery also finds removed tools and the rest of the list
            _tools_refresh_enqueue(listing_id=listing_id)
        recorded += len(created)
    if bad:
        client.hdel(TOOL_CHANGES_KEY, *bad)
    return recorded


def tool_changes_notify(*, change_ids: list[int]) -> int:
    """Tell the listing's owner and active staff about new tool changes, through the
    notifications app (gateway.notices.tool_manifest_changed_notify): one email per person and
    batch of new rows, text and HTML, sent by Celery after commit. Called inside the
    transaction that created the rows, so a rolled-back recording tells nobody; the batch is
    named by its first row's id (rows are created once), so a repeated call queues nothing.
    Returns the notifications queued."""
    from gateway.notices import tool_manifest_changed_notify

    changes = list(ToolChange.objects.filter(pk__in=change_ids).order_by("listing_id", "name"))
    by_listing: dict[int, list[ToolChange]] = {}
    for change in changes:
        by_listing.setdefault(change.listing_id, []).append(change)
    queued = 0
    for listing_id, rows in by_listing.items():
        lines = []
        for row in rows:
            flagged = f", {len(row.findings)} warning(s)" if row.findings else ""
            lines.append((row.name, f"{row.get_kind_display().lower()}{flagged}"))
        queued += tool_manifest_changed_notify(
            listing_id=listing_id,
            changes=lines,
            event_key=f"changes:{min(r.pk for r in rows)}",
        )
    return queued
