"""A stand-in OTLP/HTTP trace collector for the benchmarks: answers 200 to every export, counts bytes.

`python -m bench.otlp --port P`
  POST /v1/traces   200 (an empty ExportTraceServiceResponse); body counted, not decoded
  GET  /count       {"exports": n, "bytes": b}
"""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web


class Collector:
    def __init__(self) -> None:
        self.exports = 0
        self.bytes = 0

    async def traces(self, request: web.Request) -> web.Response:
        self.bytes += len(await request.read())
        self.exports += 1
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def count(self, request: web.Request) -> web.Response:
        return web.json_response({"exports": self.exports, "bytes": self.bytes})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    c = Collector()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", c.traces)
    app.router.add_get("/count", c.count)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, shutdown_timeout=0.5)


if __name__ == "__main__":
    main()
