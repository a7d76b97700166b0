"""The delivery engine: per-tenant scheduling, attempts, retries, dead letters.

Each tenant has its own queues, in-flight limit, circuit breaker and rate limit, and its own
scheduler task, so a slow or failing tenant never delays another tenant's deliveries. Within a
tenant, due events go out highest severity first, then in arrival order.

The scheduler moves events from the `delayed` heap to the per-severity `ready` queues when they
fall due and opens in-flight slots (up to `max_in_flight`); each slot keeps taking due events
while the breaker and rate limit allow, so steady traffic costs no task per attempt.

The engine owns the in-memory index of live events; payloads stay in the journal on disk and are
read back (one pread) when an attempt starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import itertools
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import msgspec

from relay.config import Snapshot, TenantConfig
from relay.dispatch import EgressPolicy, Outcome, build_headers, make_session
from relay.events import (
    SEVERITY_NAME,
    Attempt,
    decode_attempt,
    decode_stored,
    encode_attempt,
    rfc3339,
)
from relay.journal import Journal, Recovered
from relay.metrics import Metrics, TenantGauges
from relay.outbound import deliver

log = logging.getLogger("relay.delivery")

RECENT_SETTLED = 10_000  # settled events whose status and attempts /events/{id} can still show


class Entry:
    """One live event in RAM: no payload, just what scheduling and the API need."""

    __slots__ = (
        "accepted_at",
        "attempts",
        "dead_reason",
        "event_id",
        "failed_at",
        "in_ready",
        "next_due",
        "round_at",
        "seq",
        "severity",
        "state",
        "tenant_id",
        "tries",
    )

    def __init__(self, event_id: str, tenant_id: str, severity: int, accepted_at: float) -> None:
        self.event_id = event_id
        self.tenant_id = tenant_id
        self.severity = severity
        self.accepted_at = accepted_at
        # Most events never fail: share one empty tuple rather than a list per event (72 bytes).
        self.attempts: list[Attempt] | tuple[()] = ()
        self.next_due: float | None = None
        self.state = "queued"  # queued | delivering | retrying | dead | delivered
        self.dead_reason: str | None = None
        self.failed_at: float | None = None
        self.seq = 0  # `delayed` heap items carrying another seq are stale
        self.in_ready = False  # sitting in one of its tenant's ready queues
        # Attempts in the current round: a dead letter replayed starts a fresh round (numbered
        # from 1 again) while `attempts` keeps the whole history.
        self.tries = 0
        self.round_at = accepted_at  # start of the current round, for expiry behind a breaker

    def restore_attempts(self, attempts: list[Attempt]) -> None:
        self.attempts = attempts
        starts = [i for i, a in enumerate(attempts) if a.attempt == 1]
        self.tries = len(attempts) - starts[-1] if starts else len(attempts)
        if starts and starts[-1] > 0:  # replayed at least once: the round began at its first attempt
            with contextlib.suppress(ValueError):
                self.round_at = datetime.fromisoformat(attempts[starts[-1]].at).timestamp()


@dataclass
class Breaker:
    """Consecutive-failure ejection with a growing cool-down and one half-open probe."""

    failures: int = 0
    trips: int = 0
    open_until: float = 0.0
    probing: bool = False

    def is_open(self, now: float) -> bool:
        return self.open_until > now or self.probing


@dataclass
class TenantStats:
    total: int = 0
    delivered: int = 0
    failed: int = 0
    response_ms_sum: float = 0.0
    responses: int = 0


@dataclass
class TenantState:
    tenant_id: str
    # Due events, one FIFO per severity (index = rank): 8 bytes an event, where a heap of
    # tuples costs about 100.
    ready: tuple[deque[Entry], ...] = field(default_factory=lambda: tuple(deque() for _ in SEVERITY_NAME))
    delayed: list[tuple[float, int, str]] = field(default_factory=list)  # (due, seq, id)
    pending: dict[str, Entry] = field(default_factory=dict)  # not dead, in arrival order
    in_flight: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    breaker: Breaker = field(default_factory=Breaker)
    stats: TenantStats = field(default_factory=TenantStats)
    tokens: float = 0.0
    tokens_at: float = 0.0
    swept_at: float = 0.0

    def retrying(self) -> int:
        return sum(1 for e in self.pending.values() if e.tries)


class DeliveryEngine:
    def __init__(
        self,
        journal: Journal,
        config: Callable[[], Snapshot],
        metrics: Metrics,
        *,
        egress: EgressPolicy | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.journal = journal
        self._config = config
        self.metrics = metrics
        self.egress = egress or EgressPolicy()
        self._rand = rand
        self.entries: dict[str, Entry] = {}
        self.dead: dict[str, Entry] = {}
        self.tenants: dict[str, TenantState] = {}
        # Settled entries themselves (no copy): what /events/{id} shows after delivery.
        self._recent: OrderedDict[str, Entry] = OrderedDict()
        self._seq = itertools.count(1)
        self._attempt_tasks: set[asyncio.Task[None]] = set()
        self._bg: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False
        metrics.watch_engine(self.gauges)

    # ---- lifecycle -------------------------------------------------------------------------

    def restore(self, rec: Recovered) -> None:
        """Rebuild the index from the journal before serving (100,000 events in well under 1 s)."""
        now = time.time()
        seq = self._seq
        entries, dead = self.entries, self.dead
        # Nothing allocated here is garbage: collecting during the load only costs time.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for live in rec.live:
                eid = live.event_id
                e = Entry(eid, live.tenant_id, min(max(live.severity, 0), 3), live.accepted_at)
                if live.attempts:
                    e.restore_attempts([decode_attempt(b) for b in live.attempts])
                entries[eid] = e
                ts = self._tenant(live.tenant_id)
                if live.dead:
                    e.state = "dead"
                    e.dead_reason = live.dead_reason
                    e.failed_at = live.failed_at
                    dead[eid] = e
                    continue
                if e.tries:
                    e.state = "retrying"
                ts.pending[eid] = e
                due = e.next_due = live.next_due
                if due is None or due <= now:
                    ts.ready[e.severity].append(e)
                    e.in_ready = True
                else:
                    e.seq = next(seq)
                    ts.delayed.append((due, e.seq, eid))
            for ts in self.tenants.values():
                heapq.heapify(ts.delayed)  # one O(n) pass instead of n pushes
        finally:
            if gc_was_enabled:
                gc.enable()

    async def start(self) -> None:
        self._session = make_session(self.egress)
        # Events of tenants no longer configured go to the dead-letter queue, as a reload would do.
        self.apply_config(self._config())
        for ts in self.tenants.values():
            self._ensure_task(ts)

    async def stop(self, grace: float) -> int:
        """Stop starting attempts; give those in flight up to `grace` seconds; cancel the rest.

        Returns how many attempts were cancelled (their events stay pending in the journal).
        """
        self._stopping = True
        for ts in self.tenants.values():
            ts.wake.set()
        tasks = [ts.task for ts in self.tenants.values() if ts.task is not None]
        if self._attempt_tasks:
            await asyncio.wait(set(self._attempt_tasks), timeout=grace)
        cancelled = sum(1 for t in self._attempt_tasks if not t.done())
        for t in [*self._attempt_tasks, *tasks]:
            t.cancel()
        await asyncio.gather(*self._attempt_tasks, *tasks, *self._bg, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        return cancelled

    # ---- ingest ----------------------------------------------------------------------------

    def lookup(self, event_id: str) -> str | None:
        """The status of a known event id (live or recently settled), for idempotency."""
        e = self.entries.get(event_id)
        if e is not None:
            return e.state
        s = self._recent.get(event_id)
        if s is not None:
            return s.state
        # Settled before the recent cache (or a restart): the journal keeps the ids for a while.
        return "delivered" if self.journal.was_settled(event_id) else None

    async def accept(self, items: list[tuple[str, str, int, bytes]]) -> None:
        """Journal (durably) then schedule: (event_id, tenant_id, severity, stored blob)."""
        now = time.time()
        await self.journal.accept([(eid, tid, sev, now, blob) for eid, tid, sev, blob in items])
        for eid, tid, sev, _ in items:
            e = Entry(eid, tid, sev, now)
            self.entries[eid] = e
            ts = self._tenant(tid)
            ts.pending[eid] = e
            ts.stats.total += 1
            self._schedule(ts, e, None)
            self._ensure_task(ts)

    # ---- scheduling ------------------------------------------------------------------------

    def _tenant(self, tenant_id: str) -> TenantState:
        ts = self.tenants.get(tenant_id)
        if ts is None:
            ts = self.tenants[tenant_id] = TenantState(tenant_id)
        return ts

    def _ensure_task(self, ts: TenantState) -> None:
        if ts.task is None and self._session is not None and not self._stopping:
            ts.task = asyncio.create_task(self._run_tenant(ts), name=f"tenant:{ts.tenant_id}")

    def _schedule(self, ts: TenantState, e: Entry, due: float | None) -> None:
        e.next_due = due
        if due is None or due <= time.time():
            e.seq = 0  # any `delayed` item of this event is now stale
            self._make_ready(ts, e)
        else:
            e.seq = next(self._seq)
            heapq.heappush(ts.delayed, (due, e.seq, e.event_id))
        ts.wake.set()

    @staticmethod
    def _make_ready(ts: TenantState, e: Entry) -> None:
        # Already queued (e.g. a dead letter replayed before its stale slot was popped): keep
        # that place in line rather than queue it twice.
        if not e.in_ready:
            e.in_ready = True
            ts.ready[e.severity].append(e)

    @staticmethod
    def _peek_ready(ts: TenantState) -> Entry | None:
        """The next event to send (highest severity, then oldest), dropping stale slots."""
        for q in reversed(ts.ready):
            while q:
                e = q[0]
                if e.state in ("queued", "retrying"):
                    return e
                q.popleft()  # settled, dead-lettered or claimed since it was queued
                e.in_ready = False
        return None

    def _live(self, eid: str, seq: int) -> Entry | None:
        e = self.entries.get(eid)
        if e is None or e.seq != seq or e.state not in ("queued", "retrying"):
            return None
        return e

    async def _run_tenant(self, ts: TenantState) -> None:
        while not self._stopping:
            ts.wake.clear()
            now = time.time()
            while ts.delayed and ts.delayed[0][0] <= now:
                _, seq, eid = heapq.heappop(ts.delayed)
                e = self._live(eid, seq)
                if e is not None:
                    self._make_ready(ts, e)
            cfg = self._config().tenants.get(ts.tenant_id)
            wait: float | None = None
            if cfg is not None and cfg.active:
                wait = self._dispatch_ready(ts, cfg, now)
                if ts.breaker.is_open(now) and now - ts.swept_at >= 1.0:
                    ts.swept_at = now
                    self._expire_behind_breaker(ts, cfg, now)
            if ts.delayed:
                until = max(0.0, ts.delayed[0][0] - now)
                wait = until if wait is None else min(wait, until)
            try:
                async with asyncio.timeout(wait):
                    await ts.wake.wait()
            except TimeoutError:
                pass

    def _claim(self, ts: TenantState, cfg: TenantConfig, now: float) -> Entry | float | None:
        """Take the next due event if the breaker and rate limit allow.

        Returns the event (now "delivering"), or how long until a limit may lift, or None when
        nothing is due or the wait ends with a wake-up (a half-open probe in flight).
        """
        e = self._peek_ready(ts)
        if e is None:
            return None
        cb = cfg.circuit_breaker
        br = ts.breaker
        if cb.enabled and br.is_open(now):
            return None if br.probing else br.open_until - now
        if cfg.rate_limit_per_second:
            rate = cfg.rate_limit_per_second
            ts.tokens = min(max(1.0, rate), ts.tokens + (now - ts.tokens_at) * rate)
            ts.tokens_at = now
            if ts.tokens < 1.0:
                return (1.0 - ts.tokens) / rate
            ts.tokens -= 1.0
        ts.ready[e.severity].popleft()
        e.in_ready = False
        if cb.enabled and br.open_until and br.open_until <= now:
            br.probing = True  # half-open: this attempt alone decides
        e.state = "delivering"
        return e

    def _dispatch_ready(self, ts: TenantState, cfg: TenantConfig, now: float) -> float | None:
        """Fill free in-flight slots; return how long until a limit may lift (None: on wake)."""
        while ts.in_flight < cfg.max_in_flight:
            got = self._claim(ts, cfg, now)
            if not isinstance(got, Entry):
                return got
            ts.in_flight += 1
            task = asyncio.create_task(self._slot(ts, got))
            self._attempt_tasks.add(task)
            task.add_done_callback(self._attempt_tasks.discard)
        return None

    async def _slot(self, ts: TenantState, e: Entry) -> None:
        """One in-flight slot: deliver `e`, then keep taking due events while the limits allow,
        so steady traffic costs neither a task nor a scheduler wake-up per attempt."""
        try:
            while True:
                await self._attempt(ts, e)
                if self._stopping:
                    return
                cfg = self._config().tenants.get(ts.tenant_id)
                if cfg is None or not cfg.active or ts.in_flight > cfg.max_in_flight:
                    return
                got = self._claim(ts, cfg, time.time())
                if not isinstance(got, Entry):
                    return  # the scheduler works out how long to wait
                e = got
        finally:
            ts.in_flight -= 1
            ts.wake.set()

    def _expire_behind_breaker(self, ts: TenantState, cfg: TenantConfig, now: float) -> None:
        """Dead-letter events that have waited longer than their whole retry schedule.

        Waiting behind an open breaker spends no retries, but an event must not wait forever:
        once it is older than the schedule (every delay plus every attempt's timeout) it goes to
        the dead-letter queue. `pending` is in arrival order, so the scan stops at the first
        young event.
        """
        policy = cfg.retry_policy
        limit = policy.schedule_seconds() + cfg.timeout_seconds * (policy.max_retries + 1)
        expired = []
        for e in ts.pending.values():
            if now - e.accepted_at <= limit:
                break
            if e.state in ("queued", "retrying") and now - e.round_at > limit:
                expired.append(e)
        for e in expired:
            e.state = "delivering"  # claimed: no attempt may start while it moves
            reason = f"circuit breaker open: not delivered within the retry schedule ({limit:g}s)"
            self._spawn(self._to_dead(ts, e, reason))

    # ---- one attempt -----------------------------------------------------------------------

    async def _attempt(self, ts: TenantState, e: Entry) -> None:
        try:
            await self._attempt_inner(ts, e)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Keep the event: put it back and retry later rather than lose it to a bug or disk error.
            log.exception("attempt for %s failed unexpectedly; will retry", e.event_id)
            if e.state == "delivering":
                e.state = "retrying" if e.tries else "queued"
                self._schedule(ts, e, time.time() + 5.0)

    async def _attempt_inner(self, ts: TenantState, e: Entry) -> None:
        cfg = self._config().tenants.get(e.tenant_id)
        if cfg is None:
            await self._to_dead(ts, e, "tenant removed")
            return
        assert self._session is not None
        stored = decode_stored(self.journal.read_blob(e.event_id))
        n = e.tries + 1
        started = time.time()
        headers = build_headers(cfg, stored, e.event_id, int(started))
        url = stored.target_url or cfg.base_url
        log.debug(
            "Tentativa %d para evento %s - Tenant: %s",
            n,
            e.event_id,
            e.tenant_id,
            extra={"event_id": e.event_id, "tenant": e.tenant_id, "attempt": n},
        )
        out = await deliver(self._session, cfg, url, stored.envelope, headers, self.egress)
        self._observe(ts, cfg, out)
        attempt = Attempt(
            attempt=n,
            at=rfc3339(started),
            status_code=out.status,
            error=out.error,
            duration_ms=round(out.duration * 1000, 3),
            response_body=out.body,
        )
        if e.attempts:
            e.attempts.append(attempt)
        else:
            e.attempts = [attempt]
        e.tries = n
        fields = {
            "event_id": e.event_id,
            "tenant": e.tenant_id,
            "attempt": n,
            "status": out.status,
            "duration_ms": round(out.duration * 1000, 1),
        }
        if out.ok:
            self.journal.delivered_nowait(e.event_id)
            self._settle(ts, e, "delivered")
            ts.stats.delivered += 1
            tm = self.metrics.tenant(e.tenant_id)
            tm.delivered.inc()
            tm.latency.observe(max(0.0, time.time() - e.accepted_at))
            msg = "Webhook delivered - Event: %s, Status: %s, Time: %dms"
            if n > 1:
                msg = f"Webhook delivered after {n} attempts - Event: %s, Status: %s, Time: %dms"
            log.info(msg, e.event_id, out.status, out.duration * 1000, extra=fields)
            return
        log.warning(
            "Webhook failed - Event: %s, Status: %s, Time: %dms, Error: %s",
            e.event_id,
            out.status if out.status is not None else "-",
            out.duration * 1000,
            out.error,
            extra=fields,
        )
        final = out.final
        if final is None and n > cfg.retry_policy.max_retries:
            final = f"max retries exceeded: {n} attempts, last error: {out.error}"
        if final is not None:
            await self._to_dead(ts, e, final, attempt)
            return
        delay = cfg.retry_policy.delay(n, self._rand)
        if out.retry_after is not None:
            delay = max(delay, min(out.retry_after, cfg.retry_policy.max_delay_seconds))
        due = time.time() + delay
        await self.journal.attempt(e.event_id, encode_attempt(attempt), due)
        e.state = "retrying"
        log.info("Webhook failed, scheduled for retry in %.2fs - Event: %s", delay, e.event_id, extra=fields)
        self._schedule(ts, e, due)

    def _observe(self, ts: TenantState, cfg: TenantConfig, out: Outcome) -> None:
        tenant = cfg.tenant_id
        outcome = "connection_error" if out.kind == "refused" else out.kind
        tm = self.metrics.tenant(tenant)
        tm.attempts[outcome].inc()
        if out.status is not None:
            tm.duration.observe(out.duration)
            ts.stats.response_ms_sum += out.duration * 1000
            ts.stats.responses += 1
        br = ts.breaker
        if out.kind == "refused":
            return  # our own egress policy, not the endpoint's health: never trips the breaker
        if out.ok or out.status == 410:
            br.failures = br.trips = 0
            br.open_until = 0.0
            br.probing = False
            return
        br.failures += 1
        cb = cfg.circuit_breaker
        # Attempts that were already in flight when it opened must not trip it again.
        already_open = br.open_until > time.time() and not br.probing
        if cb.enabled and not already_open and (br.probing or br.failures >= cb.failure_threshold):
            # Each trip doubles the cool-down, capped by the policy's longest delay.
            base = max(cfg.retry_policy.initial_delay_seconds, 0.05)
            cool = min(base * (2.0**br.trips), cfg.retry_policy.max_delay_seconds)
            br.trips += 1
            br.open_until = time.time() + cool
            br.probing = False
            log.warning(
                "Circuit opened for tenant %s for %.2fs after %d consecutive failures",
                tenant,
                cool,
                br.failures,
                extra={"tenant": tenant},
            )

    async def _to_dead(self, ts: TenantState, e: Entry, reason: str, last: Attempt | None = None) -> None:
        now = time.time()
        if last is not None:
            # The final attempt goes in the same durable step as the verdict.
            await self.journal.attempt(e.event_id, encode_attempt(last), None)
        await self.journal.dead(e.event_id, reason, now)
        ts.pending.pop(e.event_id, None)
        e.state = "dead"
        e.dead_reason = reason
        e.failed_at = now
        e.seq = 0
        self.dead[e.event_id] = e
        ts.stats.failed += 1
        self.metrics.tenant(e.tenant_id).dead_lettered.inc()
        log.error(
            "Webhook moved to dead-letter queue - Event: %s, Reason: %s",
            e.event_id,
            reason,
            extra={"event_id": e.event_id, "tenant": e.tenant_id, "attempt": len(e.attempts)},
        )

    def _settle(self, ts: TenantState, e: Entry, state: str) -> None:
        ts.pending.pop(e.event_id, None)
        self.entries.pop(e.event_id, None)
        self.dead.pop(e.event_id, None)
        e.state = state
        self._recent[e.event_id] = e
        if len(self._recent) > RECENT_SETTLED:
            self._recent.popitem(last=False)

    # ---- config changes --------------------------------------------------------------------

    def apply_config(self, snap: Snapshot) -> None:
        """Called after a new snapshot is in force. Removed tenants' pending events go to the DLQ."""
        for tid in snap.tenants:
            self._tenant(tid)
            self.metrics.tenant(tid)
        for tid, ts in self.tenants.items():
            if tid not in snap.tenants:
                for e in list(ts.pending.values()):
                    if e.state in ("queued", "retrying"):
                        e.state = "delivering"  # claimed: no attempt may start while it moves
                        self._spawn(self._to_dead(ts, e, "tenant removed"))
            ts.wake.set()
            self._ensure_task(ts)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    # ---- management ------------------------------------------------------------------------

    def dead_entry(self, event_id: str) -> Entry | None:
        """A dead letter still in the journal (retention may have dropped it a moment ago)."""
        e = self.dead.get(event_id)
        if e is not None and not self.journal.is_live(event_id):
            self.prune_dead()
            return None
        return e

    async def requeue(self, event_id: str) -> bool:
        e = self.dead_entry(event_id)
        if e is None:
            return False
        await self.journal.requeue(event_id)
        del self.dead[event_id]
        # A replayed event gets a fresh retry budget; its earlier attempts stay on record.
        e.tries = 0
        e.round_at = time.time()
        e.state = "queued"
        e.dead_reason = e.failed_at = None
        ts = self._tenant(e.tenant_id)
        ts.pending[event_id] = e
        ts.breaker = Breaker()  # an operator asked for delivery: give the endpoint a fresh chance
        self._schedule(ts, e, None)
        self._ensure_task(ts)
        return True

    async def purge(self, event_id: str) -> bool:
        e = self.dead_entry(event_id)
        if e is None:
            return False
        await self.journal.purge(event_id)
        self._settle(self._tenant(e.tenant_id), e, "purged")
        return True

    def prune_dead(self) -> int:
        """Forget dead letters the journal dropped (retention); called after compaction."""
        gone = [eid for eid in self.dead if not self.journal.is_live(eid)]
        for eid in gone:
            e = self.dead[eid]
            self._settle(self._tenant(e.tenant_id), e, "purged")
        return len(gone)

    def dead_letters(self, tenant_id: str | None) -> Iterator[Entry]:
        live = self.journal.is_live
        items = (e for e in self.dead.values() if (tenant_id is None or e.tenant_id == tenant_id) and live(e.event_id))
        return iter(sorted(items, key=lambda e: (e.failed_at or 0.0, e.event_id)))

    def event_view(self, event_id: str) -> dict[str, Any] | None:
        e = self.entries.get(event_id)
        if e is not None:
            return {"event_id": event_id, "tenant_id": e.tenant_id, "status": e.state, "attempts": e.attempts}
        s = self._recent.get(event_id)
        if s is not None:
            return {"event_id": event_id, "tenant_id": s.tenant_id, "status": s.state, "attempts": s.attempts}
        return None

    def read_event(self, event_id: str) -> msgspec.Raw:
        return msgspec.Raw(decode_stored(self.journal.read_blob(event_id)).envelope)

    def tenant_metrics(self, tenant_id: str) -> dict[str, Any]:
        ts = self.tenants.get(tenant_id) or TenantState(tenant_id)
        st = ts.stats
        dead = sum(1 for e in self.dead.values() if e.tenant_id == tenant_id)
        return {
            "tenant_id": tenant_id,
            "total_events": st.total,
            "successful_events": st.delivered,
            "failed_events": st.failed,
            "pending_retries": ts.retrying(),
            "pending_events": len(ts.pending),
            "dead_letter_count": dead,
            "avg_response_time_ms": round(st.response_ms_sum / st.responses, 3) if st.responses else 0.0,
            "circuit_open": ts.breaker.is_open(time.time()),
            "last_updated": rfc3339(time.time(), millis=False),
        }

    def gauges(self) -> dict[str, TenantGauges]:
        now = time.time()
        dead: dict[str, int] = {}
        for e in self.dead.values():
            dead[e.tenant_id] = dead.get(e.tenant_id, 0) + 1
        out: dict[str, TenantGauges] = {}
        for tid, ts in self.tenants.items():
            oldest = next(iter(ts.pending.values()), None)
            out[tid] = TenantGauges(
                pending=len(ts.pending),
                dead=dead.get(tid, 0),
                oldest_pending_age=max(0.0, now - oldest.accepted_at) if oldest else 0.0,
                circuit_open=ts.breaker.is_open(now),
            )
        return out
