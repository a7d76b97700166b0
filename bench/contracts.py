"""Scenarios for issue 19 (SPEC §14): what tracing and the event catalog cost.

- tracing: ingest /send carrying a `traceparent`, and draining a traced backlog, with OTLP span
  export on (to the stand-in collector, `bench.otlp`) against the same daemon build with export
  off; plus the cost of propagation alone (traceparent vs none, export off).
- schema: ingest of a 1 KB payload whose type has a typical schema (10 properties, two nested
  objects; `bench.load.ORDER_SCHEMA`) against the same payload with no catalog.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from typing import Any

from bench.common import free_port, http, wait_until_ready
from bench.load import ORDER_SCHEMA
from bench.parties import Server, tenant
from bench.scenarios import Figure, Runner, Sample, compare, drain

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _collector(r: Runner) -> tuple[Any, dict[str, str]]:
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        raise RuntimeError("the otel extra is not installed: pip install -e '.[otel]'")
    port = free_port()
    proc = r.procs.spawn("otlp", ["-m", "bench.otlp", "--port", str(port)])
    wait_until_ready(port, proc, 20, path="/count")
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        # The SDK's defaults (5 s delay, 2048 queue, 512 a batch): what an operator gets.
    }
    return (proc, port), env


def tracing(r: Runner) -> list[Figure]:
    s = r.s
    (collector, cport), on_env = _collector(r)
    hook = [tenant("bench", f"{r.p.sink_url}/hook/trace")]
    d_on = r.p.start_daemon("trace-on", hook, env=on_env)
    d_off = r.p.start_daemon("trace-off", hook)

    def run(server: Server, traceparent: str) -> Callable[[], Sample]:
        def go() -> Sample:
            x = r.load(server, duration=s.round_s, payload_bytes=1024, concurrency=64, traceparent=traceparent)
            r.settle(x.result["events_ok"])
            return x

        return go

    on, off, bare = "export on (traceparent)", "export off (traceparent)", "export off, no traceparent"
    for server in (d_on, d_off):
        x = r.load(server, duration=0.5, traceparent=TRACEPARENT)
        r.settle(x.result["events_ok"])
    runs = r.alternate([(on, run(d_on, TRACEPARENT)), (off, run(d_off, TRACEPARENT)), (bare, run(d_off, ""))], s.rounds)
    r.p.stop(d_on)
    r.p.stop(d_off)
    exported = http(cport, "GET", "/count")[1]
    figures = [
        compare(
            "tracing",
            "ingest, OTel export on vs off",
            runs,
            on,
            off,
            "events/s",
            0.8,
            note=f"1 KB /send with a traceparent, 64 concurrent; collector got {exported['exports']} exports",
        ),
        compare("tracing", "ingest, traceparent vs none (no export)", runs, off, bare, "events/s", None),
    ]

    url = f"{r.p.sink_url}/hook/tdrain"

    def drain_round(name: str, env: dict[str, str] | None) -> Callable[[], Sample]:
        return lambda: drain(r, name, "tdrain", url, s.backlog, env, traceparent=TRACEPARENT)

    a, b = "drain, export on", "drain, export off"
    runs = r.alternate([(a, drain_round("tdrain-on", on_env)), (b, drain_round("tdrain-off", None))], 2)
    r.procs.stop(collector)
    figures.append(
        compare(
            "tracing",
            "deliver backlog, OTel export on vs off",
            runs,
            a,
            b,
            "events/s",
            0.8,
            note=f"{s.backlog} traced events queued, then drained after a restart; a span per attempt",
        )
    )
    return figures


def schema(r: Runner) -> list[Figure]:
    s = r.s
    hook = [tenant("bench", f"{r.p.sink_url}/hook/schema")]
    d_schema = r.p.start_daemon("schema-on", hook)
    (d_schema.config / "catalog.yaml").write_text(
        json.dumps({"event_types": [{"name": "bench.order", "description": "an order", "schema": ORDER_SCHEMA}]})
    )
    r.p.stop(d_schema)  # restart so the catalog is loaded at start, not by the watcher mid-round
    d_schema = r.p.start_daemon("schema-on", None, fresh=False)
    d_plain = r.p.start_daemon("schema-off", hook)
    listed = http(d_schema.port, "GET", "/api/v1/webhooks/event-types")[1]["event_types"]
    if [t["name"] for t in listed] != ["bench.order"]:
        raise RuntimeError(f"catalog not loaded: {listed}")

    def run(server: Server) -> Callable[[], Sample]:
        def go() -> Sample:
            x = r.load(server, duration=s.round_s, payload_bytes=1024, concurrency=64, order=True)
            if x.result["events_ok"] == 0:
                raise RuntimeError(f"nothing accepted: {x.result['statuses']}")
            r.settle(x.result["events_ok"])
            return x

        return go

    for server in (d_schema, d_plain):
        r.settle(r.load(server, duration=0.5, order=True).result["events_ok"])
    a, b = "schema (10 properties, 2 nested)", "no catalog"
    runs = r.alternate([(a, run(d_schema)), (b, run(d_plain))], s.rounds)
    r.p.stop(d_schema)
    r.p.stop(d_plain)
    note = "1 KB bench.order payload on /send, 64 concurrent; validated with jsonschema-rs"
    return [compare("schema", "ingest, typical schema vs none", runs, a, b, "events/s", 0.85, note=note)]


SCENARIOS: dict[str, Callable[[Runner], list[Figure]]] = {"tracing": tracing, "schema": schema}
