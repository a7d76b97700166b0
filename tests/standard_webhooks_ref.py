"""An independent check of Standard Webhooks `v1a` signatures, sharing no code with hookrelay.

Ed25519 verification is written out from RFC 8032 §5.1.7 in plain integer arithmetic (slow, and
only ever fed public data, so timing does not matter), and the header rules follow the Standard
Webhooks specification: `webhook-signature` is a space-separated list of `<version>,<base64>`,
the signed content is `{webhook-id}.{webhook-timestamp}.{raw body}`, the public key is
`whpk_<base64 of 32 bytes>`, and the timestamp must be within five minutes of now.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
TOLERANCE = 5 * 60

Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, xy = T/Z


def _add(a: Point, b: Point) -> Point:
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % P
    bb = (y1 + x1) * (y2 + x2) % P
    cc = 2 * t1 * t2 * D % P
    dd = 2 * z1 * z2 % P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(s: int, pt: Point) -> Point:
    q: Point = (0, 1, 1, 0)  # the neutral element
    while s:
        if s & 1:
            q = _add(q, pt)
        pt = _add(pt, pt)
        s >>= 1
    return q


def _equal(a: Point, b: Point) -> bool:
    x1, y1, z1, _ = a
    x2, y2, z2, _ = b
    return (x1 * z2 - x2 * z1) % P == 0 and (y1 * z2 - y2 * z1) % P == 0


def _recover_x(y: int, sign: int) -> int | None:
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


def _decompress(data: bytes) -> Point | None:
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


_GY = 4 * pow(5, P - 2, P) % P
_GX = _recover_x(_GY, 0)
assert _GX is not None
BASE: Point = (_GX, _GY, 1, _GX * _GY % P)


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """RFC 8032 §5.1.7: check [8][S]B = [8]R + [8][k]A' (here the cofactorless [S]B = R + [k]A)."""
    if len(signature) != 64:
        return False
    a = _decompress(public)
    r = _decompress(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= L:
        return False
    k = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % L
    return _equal(_mul(s, BASE), _add(r, _mul(k, a)))


def verify_v1a(body: bytes, headers: Mapping[str, str], public_key: str, now: float | None = None) -> bool:
    """The Standard Webhooks rules for an asymmetric (`v1a`) signature, header names in any case."""
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not (msg_id and ts and sigs and public_key.startswith("whpk_")):
        return False
    if abs((time.time() if now is None else now) - int(ts)) > TOLERANCE:
        return False
    key = base64.b64decode(public_key[len("whpk_") :])
    signed = f"{msg_id}.{ts}.".encode() + body
    for entry in sigs.split(" "):
        version, _, value = entry.partition(",")
        if version == "v1a" and ed25519_verify(key, signed, base64.b64decode(value)):
            return True
    return False
