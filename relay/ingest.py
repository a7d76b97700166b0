"""Validation of /send requests: everything a request can get wrong, named by field."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import msgspec

from relay.errors import ApiError
from relay.events import (
    EVENT_ID_RE,
    HEADER_NAME_RE,
    MAX_CUSTOM_HEADERS,
    MAX_HEADER_VALUE,
    SendRequest,
    is_reserved_header,
)
from relay.urls import host_problem

_send_decoder = msgspec.json.Decoder(SendRequest)
_PATH_RE = re.compile(r"at `\$(.*)`$")
MAX_EVENT_TYPE = 256
MAX_CONTEXT_ITEMS = 64
MAX_ORDERING_KEY = 256


def too_deep() -> ApiError:
    return ApiError(400, "bad_json", "request body is nested too deeply")


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_field", f"{field}: {message}", {"field": field})


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def check_json_body(body: bytes) -> bytes:
    """`body`, once it is known to be UTF-8 without a duplicate key in any JSON object (else 400).

    msgspec (like most parsers) keeps the last of two equal keys and passes `payload` through as
    raw bytes; a relay that signs what it forwards must not let a receiver and hookrelay read two
    different documents out of one body, nor sign bytes that are not text. Syntax errors are left
    to the typed decoder that follows, which names the field.
    """
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400, "bad_json", f"request body is not valid UTF-8 (invalid byte at offset {exc.start})"
        ) from None
    colons = body.count(b":")
    if colons < 2:
        return body  # fewer than two keys in the whole document
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body
    except RecursionError:
        raise too_deep() from None
    # Fast path, at C speed: outside strings a colon follows each key, and re-encoding keeps every
    # string as it is, so the decoded document has as many colons as the body unless keys were
    # merged. Exact unless a colon is written escaped (\u003a), which takes the slow path.
    if b"\\u003" not in body and msgspec.json.encode(doc).count(b":") == colons:
        return body
    try:
        json.loads(body, object_pairs_hook=_unique_pairs)
    except _DuplicateKey as exc:
        key = exc.key if len(exc.key) <= 80 and exc.key.isprintable() else repr(exc.key)[:80]
        raise ApiError(400, "bad_json", f"duplicate key {key!r} in a JSON object") from None
    except RecursionError:
        raise too_deep() from None
    except ValueError:
        pass
    return body


def _field_of(exc: msgspec.ValidationError) -> tuple[str, str]:
    """`Expected `str`, got `int` - at `$.context.a`` -> ("context.a", "Expected `str`, got `int`")."""
    text = str(exc)
    m = _PATH_RE.search(text)
    path = m.group(1).lstrip(".") if m else ""
    message = text[: m.start()].rstrip(" -") if m else text
    if not path:
        missing = re.search(r"missing required field `(\w+)`", text)
        unknown = re.search(r"unknown field `(\w+)`", text)
        path = (missing or unknown).group(1) if (missing or unknown) else "body"  # type: ignore[union-attr]
    return path, message


def decode_send(body: bytes | msgspec.Raw) -> SendRequest:
    try:
        req = _send_decoder.decode(body)
    except msgspec.ValidationError as exc:
        field, message = _field_of(exc)
        raise invalid(field, message) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "bad_json", f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise too_deep() from None
    validate(req)
    return req


def _check_header(field: str, name: str, value: str) -> None:
    if not HEADER_NAME_RE.match(name):
        raise invalid(field, "not a valid HTTP header name")
    if "\r" in value or "\n" in value or "\0" in value:
        raise invalid(field, "header values may not contain CR, LF or NUL")
    if len(value) > MAX_HEADER_VALUE:
        raise invalid(field, f"header value longer than {MAX_HEADER_VALUE} characters")


def validate(req: SendRequest) -> None:
    if not req.tenant_id:
        raise invalid("tenant_id", "must not be empty")
    if not req.event_type or len(req.event_type) > MAX_EVENT_TYPE:
        raise invalid("event_type", f"must be 1 to {MAX_EVENT_TYPE} characters")
    if any(c in req.event_type for c in "\r\n\0"):
        raise invalid("event_type", "may not contain CR, LF or NUL")
    if req.event_id is not None and not EVENT_ID_RE.match(req.event_id):
        raise invalid("event_id", "must be 1 to 128 characters of A-Z a-z 0-9 . _ : ~ -")
    if req.target_url is not None:
        check_url(req.target_url)
    if req.custom_headers:
        if len(req.custom_headers) > MAX_CUSTOM_HEADERS:
            raise invalid("custom_headers", f"at most {MAX_CUSTOM_HEADERS} headers")
        for name, value in req.custom_headers.items():
            field = f"custom_headers.{name}"
            _check_header(field, name, value)
            # Content-Type too: the body is always the JSON envelope that was signed.
            if is_reserved_header(name) or name.lower() == "content-type":
                raise invalid(field, "this header is set by hookrelay and cannot be overridden")
    if req.ordering_key is not None and len(req.ordering_key.encode()) > MAX_ORDERING_KEY:
        raise invalid("ordering_key", f"at most {MAX_ORDERING_KEY} bytes (UTF-8)")
    if req.context and len(req.context) > MAX_CONTEXT_ITEMS:
        raise invalid("context", f"at most {MAX_CONTEXT_ITEMS} entries")


def check_url(url: str, field: str = "target_url") -> None:
    """An absolute http(s) URL that the HTTP client can actually use, or 422."""
    if any(c in url for c in "\r\n\0\t "):
        raise invalid(field, "may not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise invalid(field, "not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise invalid(field, "must be an absolute http:// or https:// URL")
    if host.endswith(".") or (host.replace(".", "").isdigit() and host.count(".") != 3):
        raise invalid(field, "host must be a DNS name or a dotted-quad / bracketed IPv6 address")
    if why := host_problem(host):
        raise invalid(field, why)
