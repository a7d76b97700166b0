"""Baseline servers for the ingest figures.

`python -m bench.baselines bare  (--port P | --unix PATH)`
    parses the JSON body of POST /api/v1/webhooks/send and answers 202; delivers nothing.
`python -m bench.baselines naive (--port P | --unix PATH) --sink URL`
    answers 202 and fires the POST to the sink in the background with one shared ClientSession:
    no journal, no retries — what a team writes in thirty lines instead of running a relay.
GET /readyz answers 200 on both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import uvloop
from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

SEND = "/api/v1/webhooks/send"


async def readyz(request: web.Request) -> web.Response:
    return web.Response(text="ready")


def bare_app() -> web.Application:
    async def send(request: web.Request) -> web.Response:
        event = json.loads(await request.read())
        if not isinstance(event, dict) or "tenant_id" not in event:
            return web.json_response({"error": "bad event"}, status=422)
        return web.json_response({"event_id": f"evt_{uuid.uuid4().hex}", "status": "queued"}, status=202)

    app = web.Application()
    app.router.add_post(SEND, send)
    app.router.add_get("/readyz", readyz)
    return app


def naive_app(sink: str) -> web.Application:
    tasks: set[asyncio.Task[None]] = set()
    session_key = web.AppKey("session", ClientSession)

    async def forward(session: ClientSession, event_id: str, body: bytes) -> None:
        try:
            async with session.post(
                sink, data=body, headers={"Content-Type": "application/json", "X-Event-ID": event_id}
            ) as resp:
                await resp.read()
        except Exception:  # the naive forwarder drops failures: that is the point
            pass

    async def send(request: web.Request) -> web.Response:
        body = await request.read()
        event = json.loads(body)
        if not isinstance(event, dict) or "tenant_id" not in event:
            return web.json_response({"error": "bad event"}, status=422)
        event_id = f"evt_{uuid.uuid4().hex}"
        task = asyncio.create_task(forward(request.app[session_key], event_id, body))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return web.json_response({"event_id": event_id, "status": "queued"}, status=202)

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app[session_key] = ClientSession(connector=TCPConnector(limit=64), timeout=ClientTimeout(total=30))
        yield
        await app[session_key].close()

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post(SEND, send)
    app.router.add_get("/readyz", readyz)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["bare", "naive"])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int)
    where.add_argument("--unix")
    ap.add_argument("--sink", default="")
    args = ap.parse_args()
    app = bare_app() if args.kind == "bare" else naive_app(args.sink)
    uvloop.install()
    if args.unix:
        web.run_app(app, path=args.unix, access_log=None, print=None, shutdown_timeout=0.5)
    else:
        web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, shutdown_timeout=0.5)


if __name__ == "__main__":
    main()
