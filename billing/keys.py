"""License key format: greppable prefix, 32 random bytes, checksum suffix; stored as HMAC only.

`tb_live_` / `tb_test_` + 43 base62 chars (32 bytes) + 6 base62 chars of CRC32 over the rest, the
shape secret scanners recognise (like GitHub's tokens). A key that fails the checksum is rejected
without any lookup. We keep only HMAC-SHA256(pepper, key) and a short display prefix.
"""

import hmac
import secrets
import zlib

from django.conf import settings

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 43  # 62**43 > 2**256
_CHECK_LEN = 6  # 62**6 > 2**32
PREFIXES = ("tb_live_", "tb_test_")
KEY_LENGTH = 8 + _BODY_LEN + _CHECK_LEN
DISPLAY_PREFIX_LENGTH = 14


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def _checksum(text: str) -> str:
    return _base62(zlib.crc32(text.encode()), _CHECK_LEN)


def key_generate(*, live: bool) -> str:
    """A new raw key. Shown to its owner once, never stored."""
    prefix = PREFIXES[0] if live else PREFIXES[1]
    body = _base62(int.from_bytes(secrets.token_bytes(32), "big"), _BODY_LEN)
    return prefix + body + _checksum(prefix + body)


def key_is_well_formed(raw_key: str) -> bool:
    """Shape and checksum only: rejects typos and garbage before any cache or DB lookup."""
    if len(raw_key) != KEY_LENGTH or not raw_key.startswith(PREFIXES):
        return False
    head, check = raw_key[:-_CHECK_LEN], raw_key[-_CHECK_LEN:]
    if not (raw_key.isascii() and raw_key[8:].isalnum()):  # base62 = ASCII letters and digits
        return False
    return hmac.compare_digest(_checksum(head), check)


def key_hash(raw_key: str) -> str:
    """HMAC-SHA256 under the server-side pepper: what we store and what caches are keyed by."""
    pepper = settings.LICENSE_KEY_PEPPER.encode()
    return hmac.digest(pepper, raw_key.encode(), "sha256").hex()


def key_display_prefix(raw_key: str) -> str:
    """Enough to recognise a key in a list (`tb_live_3kT9xQ`), far too little to use it."""
    return raw_key[:DISPLAY_PREFIX_LENGTH]


# Personal API tokens (/api/v1/me/ for scripts and agents): the same shape under their own
# prefix, so a token is never mistaken for a license key (the gateway refuses it by shape).
TOKEN_PREFIX = "tbp_"  # noqa: S105 (a prefix, not a secret)
TOKEN_LENGTH = len(TOKEN_PREFIX) + _BODY_LEN + _CHECK_LEN


def token_generate() -> str:
    """A new raw personal API token. Shown to its owner once, never stored."""
    body = _base62(int.from_bytes(secrets.token_bytes(32), "big"), _BODY_LEN)
    return TOKEN_PREFIX + body + _checksum(TOKEN_PREFIX + body)


def token_is_well_formed(raw_token: str) -> bool:
    """Shape and checksum only: rejects typos and license keys before any lookup."""
    if len(raw_token) != TOKEN_LENGTH or not raw_token.startswith(TOKEN_PREFIX):
        return False
    if not (raw_token.isascii() and raw_token[len(TOKEN_PREFIX) :].isalnum()):
        return False
    return hmac.compare_digest(_checksum(raw_token[:-_CHECK_LEN]), raw_token[-_CHECK_LEN:])


# OAuth tokens (the `oauth` app's authorization server): the same shape under their own prefixes,
# hashed with `key_hash`. Access tokens are credentials the gateway takes in place of a key;
# refresh tokens are only ever presented to the token endpoint.
ACCESS_TOKEN_PREFIX = "tbo_"  # noqa: S105 (a prefix, not a secret)
REFRESH_TOKEN_PREFIX = "tbr_"  # noqa: S105
_OAUTH_TOKEN_LENGTH = 4 + _BODY_LEN + _CHECK_LEN


def oauth_token_generate(prefix: str) -> str:
    """A new raw OAuth token under `prefix`; handed to the client once, never stored."""
    body = _base62(int.from_bytes(secrets.token_bytes(32), "big"), _BODY_LEN)
    return prefix + body + _checksum(prefix + body)


def oauth_token_is_well_formed(raw_token: str, prefix: str) -> bool:
    """Shape and checksum only, as for keys: garbage never reaches a cache or the database."""
    if len(raw_token) != _OAUTH_TOKEN_LENGTH or not raw_token.startswith(prefix):
        return False
    if not (raw_token.isascii() and raw_token[4:].isalnum()):
        return False
    return hmac.compare_digest(_checksum(raw_token[:-_CHECK_LEN]), raw_token[-_CHECK_LEN:])


def credential_is_well_formed(raw: str) -> bool:
    """What the gateway accepts in `Authorization: Bearer`: a license key or an access token."""
    return key_is_well_formed(raw) or oauth_token_is_well_formed(raw, ACCESS_TOKEN_PREFIX)
