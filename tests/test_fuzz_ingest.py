"""Fuzzing ingest validation (issue 8, item 7): `decode_send` never lets anything but an ApiError
(400/413/422) escape, and the real daemon's /send and /send-batch never answer 5xx.

Bounded: a few hundred examples in-process, 100 against the daemon.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from relay.errors import ApiError
from relay.events import SendRequest
from relay.ingest import decode_send
from tests.support import Daemon, free_port, write_tenant

FIELDS = ["tenant_id", "event_type", "payload", "target_url", "custom_headers", "severity", "context", "event_id"]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)
texts = st.text(max_size=40) | st.sampled_from(["", "a", "acme", "user.created", "\r\n", "\x00", "é" * 300])
header_names = st.sampled_from(["X-A", "X-Event-ID", "Host", "X-Webhook-Signature", "bad name", "", "x:y"]) | texts
urls = st.sampled_from(
    [
        "http://127.0.0.1:9/x",
        "https://127.0.0.1:9/",
        "ftp://127.0.0.1/",
        "http://",
        "http:// 127.0.0.1/",
        "http://127.0.0.1:9/\r\nX: y",
        "not a url",
        "http://[::1/",
        "http://127.0.0.1:99999/",
    ]
) | st.text(max_size=30)


def nested(depth: int, kind: str = "[") -> bytes:
    if kind == "[":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


field_values: dict[str, st.SearchStrategy[Any]] = {
    "tenant_id": texts | json_values,
    "event_type": texts | json_values,
    "payload": json_values,
    "target_url": urls | json_values,
    "custom_headers": st.dictionaries(header_names, texts | json_values, max_size=70) | json_values,
    "severity": st.sampled_from(["Low", "Medium", "High", "Critical", "low", ""]) | json_values,
    "context": st.dictionaries(texts, texts | json_values, max_size=70) | json_values,
    "event_id": st.sampled_from(["evt_1", "a" * 128, "a" * 129, "bad id", ""]) | texts | json_values,
}


@st.composite
def send_bodies(draw: st.DrawFn) -> bytes:
    """JSON objects shaped like /send bodies: known fields (some missing, some wrong), plus strays."""
    body: dict[str, Any] = {}
    for name in FIELDS:
        if draw(st.integers(0, 3)):  # mostly present
            body[name] = draw(field_values[name])
    if draw(st.integers(0, 5)) == 0:
        body[draw(st.text(max_size=10))] = draw(json_values)
    raw = json.dumps(body).encode()
    if draw(st.integers(0, 9)) == 0:  # a deeply nested payload now and then
        depth = draw(st.integers(1, 3000))
        raw = raw[:-1] + (b", " if body else b"") + b'"payload": ' + nested(depth, draw(st.sampled_from("[{"))) + b"}"
    return raw


def check_decode(raw: bytes) -> None:
    try:
        req = decode_send(raw)
    except ApiError as err:
        assert err.status in (400, 413, 422), (err.status, err.code, err.message)
        assert err.code and err.message
        body = err.body()
        assert json.dumps(body)  # the error answer itself is serialisable
        return
    assert isinstance(req, SendRequest)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
@example(b"")
@example(b"\xff\xfe")
@example(b"null")
@example(b"[" * 10000)
@example(nested(10000))
@example(b'{"tenant_id":"a","event_type":"b","payload":' + nested(10000) + b"}")
def test_decode_send_arbitrary_bytes(raw: bytes) -> None:
    check_decode(raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(send_bodies())
@example(b'{"tenant_id":"a","event_type":"b","payload":' + nested(10000) + b"}")
@example(b'{"tenant_id":"a","event_type":"b","payload":' + nested(5000, "{") + b"}")
@example(b'{"tenant_id":"a","event_type":"b","payload":1,"context":' + nested(5000, "{") + b"}")
@example(b'{"tenant_id":"a","event_type":"b","payload":1,"target_url":"http://[::1/"}')
@example(b'{"tenant_id":"a","event_type":"b","payload":1,"target_url":"http://[x]/"}')
def test_decode_send_structured(raw: bytes) -> None:
    check_decode(raw)


@pytest.mark.parametrize(
    "url",
    ["http://[::1/", "http://[x]/", "http://127.0.0.1:99999/", "http://127.0.0.1:port/", "https://:443/"],
)
def test_unusable_target_url_is_422(url: str) -> None:
    """A target_url that can never be requested is refused at ingest, naming the field."""
    body = {"tenant_id": "a", "event_type": "b", "payload": 1, "target_url": url}
    with pytest.raises(ApiError) as info:
        decode_send(json.dumps(body).encode())
    assert info.value.status == 422 and info.value.details == {"field": "target_url"}


# ---- against the real daemon -------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("fuzz-ingest"), args=["--max-body-bytes", "65536", "--log-level", "warning"])
    # Accepted events go to a closed loopback port and are dead-lettered after one attempt.
    closed = f"http://127.0.0.1:{free_port()}/"
    write_tenant(d.config, "acme", closed, retry_policy={"max_retries": 0})
    write_tenant(d.config, "a", closed, retry_policy={"max_retries": 0}, enabled_events=["user.*"])
    d.start()
    yield d
    d.__exit__(None, None, None)


def _with_known_tenant(raw: bytes, tenant: str) -> bytes:
    """Point a structured body at a configured tenant, so validation goes past the tenant lookup."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return raw
    if isinstance(body, dict) and "tenant_id" in body:
        body["tenant_id"] = tenant
        return json.dumps(body).encode()
    return raw


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    raw=send_bodies() | st.binary(max_size=200),
    tenant=st.sampled_from(["acme", "a", "nope"]),
    batch=st.booleans(),
)
def test_daemon_send_never_5xx(daemon: Daemon, raw: bytes, tenant: str, batch: bool) -> None:
    raw = _with_known_tenant(raw, tenant)
    path = "/api/v1/webhooks/send"
    if batch:
        path, raw = "/api/v1/webhooks/send-batch", b'{"events":[' + raw + b"," + raw + b"]}"
    code, body = daemon.request("POST", path, raw=raw)
    assert code < 500, (code, body)
    assert isinstance(body, dict), body
    if code >= 400:
        assert isinstance(body.get("error"), dict) and body["error"].get("code"), body
    elif batch:
        assert len(body["results"]) == 2
        for item in body["results"]:
            assert item.get("status_code", 200) < 500, item
