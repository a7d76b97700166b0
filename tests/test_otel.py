"""OpenTelemetry export (SPEC §14): spans reach a real OTLP/HTTP receiver with their attributes."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support import Received, Reply, Sink, free_port, write_tenant

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


class OtlpReceiver:
    """A minimal OTLP/HTTP trace collector on 127.0.0.1: decodes every export with opentelemetry-proto."""

    def __init__(self) -> None:
        self.port = free_port()
        self.spans: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/traces", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert request.content_type == "application/x-protobuf"
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        with self._lock:
            for rs in req.resource_spans:
                res = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
                self.resources.append(res)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append(
                            {
                                "name": s.name,
                                "trace_id": s.trace_id.hex(),
                                "span_id": s.span_id.hex(),
                                "parent_span_id": s.parent_span_id.hex(),
                                "kind": s.kind,
                                "status": s.status.code,
                                "attributes": {kv.key: _value(kv.value) for kv in s.attributes},
                                "headers": dict(request.headers),
                            }
                        )
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    def start(self) -> OtlpReceiver:
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def wait(self, name: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self._lock:
                got = [s for s in self.spans if s["name"] == name]
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{len(got)} {name} spans within {timeout}s, expected {count}: {self.spans}")


def _value(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


def test_spans_are_exported_over_otlp_http_with_their_attributes(make_daemon: Any, sink: Sink) -> None:
    receiver = OtlpReceiver().start()
    try:
        failed: list[Received] = []

        def first_traced_attempt_fails(n: int, r: Received) -> Reply:
            # Only the traced event's first attempt: the untraced one may reach the sink first.
            if not failed and TRACE in r.headers.get("traceparent", ""):
                failed.append(r)
                return Reply(503)
            return Reply(200)

        sink.responder = first_traced_attempt_fails
        d = make_daemon(
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_EXPORTER_OTLP_HEADERS": "x-collector-token=s3cr3t-otlp",
                "OTEL_BSP_SCHEDULE_DELAY": "100",  # milliseconds: export soon, the test waits less
                "OTEL_SERVICE_NAME": "relay-under-test",
            }
        )
        policy = {"max_retries": 3, "initial_delay_seconds": 0.05, "jitter": False}
        write_tenant(d.config, "ot", sink.url + "/o", retry_policy=policy)
        d.start()
        code, body = d.request(
            "POST",
            "/api/v1/webhooks/send",
            {"tenant_id": "ot", "event_type": "order.paid", "payload": {"n": 1}},
            headers={"traceparent": PARENT},
        )
        assert code == 202
        eid = body["event_id"]
        # Without a trace context of its own, an event starts a trace at the ingest span.
        code, untraced = d.send("ot", "order.paid", {"n": 2})
        assert code == 202
        d.wait_status(eid, "delivered")
        d.wait_status(untraced["event_id"], "delivered")

        ingest = receiver.wait("hookrelay.ingest", 2)
        attempts = receiver.wait("hookrelay.attempt", 3)
        mine = next(s for s in ingest if s["trace_id"] == TRACE)
        assert mine["parent_span_id"] == "00f067aa0ba902b7"  # a child of the caller's span
        assert mine["attributes"]["hookrelay.tenant"] == "ot"
        assert mine["attributes"]["hookrelay.event_type"] == "order.paid"
        assert mine["attributes"]["hookrelay.event_id"] == eid
        assert mine["attributes"]["http.response.status_code"] == 202

        traced = sorted(
            (s for s in attempts if s["trace_id"] == TRACE), key=lambda s: s["attributes"]["hookrelay.attempt"]
        )
        assert [s["attributes"]["hookrelay.attempt"] for s in traced] == [1, 2]
        assert [s["attributes"]["http.response.status_code"] for s in traced] == [503, 200]
        assert [s["attributes"]["hookrelay.outcome"] for s in traced] == ["http_error", "success"]
        assert [s["status"] for s in traced] == [2, 0]  # ERROR, then UNSET
        for s in traced:
            assert s["parent_span_id"] == mine["span_id"]  # attempts hang under the ingest span
            assert s["attributes"]["hookrelay.tenant"] == "ot"
            assert s["attributes"]["hookrelay.event_type"] == "order.paid"
            assert s["attributes"]["hookrelay.event_id"] == eid
        # The receiver sees each attempt's own span as its parent.
        sent = [r.headers["traceparent"] for r in sink.on("/o") if r.headers["X-Event-ID"] == eid]
        assert sent == [f"00-{TRACE}-{s['span_id']}-01" for s in traced]

        other = next(s for s in ingest if s["trace_id"] != TRACE)
        assert other["parent_span_id"] == ""  # a root span
        delivered = sink.wait_event(untraced["event_id"])
        assert delivered.headers["traceparent"].split("-")[1] == other["trace_id"]

        assert receiver.resources[0]["service.name"] == "relay-under-test"
        assert receiver.spans[0]["headers"].get("x-collector-token") == "s3cr3t-otlp"  # OTEL_* honoured
        assert d.stop() == 0
        assert "s3cr3t-otlp" not in d.logs()
    finally:
        receiver.stop()
