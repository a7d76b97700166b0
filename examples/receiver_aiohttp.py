#!/usr/bin/env python3
"""A webhook receiver (aiohttp) that verifies hookrelay's signatures and dedupes deliveries.

    python examples/receiver_aiohttp.py --port 9000 --secret "$WEBHOOK_SECRET"

What a receiver must do:

1. Verify `X-Webhook-Signature` over the *raw* request body (the exact bytes, before any JSON
   parsing) with `relay.signing.verify_signature`, which compares in constant time and accepts
   several comma-separated signatures (during a key rotation hookrelay sends one per key).
   Answer 401 when it does not match.
2. Refuse replays. The signature covers only the body, so a captured request can be sent again
   with any headers. What the body itself says is signed: its `id` and its `created_at`.
   - `X-Timestamp` (the attempt's time, not signed) must be within 5 minutes of now: this stops
     a careless replay of an old capture, not a careful one;
   - `created_at` (signed) must be younger than `--max-age` (default 24 h): an older capture is
     refused with 401 whatever its headers say;
   - `id` (signed) is deduped for at least as long as `--max-age`, so every capture young
     enough to pass the age check is caught as a duplicate. Never dedupe on the `X-Event-ID`
     header alone: it is not signed, and a replay can change it.
   Delivery is at-least-once, so a duplicate is normal (a lost answer, a requeued dead letter):
   answer 2xx and do not process it again. This example keeps the ids in memory; a real
   receiver keeps them where it keeps the effects of processing (a unique key in its database),
   in the same transaction. A dead letter retried after more than `--max-age` is refused as
   stale: choose the age to cover how late you let an operator retry.
3. Answer 2xx quickly; anything else is retried by hookrelay with backoff.

`GET /stats` answers the counters as JSON (`accepted`, `duplicates`, `rejected`, `events`), and each
decision is printed on stdout, so a test or a curious operator can see what happened.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

try:
    from relay.signing import timestamp_fresh, verify_signature
except ImportError:  # running from a checkout without hookrelay installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from relay.signing import timestamp_fresh, verify_signature

STATS: web.AppKey[dict[str, Any]] = web.AppKey("stats", dict)
SEEN: web.AppKey[dict[str, float]] = web.AppKey("seen", dict)  # event id -> created_at (UNIX s)
SECRETS: web.AppKey[list[str]] = web.AppKey("secrets", list)
MAX_AGE: web.AppKey[float] = web.AppKey("max_age", float)
CLOCK_SKEW = 300.0  # seconds X-Timestamp (and created_at) may be off from this machine's clock


def log(line: str) -> None:
    print(line, flush=True)


def reject(stats: dict[str, Any], event_id: str, why: str, status: int = 401) -> web.Response:
    stats["rejected"] += 1
    log(f"rejected {event_id or '-'}: {why}")
    return web.json_response({"error": why}, status=status)


def created_at_of(event: Any) -> float | None:
    """`created_at` of a decoded envelope as UNIX seconds, or None when absent or malformed."""
    try:
        return datetime.fromisoformat(str(event["created_at"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, TypeError, ValueError):
        return None


async def handle_webhook(request: web.Request) -> web.Response:
    stats, seen, max_age = request.app[STATS], request.app[SEEN], request.app[MAX_AGE]
    body = await request.read()  # the raw bytes: exactly what was signed
    signature = request.headers.get("X-Webhook-Signature", "")
    header_id = request.headers.get("X-Event-ID", "")
    # Several secrets: the receiver's side of a key rotation (accept the old one for a while).
    if not signature or not any(verify_signature(body, signature, s) for s in request.app[SECRETS]):
        return reject(stats, header_id, "bad signature")
    now = time.time()
    if not timestamp_fresh(request.headers.get("X-Timestamp"), now, CLOCK_SKEW):
        return reject(stats, header_id, "stale or missing X-Timestamp")
    try:
        event = json.loads(body)
        event_id = str(event["id"])  # signed, unlike the X-Event-ID header
    except (ValueError, TypeError, KeyError):
        return reject(stats, header_id, "not a hookrelay envelope", 400)
    created = created_at_of(event)
    if created is None or not (now - max_age <= created <= now + CLOCK_SKEW):
        return reject(stats, event_id, "stale created_at (older than --max-age)")
    for old in [k for k, at in seen.items() if at < now - max_age]:
        del seen[old]  # too old to pass the age check again: no longer needed for dedupe
    if event_id in seen:
        stats["duplicates"] += 1
        log(f"duplicate {event_id}: already processed, acknowledging again")
        return web.json_response({"status": "duplicate"})
    seen[event_id] = created
    stats["accepted"] += 1
    stats["events"].append({"id": event_id, "event_type": event.get("event_type"), "payload": event.get("payload")})
    log(f"accepted {event_id} {event.get('event_type')} tenant={request.headers.get('X-Tenant-ID')}")
    return web.json_response({"status": "ok"})


async def handle_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS])


def make_app(secrets: list[str], max_age: float = 86400.0) -> web.Application:
    app = web.Application()
    app[STATS] = {"accepted": 0, "duplicates": 0, "rejected": 0, "events": []}
    app[SEEN] = {}
    app[SECRETS] = secrets
    app[MAX_AGE] = max_age
    app.router.add_get("/stats", handle_stats)
    app.router.add_post("/{tail:.*}", handle_webhook)
    return app


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "9000")))
    p.add_argument(
        "--secret",
        action="append",
        default=None,
        help="the tenant's secret_key (repeat during a rotation); default $WEBHOOK_SECRET",
    )
    p.add_argument(
        "--max-age",
        type=float,
        default=86400.0,
        help="seconds after created_at an event is still accepted (and its id remembered); default 1 day",
    )
    ns = p.parse_args()
    secrets = ns.secret or ([os.environ["WEBHOOK_SECRET"]] if os.environ.get("WEBHOOK_SECRET") else [])
    if not secrets:
        p.error("give --secret or set WEBHOOK_SECRET")
    log(f"listening on http://{ns.host}:{ns.port}")
    web.run_app(make_app(secrets, ns.max_age), host=ns.host, port=ns.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
