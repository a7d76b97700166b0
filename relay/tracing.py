"""W3C trace context through the relay (SPEC §14), and the seam for the optional OTel exporter.

An event sent with a `traceparent` keeps it in the journal; every delivery attempt carries a
`traceparent` with the same trace id and a span id of its own, and the `tracestate` unchanged,
so the receiver's handling joins the trace of the user action that caused the event.

This module never imports OpenTelemetry. `setup()` loads `relay.otel` only when an OTLP
endpoint is configured (the `OTEL_*` conventions) and the `otel` extra is installed; until
then `exporter` is None and the hot path costs one attribute test per event.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, NamedTuple, Protocol

from aiohttp import web

log = logging.getLogger("relay.tracing")

# Version 00 is exactly these four fields; a higher version may append "-..." (W3C §3.2.4).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^\r\n]*)?\Z")
# tracestate: printable ASCII only (it is echoed into an outgoing header); W3C lets a vendor
# drop one longer than 512 characters rather than truncate it.
_TRACESTATE = re.compile(r"[\x20-\x7e]{0,512}\Z")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
REQUEST_KEY = "hookrelay.trace"  # the ingest span's context, set by the exporter's middleware


class TraceContext(NamedTuple):
    traceparent: str  # normalised to version 00
    tracestate: str | None


def parse_traceparent(value: object) -> str | None:
    """The version-00 form of a valid `traceparent`, or None: invalid values are ignored (W3C)."""
    if not isinstance(value, str):
        return None
    m = _TRACEPARENT.match(value.strip(" \t"))
    if m is None:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    if version == "00" and rest:
        return None  # version 00 has exactly four fields
    return f"00-{trace_id}-{span_id}-{flags}"


def parse(traceparent: object, tracestate: object = None) -> TraceContext | None:
    tp = parse_traceparent(traceparent)
    if tp is None:
        return None  # without a valid traceparent the tracestate means nothing (W3C §3.3)
    ts = tracestate.strip(" \t") if isinstance(tracestate, str) else None
    return TraceContext(tp, ts if ts and _TRACESTATE.match(ts) else None)


def from_headers(headers: Any) -> TraceContext | None:
    """The trace context of an HTTP request (a CIMultiDict); several `traceparent`s are invalid."""
    parents = headers.getall("traceparent", ())
    if len(parents) != 1:
        return None
    states = headers.getall("tracestate", ())
    return parse(parents[0], ",".join(states) if states else None)


def from_field(value: object, default: TraceContext | None) -> TraceContext | None:
    """A send body's `trace_context` if it holds a valid traceparent, else `default` (the request's)."""
    if not isinstance(value, dict):
        return default
    return parse(value.get("traceparent"), value.get("tracestate")) or default


def new_span_id() -> str:
    # Not a secret: W3C asks only for randomness, and the Mersenne Twister is cheap per attempt.
    return f"{random.getrandbits(64) or 1:016x}"


def child(traceparent: str, span_id: str) -> str:
    """The same trace and flags with our own span id as the parent of the next hop."""
    return f"{traceparent[:36]}{span_id}{traceparent[52:]}"


# ---- the optional exporter ---------------------------------------------------------------


class AttemptSpan(Protocol):
    traceparent: str

    def end(self, status: int | None, outcome: str, error: str | None) -> None: ...


class Exporter(Protocol):
    def ingest_middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]: ...

    def attempt(
        self, parent: TraceContext | None, tenant: str, event_type: str, event_id: str, attempt: int
    ) -> AttemptSpan: ...

    def annotate(self, request: web.Request, attributes: Mapping[str, str]) -> None: ...

    def shutdown(self) -> None: ...


exporter: Exporter | None = None


def _enabled(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    wanted = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if "otlp" not in {w.strip() for w in wanted.split(",")}:
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup(environ: Mapping[str, str]) -> Exporter | None:
    """Start the OTLP/HTTP exporter when the environment asks for one and the extra is installed."""
    global exporter
    if not _enabled(environ):
        return None
    try:
        from relay.otel import OtelExporter
    except ImportError as exc:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the otel extra is not installed "
            "(pip install 'hookrelay[otel]'); spans are not exported (%s)",
            exc.name or "opentelemetry",
        )
        return None
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol and protocol != "http/protobuf":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; exporting over http/protobuf", protocol[:40])
    exporter = OtelExporter()
    log.info("OpenTelemetry: exporting spans over OTLP/HTTP")
    return exporter


def shutdown() -> None:
    """Flush and stop the exporter (blocking: run it in a thread)."""
    global exporter
    if exporter is not None:
        exporter.shutdown()
        exporter = None


# ---- hooks called from ingest and delivery ----------------------------------------------


def request_context(request: web.Request) -> TraceContext | None:
    """The trace context events of this request inherit: the ingest span's, or the caller's."""
    if exporter is not None:
        tc: TraceContext | None = request.get(REQUEST_KEY)
        if tc is not None:
            return tc
    return from_headers(request.headers)


def annotate(request: web.Request, **attributes: str) -> None:
    if exporter is not None:
        exporter.annotate(request, attributes)


def on_attempt(
    headers: MutableMapping[str, str],
    traceparent: str | None,
    tracestate: str | None,
    tenant: str,
    event_type: str,
    event_id: str,
    attempt: int,
) -> AttemptSpan | None:
    """Set `traceparent`/`tracestate` for one attempt; with an exporter, start its span.

    Set after the configured headers, so a `traceparent` in `custom_headers` or
    `default_headers` never hides the event's own trace.
    """
    if exporter is None:
        if traceparent is None:
            return None
        headers["traceparent"] = child(traceparent, new_span_id())
        if tracestate:
            headers["tracestate"] = tracestate
        return None
    parent = TraceContext(traceparent, tracestate) if traceparent is not None else None
    span = exporter.attempt(parent, tenant, event_type, event_id, attempt)
    headers["traceparent"] = span.traceparent
    if tracestate:
        headers["tracestate"] = tracestate
    return span
