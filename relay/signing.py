"""Webhook signatures: the daemon, `/receive`, the CLI and receivers all use this module.

`X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret_key, body)>` is the original system's scheme;
the HMAC key is the UTF-8 bytes of the whole secret string, even for a `whsec_` secret.
Standard Webhooks (https://www.standardwebhooks.com) signs `{id}.{timestamp}.{body}` with the
base64-decoded part of a `whsec_` secret and sends `v1,<base64>`.
"""

from __future__ import annotations

import base64
import hmac
import re

__all__ = [
    "SignatureError",
    "sign",
    "standard_webhooks_key",
    "standard_webhooks_sign",
    "verify_signature",
]

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
            ok |= hmac.compare_digest(candidate.encode(), expected)
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
