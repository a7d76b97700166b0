"""Events as they travel through hookrelay: the ingest request, the stored record, the envelope.

The envelope bytes are built once at ingest and stored in the journal; the dispatcher sends (and
signs) those exact bytes on every attempt, so a retry never re-encodes and never differs.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

Severity = Literal["Low", "Medium", "High", "Critical"]
SEVERITY_RANK: dict[str, int] = {"Low": 0, "Medium": 1, "High": 2, "Critical": 3}
SEVERITY_NAME: tuple[str, ...] = ("Low", "Medium", "High", "Critical")

EVENT_ID_RE = re.compile(r"[A-Za-z0-9._:~-]{1,128}\Z")
HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}\Z")
MAX_HEADER_VALUE = 8192
MAX_CUSTOM_HEADERS = 64

# Headers that carry the signature, identity and framing of a delivery (SPEC §4): neither an
# event's custom_headers nor a tenant's default_headers may set them. "X-Event-*" and "webhook-*"
# in SPEC are the ones hookrelay sets; other names in those families (X-Event-Priority) stay free.
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "X-Webhook-Signature",
        "X-Event-ID",
        "X-Event-Type",
        "X-Tenant-ID",
        "X-Timestamp",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "Host",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
    )
)


def is_reserved_header(name: str) -> bool:
    """Whether `name` is set by hookrelay on every delivery and may not be configured or sent."""
    return name.lower() in RESERVED_HEADERS


class SendRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /api/v1/webhooks/send (and each item of /send-batch)."""

    tenant_id: str
    event_type: str
    payload: msgspec.Raw
    target_url: str | None = None
    custom_headers: dict[str, str] | None = None
    severity: Severity = "Medium"
    context: dict[str, str] | None = None
    event_id: str | None = None
    ordering_key: str | None = None
    # W3C trace context for this event ({"traceparent", "tracestate"}); read leniently by
    # relay.tracing, because an invalid trace context is ignored, never an error (W3C).
    trace_context: Any = None


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    events: list[msgspec.Raw]


class Envelope(msgspec.Struct):
    """The delivered body, field order as in SPEC §4."""

    id: str
    event_type: str
    tenant_id: str
    created_at: str
    severity: str
    context: dict[str, str]
    payload: msgspec.Raw


class StoredEvent(msgspec.Struct, array_like=True):
    """What the journal keeps for an accepted event (msgpack, positional for compactness).

    Trailing fields have defaults, so records written before they existed still decode: four
    elements (before ordering), five (before trace context). An event without a trace context is
    still written as five (see `encode_stored`).
    """

    envelope: bytes
    event_type: str
    target_url: str | None
    custom_headers: dict[str, str] | None
    ordering_key: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None


class _StoredUntraced(msgspec.Struct, array_like=True):
    """The five-element form, byte for byte what hookrelay wrote before trace context existed."""

    envelope: bytes
    event_type: str
    target_url: str | None
    custom_headers: dict[str, str] | None
    ordering_key: str | None = None


class Attempt(msgspec.Struct, omit_defaults=True):
    attempt: int  # 1, 2, ... within its round
    at: str
    status_code: int | None
    error: str | None
    duration_ms: float
    response_body: str | None = None
    # 1 for the first delivery run, +1 for each replay of the dead letter. 0 only in records
    # journaled before rounds were recorded: `number_rounds` fills those in from the sequence.
    round: int = 0


def number_rounds(attempts: list[Attempt]) -> list[Attempt]:
    """Give every attempt of a whole history its round: an attempt numbered 1 after the first
    opens the next round (a replay restarts the numbering). Records that carry one keep it."""
    current = 0
    for a in attempts:
        if a.round:
            current = a.round
        else:
            current = current + 1 if a.attempt == 1 or current == 0 else current
            a.round = current
    return attempts


_stored_encoder = msgspec.msgpack.Encoder()
_stored_decoder = msgspec.msgpack.Decoder(StoredEvent)
_json_encoder = msgspec.json.Encoder()
_attempt_decoder = msgspec.json.Decoder(Attempt)
_envelope_decoder = msgspec.json.Decoder(Envelope)


class _RandomIds:
    """96 random bits an id, read from the OS 4,096 ids at a time: one getrandom call per id was
    a tenth of the CPU of a send-batch request. Thread-safe, and reset in a forked child (a
    pre-fork web server's workers use the client library), so no two processes share bytes."""

    BLOCK = 12 * 4096

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()  # a new one: another thread may have held it at the fork
        self._buf = b""
        self._pos = 0

    def take(self) -> str:
        with self._lock:
            if self._pos >= len(self._buf):
                self._buf, self._pos = os.urandom(self.BLOCK), 0
            pos = self._pos
            self._pos = pos + 12
            return self._buf[pos : pos + 12].hex()


_IDS = _RandomIds()


def new_event_id() -> str:
    return "evt_" + _IDS.take()


@functools.lru_cache(maxsize=4)
def _second(sec: int) -> str:
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def rfc3339(ts: float, *, millis: bool = True) -> str:
    # On the ingest path: format the second once, then only append the milliseconds.
    sec = int(ts)
    if millis:
        return f"{_second(sec)}.{int((ts - sec) * 1000):03d}Z"
    return _second(sec) + "Z"


def build_envelope(req: SendRequest, event_id: str, now: float | None = None) -> bytes:
    env = Envelope(
        id=event_id,
        event_type=req.event_type,
        tenant_id=req.tenant_id,
        created_at=rfc3339(time.time() if now is None else now),
        severity=req.severity,
        context=req.context or {},
        payload=req.payload,
    )
    return _json_encoder.encode(env)


def encode_stored(ev: StoredEvent) -> bytes:
    if ev.traceparent is None:
        # Untraced events keep the old layout, so a journal stays readable by an older hookrelay.
        return _stored_encoder.encode(
            _StoredUntraced(ev.envelope, ev.event_type, ev.target_url, ev.custom_headers, ev.ordering_key)
        )
    return _stored_encoder.encode(ev)


def decode_stored(blob: bytes) -> StoredEvent:
    return _stored_decoder.decode(blob)


def encode_attempt(a: Attempt) -> bytes:
    return _json_encoder.encode(a)


def decode_attempt(blob: bytes) -> Attempt:
    return _attempt_decoder.decode(blob)


def decode_envelope(data: bytes) -> Envelope:
    return _envelope_decoder.decode(data)
