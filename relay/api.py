"""HTTP API (SPEC §3): ingest, management, ops endpoints. Errors are always JSON."""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relay import tracing
from relay.backend import Backend
from relay.config import ConfigError, TenantConfig
from relay.delivery.ledger import LedgerFilter, parse_instant, pattern_problem
from relay.errors import ApiError, ConfigRejected, ConfigWriteError, ConfigWriteFailed, TenantNotFound
from relay.events import (
    SEVERITY_RANK,
    BatchRequest,
    SendRequest,
    StoredEvent,
    build_envelope,
    encode_stored,
    new_event_id,
)
from relay.ingest import _field_of, check_json_body, decode_send, invalid, too_deep
from relay.journal import JournalUnavailable
from relay.metrics import Metrics
from relay.reload import ConfigManager
from relay.signing import (
    SignatureError,
    ed25519_public_key,
    timestamp_fresh,
    verify_signature,
    verify_standard_webhooks,
    verify_standard_webhooks_ed25519,
)
from relay.tracing import TraceContext
from relay.urls import userinfo_clash

log = logging.getLogger("relay.api")

OPS_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
MAX_BATCH = 1000
# A client that stalls mid-request is cut off after this long (body here; headers and idle
# keep-alive connections through the server's keepalive_timeout, set to the same value).
CLIENT_TIMEOUT = 5.0
_enc = msgspec.json.Encoder()
_batch_decoder = msgspec.json.Decoder(BatchRequest)


@dataclass
class AppState:
    engine: Backend  # the local engine (LocalBackend) or the shared store's (SPEC §10)
    config: ConfigManager
    metrics: Metrics
    max_body_bytes: int
    ingest_token: str | None = None
    max_pending: int = 1_000_000
    max_journal_bytes: int | None = None
    receive_tolerance: float = 300.0
    shutting_down: bool = False
    # Event ids whose journal write is in flight: a concurrent duplicate waits for the verdict.
    accepting: dict[str, asyncio.Future[bool]] = field(default_factory=dict)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks = {
            "config_loaded": self.config.snapshot is not None,
            "journal_writable": self.engine.journal.healthy,
            "shutting_down": self.shutting_down,
        }
        ready = checks["config_loaded"] and checks["journal_writable"] and not self.shutting_down
        body: dict[str, Any] = {"ready": ready, "checks": checks, "config_digest": self.config.digest}
        if not ready:
            reasons = []
            if self.shutting_down:
                reasons.append("shutting down")
            if not checks["journal_writable"]:
                # The shared store says what is wrong with it (Redis away); the journal, its disk.
                why = getattr(self.engine.journal, "unavailable_reason", None)
                reasons.append(why or "journal is not writable (disk full or I/O error)")
            if not checks["config_loaded"]:
                reasons.append("no valid config loaded")
            body["reason"] = "; ".join(reasons)
        return ready, body


STATE: web.AppKey[AppState] = web.AppKey("state", AppState)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_enc.encode(data), status=status, content_type="application/json")


def error_response(err: ApiError) -> web.Response:
    resp = json_response(err.body(), err.status)
    resp.headers.update(err.headers)
    return resp


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "bad_request"}


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        resp = error_response(err)
        if err.status == 408:
            resp.force_close()  # the client stalled mid-body: drop the connection
        return resp
    except ConfigWriteError as err:
        return error_response(ApiError(_config_write_status(err), err.code, err.message))
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[STATE].max_body_bytes
        return error_response(ApiError(413, "payload_too_large", f"request body exceeds {limit} bytes"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        return error_response(ApiError(exc.status, code, exc.reason))
    except asyncio.CancelledError:
        raise
    except ConnectionResetError:
        # The client went away mid-request: nothing was accepted, and nobody reads an answer.
        log.debug("client disconnected during %s %s", request.method, request.path)
        return error_response(ApiError(400, "client_disconnected", "the client closed the connection"))
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return error_response(ApiError(500, "internal_error", "internal error; see the daemon's log"))


def _config_write_status(err: ConfigWriteError) -> int:
    """HTTP status for each kind of failed config change (the only place that knows it)."""
    if isinstance(err, TenantNotFound):
        return 404
    if isinstance(err, ConfigRejected):
        return 422
    if isinstance(err, ConfigWriteFailed):
        return 503
    return 409  # read-only config, or a tenant defined in a file the API may not rewrite


def make_auth_middleware(token: str) -> Any:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def auth_middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path not in OPS_PATHS:
            # surrogatepass: header bytes that are not UTF-8 arrive as surrogates, which a plain
            # .encode() refuses with an exception (a 500 before authentication).
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogatepass")
            if not hmac.compare_digest(given, expected):
                return error_response(
                    ApiError(401, "unauthorized", "missing or wrong Authorization: Bearer <ingest token>")
                )
        return await handler(request)

    return auth_middleware


async def _read_body(request: web.Request) -> bytes:
    limit = request.app[STATE].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"request body exceeds {limit} bytes")
    try:
        async with asyncio.timeout(CLIENT_TIMEOUT):
            return await request.read()
    except TimeoutError:
        raise ApiError(408, "request_timeout", f"request body not received within {CLIENT_TIMEOUT:g}s") from None


# ---- ingest ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Prepared:
    event_id: str
    tenant_id: str
    severity: int
    blob: bytes
    given_id: bool
    deprecation: str | None = None  # the Deprecation header of a deprecated catalog type
    event_type: str = ""


def _check_catalog(st: AppState, cfg: TenantConfig, req: SendRequest) -> str | None:
    """422 for an unknown type (when the tenant requires known ones) or a schema violation.

    Returns the `Deprecation` header value when the type is deprecated.
    """
    cat = st.config.snapshot.catalog
    et = cat.types.get(req.event_type)
    if et is None:
        if cfg.require_known_event_types:
            raise ApiError(
                422,
                "unknown_event_type",
                f"event_type: {req.event_type!r} is not in the event catalog, and tenant "
                f"{req.tenant_id!r} accepts only known types (require_known_event_types)",
                {"field": "event_type"},
            )
        return None
    violation = cat.check(req.event_type, req.payload)
    if violation is not None:
        st.metrics.schema_violations.labels(tenant=req.tenant_id, event_type=req.event_type).inc()
        raise ApiError(
            422,
            "schema_violation",
            f"payload{violation.pointer}: {violation.reason} (schema of event type {req.event_type!r})",
            {
                "field": "payload",
                "pointer": violation.pointer,
                "schema_pointer": violation.schema_pointer,
                "reason": violation.reason,
                "event_type": req.event_type,
            },
        )
    return cat.deprecations.get(req.event_type)


def _prepare(st: AppState, req: SendRequest, trace: TraceContext | None = None) -> _Prepared | dict[str, Any]:
    """Check tenant, filter, idempotency. Returns what to journal, or the final answer."""
    snap = st.config.snapshot
    cfg = snap.tenants.get(req.tenant_id)
    if cfg is None:
        raise ApiError(404, "tenant_not_found", f"unknown tenant {req.tenant_id!r}", {"field": "tenant_id"})
    if not cfg.active:
        raise ApiError(409, "tenant_inactive", f"tenant {req.tenant_id!r} is not active (active: false)")
    if req.target_url is not None and not cfg.target_allowed(req.target_url):
        # The URL is not echoed: it may carry a token of its own.
        raise ApiError(
            422,
            "target_not_allowed",
            "target_url: must have the scheme, host and port of the tenant's base_url, or a host "
            "listed in its allowed_target_hosts",
            {"field": "target_url"},
        )
    deprecation = _check_catalog(st, cfg, req)
    if not cfg.accepts(req.event_type):
        st.metrics.tenant(req.tenant_id).filtered.inc()
        return {"event_id": req.event_id or new_event_id(), "status": "filtered"}
    if req.target_url is not None:
        names = [*cfg.default_headers, *(req.custom_headers or {})]
        if cfg.auth_config is not None:
            names.append(cfg.auth_config.header_field())
        if why := userinfo_clash(req.target_url, names):
            raise invalid("target_url", why)
    event_id = req.event_id or new_event_id()
    envelope = build_envelope(req, event_id)
    # The key is kept even for a tenant without `ordering: fifo` (where it is ignored), so a
    # later switch to fifo orders what is already pending.
    stored = StoredEvent(envelope, req.event_type, req.target_url, req.custom_headers, req.ordering_key)
    if trace is not None:
        stored.traceparent, stored.tracestate = trace
    blob = encode_stored(stored)
    given = req.event_id is not None
    return _Prepared(event_id, req.tenant_id, SEVERITY_RANK[req.severity], blob, given, deprecation, req.event_type)


QUEUE_FULL_RETRY_AFTER = "5"


def _check_room(st: AppState) -> None:
    """Admission: past --max-pending or --max-journal-bytes, new events wait outside (503)."""
    eng = st.engine
    why = None
    if eng.pending_count >= st.max_pending:
        why = f"{eng.pending_count} events are pending (--max-pending {st.max_pending})"
    elif st.max_journal_bytes is not None and eng.journal.bytes_total >= st.max_journal_bytes:
        why = f"the journal holds {eng.journal.bytes_total} bytes (--max-journal-bytes {st.max_journal_bytes})"
    if why is not None:
        raise ApiError(
            503,
            "queue_full",
            f"event not accepted: {why}; retry once the backlog drains",
            headers={"Retry-After": QUEUE_FULL_RETRY_AFTER},
        )


def _duplicate_answer(st: AppState, event_id: str) -> dict[str, Any] | None:
    state = st.engine.lookup(event_id)
    if state is None:
        return None
    return {"event_id": event_id, "status": state, "duplicate": True}


async def _admit(st: AppState, items: list[_Prepared]) -> list[dict[str, Any] | ApiError]:
    """Journal what is new in one commit; answer the rest as duplicates. One answer per item.

    Checking and reserving a client-chosen id happen with no await in between, so of any number
    of concurrent requests carrying the same id exactly one journals it; the others wait for
    that verdict and answer `duplicate` (or try again themselves if it failed).
    """
    answers: list[dict[str, Any] | ApiError | None] = [None] * len(items)
    todo = list(range(len(items)))
    for _ in range(3):
        mine: list[int] = []
        twins: list[asyncio.Future[bool]] = []
        waiting: list[int] = []
        reserved: set[str] = set()
        for i in todo:
            p = items[i]
            if p.given_id:
                if p.event_id in reserved:  # twice in one batch
                    answers[i] = {"event_id": p.event_id, "status": "queued", "duplicate": True}
                    continue
                twin = st.accepting.get(p.event_id)
                if twin is not None:
                    twins.append(twin)
                    waiting.append(i)
                    continue
                dup = _duplicate_answer(st, p.event_id)
                if dup is not None:
                    answers[i] = dup
                    continue
                reserved.add(p.event_id)
            mine.append(i)
        if mine:
            await _journal(st, [items[i] for i in mine], answers, mine)
        if not waiting:
            break
        await asyncio.gather(*(asyncio.shield(t) for t in twins))
        todo = waiting
    return [a if a is not None else ApiError(503, "journal_unavailable", "event not accepted") for a in answers]


async def _journal(
    st: AppState, items: list[_Prepared], answers: list[dict[str, Any] | ApiError | None], where: list[int]
) -> None:
    try:
        _check_room(st)
    except ApiError as err:
        for i in where:
            answers[i] = err
        return
    keyed = [p.event_id for p in items if p.given_id]
    verdict: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    for eid in keyed:
        st.accepting[eid] = verdict
    ok = False
    try:
        accepted = set(await st.engine.accept([(p.event_id, p.tenant_id, p.severity, p.blob) for p in items]))
        ok = True
    except JournalUnavailable as exc:
        fail = ApiError(503, "journal_unavailable", f"event not accepted: journal write failed ({exc})")
        for i in where:
            answers[i] = fail
        return
    finally:
        for eid in keyed:
            st.accepting.pop(eid, None)
        verdict.set_result(ok)
    counts: Counter[str] = Counter()
    for i, p in zip(where, items, strict=True):
        if p.event_id in accepted:
            answers[i] = {"event_id": p.event_id, "status": "queued"}
            counts[p.tenant_id] += 1
            if p.deprecation is not None:
                st.metrics.deprecated.labels(tenant=p.tenant_id, event_type=p.event_type).inc()
        else:  # known to the engine after all (settled or live): never accepted twice
            answers[i] = _duplicate_answer(st, p.event_id) or {"event_id": p.event_id, "status": "queued"}
    for tenant, n in counts.items():
        st.metrics.tenant(tenant).received.inc(n)


def _answer(result: dict[str, Any] | ApiError) -> web.Response:
    if isinstance(result, ApiError):
        return error_response(result)
    return json_response(result, 200 if result.get("duplicate") else 202)


async def handle_send(request: web.Request) -> web.Response:
    st = request.app[STATE]
    req = decode_send(check_json_body(await _read_body(request)))
    if req.event_id is not None and req.event_id not in st.accepting:
        dup = _duplicate_answer(st, req.event_id)
        if dup is not None:
            return json_response(dup, 200)
    prepared = _prepare(st, req, tracing.from_field(req.trace_context, tracing.request_context(request)))
    if isinstance(prepared, dict):
        return json_response(prepared, 200)
    tracing.annotate(request, tenant=req.tenant_id, event_type=req.event_type, event_id=prepared.event_id)
    (result,) = await _admit(st, [prepared])
    resp = _answer(result)
    if prepared.deprecation is not None and resp.status == 202:
        resp.headers["Deprecation"] = prepared.deprecation
    return resp


async def handle_send_batch(request: web.Request) -> web.Response:
    st = request.app[STATE]
    body = check_json_body(await _read_body(request))
    try:
        batch = _batch_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise invalid("events", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "bad_json", f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise too_deep() from None
    if len(batch.events) > MAX_BATCH:
        raise invalid("events", f"at most {MAX_BATCH} events per batch, got {len(batch.events)}")
    results: list[dict[str, Any]] = []
    todo: list[tuple[int, _Prepared]] = []
    trace = tracing.request_context(request)  # items without a trace_context of their own share it
    for i, raw in enumerate(batch.events):
        try:
            req = decode_send(raw)
            prepared = _prepare(st, req, tracing.from_field(req.trace_context, trace))
        except ApiError as err:
            if isinstance(err.details, dict) and "field" in err.details:
                err.details = {**err.details, "field": f"events[{i}].{err.details['field']}"}
            results.append({**err.body(), "status_code": err.status})
            continue
        results.append(prepared if isinstance(prepared, dict) else {})
        if not isinstance(prepared, dict):
            todo.append((i, prepared))
    deprecations: set[str] = set()
    if todo:
        admitted = await _admit(st, [p for _, p in todo])
        for (i, p), res in zip(todo, admitted, strict=True):
            if isinstance(res, ApiError):
                results[i] = {**res.body(), "status_code": res.status}
                continue
            if p.deprecation is not None and not res.get("duplicate"):
                res = {**res, "deprecated": True}
                deprecations.add(p.deprecation)
            results[i] = res
    resp = json_response({"results": results}, 200)
    if deprecations:
        resp.headers["Deprecation"] = min(deprecations)  # the earliest, when items differ
    return resp


# ---- management --------------------------------------------------------------------------


async def handle_configs(request: web.Request) -> web.Response:
    st = request.app[STATE]
    snap = st.config.snapshot
    configs = [snap.tenants[t].masked() for t in sorted(snap.tenants)]
    return json_response({"configs": configs, "config_digest": st.config.digest})


async def handle_configure(request: web.Request) -> web.Response:
    st = request.app[STATE]
    st.config.check_writable()  # before the body is read or parsed (SPEC §3)
    body = check_json_body(await _read_body(request))
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "bad_json", f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise too_deep() from None
    try:
        cfg, created = await st.config.write_tenant(data)
    except ConfigError as exc:
        raise ApiError(422, "invalid_config", exc.problems[0], {"problems": exc.problems}) from None
    return json_response({"status": "configured", "config": cfg.masked()}, 201 if created else 200)


async def handle_public_key(request: web.Request) -> web.Response:
    """The `whpk_` key that verifies the tenant's `v1a` (Ed25519) signatures: public, so unmasked."""
    st = request.app[STATE]
    tenant_id = request.match_info["tenant_id"]
    cfg = st.config.snapshot.tenants.get(tenant_id)
    if cfg is None:
        raise ApiError(404, "tenant_not_found", f"unknown tenant {tenant_id!r}")
    if cfg.signing_key is None:
        raise ApiError(404, "no_signing_key", f"tenant {tenant_id!r} has no signing_key (standard-webhooks-ed25519)")
    return json_response({"tenant_id": tenant_id, "public_key": ed25519_public_key(cfg.signing_key)})


async def handle_event_types(request: web.Request) -> web.Response:
    return json_response({"event_types": request.app[STATE].config.snapshot.catalog.listing()})


async def handle_delete_config(request: web.Request) -> web.Response:
    st = request.app[STATE]
    await st.config.delete_tenant(request.match_info["tenant_id"])
    return web.Response(status=204)


async def handle_tenant_metrics(request: web.Request) -> web.Response:
    st = request.app[STATE]
    tenant_id = request.match_info["tenant_id"]
    if tenant_id not in st.config.snapshot.tenants and not st.engine.knows_tenant(tenant_id):
        raise ApiError(404, "tenant_not_found", f"unknown tenant {tenant_id!r}")
    return json_response(await st.engine.tenant_figures(tenant_id))


def _known_tenant(st: AppState, tenant_id: str) -> None:
    if tenant_id not in st.config.snapshot.tenants:
        raise ApiError(404, "tenant_not_found", f"unknown tenant {tenant_id!r}")


async def handle_endpoint_enable(request: web.Request) -> web.Response:
    st = request.app[STATE]
    tenant_id = request.match_info["tenant_id"]
    _known_tenant(st, tenant_id)
    return json_response({"tenant_id": tenant_id, **await st.engine.change_endpoint(tenant_id, True)}, 202)


async def handle_endpoint_disable(request: web.Request) -> web.Response:
    st = request.app[STATE]
    tenant_id = request.match_info["tenant_id"]
    _known_tenant(st, tenant_id)
    return json_response({"tenant_id": tenant_id, **await st.engine.change_endpoint(tenant_id, False)}, 202)


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default  # `limit=` (empty) is not an integer: 422 like any other non-number
    try:
        value = int(raw)
    except ValueError:
        raise invalid(name, "must be an integer") from None
    if not lo <= value <= hi:
        raise invalid(name, f"must be between {lo} and {hi}")
    return value


def _cursor_key(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor.encode() + b"==").decode()
        at, eid = raw.split("|", 1)
        return float(at), eid
    except (ValueError, UnicodeDecodeError):
        raise invalid("cursor", "not a cursor returned by this API") from None


def _make_cursor(at: float, eid: str) -> str:
    return base64.urlsafe_b64encode(f"{at!r}|{eid}".encode()).decode().rstrip("=")


class LedgerRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of retry-all and purge-all: which dead letters (every field optional)."""

    tenant_id: str | None = None
    since: str | float | None = None
    until: str | float | None = None
    event_type: str | None = None


_ledger_decoder = msgspec.json.Decoder(LedgerRequest)


def _ledger_filter(
    tenant: str | None, since: str | float | None, until: str | float | None, pattern: str | None
) -> LedgerFilter:
    bounds: dict[str, float | None] = {}
    for name, raw in (("since", since), ("until", until)):
        try:
            bounds[name] = None if raw is None or raw == "" else parse_instant(raw)
        except ValueError as exc:
            raise invalid(name, f"must be an RFC 3339 time or UNIX seconds ({exc})") from None
    if pattern is not None and (why := pattern_problem(pattern)):
        raise invalid("event_type", why)
    return LedgerFilter(tenant or None, bounds["since"], bounds["until"], pattern or None)


async def _ledger_body(request: web.Request) -> LedgerFilter:
    body = await _read_body(request)
    if not body.strip():
        return LedgerFilter()
    try:
        req = _ledger_decoder.decode(check_json_body(body))
    except msgspec.ValidationError as exc:
        raise invalid(*_field_of(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "bad_json", f"request body is not valid JSON: {exc}") from None
    return _ledger_filter(req.tenant_id, req.since, req.until, req.event_type)


async def handle_dead_letter(request: web.Request) -> web.Response:
    st = request.app[STATE]
    q = request.query
    f = _ledger_filter(q.get("tenant_id"), q.get("since"), q.get("until"), q.get("event_type"))
    limit = _int_param(request, "limit", 100, 1, 1000)
    after = _cursor_key(request.query["cursor"]) if request.query.get("cursor") else None
    items, last_key = await st.engine.dead_page(f, after, limit)
    next_cursor = None if last_key is None else _make_cursor(*last_key)
    return json_response({"items": items, "next_cursor": next_cursor})


async def _not_dead(st: AppState, event_id: str) -> ApiError:
    """404 not_dead_lettered, saying where the event is instead (a delivered one is the common case)."""
    view = await st.engine.event_status(event_id)
    if view is None:
        return ApiError(404, "not_dead_lettered", f"event {event_id!r} is not in the dead-letter queue")
    status = view["status"]
    return ApiError(
        404,
        "not_dead_lettered",
        f"event {event_id!r} is {status}, not in the dead-letter queue"
        + ("; a delivered event is not retried" if status == "delivered" else ""),
        {"status": status},
    )


async def handle_dead_letter_one(request: web.Request) -> web.Response:
    st = request.app[STATE]
    event_id = request.match_info["event_id"]
    item = await st.engine.dead_letter(event_id)
    if item is None:
        raise await _not_dead(st, event_id)
    return json_response(item)


async def handle_retry(request: web.Request) -> web.Response:
    st = request.app[STATE]
    event_id = request.match_info["event_id"]
    tenant_id = await st.engine.dead_tenant(event_id)
    if tenant_id is None:
        raise await _not_dead(st, event_id)
    if tenant_id not in st.config.snapshot.tenants:
        raise ApiError(409, "tenant_not_found", f"tenant {tenant_id!r} is not configured; configure it first")
    await st.engine.requeue(event_id)
    return json_response({"event_id": event_id, "status": "queued"}, 202)


async def handle_retry_all(request: web.Request) -> web.Response:
    st = request.app[STATE]
    tenant = request.query.get("tenant_id") or None
    n = await st.engine.requeue_matching(LedgerFilter(tenant))
    return json_response({"requeued": n}, 202)


async def handle_retry_matching(request: web.Request) -> web.Response:
    """POST /retry-all (SPEC §11): replay the dead letters the filters match."""
    st = request.app[STATE]
    f = await _ledger_body(request)
    return json_response({"matched": await st.engine.requeue_matching(f)}, 202)


async def handle_purge_matching(request: web.Request) -> web.Response:
    """POST /purge-all (SPEC §11): delete the dead letters the filters match, for good."""
    st = request.app[STATE]
    f = await _ledger_body(request)
    return json_response({"matched": await st.engine.purge_matching(f)})


async def handle_purge(request: web.Request) -> web.Response:
    st = request.app[STATE]
    tenant = request.query.get("tenant_id") or None
    n = await st.engine.purge_matching(LedgerFilter(tenant))
    return json_response({"purged": n})


async def handle_purge_one(request: web.Request) -> web.Response:
    st = request.app[STATE]
    event_id = request.match_info["event_id"]
    if not await st.engine.purge(event_id):
        raise await _not_dead(st, event_id)
    return web.Response(status=204)


async def handle_event(request: web.Request) -> web.Response:
    st = request.app[STATE]
    event_id = request.match_info["event_id"]
    view = await st.engine.event_status(event_id)
    if view is None:
        raise ApiError(404, "event_not_found", f"no event {event_id!r} is known")
    return json_response(view)


def _sw_valid(cfg: TenantConfig, msg_id: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Standard Webhooks: a `v1` (HMAC, whsec_ secrets) or `v1a` (Ed25519 signing_key) entry verifies."""
    if any(verify_standard_webhooks(msg_id, timestamp, body, signature, s) for s in cfg.signing_secrets()):
        return True
    if cfg.signing_key is None or not msg_id:
        return False
    try:
        return verify_standard_webhooks_ed25519(msg_id, timestamp, body, signature, ed25519_public_key(cfg.signing_key))
    except (SignatureError, ValueError):
        return False


async def handle_receive(request: web.Request) -> web.Response:
    """Verify a callback signed by hookrelay's scheme, or by Standard Webhooks, and its freshness.

    `X-Webhook-Signature` covers only the body, so a captured request replays with any
    `X-Timestamp`; the timestamp is still refused when stale (a careless replay), and Standard
    Webhooks headers, whose signature covers id and timestamp, are verified whenever present.
    """
    st = request.app[STATE]
    body = await _read_body(request)
    h = request.headers
    cfg = st.config.snapshot.tenants.get(h.get("X-Tenant-ID", ""))
    now = time.time()
    valid = cfg is not None
    sw_sig = h.get("webhook-signature")
    if valid and cfg is not None and sw_sig is not None:
        sw_id, sw_ts = h.get("webhook-id", ""), h.get("webhook-timestamp", "")
        valid = timestamp_fresh(sw_ts, now, st.receive_tolerance) and _sw_valid(cfg, sw_id, sw_ts, body, sw_sig)
    signature = h.get("X-Webhook-Signature")
    if valid and cfg is not None and (signature is not None or sw_sig is None):
        valid = signature is not None and any(verify_signature(body, signature, s) for s in cfg.signing_secrets())
        stamp = h.get("X-Timestamp")
        if stamp is not None and not timestamp_fresh(stamp, now, st.receive_tolerance):
            valid = False
    if not valid:
        return json_response({"valid": False}, 401)
    return json_response({"valid": True})


# ---- ops ---------------------------------------------------------------------------------


async def handle_metrics(request: web.Request) -> web.Response:
    st = request.app[STATE]
    st.metrics.journal_bytes.set(st.engine.journal.bytes_total)
    data = generate_latest(st.metrics.registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def handle_healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def handle_readyz(request: web.Request) -> web.Response:
    ready, body = request.app[STATE].readiness()
    return json_response(body, 200 if ready else 503)


async def handle_openapi(request: web.Request) -> web.Response:
    from relay.openapi import document_for

    return json_response(document_for(request.app[STATE].config.snapshot.catalog))


def _ops_routes() -> list[web.RouteDef]:
    return [
        web.get("/metrics", handle_metrics),
        web.get("/healthz", handle_healthz),
        web.get("/readyz", handle_readyz),
    ]


def make_app(state: AppState) -> web.Application:
    middlewares: list[Any] = [errors_middleware]
    if tracing.exporter is not None:  # outermost, so its span sees the answer the client gets
        middlewares.insert(0, tracing.exporter.ingest_middleware())
    if state.ingest_token:
        middlewares.append(make_auth_middleware(state.ingest_token))
    # aiohttp enforces client_max_size when reading; we answer 413 ourselves with a JSON body.
    app = web.Application(client_max_size=state.max_body_bytes, middlewares=middlewares)
    app[STATE] = state
    # Paths spelled out in full, as in SPEC §3, so they can be found with grep.
    app.add_routes(
        [
            web.post("/api/v1/webhooks/send", handle_send),
            web.post("/api/v1/webhooks/send-batch", handle_send_batch),
            web.get("/api/v1/webhooks/configs", handle_configs),
            web.get("/api/v1/webhooks/configs/{tenant_id}/public-key", handle_public_key),
            web.get("/api/v1/webhooks/event-types", handle_event_types),
            web.post("/api/v1/webhooks/configure", handle_configure),
            web.delete("/api/v1/webhooks/config/{tenant_id}", handle_delete_config),
            web.get("/api/v1/webhooks/metrics/{tenant_id}", handle_tenant_metrics),
            web.post("/api/v1/webhooks/endpoints/{tenant_id}/enable", handle_endpoint_enable),
            web.post("/api/v1/webhooks/endpoints/{tenant_id}/disable", handle_endpoint_disable),
            web.get("/api/v1/webhooks/dead-letter", handle_dead_letter),
            web.delete("/api/v1/webhooks/dead-letter", handle_purge),
            web.post("/api/v1/webhooks/dead-letter/retry", handle_retry_all),
            web.get("/api/v1/webhooks/dead-letter/{event_id}", handle_dead_letter_one),
            web.delete("/api/v1/webhooks/dead-letter/{event_id}", handle_purge_one),
            web.post("/api/v1/webhooks/retry/{event_id}", handle_retry),
            web.post("/api/v1/webhooks/retry-all", handle_retry_matching),
            web.post("/api/v1/webhooks/purge-all", handle_purge_matching),
            web.get("/api/v1/webhooks/events/{event_id}", handle_event),
            web.post("/api/v1/webhooks/receive", handle_receive),
            web.get("/api/v1/openapi.json", handle_openapi),
            *_ops_routes(),
        ]
    )
    return app


def make_ops_app(state: AppState) -> web.Application:
    app = web.Application(middlewares=[errors_middleware])
    app[STATE] = state
    app.add_routes(_ops_routes())
    return app
