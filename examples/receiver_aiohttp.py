#!/usr/bin/env python3
"""A webhook receiver (aiohttp) that verifies hookrelay's signatures and dedupes deliveries.

    python examples/receiver_aiohttp.py --port 9000 --secret "$WEBHOOK_SECRET"

What a receiver must do:

1. Verify `X-Webhook-Signature` over the *raw* request body (the exact bytes, before any JSON
   parsing) with `relay.signing.verify_signature`, which compares in constant time and accepts
   several comma-separated signatures (during a key rotation hookrelay sends one per key).
   Answer 401 when it does not match.
2. Dedupe on `X-Event-ID`: delivery is at-least-once, so the same event can arrive twice (for
   example when the answer to the first delivery was lost). Answer 2xx to a duplicate, do not
   process it again. This example keeps the ids in memory; a real receiver keeps them where it
   keeps the effects of processing (a database table with a unique key), in the same transaction.
3. Answer 2xx quickly; anything else is retried by hookrelay with backoff.

`GET /stats` answers the counters as JSON (`accepted`, `duplicates`, `rejected`, `events`), and each
decision is printed on stdout, so a test or a curious operator can see what happened.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

try:
    from relay.signing import verify_signature
except ImportError:  # running from a checkout without hookrelay installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from relay.signing import verify_signature

STATS: web.AppKey[dict[str, Any]] = web.AppKey("stats", dict)
SEEN: web.AppKey[set[str]] = web.AppKey("seen", set)
SECRETS: web.AppKey[list[str]] = web.AppKey("secrets", list)


def log(line: str) -> None:
    print(line, flush=True)


async def handle_webhook(request: web.Request) -> web.Response:
    stats, seen = request.app[STATS], request.app[SEEN]
    body = await request.read()  # the raw bytes: exactly what was signed
    signature = request.headers.get("X-Webhook-Signature", "")
    event_id = request.headers.get("X-Event-ID", "")
    # Several secrets: the receiver's side of a key rotation (accept the old one for a while).
    if not signature or not any(verify_signature(body, signature, s) for s in request.app[SECRETS]):
        stats["rejected"] += 1
        log(f"rejected {event_id or '-'}: bad signature")
        return web.json_response({"error": "invalid signature"}, status=401)
    if event_id in seen:
        stats["duplicates"] += 1
        log(f"duplicate {event_id}: already processed, acknowledging again")
        return web.json_response({"status": "duplicate"})
    event = json.loads(body)
    seen.add(event_id)
    stats["accepted"] += 1
    stats["events"].append({"id": event_id, "event_type": event.get("event_type"), "payload": event.get("payload")})
    log(f"accepted {event_id} {event.get('event_type')} tenant={request.headers.get('X-Tenant-ID')}")
    return web.json_response({"status": "ok"})


async def handle_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS])


def make_app(secrets: list[str]) -> web.Application:
    app = web.Application()
    app[STATS] = {"accepted": 0, "duplicates": 0, "rejected": 0, "events": []}
    app[SEEN] = set()
    app[SECRETS] = secrets
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
    ns = p.parse_args()
    secrets = ns.secret or ([os.environ["WEBHOOK_SECRET"]] if os.environ.get("WEBHOOK_SECRET") else [])
    if not secrets:
        p.error("give --secret or set WEBHOOK_SECRET")
    log(f"listening on http://{ns.host}:{ns.port}")
    web.run_app(make_app(secrets), host=ns.host, port=ns.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
