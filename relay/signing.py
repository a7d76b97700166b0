"""Webhook signatures: the daemon, `/receive`, the CLI and receivers all use this module.

`X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret_key, body)>` is the original system's scheme;
the HMAC key is the UTF-8 bytes of the whole secret string, even for a `whsec_` secret.
Standard Webhooks (https://www.standardwebhooks.com) signs `{id}.{timestamp}.{body}` with the
base64-decoded part of a `whsec_` secret and sends `v1,<base64>`. Its asymmetric variant signs the
same bytes with Ed25519 under a `whsk_<base64 of the 32-byte seed>` signing key and sends
`v1a,<base64 signature>`; receivers verify with the `whpk_<base64 of the 32-byte public key>`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "SignatureError",
    "ed25519_public_key",
    "sign",
    "standard_webhooks_ed25519_sign",
    "standard_webhooks_key",
    "standard_webhooks_sign",
    "timestamp_fresh",
    "verify_signature",
    "verify_standard_webhooks",
    "verify_standard_webhooks_ed25519",
]

# How far a signed timestamp may be from the receiver's clock (Standard Webhooks uses 5 minutes).
DEFAULT_TOLERANCE = 300.0

_SPLIT = re.compile(r"[,\s]+")


class SignatureError(ValueError):
    """A secret that cannot be used for the requested scheme."""


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


def sign(body: bytes | str, secret: str) -> str:
    """Return `sha256=<hex>` for `body` under `secret`."""
    # hmac.digest is the one-shot C fast path: this runs once per delivery attempt.
    return "sha256=" + hmac.digest(secret.encode(), _as_bytes(body), "sha256").hex()


def verify_signature(body: bytes | str, signature: str, secret: str) -> bool:
    """True when any of the comma- or space-separated `sha256=` signatures matches.

    Several signatures arrive during key rotation (one per active secret). Every candidate is
    compared with `hmac.compare_digest`, so the time taken does not reveal how much matched.
    """
    expected = sign(body, secret).encode()
    ok = False
    for candidate in _SPLIT.split(signature.strip()):
        if candidate:
            # No early exit: compare against every candidate.
            ok |= hmac.compare_digest(candidate.encode("utf-8", "surrogatepass"), expected)
    return ok


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret, as Standard Webhooks defines it."""
    if not secret.startswith("whsec_"):
        raise SignatureError("standard-webhooks needs a secret of the form whsec_<base64>")
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError as exc:
        raise SignatureError("the part after whsec_ is not valid base64") from exc


def standard_webhooks_sign(msg_id: str, timestamp: int, body: bytes, secret: str) -> str:
    """Return `v1,<base64 HMAC-SHA256>` over `{msg_id}.{timestamp}.{body}`."""
    key = standard_webhooks_key(secret)
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.digest(key, to_sign, "sha256")
    return "v1," + base64.b64encode(mac).decode()


def _b64_key(text: str, prefix: str, what: str) -> bytes:
    if not text.startswith(prefix):
        raise SignatureError(f"{what} must be of the form {prefix}<base64>")
    try:
        return base64.b64decode(text.removeprefix(prefix), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise SignatureError(f"the part after {prefix} is not valid base64") from exc


# Keyed by the key string: a key is parsed once, not once per delivery attempt. Bounded, so keys
# rotated out of the config do not pile up.
@functools.lru_cache(maxsize=256)
def _private_key(signing_key: str) -> Ed25519PrivateKey:
    raw = _b64_key(signing_key, "whsk_", "an Ed25519 signing key")
    # The 32-byte seed is the form we document; the 64-byte seed+public form that libsodium
    # tools print is accepted too, when its public half really belongs to the seed.
    if len(raw) not in (32, 64):
        raise SignatureError("an Ed25519 signing key holds a 32-byte seed (whsk_<base64 of 32 bytes>)")
    key = Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64 and key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) != raw[32:]:
        raise SignatureError("the 64-byte signing key's public half does not match its seed")
    return key


def ed25519_public_key(signing_key: str) -> str:
    """`whpk_<base64>` of the public key that verifies what `signing_key` (`whsk_...`) signs."""
    raw = _private_key(signing_key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "whpk_" + base64.b64encode(raw).decode()


def standard_webhooks_ed25519_sign(msg_id: str, timestamp: int, body: bytes, signing_key: str) -> str:
    """Return `v1a,<base64 Ed25519 signature>` over `{msg_id}.{timestamp}.{body}`."""
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    return "v1a," + base64.b64encode(_private_key(signing_key).sign(to_sign)).decode()


def verify_standard_webhooks_ed25519(
    msg_id: str, timestamp: int | str, body: bytes | str, signature: str, public_key: str
) -> bool:
    """True when one of the space-separated `v1a,<base64>` entries of `signature` verifies.

    `public_key` is `whpk_<base64>`. Entries of other versions (`v1,...` from the HMAC scheme)
    are skipped. The caller checks that the timestamp is recent.
    """
    raw = _b64_key(public_key, "whpk_", "a public key")
    if len(raw) != 32:
        raise SignatureError("an Ed25519 public key is 32 bytes (whpk_<base64 of 32 bytes>)")
    key = Ed25519PublicKey.from_public_bytes(raw)
    signed = f"{msg_id}.{timestamp}.".encode() + _as_bytes(body)
    for entry in signature.split():
        version, _, value = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(value, validate=True), signed)
        except (InvalidSignature, ValueError, binascii.Error):
            continue
        return True
    return False


def verify_standard_webhooks(msg_id: str, timestamp: str, body: bytes, signature: str, secret: str) -> bool:
    """True when one of the space-separated `v1,<base64>` signatures in `signature` matches.

    `timestamp` is checked for shape only; freshness is `timestamp_fresh`'s job. Constant-time
    comparison of every candidate, as in `verify_signature`.
    """
    if not msg_id or not (timestamp.isascii() and timestamp.isdigit()) or not secret.startswith("whsec_"):
        return False
    try:
        expected = standard_webhooks_sign(msg_id, int(timestamp), body, secret).encode()
    except (SignatureError, ValueError):
        return False
    ok = False
    for candidate in signature.split():
        ok |= hmac.compare_digest(candidate.encode("utf-8", "surrogatepass"), expected)
    return ok


def timestamp_fresh(value: str | None, now: float, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """True when `value` is UNIX seconds within `tolerance` of `now` (either side: clocks drift)."""
    text = (value or "").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        return False
    return abs(int(text) - now) <= tolerance
