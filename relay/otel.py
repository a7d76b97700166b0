"""OpenTelemetry export of `hookrelay.ingest` and `hookrelay.attempt` spans over OTLP/HTTP (SPEC §14).

Imported only by `relay.tracing.setup()`, when an OTLP endpoint is configured and the `otel`
extra is installed. Everything else is configured by the standard variables, read by the SDK
itself: `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`, `_HEADERS`, `_TIMEOUT`, `_COMPRESSION`,
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`.

Spans go through a BatchSpanProcessor: ending a span only appends it to a queue, and the export
(a blocking HTTP POST) runs in the processor's own thread, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from relay import __version__
from relay.tracing import REQUEST_KEY, TraceContext, from_headers

INGEST_PATHS = frozenset({"/api/v1/webhooks/send", "/api/v1/webhooks/send-batch"})
_SPAN_KEY = "hookrelay.span"


def _parent(tc: TraceContext | None) -> Context | None:
    """An OTel context whose current span is the remote parent `tc` (None: a new trace)."""
    if tc is None:
        return None
    _, trace_id, span_id, flags = tc.traceparent.split("-")
    state = TraceState.from_header([tc.tracestate]) if tc.tracestate else None
    ctx = SpanContext(int(trace_id, 16), int(span_id, 16), True, TraceFlags(int(flags, 16)), state)
    return trace.set_span_in_context(NonRecordingSpan(ctx))


def _traceparent(span: trace.Span) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


class _Attempt:
    __slots__ = ("_span", "traceparent")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self.traceparent = _traceparent(span)

    def end(self, status: int | None, outcome: str, error: str | None) -> None:
        span = self._span
        if status is not None:
            span.set_attributes({"http.response.status_code": status, "hookrelay.outcome": outcome})
        else:
            span.set_attribute("hookrelay.outcome", outcome)
        if outcome != "success":
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()


class OtelExporter:
    def __init__(self) -> None:
        resource = Resource.create({SERVICE_VERSION: __version__})
        # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win; otherwise we are "hookrelay", not
        # the SDK's "unknown_service".
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "hookrelay"}))
        self._provider = TracerProvider(resource=resource)
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._tracer = self._provider.get_tracer("hookrelay", __version__)

    def ingest_middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        tracer = self._tracer

        @web.middleware
        async def ingest_span(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            if request.path not in INGEST_PATHS:
                return await handler(request)
            caller = from_headers(request.headers)
            span = tracer.start_span(
                "hookrelay.ingest",
                context=_parent(caller),
                kind=SpanKind.SERVER,
                attributes={"http.request.method": request.method, "url.path": request.path},
            )
            # Events of this request are children of the ingest span; the caller's tracestate
            # travels on unchanged.
            request[REQUEST_KEY] = TraceContext(_traceparent(span), caller.tracestate if caller else None)
            request[_SPAN_KEY] = span
            try:
                resp = await handler(request)
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.end()
                raise
            span.set_attribute("http.response.status_code", resp.status)
            if resp.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()
            return resp

        return ingest_span

    def annotate(self, request: web.Request, attributes: Mapping[str, str]) -> None:
        span: trace.Span | None = request.get(_SPAN_KEY)
        if span is not None:
            span.set_attributes({f"hookrelay.{k}": v for k, v in attributes.items()})

    def attempt(
        self, parent: TraceContext | None, tenant: str, event_type: str, event_id: str, attempt: int
    ) -> _Attempt:
        span = self._tracer.start_span(
            "hookrelay.attempt",
            context=_parent(parent),
            kind=SpanKind.CLIENT,
            attributes={
                "hookrelay.tenant": tenant,
                "hookrelay.event_type": event_type,
                "hookrelay.event_id": event_id,
                "hookrelay.attempt": attempt,
                "http.request.method": "POST",
            },
        )
        return _Attempt(span)

    def shutdown(self) -> None:
        self._provider.shutdown()  # flushes what the batch processor still holds
