"""W3C trace context through the relay (SPEC §14): parsing, the journal, every attempt, restarts."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import msgspec
import pytest

from relay import tracing
from relay.events import StoredEvent, decode_stored, encode_stored
from tests.support import REPO, Reply, Sink, write_tenant

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = f"00-{TRACE}-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (PARENT, PARENT),
        (f" {PARENT}\t", PARENT),  # optional whitespace around a header value
        (f"00-{TRACE}-b7ad6b7169203331-00", f"00-{TRACE}-b7ad6b7169203331-00"),
        # A future version may add fields: keep the four we know, as version 00.
        (f"cc-{TRACE}-b7ad6b7169203331-01-what-the-future-holds", PARENT),
        (f"00-{TRACE}-b7ad6b7169203331-01-extra", None),  # version 00 has exactly four fields
        (f"ff-{TRACE}-b7ad6b7169203331-01", None),  # version ff is forbidden
        (f"00-{'0' * 32}-b7ad6b7169203331-01", None),  # all-zero trace id
        (f"00-{TRACE}-{'0' * 16}-01", None),  # all-zero parent id
        (f"00-{TRACE.upper()}-b7ad6b7169203331-01", None),  # upper case hex is invalid
        (f"00-{TRACE}-b7ad6b716920333-01", None),  # short parent id
        ("not a traceparent", None),
        ("", None),
        (17, None),
        (None, None),
    ],
)
def test_traceparent_parsing_follows_w3c(value: object, expected: str | None) -> None:
    assert tracing.parse_traceparent(value) == expected


def test_child_keeps_trace_id_and_flags_and_replaces_the_span() -> None:
    out = tracing.child(PARENT, "00f067aa0ba902b7")
    assert out == f"00-{TRACE}-00f067aa0ba902b7-01"
    assert tracing.parse_traceparent(out) == out
    ids = {tracing.new_span_id() for _ in range(100)}
    assert len(ids) == 100 and all(tracing.parse_traceparent(tracing.child(PARENT, s)) for s in ids)


def test_tracestate_is_kept_only_with_a_valid_traceparent_and_when_printable() -> None:
    assert tracing.parse(PARENT, "rojo=00f067aa0ba902b7") == (PARENT, "rojo=00f067aa0ba902b7")
    assert tracing.parse("garbage", "rojo=1") is None
    assert tracing.parse(PARENT, "bad\r\nheader: x") == (PARENT, None)
    assert tracing.parse(PARENT, "x" * 513) == (PARENT, None)


def test_trace_context_field_is_lenient_and_falls_back_to_the_request() -> None:
    req = tracing.TraceContext(PARENT, None)
    own = f"00-{'1' * 32}-{'2' * 16}-00"
    assert tracing.from_field({"traceparent": own}, req) == (own, None)
    for value in ({"traceparent": "nope"}, [1, 2], "x", {"traceparent": 5}, None):
        assert tracing.from_field(value, req) == req
    assert tracing.from_field(None, None) is None


def test_journal_blobs_without_trace_context_keep_the_old_layout() -> None:
    # What hookrelay wrote before ordering keys (four elements) and before trace context (five).
    oldest = msgspec.msgpack.encode([b'{"id":"evt_1"}', "user.created", None, {"X-A": "1"}])
    ev = decode_stored(oldest)
    assert (ev.event_type, ev.custom_headers, ev.ordering_key) == ("user.created", {"X-A": "1"}, None)
    assert (ev.traceparent, ev.tracestate) == (None, None)
    older = msgspec.msgpack.encode([b'{"id":"evt_1"}', "user.created", None, None, "key-1"])
    ev = decode_stored(older)
    assert (ev.ordering_key, ev.traceparent) == ("key-1", None)
    assert encode_stored(ev) == older  # untraced events are still written that way
    traced = StoredEvent(b"{}", "a", None, None, "k", PARENT, "k=v")
    assert decode_stored(encode_stored(traced)) == traced


def test_import_relay_imports_no_opentelemetry_module() -> None:
    # A fresh interpreter: everything the daemon imports, and tracing.setup() without an endpoint.
    code = (
        "import sys, os, relay, relay.cli, relay.daemon, relay.api, relay.delivery, relay.tracing\n"
        "os.environ.pop('OTEL_EXPORTER_OTLP_ENDPOINT', None)\n"
        "os.environ.pop('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', None)\n"
        "assert relay.tracing.setup(os.environ) is None\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry' or m == 'relay.otel'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_endpoint_without_the_extra_warns_and_runs_untraced() -> None:
    # Blocking the package makes it absent, whether or not it is installed here.
    code = (
        "import sys, logging\n"
        "sys.modules['opentelemetry'] = None\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from relay import tracing\n"
        "assert tracing.setup({'OTEL_EXPORTER_OTLP_ENDPOINT': 'http://127.0.0.1:1'}) is None\n"
        "assert tracing.exporter is None\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "otel extra is not installed" in out.stderr
    assert "127.0.0.1:1" not in out.stderr  # the endpoint (it may hold credentials) is not logged


def _span_of(traceparent: str) -> str:
    version, trace_id, span_id, flags = traceparent.split("-")
    assert (version, trace_id, flags) == ("00", TRACE, "01")
    return span_id


def test_every_attempt_carries_the_trace_including_retries_and_after_sigkill(make_daemon: Any, sink: Sink) -> None:
    sink.responder = lambda n, r: Reply(500)
    d = make_daemon()
    policy = {"max_retries": 50, "initial_delay_seconds": 0.05, "max_delay_seconds": 0.1, "jitter": False}
    write_tenant(d.config, "tr", sink.url + "/t", retry_policy=policy)
    d.start()
    code, body = d.request(
        "POST",
        "/api/v1/webhooks/send",
        {"tenant_id": "tr", "event_type": "user.created", "payload": {"n": 1}},
        headers={"traceparent": PARENT, "tracestate": "rojo=00f067aa0ba902b7"},
    )
    assert code == 202
    eid = body["event_id"]
    sink.wait_for(3, "/t")
    d.kill()  # the trace context must come back from the journal
    sink.responder = lambda n, r: Reply(200)
    d2 = make_daemon(config=d.config, data_dir=d.data_dir).start()
    d2.wait_status(eid, "delivered")
    got = [r for r in sink.on("/t") if r.headers["X-Event-ID"] == eid]
    assert len(got) >= 4
    spans = [_span_of(r.headers["traceparent"]) for r in got]
    assert len(set(spans)) == len(spans) and "b7ad6b7169203331" not in spans  # a fresh span per attempt
    assert {r.headers["tracestate"] for r in got} == {"rojo=00f067aa0ba902b7"}
    assert d2.stop() == 0


def test_batch_items_take_their_own_trace_context_or_the_requests(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    write_tenant(d.config, "tb", sink.url + "/b")
    d.start()
    own = f"00-{'1' * 32}-{'2' * 16}-00"
    items = [
        {"tenant_id": "tb", "event_type": "a", "payload": 1, "event_id": "inherits"},
        {"tenant_id": "tb", "event_type": "a", "payload": 2, "event_id": "own", "trace_context": {"traceparent": own}},
        # Invalid: ignored, never an error; the item falls back to the request's context.
        {"tenant_id": "tb", "event_type": "a", "payload": 3, "event_id": "bad", "trace_context": {"traceparent": "x"}},
    ]
    code, body = d.request("POST", "/api/v1/webhooks/send-batch", {"events": items}, headers={"traceparent": PARENT})
    assert code == 200 and [r.get("status") for r in body["results"]] == ["queued"] * 3, body
    assert _span_of(sink.wait_event("inherits").headers["traceparent"]) != "b7ad6b7169203331"
    assert sink.wait_event("bad").headers["traceparent"].split("-")[1] == TRACE
    tp = sink.wait_event("own").headers["traceparent"]
    assert (
        tp.startswith(f"00-{'1' * 32}-") and tp.endswith("-00") and "tracestate" not in sink.wait_event("own").headers
    )
    # No trace context at all, or an invalid one: accepted, and delivered without a traceparent.
    code, body = d.request(
        "POST",
        "/api/v1/webhooks/send",
        {"tenant_id": "tb", "event_type": "a", "payload": 4, "event_id": "none"},
        headers={"traceparent": "00-zzz-01"},
    )
    assert code == 202
    assert "traceparent" not in {k.lower() for k in sink.wait_event("none").headers}
    assert d.stop() == 0
