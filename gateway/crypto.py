"""Encryption of creators' upstream secrets and our signed identity header.

Secrets are Fernet tokens under keys derived from GATEWAY_UPSTREAM_SECRET_KEY (comma-separated:
the first encrypts, all decrypt, so keys can rotate). The identity header lets an upstream check
that a request came through Toolbooth for a given license without ever seeing the buyer's key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings

IDENTITY_HEADER = "X-Toolbooth-Identity"


def _fernet() -> MultiFernet:
    raw_keys = [k.strip() for k in settings.GATEWAY_UPSTREAM_SECRET_KEY.split(",") if k.strip()]
    return MultiFernet(
        [Fernet(base64.urlsafe_b64encode(hashlib.sha256(k.encode()).digest())) for k in raw_keys]
    )


def secret_encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode() if plain else ""


def secret_decrypt(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode() if token else ""


def identity_key(listing_name: str) -> bytes:
    """The per-listing verification key we give the listing's creator (never the root secret,
    so one creator cannot forge identity headers for another's upstream)."""
    root = settings.GATEWAY_IDENTITY_SECRET.encode()
    return hmac.new(root, b"toolbooth-identity:" + listing_name.encode(), hashlib.sha256).digest()


def identity_sign(*, key: bytes, listing_name: str, license_id: int, ts: int | None = None) -> str:
    """`v1 t=<unix>,listing=<name>,license=<id>,sig=<hex>`; sig = HMAC-SHA256(key,
    "<t>.<listing>.<license>")."""
    t = int(time.time()) if ts is None else ts
    msg = f"{t}.{listing_name}.{license_id}".encode()
    sig = hmac.new(key, msg, hashlib.sha256).hexdigest()
    return f"t={t},listing={listing_name},license={license_id},sig={sig}"


def identity_verify(*, key: bytes, header: str, max_age: int = 300) -> dict[str, str] | None:
    """What a creator runs on their upstream (reference implementation, also used in tests)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
        msg = f"{t}.{fields['listing']}.{fields['license']}".encode()
    except (KeyError, ValueError):
        return None
    expected = hmac.new(key, msg, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields.get("sig", "")) or abs(time.time() - t) > max_age:
        return None
    return fields
