#!/usr/bin/env python3
"""A webhook receiver (aiohttp) that verifies hookrelay's Ed25519 (`v1a`) signatures with `cryptography`.

    python examples/receiver_ed25519.py --port 9000 --public-key whpk_...

The receiver holds only the tenant's *public* key (`GET /api/v1/webhooks/configs/{tenant}/public-key`
on the relay), so whoever reads it cannot forge a delivery. It needs nothing from hookrelay.
The rules are those of Standard Webhooks for asymmetric signatures:

1. Read `webhook-id`, `webhook-timestamp` and `webhook-signature`. Refuse a timestamp more than
   five minutes from now (a replayed old request).
2. The signed bytes are `{webhook-id}.{webhook-timestamp}.{raw body}`: the exact body bytes,
   before any JSON parsing.
3. `webhook-signature` is a space-separated list of `<version>,<base64>`; `v1a` entries are
   Ed25519 signatures (`v1` ones are HMAC, for receivers holding the secret). Accept the request
   when one `v1a` entry verifies with the public key; answer 401 otherwise.
4. Dedupe on `webhook-id` (at-least-once delivery) and answer 2xx quickly.

`GET /stats` answers the counters as JSON (`accepted`, `duplicates`, `rejected`, `events`).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
import time
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TOLERANCE_SECONDS = 5 * 60

STATS: web.AppKey[dict[str, Any]] = web.AppKey("stats", dict)
SEEN: web.AppKey[set[str]] = web.AppKey("seen", set)
KEYS: web.AppKey[list[Ed25519PublicKey]] = web.AppKey("keys", list)


def log(line: str) -> None:
    print(line, flush=True)


def load_public_key(text: str) -> Ed25519PublicKey:
    """`whpk_<base64 of the 32-byte key>` -> a key object (ValueError when it is not one)."""
    if not text.startswith("whpk_"):
        raise ValueError("a public key looks like whpk_<base64>")
    try:
        raw = base64.b64decode(text.removeprefix("whpk_"), validate=True)
    except binascii.Error as exc:
        raise ValueError("the part after whpk_ is not base64") from exc
    return Ed25519PublicKey.from_public_bytes(raw)


def verify(body: bytes, headers: Any, keys: list[Ed25519PublicKey], now: float) -> str | None:
    """None when the request is authentic, else why not."""
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not (msg_id and timestamp.isdigit() and signatures):
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    if abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        return "timestamp too far from now"
    signed = f"{msg_id}.{timestamp}.".encode() + body
    for entry in signatures.split(" "):
        version, _, value = entry.partition(",")
        if version != "v1a":
            continue
        try:
            signature = base64.b64decode(value, validate=True)
        except binascii.Error:
            continue
        for key in keys:  # several keys while the sender rotates its signing key
            try:
                key.verify(signature, signed)
                return None
            except InvalidSignature:
                pass
    return "bad signature"


async def handle_webhook(request: web.Request) -> web.Response:
    stats, seen = request.app[STATS], request.app[SEEN]
    body = await request.read()  # the raw bytes: exactly what was signed
    msg_id = request.headers.get("webhook-id", "")
    why = verify(body, request.headers, request.app[KEYS], time.time())
    if why is not None:
        stats["rejected"] += 1
        log(f"rejected {msg_id or '-'}: {why}")
        return web.json_response({"error": why}, status=401)
    if msg_id in seen:
        stats["duplicates"] += 1
        log(f"duplicate {msg_id}: already processed, acknowledging again")
        return web.json_response({"status": "duplicate"})
    event = json.loads(body)
    seen.add(msg_id)
    stats["accepted"] += 1
    stats["events"].append({"id": msg_id, "event_type": event.get("event_type"), "payload": event.get("payload")})
    log(f"accepted {msg_id} {event.get('event_type')}")
    return web.json_response({"status": "ok"})


async def handle_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS])


def make_app(keys: list[Ed25519PublicKey]) -> web.Application:
    app = web.Application()
    app[STATS] = {"accepted": 0, "duplicates": 0, "rejected": 0, "events": []}
    app[SEEN] = set()
    app[KEYS] = keys
    app.router.add_get("/stats", handle_stats)
    app.router.add_post("/{tail:.*}", handle_webhook)
    return app


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "9000")))
    p.add_argument(
        "--public-key",
        action="append",
        default=None,
        help="the tenant's whpk_ public key (repeat during a rotation); default $WEBHOOK_PUBLIC_KEY",
    )
    ns = p.parse_args()
    texts = ns.public_key or ([os.environ["WEBHOOK_PUBLIC_KEY"]] if os.environ.get("WEBHOOK_PUBLIC_KEY") else [])
    if not texts:
        p.error("give --public-key or set WEBHOOK_PUBLIC_KEY")
    try:
        keys = [load_public_key(t) for t in texts]
    except ValueError as exc:
        p.error(str(exc))
    log(f"listening on http://{ns.host}:{ns.port}")
    web.run_app(make_app(keys), host=ns.host, port=ns.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
