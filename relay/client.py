"""Python client for a running hookrelay daemon (SPEC §8).

The host application needs nothing else to publish events::

    from relay.client import RelayClient, RelayError

    client = RelayClient()  # http://127.0.0.1:8787; or RelayClient(unix_socket="/run/hookrelay.sock")
    event_id = client.send("empresa-123", "user.created", {"user_id": 42}, severity="High")

`RelayClient` is synchronous and uses the standard library only (`http.client`), so it can be
vendored into any application. `AsyncRelayClient` offers the same methods as coroutines, on aiohttp
(imported only when it is used).

Errors: every failure raises `RelayError`. `.code` is the API's error code (`tenant_not_found`,
`invalid_field`, `unauthorized`, ...), `.status` the HTTP status (None when no answer came),
`.message` and `.details` as the API sent them. When the daemon cannot be reached the code is
`connection_error` (or `timeout` when it accepted the connection but did not answer in time).

Retries and idempotency: the client retries connection failures only (`retries` times, backing off
0.1 s, 0.2 s, ...), never an HTTP answer, so it never turns one call into two accepted events on
its own account. A connection can still break after the request was sent and before the answer
arrived; to make that retry safe, `send`/`send_batch` always send an `event_id` (idempotency key):
the one you pass, or an `evt_...` id generated here. The daemon answers a repeated `event_id` with
`"duplicate": true` instead of accepting a second event. Pass your own `event_id` (an order
number, a database row id) to make your application's own retries idempotent too. Management calls
that are not idempotent (`retry`, `retry_all`, `purge`, `delete_dead_letter`) are retried only when
the connection itself could not be made, i.e. when the daemon cannot have seen the request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import secrets
import socket
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "DEFAULT_URL",
    "SEVERITIES",
    "AsyncRelayClient",
    "RelayClient",
    "RelayError",
    "SendResult",
    "WebhookEvent",
    "new_event_id",
]

DEFAULT_URL = "http://127.0.0.1:8787"
API = "/api/v1/webhooks"
SEVERITIES = ("Low", "Medium", "High", "Critical")
_BACKOFF = 0.1  # seconds before the first connection retry; doubles each time
_USER_AGENT = "hookrelay-client"


def new_event_id() -> str:
    """A fresh `evt_` event id, in the daemon's own format."""
    return "evt_" + secrets.token_hex(12)


class RelayError(Exception):
    """An error answer from the daemon, or no answer at all.

    `code`: the API's error code (`tenant_not_found`, `invalid_field`, `unauthorized`, ...), or
    `connection_error` / `timeout` when no answer came. `status`: the HTTP status, or None.
    """

    def __init__(self, code: str, message: str, *, status: int | None = None, details: Any = None) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{code} ({status}): {message}")
        self.code = code
        self.status = status
        self.message = message
        self.details = details

    @property
    def connection_failed(self) -> bool:
        """True when the daemon could not be reached or did not answer (no HTTP status)."""
        return self.status is None


class SendResult(str):
    """What `send()` returns: the event id — a `str`, usable wherever the id was — that also says
    what the daemon did with the event.

    `.status`: `"queued"` (journaled, will be delivered), `"filtered"` (no `enabled_events` pattern
    of the tenant matches: nothing will be delivered), or, for a duplicate, the earlier event's
    current status (`"queued"`, `"delivering"`, `"retrying"`, `"delivered"`, `"dead"`).
    `.duplicate`: True when this `event_id` had been accepted before (nothing new was queued).
    """

    status: str
    duplicate: bool

    def __new__(cls, event_id: str, status: str, duplicate: bool = False) -> SendResult:
        obj = super().__new__(cls, event_id)
        obj.status = status
        obj.duplicate = duplicate
        return obj

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> SendResult:
        return cls(str(answer["event_id"]), str(answer.get("status", "queued")), bool(answer.get("duplicate")))

    @property
    def event_id(self) -> str:
        return str(self)

    @property
    def filtered(self) -> bool:
        return self.status == "filtered"

    @property
    def queued(self) -> bool:
        """True when this call queued a new event (not filtered, not a duplicate)."""
        return self.status == "queued" and not self.duplicate


# ---- the event builder ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WebhookEvent:
    """An event to publish, built fluently like the original system's `WebhookEvent`.

    Every `with_*` method returns a new event (the original is left unchanged)::

        event = (
            WebhookEvent("empresa-123", "payment.completed", {"amount": 100})
            .with_severity("High")
            .with_context("source", "billing")
        )
        client.send_event(event)
    """

    tenant_id: str
    event_type: str
    payload: Any
    severity: str | None = None
    context: Mapping[str, str] = dataclasses.field(default_factory=dict)
    target_url: str | None = None
    custom_headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    event_id: str | None = None

    def with_severity(self, severity: str) -> WebhookEvent:
        """`Low`, `Medium` (the daemon's default), `High` or `Critical` (case-insensitive)."""
        canonical = {s.lower(): s for s in SEVERITIES}.get(str(severity).lower())
        if canonical is None:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, not {severity!r}")
        return dataclasses.replace(self, severity=canonical)

    def with_context(self, key: str, value: str) -> WebhookEvent:
        return dataclasses.replace(self, context={**self.context, key: str(value)})

    def with_target_url(self, url: str) -> WebhookEvent:
        """Deliver this event to `url` instead of the tenant's `base_url`."""
        return dataclasses.replace(self, target_url=url)

    def with_header(self, name: str, value: str) -> WebhookEvent:
        """Add a custom header to the delivery (it wins over the tenant's `default_headers`)."""
        return dataclasses.replace(self, custom_headers={**self.custom_headers, name: value})

    def with_event_id(self, event_id: str) -> WebhookEvent:
        """Set the idempotency key: it becomes the delivered `id` and `X-Event-ID`."""
        return dataclasses.replace(self, event_id=event_id)

    def to_dict(self) -> dict[str, Any]:
        """The `/send` request body (only the fields that are set)."""
        return _send_body(
            self.tenant_id,
            self.event_type,
            self.payload,
            target_url=self.target_url,
            custom_headers=dict(self.custom_headers) or None,
            severity=self.severity,
            context=dict(self.context) or None,
            event_id=self.event_id,
        )


def _send_body(
    tenant_id: str,
    event_type: str,
    payload: Any,
    *,
    target_url: str | None = None,
    custom_headers: Mapping[str, str] | None = None,
    severity: str | None = None,
    context: Mapping[str, str] | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"tenant_id": tenant_id, "event_type": event_type, "payload": payload}
    if target_url is not None:
        body["target_url"] = target_url
    if custom_headers is not None:
        body["custom_headers"] = dict(custom_headers)
    if severity is not None:
        body["severity"] = severity
    if context is not None:
        body["context"] = dict(context)
    if event_id is not None:
        body["event_id"] = event_id
    return body


def _with_event_id(body: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(body)
    if out.get("event_id") is None:
        out["event_id"] = new_event_id()
    return out


# ---- shared request/answer handling --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int | None
    prefix: str
    unix_socket: str | None

    @classmethod
    def parse(cls, url: str | None, unix_socket: str | None) -> _Target:
        if unix_socket is not None:
            if url is not None and url != DEFAULT_URL:
                raise ValueError("pass either url or unix_socket, not both")
            return cls("http", "localhost", None, "", unix_socket)
        parts = urlsplit(url or DEFAULT_URL)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must look like http://HOST:PORT, not {url!r}")
        return cls(parts.scheme, parts.hostname, parts.port, parts.path.rstrip("/"), None)

    def describe(self) -> str:
        if self.unix_socket is not None:
            return f"unix socket {self.unix_socket}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{host}{port}{self.prefix}"


def _path(path: str, query: Mapping[str, Any] | None = None) -> str:
    if query:
        q = {k: v for k, v in query.items() if v is not None}
        if q:
            return f"{path}?{urlencode(q)}"
    return path


def _ledger(since: str | float | None, until: str | float | None, event_type: str | None) -> dict[str, str | float]:
    """The dead-letter filters that were given (`since`/`until`: RFC 3339 or UNIX seconds)."""
    given = {"since": since, "until": until, "event_type": event_type}
    return {k: v for k, v in given.items() if v is not None}


def _seg(value: str) -> str:
    return quote(value, safe="")


def _headers(token: str | None, has_body: bool) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
    if has_body:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _decode_answer(status: int, data: bytes) -> Any:
    """The JSON of a 2xx answer (None for an empty one), or raise RelayError for an error answer."""
    parsed: Any = None
    if data:
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
            if status < 400:
                raise RelayError(
                    "invalid_response", f"the daemon answered {status} with a non-JSON body", status=status
                ) from None
    if status < 400:
        return parsed
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict):
        raise RelayError(
            str(err.get("code") or f"http_{status}"),
            str(err.get("message") or ""),
            status=status,
            details=err.get("details"),
        )
    text = data.decode(errors="replace").strip()[:200]
    raise RelayError(f"http_{status}", text or f"HTTP {status}", status=status)


def _connection_error(target: _Target, exc: BaseException) -> RelayError:
    if isinstance(exc, TimeoutError | socket.timeout):
        return RelayError("timeout", f"no answer from hookrelay at {target.describe()} in time")
    reason = str(exc) or type(exc).__name__
    return RelayError("connection_error", f"cannot reach hookrelay at {target.describe()}: {reason}")


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix domain socket (the daemon's `--unix-socket`)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


# ---- the synchronous client ----------------------------------------------------------------


class RelayClient:
    """Synchronous client of the hookrelay HTTP API, over TCP or a Unix socket (standard library only).

    `url`: the daemon's base URL (default `http://127.0.0.1:8787`); `unix_socket`: the path of the
    daemon's `--unix-socket` instead; `token`: the `--ingest-token`, sent as `Authorization: Bearer`.
    `timeout`: seconds per request. `retries`: how many times a failed connection is retried.
    Each call opens its own connection, so one client may be shared between threads.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        unix_socket: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 2,
    ) -> None:
        self._target = _Target.parse(url, unix_socket)
        self.token = token
        self.timeout = timeout
        self.retries = max(0, retries)

    @property
    def endpoint(self) -> str:
        """Where this client talks to, for messages."""
        return self._target.describe()

    def __repr__(self) -> str:
        return f"RelayClient({self.endpoint!r})"

    def __enter__(self) -> RelayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release (a connection per call); present for symmetry with AsyncRelayClient."""

    # -- transport --

    def _connection(self) -> http.client.HTTPConnection:
        t = self._target
        if t.unix_socket is not None:
            return _UnixHTTPConnection(t.unix_socket, self.timeout)
        if t.scheme == "https":
            return http.client.HTTPSConnection(t.host, t.port, timeout=self.timeout)
        return http.client.HTTPConnection(t.host, t.port, timeout=self.timeout)

    def _request(self, method: str, path: str, body: Any = None, *, idempotent: bool = True) -> Any:
        """One API call. Connection failures are retried; after the request went out, only if idempotent."""
        data = json.dumps(body).encode() if body is not None else None
        headers = _headers(self.token, data is not None)
        attempt = 0
        while True:
            conn = self._connection()
            sent = False
            try:
                conn.connect()
                sent = True  # from here on the daemon may have seen the request
                conn.request(method, self._target.prefix + path, body=data, headers=headers)
                resp = conn.getresponse()
                status, answer = resp.status, resp.read()
            except (OSError, http.client.HTTPException) as exc:
                if attempt >= self.retries or (sent and not idempotent):
                    raise _connection_error(self._target, exc) from None
                time.sleep(_BACKOFF * 2**attempt)
                attempt += 1
                continue
            finally:
                conn.close()
            return _decode_answer(status, answer)

    # -- ingest --

    def send(
        self,
        tenant_id: str,
        event_type: str,
        payload: Any,
        *,
        target_url: str | None = None,
        custom_headers: Mapping[str, str] | None = None,
        severity: str | None = None,
        context: Mapping[str, str] | None = None,
        event_id: str | None = None,
    ) -> SendResult:
        """Publish one event; return its event id, a `SendResult` (a `str` with `.status` and
        `.duplicate`: a `filtered` or duplicate answer returns the id too)."""
        answer = self.send_result(
            tenant_id,
            event_type,
            payload,
            target_url=target_url,
            custom_headers=custom_headers,
            severity=severity,
            context=context,
            event_id=event_id,
        )
        return SendResult.from_answer(answer)

    def send_result(
        self,
        tenant_id: str,
        event_type: str,
        payload: Any,
        *,
        target_url: str | None = None,
        custom_headers: Mapping[str, str] | None = None,
        severity: str | None = None,
        context: Mapping[str, str] | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """Like `send`, but return the whole answer: `{"event_id", "status", ["duplicate"]}`."""
        body = _send_body(
            tenant_id,
            event_type,
            payload,
            target_url=target_url,
            custom_headers=custom_headers,
            severity=severity,
            context=context,
            event_id=event_id,
        )
        return self._send_body(body)

    def send_event(self, event: WebhookEvent) -> SendResult:
        """Publish an event made with the `WebhookEvent` builder; return its id as a `SendResult`."""
        return SendResult.from_answer(self._send_body(event.to_dict()))

    def _send_body(self, body: Mapping[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = self._request("POST", f"{API}/send", _with_event_id(body))
        return answer

    def send_batch(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Publish up to 1000 events in one journal commit; one result per event, in order.

        Each result is what `/send` would answer: `{"event_id", "status"}` or `{"error": {...}}`.
        Events without an `event_id` get one here (your dicts are not modified).
        """
        body = {"events": [_with_event_id(e) for e in events]}
        answer = self._request("POST", f"{API}/send-batch", body)
        results: list[dict[str, Any]] = answer["results"]
        return results

    # -- events and dead letters --

    def event(self, event_id: str) -> dict[str, Any]:
        """Status and attempts of an event: `{"event_id", "tenant_id", "status", "attempts"}`."""
        answer: dict[str, Any] = self._request("GET", f"{API}/events/{_seg(event_id)}")
        return answer

    def iter_dead_letters(
        self,
        tenant_id: str | None = None,
        limit: int = 100,
        *,
        since: str | float | None = None,
        until: str | float | None = None,
        event_type: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every dead letter, oldest first, fetched `limit` per request (following `next_cursor`).

        Filters: `since`, `until` (RFC 3339 or UNIX seconds, on `failed_at`), `event_type` (a
        pattern such as `order.*`)."""
        cursor: str | None = None
        while True:
            query = {"tenant_id": tenant_id, "limit": limit, "cursor": cursor, **_ledger(since, until, event_type)}
            page = self._request("GET", _path(f"{API}/dead-letter", query))
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def dead_letters(
        self,
        tenant_id: str | None = None,
        limit: int = 100,
        *,
        since: str | float | None = None,
        until: str | float | None = None,
        event_type: str | None = None,
    ) -> list[dict[str, Any]]:
        """All dead letters (of one tenant, or all), oldest first; `limit` is the page size;
        filters as for `iter_dead_letters`.

        Each item: `{"event": {...}, "attempts": [...], "failed_at", "failure_reason", "can_retry"}`.
        """
        return list(self.iter_dead_letters(tenant_id, limit, since=since, until=until, event_type=event_type))

    def retry_matching(
        self,
        tenant_id: str | None = None,
        *,
        since: str | float | None = None,
        until: str | float | None = None,
        event_type: str | None = None,
    ) -> int:
        """Requeue the dead letters matching the filters (`since`, `until`, `event_type`); how many."""
        body = {"tenant_id": tenant_id, **_ledger(since, until, event_type)}
        return int(self._request("POST", f"{API}/retry-all", body, idempotent=False)["matched"])

    def purge_matching(
        self,
        tenant_id: str | None = None,
        *,
        since: str | float | None = None,
        until: str | float | None = None,
        event_type: str | None = None,
    ) -> int:
        """Delete the dead letters matching the filters for good; how many."""
        body = {"tenant_id": tenant_id, **_ledger(since, until, event_type)}
        return int(self._request("POST", f"{API}/purge-all", body, idempotent=False)["matched"])

    # -- endpoints --

    def tenant_metrics(self, tenant_id: str) -> dict[str, Any]:
        """`GET /metrics/{tenant_id}`: counts and the endpoint's state, since when and why."""
        answer: dict[str, Any] = self._request("GET", f"{API}/metrics/{_seg(tenant_id)}")
        return answer

    def set_endpoint(self, tenant_id: str, enabled: bool) -> dict[str, Any]:
        """Enable (held events drain) or disable (new events are held) a tenant's endpoint."""
        action = "enable" if enabled else "disable"
        answer: dict[str, Any] = self._request("POST", f"{API}/endpoints/{_seg(tenant_id)}/{action}", idempotent=False)
        return answer

    def dead_letter(self, event_id: str) -> dict[str, Any]:
        """One dead letter, as `dead_letters` lists it (RelayError `not_dead_lettered` if it is not one)."""
        answer: dict[str, Any] = self._request("GET", f"{API}/dead-letter/{_seg(event_id)}")
        return answer

    def retry(self, event_id: str) -> dict[str, Any]:
        """Requeue one dead letter (RelayError `not_dead_lettered` if it is not in the queue)."""
        answer: dict[str, Any] = self._request("POST", f"{API}/retry/{_seg(event_id)}", idempotent=False)
        return answer

    def retry_all(self, tenant_id: str | None = None) -> int:
        """Requeue every dead letter (of one tenant, or all); return how many were requeued."""
        answer = self._request("POST", _path(f"{API}/dead-letter/retry", {"tenant_id": tenant_id}), idempotent=False)
        return int(answer["requeued"])

    def purge(self, tenant_id: str | None = None) -> int:
        """Delete every dead letter (of one tenant, or all); return how many were deleted."""
        answer = self._request("DELETE", _path(f"{API}/dead-letter", {"tenant_id": tenant_id}), idempotent=False)
        return int(answer["purged"])

    def delete_dead_letter(self, event_id: str) -> None:
        """Delete one dead letter (RelayError `not_dead_lettered` if it is not in the queue)."""
        self._request("DELETE", f"{API}/dead-letter/{_seg(event_id)}", idempotent=False)

    # -- tenants --

    def configure(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace a tenant (the YAML keys of SPEC §2); return the daemon's answer."""
        answer: dict[str, Any] = self._request("POST", f"{API}/configure", dict(config))
        return answer

    def delete_config(self, tenant_id: str) -> None:
        """Remove a tenant (its pending events are dead-lettered with reason `tenant removed`)."""
        self._request("DELETE", f"{API}/config/{_seg(tenant_id)}")

    def configs(self) -> list[dict[str, Any]]:
        """Every tenant's configuration, secrets masked."""
        answer = self._request("GET", f"{API}/configs")
        configs: list[dict[str, Any]] = answer["configs"]
        return configs

    def metrics(self, tenant_id: str) -> dict[str, Any]:
        """Per-tenant figures: total/successful/failed events, pending retries, dead letters, ..."""
        answer: dict[str, Any] = self._request("GET", f"{API}/metrics/{_seg(tenant_id)}")
        return answer

    def ready(self) -> bool:
        """True when `/readyz` answers 200."""
        try:
            self._request("GET", "/readyz")
        except RelayError as exc:
            if exc.status is None:
                raise
            return False
        return True


# ---- the asynchronous client ---------------------------------------------------------------


class AsyncRelayClient:
    """`RelayClient` with `await`, on aiohttp. Use it as `async with AsyncRelayClient() as c:`.

    Outside `async with`, call `await client.close()` when done. Same arguments, same errors, the
    same connection-retry and idempotency rules as `RelayClient`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        unix_socket: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 2,
    ) -> None:
        self._target = _Target.parse(url, unix_socket)
        self.token = token
        self.timeout = timeout
        self.retries = max(0, retries)
        self._session: aiohttp.ClientSession | None = None

    @property
    def endpoint(self) -> str:
        return self._target.describe()

    def __repr__(self) -> str:
        return f"AsyncRelayClient({self.endpoint!r})"

    async def __aenter__(self) -> AsyncRelayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            connector: aiohttp.BaseConnector | None = None
            if self._target.unix_socket is not None:
                connector = aiohttp.UnixConnector(path=self._target.unix_socket)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        return self._session

    def _url(self, path: str) -> str:
        t = self._target
        if t.unix_socket is not None:
            return f"http://localhost{path}"
        return t.describe() + path

    async def _request(self, method: str, path: str, body: Any = None, *, idempotent: bool = True) -> Any:
        import aiohttp

        data = json.dumps(body).encode() if body is not None else None
        headers = _headers(self.token, data is not None)
        session = self._get_session()
        attempt = 0
        while True:
            try:
                async with session.request(method, self._url(path), data=data, headers=headers) as resp:
                    status, answer = resp.status, await resp.read()
            except (aiohttp.ClientConnectorError, aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
                # A refused connection never reached the daemon: always safe to retry.
                before_send = isinstance(exc, aiohttp.ClientConnectorError)
                if attempt >= self.retries or not (before_send or idempotent):
                    raise _connection_error(self._target, exc) from None
                await asyncio.sleep(_BACKOFF * 2**attempt)
                attempt += 1
                continue
            return _decode_answer(status, answer)

    # -- ingest --

    async def send(
        self,
        tenant_id: str,
        event_type: str,
        payload: Any,
        *,
        target_url: str | None = None,
        custom_headers: Mapping[str, str] | None = None,
        severity: str | None = None,
        context: Mapping[str, str] | None = None,
        event_id: str | None = None,
    ) -> SendResult:
        """Publish one event; return its event id as a `SendResult` (see `RelayClient.send`)."""
        answer = await self.send_result(
            tenant_id,
            event_type,
            payload,
            target_url=target_url,
            custom_headers=custom_headers,
            severity=severity,
            context=context,
            event_id=event_id,
        )
        return SendResult.from_answer(answer)

    async def send_result(
        self,
        tenant_id: str,
        event_type: str,
        payload: Any,
        *,
        target_url: str | None = None,
        custom_headers: Mapping[str, str] | None = None,
        severity: str | None = None,
        context: Mapping[str, str] | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        body = _send_body(
            tenant_id,
            event_type,
            payload,
            target_url=target_url,
            custom_headers=custom_headers,
            severity=severity,
            context=context,
            event_id=event_id,
        )
        return await self._send_body(body)

    async def send_event(self, event: WebhookEvent) -> SendResult:
        return SendResult.from_answer(await self._send_body(event.to_dict()))

    async def _send_body(self, body: Mapping[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request("POST", f"{API}/send", _with_event_id(body))
        return answer

    async def send_batch(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        body = {"events": [_with_event_id(e) for e in events]}
        answer = await self._request("POST", f"{API}/send-batch", body)
        results: list[dict[str, Any]] = answer["results"]
        return results

    # -- events and dead letters --

    async def event(self, event_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request("GET", f"{API}/events/{_seg(event_id)}")
        return answer

    async def dead_letters(
        self,
        tenant_id: str | None = None,
        limit: int = 100,
        *,
        since: str | float | None = None,
        until: str | float | None = None,
        event_type: str | None = None,
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = {"tenant_id": tenant_id, "limit": limit, "cursor": cursor, **_ledger(since, until, event_type)}
            page = await self._request("GET", _path(f"{API}/dead-letter", query))
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    async def dead_letter(self, event_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request("GET", f"{API}/dead-letter/{_seg(event_id)}")
        return answer

    async def retry(self, event_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request("POST", f"{API}/retry/{_seg(event_id)}", idempotent=False)
        return answer

    async def retry_all(self, tenant_id: str | None = None) -> int:
        answer = await self._request(
            "POST", _path(f"{API}/dead-letter/retry", {"tenant_id": tenant_id}), idempotent=False
        )
        return int(answer["requeued"])

    async def purge(self, tenant_id: str | None = None) -> int:
        answer = await self._request("DELETE", _path(f"{API}/dead-letter", {"tenant_id": tenant_id}), idempotent=False)
        return int(answer["purged"])

    async def delete_dead_letter(self, event_id: str) -> None:
        await self._request("DELETE", f"{API}/dead-letter/{_seg(event_id)}", idempotent=False)

    async def retry_matching(
        self,
        tenant_id: str | None = None,
        *,
        since: str | float | None = None,
        until: str | float | None = None,
        event_type: str | None = None,
    ) -> int:
        body = {"tenant_id": tenant_id, **_ledger(since, until, event_type)}
        return int((await self._request("POST", f"{API}/retry-all", body, idempotent=False))["matched"])

    async def purge_matching(
        self,
        tenant_id: str | None = None,
        *,
        since: str | float | None = None,
        until: str | float | None = None,
        event_type: str | None = None,
    ) -> int:
        body = {"tenant_id": tenant_id, **_ledger(since, until, event_type)}
        return int((await self._request("POST", f"{API}/purge-all", body, idempotent=False))["matched"])

    async def tenant_metrics(self, tenant_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request("GET", f"{API}/metrics/{_seg(tenant_id)}")
        return answer

    async def set_endpoint(self, tenant_id: str, enabled: bool) -> dict[str, Any]:
        action = "enable" if enabled else "disable"
        path = f"{API}/endpoints/{_seg(tenant_id)}/{action}"
        answer: dict[str, Any] = await self._request("POST", path, idempotent=False)
        return answer

    # -- tenants --

    async def configure(self, config: Mapping[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request("POST", f"{API}/configure", dict(config))
        return answer

    async def delete_config(self, tenant_id: str) -> None:
        await self._request("DELETE", f"{API}/config/{_seg(tenant_id)}")

    async def configs(self) -> list[dict[str, Any]]:
        answer = await self._request("GET", f"{API}/configs")
        configs: list[dict[str, Any]] = answer["configs"]
        return configs

    async def metrics(self, tenant_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request("GET", f"{API}/metrics/{_seg(tenant_id)}")
        return answer

    async def ready(self) -> bool:
        try:
            await self._request("GET", "/readyz")
        except RelayError as exc:
            if exc.status is None:
                raise
            return False
        return True
