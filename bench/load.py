"""Load generator: one aiohttp ClientSession, N concurrent workers, bounded in count and time.

`python -m bench.load send --port P | --unix PATH  [--tenant T] [--payload-bytes 1024]
     [--batch K] [--concurrency 64] [--requests N] [--duration S] [--rate EV_PER_S] [--record]`
  posts events to /send (or /send-batch with K events a request); closed loop unless --rate.
`python -m bench.load raw --url URL --count N [--concurrency 64] [--payload-bytes 1024]`
  posts N delivery-shaped bodies straight to URL: the raw-client baseline of the deliver figure.

Prints one JSON object: counts, elapsed seconds, rates, latency percentiles, own CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import uvloop
from aiohttp import ClientSession, ClientTimeout, TCPConnector, UnixConnector
from aiohttp.connector import BaseConnector

SEND = "/api/v1/webhooks/send"
SEND_BATCH = "/api/v1/webhooks/send-batch"


def event(tenant: str, payload_bytes: int, order: bool = False) -> dict[str, Any]:
    if order:
        return {"tenant_id": tenant, "event_type": "bench.order", "payload": order_payload(payload_bytes)}
    return {"tenant_id": tenant, "event_type": "bench.event", "payload": {"data": "x" * payload_bytes}}


# A typical event contract: 10 properties, two of them nested objects (bench/contracts.py).
ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["order_id", "status", "total", "currency", "customer", "shipping"],
    "properties": {
        "order_id": {"type": "string", "pattern": "^ord_[0-9a-z]+$"},
        "status": {"enum": ["pending", "paid", "shipped", "cancelled"]},
        "total": {"type": "number", "minimum": 0},
        "currency": {"type": "string", "minLength": 3, "maxLength": 3},
        "created_at": {"type": "string"},
        "paid": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
        "note": {"type": "string", "maxLength": 2000},
        "customer": {
            "type": "object",
            "required": ["id", "email"],
            "properties": {"id": {"type": "string"}, "email": {"type": "string"}, "name": {"type": "string"}},
        },
        "shipping": {
            "type": "object",
            "required": ["country"],
            "properties": {
                "line1": {"type": "string"},
                "city": {"type": "string"},
                "postcode": {"type": "string"},
                "country": {"type": "string", "minLength": 2, "maxLength": 2},
            },
        },
    },
}


def order_payload(size: int) -> dict[str, Any]:
    """A payload valid against ORDER_SCHEMA, padded (in `note`) to about `size` bytes of JSON."""
    p: dict[str, Any] = {
        "order_id": "ord_8f14e45fceea167a",
        "status": "paid",
        "total": 129.9,
        "currency": "EUR",
        "created_at": "2024-01-15T10:30:00Z",
        "paid": True,
        "tags": ["web", "promo", "first-order"],
        "note": "",
        "customer": {"id": "cus_42", "email": "ana@example.com", "name": "Ana Lima"},
        "shipping": {"line1": "Rua Augusta 100", "city": "Lisboa", "postcode": "1100-053", "country": "PT"},
    }
    p["note"] = "n" * max(0, size - len(json.dumps(p)))
    return p


def delivery_body(i: int, payload_bytes: int) -> bytes:
    """What the daemon delivers (SPEC §4), so the raw client posts bodies of the same size."""
    return json.dumps(
        {
            "id": f"evt_{i:032x}",
            "event_type": "bench.event",
            "tenant_id": "drain",
            "created_at": "2024-01-15T10:30:00.123Z",
            "severity": "Medium",
            "context": {},
            "payload": {"data": "x" * payload_bytes},
        },
        separators=(",", ":"),
    ).encode()


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def run_send(args: argparse.Namespace) -> dict[str, Any]:
    connector: BaseConnector
    if args.unix:
        connector = UnixConnector(path=args.unix, limit=args.concurrency)
        base = "http://localhost"
    else:
        connector = TCPConnector(limit=args.concurrency)
        base = f"http://127.0.0.1:{args.port}"
    if args.batch:
        url = base + SEND_BATCH
        body = json.dumps({"events": [event(args.tenant, args.payload_bytes, args.order)] * args.batch}).encode()
    else:
        url = base + SEND
        body = json.dumps(event(args.tenant, args.payload_bytes, args.order)).encode()
    headers = {"Content-Type": "application/json"}
    if args.traceparent:
        headers["traceparent"] = args.traceparent
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    accepted: dict[str, float] = {}
    events_ok = 0
    sent = 0
    cpu0 = time.process_time()
    start = time.monotonic()
    deadline = start + args.duration
    interval = 1.0 / args.rate if args.rate else 0.0

    async with ClientSession(connector=connector, timeout=ClientTimeout(total=60)) as session:

        async def one() -> None:
            nonlocal events_ok
            t0 = time.monotonic()
            async with session.post(url, data=body, headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
            latencies.append(time.monotonic() - t0)
            statuses[status] = statuses.get(status, 0) + 1
            if args.batch and status == 200:
                results = json.loads(raw)["results"]
                events_ok += sum(1 for r in results if r.get("status") == "queued")
            elif status == 202:
                events_ok += 1
                if args.record:
                    accepted[json.loads(raw)["event_id"]] = time.time()

        async def worker() -> None:
            nonlocal sent
            while sent < args.requests and time.monotonic() < deadline:
                sent += 1
                try:
                    await one()
                except Exception as exc:
                    key = -1 if not isinstance(exc, asyncio.TimeoutError) else -2
                    statuses[key] = statuses.get(key, 0) + 1

        if interval:
            # Open loop at a fixed rate, at most `concurrency` requests in flight.
            sem = asyncio.Semaphore(args.concurrency)
            pending: set[asyncio.Task[None]] = set()

            async def paced() -> None:
                async with sem:
                    try:
                        await one()
                    except Exception:
                        statuses[-1] = statuses.get(-1, 0) + 1

            i = 0
            while i < args.requests and time.monotonic() < deadline:
                due = start + i * interval
                now = time.monotonic()
                if due > now:
                    await asyncio.sleep(due - now)
                task = asyncio.create_task(paced())
                pending.add(task)
                task.add_done_callback(pending.discard)
                i += 1
            sent = i
            if pending:
                await asyncio.wait(pending, timeout=30)
        else:
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed = time.monotonic() - start
    return {
        "requests": sent,
        "statuses": {str(k): v for k, v in statuses.items()},
        "events_ok": events_ok,
        "elapsed": elapsed,
        "events_per_s": events_ok / elapsed if elapsed else 0.0,
        "requests_per_s": len(latencies) / elapsed if elapsed else 0.0,
        "lat_p50_ms": pct(latencies, 0.5) * 1000,
        "lat_p99_ms": pct(latencies, 0.99) * 1000,
        "cpu_s": time.process_time() - cpu0,
        "accepted": accepted,
    }


async def run_raw(args: argparse.Namespace) -> dict[str, Any]:
    bodies = [delivery_body(i, args.payload_bytes) for i in range(args.count)]
    headers = {"Content-Type": "application/json"}
    ok = 0
    errors = 0
    next_i = 0
    cpu0 = time.process_time()
    start = time.monotonic()
    deadline = start + args.duration
    async with ClientSession(
        connector=TCPConnector(limit=args.concurrency), timeout=ClientTimeout(total=30)
    ) as session:

        async def worker() -> None:
            nonlocal ok, errors, next_i
            while next_i < len(bodies) and time.monotonic() < deadline:
                i = next_i
                next_i += 1
                h = {**headers, "X-Event-ID": f"evt_{i:032x}"}
                try:
                    async with session.post(args.url, data=bodies[i], headers=h) as resp:
                        await resp.read()
                        if 200 <= resp.status < 300:
                            ok += 1
                        else:
                            errors += 1
                except Exception:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed = time.monotonic() - start
    return {
        "events_ok": ok,
        "errors": errors,
        "elapsed": elapsed,
        "events_per_s": ok / elapsed if elapsed else 0.0,
        "cpu_s": time.process_time() - cpu0,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("send")
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int)
    where.add_argument("--unix")
    s.add_argument("--tenant", default="bench")
    s.add_argument("--payload-bytes", type=int, default=1024)
    s.add_argument("--batch", type=int, default=0)
    s.add_argument("--concurrency", type=int, default=64)
    s.add_argument("--requests", type=int, default=10**9)
    s.add_argument("--duration", type=float, default=5.0)
    s.add_argument("--rate", type=float, default=0.0)
    s.add_argument("--record", action="store_true")
    s.add_argument("--traceparent", default="", help="send this W3C traceparent header with every request")
    s.add_argument("--order", action="store_true", help="bench.order events valid against ORDER_SCHEMA")
    r = sub.add_parser("raw")
    r.add_argument("--url", required=True)
    r.add_argument("--count", type=int, required=True)
    r.add_argument("--concurrency", type=int, default=64)
    r.add_argument("--payload-bytes", type=int, default=1024)
    r.add_argument("--duration", type=float, default=120.0)
    args = ap.parse_args()
    result = uvloop.run(run_send(args) if args.mode == "send" else run_raw(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
