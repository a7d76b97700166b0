"""Delivery on the shared Redis store (SPEC §10): any number of relays drain one durable queue.

Nothing about events lives in this process beyond the attempts it is making: every relay loops
`pick` (the tenants whose turn it is, fairest first) -> `claim` (events under the tenant's
fleet-wide limits, leased to this relay) -> send -> `settle` (verdict, attempt record, breaker
and endpoint state), each one atomic on the server. A relay that dies leaves only leases, which
the next `claim` of that tenant by any relay takes over once they run out (`--claim-idle`).

Leases: `--claim-idle` seconds, never shorter than the longest tenant timeout plus a margin, so a
slow receiver is never sent the event twice because its request outlived the lease; an attempt
never starts with less than its timeout left on the lease, and a settle from a relay whose lease
was taken over is refused by the script (the other relay owns the event now).

Fairness: `pick` serves tenants in the order of their score in `sched`, and a claim that leaves
more work sets the tenant's score to now: behind every tenant that became ready before, so a
tenant with a huge backlog takes turns with a tenant's fresh events (round robin per quantum).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec

from relay.backend import DeadItem, StoreHealth
from relay.config import Snapshot, TenantConfig
from relay.delivery.attempt import METRIC_OUTCOME, decide, record, send
from relay.delivery.deadletters import Key
from relay.delivery.ledger import LedgerFilter
from relay.dispatch import EgressPolicy, Outcome, close_session, make_session
from relay.events import Attempt, decode_attempt, decode_stored, encode_attempt, number_rounds, rfc3339
from relay.metrics import Metrics, TenantGauges

from .redis import STATES, Claimed, RedisStore, StoreDown, TenantCount

log = logging.getLogger("relay.delivery")

OpsNotify = Callable[[str, str | None, dict[str, Any]], None]

CLAIM_MARGIN = 30.0  # default --claim-idle: the longest tenant timeout plus this
MIN_LEASE_MARGIN = 1.0  # a lease is never shorter than the longest timeout plus this
QUANTUM = 16  # events one claim takes from one tenant: its turn in the round robin
PICK_TENANTS = 8
PICK_HOLD_MS = 2000  # a picked tenant is skipped by other relays until its claim answers
POLL = 0.05  # how often an idle relay looks for work other relays accepted
IN_FLIGHT_CAP = 512  # attempts one relay runs at once (the tenants' max_in_flight is fleet-wide)
COUNTS_INTERVAL = 1.0  # pending/dead counts for /metrics and --max-pending
SETTLE_BACKOFF = (0.1, 2.0)
IDEMPOTENCY_WINDOW_MS = 86_400_000
SETTLED_KEPT = 100_000  # settled events kept for idempotency and status, like the local journal
BATCH = 500  # event ids per replay/purge script call
PRUNE_INTERVAL = 60.0  # seconds between dead-letter retention sweeps


class RedisEngine:
    """The engine and the API's backend on the shared store (satisfies relay.backend.Backend)."""

    def __init__(
        self,
        store: RedisStore,
        config: Callable[[], Snapshot],
        metrics: Metrics,
        *,
        claim_idle: float | None = None,
        dead_letter_retention: float = 30 * 86400.0,
        egress: EgressPolicy | None = None,
        ops: OpsNotify | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self._config = config
        self.metrics = metrics
        self.claim_idle = claim_idle
        self.dead_letter_retention = dead_letter_retention
        self.egress = egress or EgressPolicy()
        self._ops = ops
        self._rand = rand
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._in_flight = 0
        self._attempts: dict[asyncio.Task[None], tuple[str, Claimed]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._bg: set[asyncio.Task[None]] = set()
        self._counts: dict[str, TenantCount] = {}
        self._dups: dict[str, str] = {}  # states of duplicates the last accepts met, for lookup()
        self._batch = SettleBatch(store)
        metrics.watch_engine(self.gauges)

    # ---- lifecycle ---------------------------------------------------------------------------

    def lease_seconds(self, snap: Snapshot | None = None) -> float:
        """--claim-idle, never shorter than the longest tenant timeout plus a margin."""
        tenants = (snap or self._config()).tenants.values()
        longest = max((t.timeout_seconds for t in tenants), default=30.0)
        if self.claim_idle is None:
            return longest + CLAIM_MARGIN
        return max(self.claim_idle, longest + MIN_LEASE_MARGIN)

    async def start(self) -> None:
        self._session = make_session(self.egress)
        for problem in await self.store.check_settings():
            log.warning("Redis store %s: %s", self.store.url_shown, problem)
        if self.claim_idle is not None and self.lease_seconds() > self.claim_idle:
            log.warning(
                "--claim-idle %gs is shorter than the longest tenant timeout plus %gs: leases last %gs",
                self.claim_idle,
                MIN_LEASE_MARGIN,
                self.lease_seconds(),
            )
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="redis-dispatch"),
            asyncio.create_task(self._counts_loop(), name="redis-counts"),
            asyncio.create_task(self._prune_loop(), name="redis-prune"),
            asyncio.create_task(self.store.probe_loop(), name="redis-probe"),
        ]

    def apply_config(self, snap: Snapshot) -> None:
        """A new config: tenants' places in the shared scheduler may be parked behind limits the
        change lifted (a rate limit, `active: false`), so every configured tenant is woken."""
        for tid in snap.tenants:
            self.metrics.tenant(tid)
        task = asyncio.create_task(self._wake_tenants(list(snap.tenants)))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _wake_tenants(self, tenant_ids: list[str]) -> None:
        for _ in range(30):  # Redis may be away right now: try for a while
            try:
                await self.store.wake(tenant_ids)
                break
            except StoreDown:
                await asyncio.sleep(1.0)
        self._wake.set()

    async def stop(self, grace: float) -> int:
        """Stop claiming; give attempts in flight up to `grace` seconds; hand the rest back."""
        self._stopping = True
        self._wake.set()
        if self._attempts:
            await asyncio.wait(list(self._attempts), timeout=grace)
        cut = {t: c for t, c in self._attempts.items() if not t.done()}
        for t in cut:
            t.cancel()
        await asyncio.gather(*cut, return_exceptions=True)
        # Hand unfinished leases back, so another relay need not wait for them to run out.
        for tid, c in cut.values():
            with contextlib.suppress(StoreDown):
                await self.store.settle(tid, c.event_id, c.token, self._settle_args(None, "release"))
        for t in [*self._tasks, *self._bg]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._bg, return_exceptions=True)
        if self._session is not None:
            await close_session(self._session)
        await self.store.close()
        return len(cut)

    # ---- delivery ----------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            try:
                wait = await self._dispatch_once()
            except StoreDown:
                wait = 0.5  # the probe loop brings it back
            except Exception:
                log.exception("dispatch on the Redis store failed; trying again")
                self.metrics.task_restarts.inc()
                wait = 1.0
            if self._stopping:
                return
            self._wake.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _dispatch_once(self) -> float:
        """One round: pick tenants, claim for each; returns how long to wait for the next."""
        if self._in_flight >= IN_FLIGHT_CAP:
            return POLL
        first, tenants = await self.store.pick(PICK_TENANTS, PICK_HOLD_MS)
        snap = self._config()
        lease = self.lease_seconds(snap)
        claimed = False
        for tid in tenants:
            cfg = snap.tenants.get(tid)
            free = IN_FLIGHT_CAP - self._in_flight
            if cfg is None or not cfg.active or free <= 0:
                continue  # not ours to deliver now: the pick's hold brings it back later
            started = time.monotonic()
            taken_over, events = await self.store.claim(
                tid,
                min(free, QUANTUM),
                int(lease * 1000),
                cfg.max_in_flight,
                cfg.rate_limit_per_second or 0.0,
                cfg.ordering == "fifo",
                int(cfg.probe_interval_seconds * 1000),
            )
            if taken_over:
                self.metrics.claimed.inc(taken_over)
                log.warning("Took over %d events of tenant %s whose relay stopped answering", taken_over, tid)
            deadline = started + lease
            for c in events:
                claimed = True
                self._in_flight += 1
                task = asyncio.create_task(self._attempt(tid, c, deadline))
                self._attempts[task] = (tid, c)
                task.add_done_callback(self._attempt_done)
        if claimed:
            return 0.0
        return POLL if first < 0 else min(max(first, 0.0), POLL)

    def _attempt_done(self, task: asyncio.Task[None]) -> None:
        self._attempts.pop(task, None)
        self._in_flight -= 1
        self._wake.set()

    async def _attempt(self, tid: str, c: Claimed, deadline: float) -> None:
        try:
            await self._attempt_inner(tid, c, deadline)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Not the event's fault: its lease runs out and it is delivered again, never lost.
            log.exception("attempt for %s failed unexpectedly; its lease will be taken over", c.event_id)

    async def _attempt_inner(self, tid: str, c: Claimed, deadline: float) -> None:
        assert self._session is not None
        cfg = self._config().tenants.get(tid)
        if cfg is None:
            await self._settle(tid, c, deadline, self._settle_args(None, "dead", reason="tenant removed"))
            return
        if time.monotonic() + cfg.timeout_seconds > deadline:
            # Too little lease left to finish the request: hand it back rather than risk a second
            # relay sending it too.
            await self._settle(tid, c, deadline, self._settle_args(None, "release"))
            return
        stored = decode_stored(c.blob)
        probe_held = c.probe == "E"
        n = c.tries + 1
        started = time.time()
        fields = {"event_id": c.event_id, "tenant": tid, "attempt": n}
        out = await send(self._session, cfg, stored, c.event_id, self.egress, n)
        self._observe(cfg, out)
        verdict = decide(out, 0 if probe_held else n, cfg, self._rand)
        health = _health(out)
        if probe_held and verdict.kind == "retry":
            log.info("Probe of disabled endpoint failed - Event: %s; it stays held", c.event_id, extra=fields)
            await self._settle(tid, c, deadline, self._settle_args(cfg, "held", health=health))
            return
        attempt = record(out, n, started)
        args = self._settle_args(
            cfg,
            verdict.kind,
            attempt=attempt,
            delay=verdict.delay,
            reason=verdict.reason or "",
            out=out,
            health=health,
        )
        if not await self._settle(tid, c, deadline, args):
            return
        tm = self.metrics.tenant(tid)
        if verdict.kind == "delivered":
            tm.delivered.inc()
            tm.latency.observe(max(0.0, time.time() - c.accepted_ms / 1000))
            log.info(
                "Webhook delivered - Event: %s, Status: %s, Time: %dms",
                c.event_id,
                out.status,
                out.duration * 1000,
                extra=fields,
            )
        elif verdict.kind == "dead":
            tm.dead_lettered.inc()
            self._notify("dead_letter.added", tid, {"event_id": c.event_id, "reason": verdict.reason})
            log.error(
                "Webhook moved to dead-letter queue - Event: %s, Reason: %s", c.event_id, verdict.reason, extra=fields
            )
        else:
            log.info(
                "Webhook failed, scheduled for retry in %.2fs - Event: %s", verdict.delay, c.event_id, extra=fields
            )

    def _settle_args(
        self,
        cfg: TenantConfig | None,
        kind: str,
        *,
        attempt: Attempt | None = None,
        delay: float = 0.0,
        reason: str = "",
        out: Outcome | None = None,
        health: str = "none",
    ) -> list[Any]:
        verdict = {"delivered": "ok"}.get(kind, kind)
        answered = out is not None and out.status is not None
        cb_threshold, cb_on, base, cap, disable_after, probe = 5, 1, 1.0, 300.0, 432_000.0, 300.0
        mif = 1
        if cfg is not None:
            mif = cfg.max_in_flight
            cb_threshold, cb_on = cfg.circuit_breaker.failure_threshold, int(cfg.circuit_breaker.enabled)
            base, cap = cfg.retry_policy.initial_delay_seconds, cfg.retry_policy.max_delay_seconds
            disable_after, probe = cfg.disable_after_seconds, cfg.probe_interval_seconds
        return [
            verdict,
            encode_attempt(attempt) if attempt is not None else b"",
            int(delay * 1000),
            reason,
            1 if answered else 0,
            out.duration * 1000 if out is not None and answered else 0,
            health,
            cb_threshold,
            int(base * 1000),
            int(cap * 1000),
            cb_on,
            int(disable_after * 1000),
            int(probe * 1000),
            IDEMPOTENCY_WINDOW_MS,
            SETTLED_KEPT,
            mif,
            min(QUANTUM, -(-mif // 4)),  # a quarter of the limit, at most a claim's worth
        ]

    async def _settle(self, tid: str, c: Claimed, deadline: float, args: list[Any]) -> bool:
        """Record the verdict; while Redis is away, try again until the lease is up (after that
        the event is another relay's to send again: at-least-once, never lost)."""
        delay = SETTLE_BACKOFF[0]
        while True:
            try:
                ok, change, why = await self._batch.settle(tid, c.event_id, c.token, args)
                break
            except StoreDown:
                if time.monotonic() + delay > deadline:
                    log.warning("could not record the outcome of %s before its lease ran out", c.event_id)
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, SETTLE_BACKOFF[1])
        if not ok:
            log.warning("lease of %s was taken over by another relay; its outcome here is dropped", c.event_id)
            return False
        if change:
            level = logging.INFO if change == "enabled" else logging.WARNING
            log.log(level, "Endpoint of tenant %s is now %s: %s", tid, change, why, extra={"tenant": tid})
            self._notify(f"endpoint.{change}", tid, {"state": change, "reason": why})
        return True

    def _observe(self, cfg: TenantConfig, out: Outcome) -> None:
        tm = self.metrics.tenant(cfg.tenant_id)
        tm.attempts[METRIC_OUTCOME[out.kind]].inc()
        if out.status is not None:
            tm.duration.observe(out.duration)

    def _notify(self, kind: str, tenant_id: str | None, data: dict[str, Any]) -> None:
        if self._ops is None:
            return
        try:
            self._ops(kind, tenant_id, data)
        except Exception:
            log.exception("could not queue operator event %s", kind)

    async def _prune_loop(self) -> None:
        """--dead-letter-retention on the shared store: any relay may prune (the script is atomic)."""
        interval = min(PRUNE_INTERVAL, max(0.5, self.dead_letter_retention / 2))
        while True:
            await asyncio.sleep(interval)
            try:
                while await self.store.prune_dead(self.dead_letter_retention) == 500:
                    pass
            except StoreDown:
                pass

    async def _counts_loop(self) -> None:
        while True:
            with contextlib.suppress(StoreDown):
                self._counts = await self.store.counts()
            await asyncio.sleep(COUNTS_INTERVAL)

    # ---- Backend: ingest ---------------------------------------------------------------------

    @property
    def journal(self) -> StoreHealth:
        return self.store

    @property
    def pending_count(self) -> int:
        return sum(c.waiting + c.in_flight for c in self._counts.values())

    def lookup(self, event_id: str) -> str | None:
        # Redis decides idempotency inside `accept`; this answers for the duplicates it met.
        return self._dups.pop(event_id, None)

    async def accept(self, items: list[tuple[str, str, int, bytes]]) -> list[str]:
        by_tenant: dict[str, list[tuple[str, str, bytes]]] = {}
        for eid, tid, _sev, blob in items:
            okey = decode_stored(blob).ordering_key or ""
            by_tenant.setdefault(tid, []).append((eid, okey, blob))
        accepted: list[str] = []
        if len(self._dups) > 10_000:
            self._dups.clear()
        for tid, events in by_tenant.items():
            states = await self.store.accept(tid, events)
            for (eid, _, _), st in zip(events, states, strict=True):
                if st == "":
                    accepted.append(eid)
                else:
                    self._dups[eid] = STATES.get(st, "queued")
        if accepted:
            self._wake.set()
        return accepted

    def knows_tenant(self, tenant_id: str) -> bool:
        return tenant_id in self._counts

    # ---- Backend: views ----------------------------------------------------------------------

    async def event_status(self, event_id: str) -> dict[str, Any] | None:
        (row,) = await self.store.read([("HMGET", self.store.event_key(event_id), "t", "s", "h")])
        tid, st, hist = row
        if tid is None or st is None:
            return None
        return {
            "event_id": event_id,
            "tenant_id": _str(tid),
            "status": STATES.get(_str(st), "queued"),
            "attempts": _attempts(hist),
        }

    async def tenant_figures(self, tenant_id: str) -> dict[str, Any]:
        s = self.store
        stats, lim, waiting, leased, dead, now = await s.read(
            [
                ("HGETALL", s.tenant_key(tenant_id, "stats")),
                ("HMGET", s.tenant_key(tenant_id, "lim"), "bo", "bp", "es", "el", "er"),
                ("ZCARD", s.tenant_key(tenant_id, "due")),
                ("ZCARD", s.tenant_key(tenant_id, "lease")),
                ("ZCARD", s.tenant_key(tenant_id, "dead")),
                ("TIME",),
            ]
        )
        st = {_str(k): float(_str(v)) for k, v in stats.items()}
        now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
        responses = st.get("resp", 0.0)
        return {
            "tenant_id": tenant_id,
            "total_events": int(st.get("total", 0)),
            "successful_events": int(st.get("delivered", 0)),
            "failed_events": int(st.get("failed", 0)),
            "pending_retries": max(0, int(st.get("rt", 0))),
            "pending_events": int(waiting) + int(leased),
            "dead_letter_count": int(dead),
            "avg_response_time_ms": round(st.get("rms", 0.0) / responses, 3) if responses else 0.0,
            "circuit_open": float(_str(lim[0] or b"0")) > now_ms or lim[1] is not None,
            "endpoint_state": _str(lim[2] or b"enabled"),
            "endpoint_state_since": rfc3339(float(_str(lim[3])) / 1000 if lim[3] else now_ms / 1000, millis=False),
            "endpoint_state_reason": _str(lim[4] or b"configured"),
            "last_updated": rfc3339(now_ms / 1000, millis=False),
        }

    async def change_endpoint(self, tenant_id: str, enabled: bool) -> dict[str, Any]:
        state, since, reason, change, previous = await self.store.endpoint(
            tenant_id, "enable" if enabled else "disable"
        )
        if change:
            log.log(
                logging.INFO if change == "enabled" else logging.WARNING,
                "Endpoint of tenant %s is now %s: %s",
                tenant_id,
                change,
                reason,
                extra={"tenant": tenant_id},
            )
            self._notify(
                f"endpoint.{change}", tenant_id, {"state": change, "previous_state": previous, "reason": reason}
            )
            self._wake.set()
        return {
            "endpoint_state": state,
            "endpoint_state_since": rfc3339(since, millis=False),
            "endpoint_state_reason": reason,
        }

    def gauges(self) -> dict[str, TenantGauges]:
        now_ms = time.time() * 1000
        return {
            tid: TenantGauges(
                pending=c.waiting + c.in_flight,
                dead=c.dead,
                oldest_pending_age=max(0.0, (now_ms - c.oldest_ms) / 1000) if c.oldest_ms >= 0 else 0.0,
                circuit_open=c.circuit_open,
                endpoint_state=c.endpoint_state,
            )
            for tid, c in self._counts.items()
        }

    # ---- Backend: dead letters ---------------------------------------------------------------

    async def _dead_rows(self, f: LedgerFilter, after: Key | None, want: int) -> list[tuple[Key, list[Any], str]]:
        """Dead letters matching `f` after `after`, in (failed_at, event_id) order: up to `want`
        of (key, [tenant, state, attempts, failed ms, reason, stored], event_id)."""
        s = self.store
        zkey = s.prefix + ":dead" if f.tenant_id is None else s.tenant_key(f.tenant_id, "dead")
        lo = f.since * 1000 if f.since is not None else float("-inf")
        after_ms = None
        if after is not None:
            after_ms = round(after[0] * 1000)
            lo = max(lo, after_ms)
        hi = f"{f.until * 1000!r}" if f.until is not None else "+inf"
        out: list[tuple[Key, list[Any], str]] = []
        offset = 0
        step = max(want, 100)
        while len(out) < want:
            (rows,) = await s.read(
                [("ZRANGE", zkey, repr(lo), hi, "BYSCORE", "LIMIT", str(offset), str(step), "WITHSCORES")]
            )
            if not rows:
                break
            if not isinstance(rows[0], list | tuple):  # RESP2 without a reply callback: flat
                rows = list(zip(rows[0::2], rows[1::2], strict=True))
            offset += len(rows)
            pairs = [(_str(m), float(sc)) for m, sc in rows]
            if after is not None and after_ms is not None:
                pairs = [(m, sc) for m, sc in pairs if (sc, m) > (after_ms, after[1])]
            details = await s.read([("HMGET", s.event_key(m), "t", "s", "h", "f", "y", "b") for m, _ in pairs])
            for (m, sc), d in zip(pairs, details, strict=True):
                if d[1] is None or _str(d[1]) != "x":
                    continue  # replayed or purged since the listing
                if f.event_type is not None and not f.matches_type(_event_type(d[5])):
                    continue
                out.append(((sc / 1000, m), d, m))
                if len(out) == want:
                    break
            if len(rows) < step:
                break
        return out

    def _item(self, eid: str, d: list[Any]) -> DeadItem:
        tid = _str(d[0])
        envelope = decode_stored(bytes(d[5])).envelope if d[5] is not None else b"null"
        return {
            "event": msgspec.Raw(envelope),
            "event_id": eid,
            "tenant_id": tid,
            "attempts": _attempts(d[2]),
            "failed_at": rfc3339(float(_str(d[3] or b"0")) / 1000),
            "failure_reason": _str(d[4]) if d[4] is not None else None,
            "can_retry": tid in self._config().tenants,
        }

    async def dead_page(self, f: LedgerFilter, after: Key | None, limit: int) -> tuple[list[DeadItem], Key | None]:
        rows = await self._dead_rows(f, after, limit + 1)
        items = [self._item(eid, d) for _, d, eid in rows[:limit]]
        return items, rows[limit - 1][0] if len(rows) > limit else None

    async def dead_letter(self, event_id: str) -> DeadItem | None:
        s = self.store
        (d,) = await s.read([("HMGET", s.event_key(event_id), "t", "s", "h", "f", "y", "b")])
        if d[1] is None or _str(d[1]) != "x":
            return None
        return self._item(event_id, d)

    async def dead_tenant(self, event_id: str) -> str | None:
        (d,) = await self.store.read([("HMGET", self.store.event_key(event_id), "t", "s")])
        return _str(d[0]) if d[1] is not None and _str(d[1]) == "x" else None

    async def requeue(self, event_id: str) -> bool:
        n = await self.store.replay([event_id])
        self._wake.set()
        return n == 1

    async def _matching(self, f: LedgerFilter, configured_only: bool) -> list[str]:
        tenants = self._config().tenants
        ids: list[str] = []
        after: Key | None = None
        while True:
            rows = await self._dead_rows(f, after, 1000)
            ids += [eid for _, d, eid in rows if not configured_only or _str(d[0]) in tenants]
            if len(rows) < 1000:
                return ids
            after = rows[-1][0]

    async def requeue_matching(self, f: LedgerFilter) -> int:
        ids = await self._matching(f, True)
        n = 0
        for i in range(0, len(ids), BATCH):
            n += await self.store.replay(ids[i : i + BATCH])
        self._wake.set()
        return n

    async def purge(self, event_id: str) -> bool:
        return await self.store.purge([event_id]) == 1

    async def purge_matching(self, f: LedgerFilter) -> int:
        ids = await self._matching(f, False)
        n = 0
        for i in range(0, len(ids), BATCH):
            n += await self.store.purge(ids[i : i + BATCH])
        return n


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _attempts(hist: Any) -> list[Attempt]:
    if not hist:
        return []
    return number_rounds([decode_attempt(line) for line in bytes(hist).split(b"\n") if line])


def _event_type(blob: Any) -> str:
    try:
        return decode_stored(bytes(blob)).event_type if blob is not None else ""
    except (ValueError, msgspec.MsgspecError):
        return ""


def _health(out: Outcome) -> str:
    """What an outcome says of the endpoint's health (our refusals and unusable events say nothing)."""
    if out.kind in ("refused", "error"):
        return "none"
    if out.ok:
        return "ok"
    if out.status == 410:
        return "gone"
    return "fail"


class SettleBatch:
    """Verdicts that are ready in the same turn of the event loop go to Redis in one script call:
    at 64 attempts in flight, many finish together, and a round trip per verdict would cost the
    relay more CPU than the delivery itself (redis-py's per-command overhead)."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self._items: list[tuple[str, str, str, list[Any]]] = []
        self._waiters: list[asyncio.Future[tuple[bool, str, str]]] = []
        self._scheduled = False

    async def settle(self, tid: str, event_id: str, token: str, args: list[Any]) -> tuple[bool, str, str]:
        fut: asyncio.Future[tuple[bool, str, str]] = asyncio.get_running_loop().create_future()
        self._items.append((tid, event_id, token, args))
        self._waiters.append(fut)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._scheduled = False
        items, waiters = self._items[:SETTLE_BATCH], self._waiters[:SETTLE_BATCH]
        del self._items[:SETTLE_BATCH], self._waiters[:SETTLE_BATCH]
        if self._items:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        task = asyncio.ensure_future(self._send(items, waiters))
        _keep.add(task)
        task.add_done_callback(_keep.discard)

    async def _send(
        self, items: list[tuple[str, str, str, list[Any]]], waiters: list[asyncio.Future[tuple[bool, str, str]]]
    ) -> None:
        try:
            results = await self.store.settle_many(items)
        except BaseException as exc:
            for w in waiters:
                if not w.done():
                    w.set_exception(exc if isinstance(exc, Exception) else StoreDown("cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        for w, res in zip(waiters, results, strict=True):
            if not w.done():
                w.set_result(res)


_keep: set[asyncio.Task[None]] = set()  # batches in flight (the loop holds tasks only weakly)
SETTLE_BATCH = 64
