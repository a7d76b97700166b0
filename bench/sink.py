"""The webhook receiver: answers 200 at once on /hook/*, sleeps on /slow, counts everything.

`python -m bench.sink --port P [--slow SECONDS]`
  POST /hook/...   200 at once; counted; arrival time recorded per X-Event-ID while recording
  POST /slow/...   sleeps --slow seconds, then 200 (for a tenant whose timeout is shorter)
  GET  /count      {"count": n}  (requests on /hook)
  POST /record     clears the arrival record and starts recording
  GET  /arrivals   {"arrivals": {event_id: unix time}} and stops recording
  POST /flaky/...  500 for 20% of requests (seeded), else 200; logs X-Event-ID of each 200 per path
  GET  /flaky-log?path=/flaky/x   {"ids": [...]}: the ids answered 200 on that path, in order
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import uvloop
from aiohttp import web


class Sink:
    def __init__(self, slow: float) -> None:
        self.slow = slow
        self.count = 0
        self.recording = False
        self.arrivals: dict[str, float] = {}
        self.rng = random.Random(20)
        self.flaky_ok: dict[str, list[str]] = {}

    async def hook(self, request: web.Request) -> web.Response:
        await request.read()
        self.count += 1
        if self.recording:
            eid = request.headers.get("X-Event-ID")
            if eid is not None:
                self.arrivals[eid] = time.time()
        return web.Response(text="ok")

    async def slow_hook(self, request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(self.slow)
        return web.Response(text="late")

    async def flaky_hook(self, request: web.Request) -> web.Response:
        await request.read()
        if self.rng.random() < 0.2:
            return web.Response(status=500, text="flaky")
        self.flaky_ok.setdefault(request.path, []).append(request.headers.get("X-Event-ID", ""))
        return web.Response(text="ok")

    async def get_flaky_log(self, request: web.Request) -> web.Response:
        return web.json_response({"ids": self.flaky_ok.get(request.query.get("path", ""), [])})

    async def get_count(self, request: web.Request) -> web.Response:
        return web.json_response({"count": self.count})

    async def record(self, request: web.Request) -> web.Response:
        self.arrivals = {}
        self.recording = True
        return web.json_response({"recording": True})

    async def get_arrivals(self, request: web.Request) -> web.Response:
        self.recording = False
        return web.json_response({"arrivals": self.arrivals})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--slow", type=float, default=2.0)
    args = ap.parse_args()
    sink = Sink(args.slow)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/hook{tail:.*}", sink.hook)
    app.router.add_post("/slow{tail:.*}", sink.slow_hook)
    app.router.add_post("/flaky{tail:.*}", sink.flaky_hook)
    app.router.add_get("/flaky-log", sink.get_flaky_log)
    app.router.add_get("/count", sink.get_count)
    app.router.add_post("/record", sink.record)
    app.router.add_get("/arrivals", sink.get_arrivals)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, shutdown_timeout=0.5)


if __name__ == "__main__":
    main()
