"""Demo data: the bundled registry snapshot, a payable creator with a hosted, priced server,
a buyer, and an admin. Idempotent, so `make demo` can run again on the same database.

Passwords are generated on the first run and kept in var/demo-credentials.json (never in code).
"""

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction

from billing.models import Creator
from billing.services.creators import creator_become, listing_publish_for_creator
from billing.services.demo import billing_demo_seed
from gateway.services import hosted_upstream_set
from marketplace.models import Listing
from registry_sync.models import ServerVersion
from registry_sync.services import registry_snapshot_load
from web.stats import listing_stats_refresh_all

logger = logging.getLogger(__name__)

DEMO_ACCOUNTS = {
    "admin": "admin@demo.toolbooth.local",
    "creator": "ada@demo.toolbooth.local",
    "buyer": "bob@demo.toolbooth.local",
}
DEMO_SLUG = "weather"
# A real mirrored listing the demo creator also prices (shown, not hosted).
DEMO_REGISTRY_LISTING = "io.github.brave/brave-search-mcp-server"


@dataclass(frozen=True)
class DemoInfo:
    credentials: dict[str, tuple[str, str]]
    hosted_listing: str
    gateway_url: str


def _credentials_path() -> Path:
    return Path(settings.VAR_DIR) / "demo-credentials.json"


def _ensure_user(role: str, email: str, stored: dict[str, str]) -> User:
    user_model = get_user_model()
    user = user_model.objects.filter(email=email).first()
    if user is None:
        password = secrets.token_urlsafe(9)
        stored[role] = password
        if role == "admin":
            user = user_model.objects.create_superuser(
                username=email, email=email, password=password
            )
        else:
            user = user_model.objects.create_user(username=email, email=email, password=password)
    return user


def demo_seed(*, onboard: Callable[[str], object], upstream_url: str) -> DemoInfo:
    """Everything the README's demo walk-through needs; safe to run on every start."""
    if not ServerVersion.objects.exists():
        registry_snapshot_load()

    path = _credentials_path()
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    with transaction.atomic():
        users = {role: _ensure_user(role, email, stored) for role, email in DEMO_ACCOUNTS.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stored, indent=2))
    path.chmod(0o600)

    creator_user = users["creator"]
    creator = Creator.objects.filter(user=creator_user).first() or creator_become(
        user=creator_user, handle="ada", display_name="Ada's Tools"
    )
    name = f"{creator.namespace}/{DEMO_SLUG}"
    hosted = Listing.objects.filter(name=name).first() or listing_publish_for_creator(
        creator=creator,
        slug=DEMO_SLUG,
        title="Demo Weather",
        description="Tomorrow's forecast for any city. A demo MCP server hosted through the "
        "Toolbooth gateway: free tier, lifetime license, subscription or pay per call.",
    )
    hosted_upstream_set(listing=hosted, actor=creator_user, url=upstream_url)
    _tools_approve(listing=hosted, creator_user=creator_user)
    listings = [hosted]
    mirrored = Listing.objects.filter(name=DEMO_REGISTRY_LISTING).first()
    if mirrored is not None and mirrored.owner_id in (None, creator_user.pk):
        listings.append(mirrored)
    billing_demo_seed(owner=creator_user, handle="ada", listings=listings, onboard=onboard)
    # The demo runs no beat: figure popularity once so the home page's sections have numbers.
    listing_stats_refresh_all()
    credentials = {
        role: (DEMO_ACCOUNTS[role], stored.get(role, "(see var/demo-credentials.json)"))
        for role in DEMO_ACCOUNTS
    }
    return DemoInfo(
        credentials=credentials,
        hosted_listing=name,
        gateway_url=f"{settings.SITE_URL}/mcp/{name}",
    )


def _tools_approve(*, listing: Listing, creator_user: User) -> None:
    """The creator approves the demo server's tools, as they would on their listing page: the
    gateway shows no tools and refuses every call of a listing whose tools were never approved
    (the rug-pull guard). Discovery runs here, not on the broker, so the demo serves at once;
    approving the same tools again adds nothing."""
    from gateway.discovery import upstream_tools_fetch
    from gateway.services import tool_manifest_approve

    upstream = upstream_tools_fetch(listing_id=listing.pk)
    if not upstream.manifest:
        logger.warning("demo.tools_not_found", extra={"error": upstream.tools_error})
        return
    tool_manifest_approve(listing=listing, actor=creator_user, expected_hash=upstream.manifest_hash)


def demo_claim_publish(*, name: str) -> str:
    """Play the Official MCP Registry for the demo's creator tour: publish a new version of
    `name` whose server.json carries the newest pending claim token for that name, and load it
    through the sync's own path (the snapshot loader, then the names-changed hooks that verify
    claims), as the hourly sync would after `mcp-publisher publish`. Returns the new version.
    The demo has no registry to publish to; production never runs this."""
    import copy
    import tempfile

    from billing.models import ClaimStatus, ListingClaim
    from billing.services.claims import claim_meta_snippet, server_json_for_listing

    claim = (
        ListingClaim.objects.filter(registry_name=name, status=ClaimStatus.PENDING)
        .order_by("-created_at")
        .first()
    )
    if claim is None:
        raise ValueError(f"No pending claim for {name}: get a claim token on /creator/claim/.")
    latest = ServerVersion.objects.filter(name=name).order_by("-published_at").first()
    count = ServerVersion.objects.filter(name=name).count()
    server: dict[str, Any]
    raw = copy.deepcopy(latest.raw) if latest is not None else None
    if isinstance(raw, dict) and isinstance(raw.get("server"), dict):
        server = raw["server"]  # the registry writes its own _meta.official
    else:
        listing = Listing.objects.get(pk=claim.listing_id)
        server = server_json_for_listing(listing=listing, claim=claim)
    item = {"server": server}
    version = f"{server.get('version') or '0.0.0'}-claim.{count + 1}"
    server["version"] = version
    server.setdefault("_meta", {}).update(claim_meta_snippet(claim=claim))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as out:
        json.dump({"servers": [item], "metadata": {"count": 1}}, out)
    try:
        registry_snapshot_load(path=out.name)
    finally:
        Path(out.name).unlink(missing_ok=True)
    return version
