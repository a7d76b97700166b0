"""The delivery engine: per-tenant tasks, in-flight slots, outcomes, dead letters.

Each tenant has its own queues, in-flight limit, circuit breaker and rate limit (scheduler.py),
and its own supervised task, so a slow or failing tenant never delays another tenant. A slot
keeps taking due events while the limits allow, so steady traffic costs no task per attempt.

Every attempt ends in `_attempt`'s `finally`, whatever happened (an answer, a refusal, a
request that could not be built, a removed tenant, a bug): that is the one place that releases
the breaker's probe; `_slot`'s `finally` releases the in-flight slot.

The engine owns the in-memory index of live events; payloads and the full attempt history stay
in the store (the journal) and are read back when needed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from relay.config import Snapshot, TenantConfig
from relay.dispatch import EgressPolicy, Outcome, close_session, make_session
from relay.events import Attempt, decode_attempt, decode_stored, encode_attempt, number_rounds, rfc3339
from relay.journal import Recovered
from relay.metrics import Metrics, TenantGauges
from relay.statefile import StateFile

from .attempt import METRIC_OUTCOME, decide, record, send
from .breaker import Breaker
from .deadletters import DeadLetters, Key
from .endpoint import Change, Endpoint
from .entry import Entry
from .ledger import LedgerFilter
from .scheduler import TenantState
from .store import Store

log = logging.getLogger("relay.delivery")

RECENT_SETTLED = 10_000  # settled events whose status and attempts /events/{id} can still show
RETRY_LATER = 5.0  # an event whose attempt could not run or be recorded tries again after this
RESTART_DELAY = 1.0  # a tenant task that failed restarts after this
BATCH = 1000  # management operations write one journal commit per this many events
EXPIRE_BATCH = 10_000  # spilled events expired behind an open breaker per sweep (bounds the entries made)
ENDPOINTS_FILE = "endpoints.json"

# Operator notifications (SPEC §11): (type, tenant_id or None, data). Must never block or raise.
OpsNotify = Callable[[str, str | None, dict[str, Any]], None]


class DeliveryEngine:
    def __init__(
        self,
        journal: Store,
        config: Callable[[], Snapshot],
        metrics: Metrics,
        *,
        egress: EgressPolicy | None = None,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
        state_dir: Path | None = None,
        ops: OpsNotify | None = None,
    ) -> None:
        self.journal = journal
        self._clock = clock
        self._config = config
        self.metrics = metrics
        self.egress = egress or EgressPolicy()
        self._rand = rand
        self.entries: dict[str, Entry] = {}  # pending and dead
        self.dead = DeadLetters()
        self.tenants: dict[str, TenantState] = {}
        # Settled entries themselves (no copy): what /events/{id} shows after delivery.
        self._recent: OrderedDict[str, Entry] = OrderedDict()
        self._attempt_tasks: set[asyncio.Task[None]] = set()
        self._bg: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False
        self._ops = ops
        # Endpoint states survive restarts in a small file of their own (see _load_endpoints).
        self.endpoints: dict[str, Endpoint] = {}
        self._endpoint_file = StateFile(state_dir / ENDPOINTS_FILE if state_dir else None, self._endpoints_json)
        self._load_endpoints()
        metrics.watch_engine(self.gauges)

    # ---- lifecycle -------------------------------------------------------------------------

    def restore(self, rec: Recovered) -> None:
        """Rebuild the index from the journal before serving (100,000 events in well under 1 s)."""
        now = self._clock()
        entries = self.entries
        dead: list[Entry] = []
        tenants = self._config().tenants
        # Nothing allocated here is garbage: collecting during the load only costs time.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for live in rec.live:
                eid = live.event_id
                sev = min(max(live.severity, 0), 3)
                ts = self._tenant(live.tenant_id)
                cfg = tenants.get(live.tenant_id)
                fifo = cfg is not None and cfg.ordering == "fifo"
                # A backlog restarts as packed as it ran: never-attempted events spill again.
                packable = not (live.dead or live.attempts or fifo) and live.next_due is None
                if packable and ts.try_spill(eid, sev, live.accepted_at, live.relay_id):
                    continue
                e = Entry(eid, live.tenant_id, sev, live.accepted_at)
                if live.attempts:
                    e.restore_attempts([decode_attempt(b) for b in live.attempts])
                entries[eid] = e
                if live.dead:
                    e.state = "dead"
                    e.dead_reason = live.dead_reason
                    e.failed_at = live.failed_at
                    dead.append(e)
                    ts.dead += 1
                    continue
                if e.tries:
                    e.state = "retrying"
                ts.add_pending(e)
                if fifo:
                    # Acceptance order (rec.live is sorted by it) rebuilds each key's line.
                    ts.fifo = True
                    e.okey = self._read_okey(eid)
                ts.admit(e, live.next_due, now)
            dead.sort(key=lambda e: (e.failed_at or 0.0, e.event_id))
            for e in dead:
                self.dead.add(e)
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
        """Stop starting attempts; give those in flight (and background journal writes) up to
        `grace` seconds; cancel the rest. Returns how many attempts were cut short (their events
        stay pending in the journal)."""
        self._stopping = True
        for ts in self.tenants.values():
            ts.wake.set()
        tasks = [ts.task for ts in self.tenants.values() if ts.task is not None]
        waiting = self._attempt_tasks | self._bg
        if waiting:
            await asyncio.wait(waiting, timeout=grace)
        cancelled = sum(1 for t in self._attempt_tasks if not t.done())
        for t in [*self._attempt_tasks, *self._bg, *tasks]:
            t.cancel()
        await asyncio.gather(*self._attempt_tasks, *tasks, *self._bg, return_exceptions=True)
        if self._session is not None:
            await close_session(self._session)
        await self._endpoint_file.close()
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
        if self.journal.is_live(event_id):
            return "queued"  # spilled (see scheduler.Spill): pending, never attempted yet
        # Settled before the recent cache (or a restart): the journal keeps the ids for a while.
        return "delivered" if self.journal.was_settled(event_id) else None

    @property
    def pending_count(self) -> int:
        return len(self.entries) - len(self.dead) + sum(ts.spilled for ts in self.tenants.values())

    async def accept(self, items: list[tuple[str, str, int, bytes]]) -> list[str]:
        """Journal (durably) then schedule: (event_id, tenant_id, severity, stored blob).

        Ids the engine already knows (live, dead or settled within the idempotency window) are
        skipped, never accepted twice; returns the ids accepted.
        """
        seen: set[str] = set()
        fresh = []
        for it in items:
            if it[0] not in seen and self.lookup(it[0]) is None:
                seen.add(it[0])
                fresh.append(it)
        if not fresh:
            return []
        now = self._clock()
        await self.journal.accept([(eid, tid, sev, now, blob) for eid, tid, sev, blob in fresh])
        for eid, tid, sev, blob in fresh:
            ts = self._tenant(tid)
            if ts.try_spill(eid, sev, now):
                ts.stats.total += 1
                self._ensure_task(ts)
                continue
            e = Entry(eid, tid, sev, now)
            self.entries[eid] = e
            if ts.fifo:
                e.okey = decode_stored(blob).ordering_key or ""
            ts.add_pending(e)
            ts.stats.total += 1
            ts.admit(e, None, now)
            self._ensure_task(ts)
        return [it[0] for it in fresh]

    def _read_okey(self, event_id: str) -> str:
        """An event's ordering key, from its journaled request ("" = the tenant's default key)."""
        try:
            return decode_stored(self.journal.read_blob(event_id)).ordering_key or ""
        except (OSError, ValueError, KeyError) as exc:
            log.warning("could not read the ordering key of %s (%s); it joins the default key", event_id, exc)
            return ""

    # ---- tenant tasks ----------------------------------------------------------------------

    def _tenant(self, tenant_id: str) -> TenantState:
        ts = self.tenants.get(tenant_id)
        if ts is None:
            ts = self.tenants[tenant_id] = TenantState(tenant_id)
            ts.on_unspill = self._unspilled
        return ts

    def _unspilled(self, e: Entry) -> None:
        self.entries[e.event_id] = e

    def _ensure_task(self, ts: TenantState) -> None:
        if ts.task is None and self._session is not None and not self._stopping:
            ts.task = asyncio.create_task(self._supervise(ts), name=f"tenant:{ts.tenant_id}")

    async def _supervise(self, ts: TenantState) -> None:
        """Run the tenant's scheduler; restart it after an unexpected error (a bug must not
        silently stop a tenant's deliveries until the next restart)."""
        while not self._stopping:
            try:
                await self._run_tenant(ts)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler for tenant %s failed; restarting it", ts.tenant_id)
                self.metrics.task_restarts.inc()
                await asyncio.sleep(RESTART_DELAY)

    async def _run_tenant(self, ts: TenantState) -> None:
        while not self._stopping:
            ts.wake.clear()
            now = self._clock()
            ts.release_due(now)
            cfg = self._config().tenants.get(ts.tenant_id)
            wait: float | None = None
            if cfg is None:
                wait = self._orphaned(ts, now)
            elif cfg.active:
                ep = self._endpoint(ts.tenant_id)
                self._announce(ts, ep.check_expired(now, cfg.disable_after_seconds))
                if ep.disabled:
                    # Held: no attempt, no retry clock, no expiry; at most a probe now and then.
                    wait = self._probe(ts, cfg, ep, now)
                else:
                    wait = self._dispatch_ready(ts, cfg, now)
                    if ts.breaker.is_open(now) and now - ts.swept_at >= 1.0:
                        ts.swept_at = now
                        self._expire_behind_breaker(ts, cfg, now)
            timer = ts.next_timer(now)
            if timer is not None:
                wait = timer if wait is None else min(wait, timer)
            try:
                async with asyncio.timeout(wait):
                    await ts.wake.wait()
            except TimeoutError:
                pass

    def _orphaned(self, ts: TenantState, now: float) -> float | None:
        """A removed tenant: dead-letter what is still pending (a write that failed before is
        tried again here), and wait for its last dead letters to go."""
        if now - ts.swept_at >= RETRY_LATER:
            ts.swept_at = now
            self._dead_letter_all(ts, "tenant removed")
        return RETRY_LATER if ts.pending else None

    def _dispatch_ready(self, ts: TenantState, cfg: TenantConfig, now: float) -> float | None:
        """Fill free in-flight slots; return how long until a limit may lift (None: on wake)."""
        while ts.in_flight < cfg.max_in_flight:
            got = ts.claim(cfg, now)
            if not isinstance(got, tuple):
                return got
            ts.in_flight += 1
            task = asyncio.create_task(self._slot(ts, *got))
            self._attempt_tasks.add(task)
            task.add_done_callback(self._attempt_tasks.discard)
        return None

    async def _slot(self, ts: TenantState, e: Entry, probe: int) -> None:
        """One in-flight slot: deliver `e`, then keep taking due events while the limits allow,
        so steady traffic costs neither a task nor a scheduler wake-up per attempt."""
        try:
            while True:
                retry = e.tries > 0
                try:
                    await self._attempt(ts, e, probe)
                finally:
                    ts.finished(retry)
                if self._stopping:
                    return
                cfg = self._config().tenants.get(ts.tenant_id)
                if cfg is None or not cfg.active or ts.in_flight > cfg.max_in_flight:
                    return
                if self._endpoint(ts.tenant_id).disabled:
                    return
                got = ts.claim(cfg, self._clock())
                if not isinstance(got, tuple):
                    return  # the scheduler works out how long to wait
                e, probe = got
        finally:
            ts.in_flight -= 1
            ts.wake.set()

    def _probe(self, ts: TenantState, cfg: TenantConfig, ep: Endpoint, now: float) -> float | None:
        """A disabled endpoint: send its oldest held event as a probe when one is due."""
        due = ep.probe_due(now)
        if due is None or due > 0:
            return due
        if ts.in_flight >= cfg.max_in_flight:
            return None  # attempts started before it was disabled: their end wakes us
        e = next((e for e in ts.pending.values() if e.claimable), None)
        if e is None and ts.spilled:
            e = ts.peek()  # takes spilled events in
        if e is None:
            return None  # nothing held: a new event wakes us
        ep.begin_probe(now, cfg.probe_interval_seconds)
        e.state = "delivering"
        ts.in_flight += 1
        task = asyncio.create_task(self._probe_slot(ts, e, ep))
        self._attempt_tasks.add(task)
        task.add_done_callback(self._attempt_tasks.discard)
        return cfg.probe_interval_seconds

    async def _probe_slot(self, ts: TenantState, e: Entry, ep: Endpoint) -> None:
        try:
            await self._attempt(ts, e, 0, probe_held=True)
        finally:
            ep.end_probe()
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
            if e.claimable and now - e.round_at > limit:
                expired.append(e)
        if ts.spilled:  # spilled events are never attempted: their round began at acceptance
            expired += ts.unspill_older(now - limit, EXPIRE_BATCH)
        reason = f"circuit breaker open: not delivered within the retry schedule ({limit:g}s)"
        for e in expired:
            e.state = "delivering"  # claimed: no attempt may start while it moves
            self._spawn(self._dead_in_background(ts, e, reason))

    def _dead_letter_all(self, ts: TenantState, reason: str) -> None:
        ts.unspill_all()
        for e in [e for e in ts.pending.values() if e.waiting]:
            e.state = "delivering"  # claimed: no attempt may start while it moves
            self._spawn(self._dead_in_background(ts, e, reason))

    # ---- one attempt -----------------------------------------------------------------------

    async def _attempt(self, ts: TenantState, e: Entry, probe: int, *, probe_held: bool = False) -> None:
        try:
            await self._attempt_inner(ts, e, probe_held)
        except asyncio.CancelledError:
            if e.state == "delivering":
                e.back_in_line()  # shutting down: it stays pending in the journal
            raise
        except Exception:
            # Not the event's fault (its own problems are outcomes): a bug or the disk. Keep the
            # event and try again later rather than lose it.
            log.exception("attempt for %s failed unexpectedly; will retry", e.event_id)
            if e.state == "delivering":
                e.back_in_line()
                ts.schedule(e, self._clock() + RETRY_LATER, self._clock())
        finally:
            ts.breaker.release(probe)

    async def _attempt_inner(self, ts: TenantState, e: Entry, probe_held: bool = False) -> None:
        """One attempt. `probe_held`: a disabled endpoint's probe, which spends no retry."""
        cfg = self._config().tenants.get(e.tenant_id)
        if cfg is None:
            await self._to_dead(ts, e, "tenant removed")
            return
        assert self._session is not None
        stored = decode_stored(self.journal.read_blob(e.event_id))
        n = e.tries + 1
        started = self._clock()
        fields = {"event_id": e.event_id, "tenant": e.tenant_id, "attempt": n}
        log.debug("Tentativa %d para evento %s - Tenant: %s", n, e.event_id, e.tenant_id, extra=fields)
        out = await send(self._session, cfg, stored, e.event_id, self.egress, n)
        self._observe(ts, cfg, out)
        # A probe is judged as if it were a first attempt: only a final answer settles the event.
        verdict = decide(out, 0 if probe_held else n, cfg, self._rand)
        if probe_held and verdict.kind == "retry":
            log.info(
                "Probe of disabled endpoint failed - Event: %s, Status: %s, Error: %s; it stays held",
                e.event_id,
                out.status if out.status is not None else "-",
                out.error,
                extra=fields,
            )
            e.back_in_line()
            ts.schedule(e, None, self._clock())
            return
        attempt = record(out, n, started, e.next_round(n))
        e.add_attempt(attempt)
        e.tries = n
        ts.counted_retry(e, n - 1)
        fields.update(status=out.status, duration_ms=round(out.duration * 1000, 1))
        if verdict.kind == "delivered":
            self.journal.delivered_nowait(e.event_id)
            self._settle(ts, e, "delivered")
            ts.stats.delivered += 1
            tm = self.metrics.tenant(e.tenant_id)
            tm.delivered.inc()
            tm.latency.observe(max(0.0, self._clock() - e.accepted_at))
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
        if verdict.kind == "dead":
            assert verdict.reason is not None
            await self._to_dead(ts, e, verdict.reason, attempt)
            return
        due = self._clock() + verdict.delay
        await self.journal.attempt(e.event_id, encode_attempt(attempt), due)
        e.state = "retrying"
        log.info("Webhook failed, scheduled for retry in %.2fs - Event: %s", verdict.delay, e.event_id, extra=fields)
        ts.schedule(e, due, self._clock())

    def _observe(self, ts: TenantState, cfg: TenantConfig, out: Outcome) -> None:
        tm = self.metrics.tenant(cfg.tenant_id)
        tm.attempts[METRIC_OUTCOME[out.kind]].inc()
        if out.status is not None:
            tm.duration.observe(out.duration)
            ts.stats.response_ms_sum += out.duration * 1000
            ts.stats.responses += 1
        if out.kind in ("refused", "error"):
            return  # our own policy or an unusable event: says nothing of the endpoint's health
        br = ts.breaker
        ep = self._endpoint(cfg.tenant_id)
        now = self._clock()
        if out.ok or out.status == 410:
            br.success()
            self._announce(ts, ep.succeeded(now) if out.ok else ep.gone(now))
            return
        cb = cfg.circuit_breaker
        policy = cfg.retry_policy
        cool = br.failure(now, cb.failure_threshold, policy.initial_delay_seconds, policy.max_delay_seconds, cb.enabled)
        if cool is not None:
            log.warning(
                "Circuit opened for tenant %s for %.2fs after %d consecutive failures",
                cfg.tenant_id,
                cool,
                br.failures,
                extra={"tenant": cfg.tenant_id},
            )
        self._announce(ts, ep.failed(now, cool is not None, cfg.disable_after_seconds))

    # ---- endpoint lifecycle ----------------------------------------------------------------

    def _endpoint(self, tenant_id: str) -> Endpoint:
        ep = self.endpoints.get(tenant_id)
        if ep is None:
            ep = self.endpoints[tenant_id] = Endpoint(since=self._clock())
        return ep

    def _announce(self, ts: TenantState, change: Change | None) -> None:
        """Act on an endpoint state change: log, persist, tell the operator, release or hold."""
        if change is None:
            return
        tid = ts.tenant_id
        level = logging.INFO if change.state == "enabled" else logging.WARNING
        log.log(level, "Endpoint of tenant %s is now %s: %s", tid, change.state, change.reason, extra={"tenant": tid})
        self._endpoint_file.changed()
        self._notify(
            f"endpoint.{change.state}",
            tid,
            {"state": change.state, "previous_state": change.previous, "reason": change.reason},
        )
        if change.state == "enabled" and change.previous == "disabled":
            # The held backlog drains oldest first, with a fresh breaker and fresh rounds.
            ts.breaker = Breaker()
            ts.restart_held(self._clock())
        ts.wake.set()

    def _notify(self, kind: str, tenant_id: str | None, data: dict[str, Any]) -> None:
        if self._ops is None:
            return
        try:
            self._ops(kind, tenant_id, data)
        except Exception:  # an operator notification must never disturb delivery
            log.exception("could not queue operator event %s", kind)

    def set_endpoint(self, tenant_id: str, enabled: bool) -> dict[str, Any]:
        """The operator's enable / disable (SPEC §11)."""
        ep = self._endpoint(tenant_id)
        now = self._clock()
        self._announce(self._tenant(tenant_id), ep.enable(now) if enabled else ep.disable(now))
        return self.endpoint_view(tenant_id)

    def endpoint_view(self, tenant_id: str) -> dict[str, Any]:
        ep = self.endpoints.get(tenant_id) or Endpoint(since=self._clock())
        return {
            "endpoint_state": ep.state,
            "endpoint_state_since": rfc3339(ep.since, millis=False),
            "endpoint_state_reason": ep.reason,
        }

    def _endpoints_json(self) -> dict[str, Any]:
        return {"version": 1, "endpoints": {tid: ep.to_json() for tid, ep in sorted(self.endpoints.items())}}

    def _load_endpoints(self) -> None:
        """Endpoint states live in `<data dir>/endpoints.json`, rewritten whole and atomically
        on every change: they are per tenant, few and rarely change, unlike the per-event
        journal records (which compaction would otherwise have to carry forward)."""
        doc = self._endpoint_file.load()
        rows = doc.get("endpoints") if isinstance(doc, dict) else None
        if not isinstance(rows, dict):
            return
        now = self._clock()
        for tid, row in rows.items():
            if isinstance(tid, str) and isinstance(row, dict):
                ep = self.endpoints[tid] = Endpoint.from_json(row)
                ep.after_restart(now)

    # ---- settling --------------------------------------------------------------------------

    async def _to_dead(self, ts: TenantState, e: Entry, reason: str, last: Attempt | None = None) -> None:
        now = self._clock()
        if last is not None:
            # The final attempt goes in the same durable step as the verdict.
            await self.journal.attempt(e.event_id, encode_attempt(last), None)
        await self.journal.dead(e.event_id, reason, now)
        ts.drop_pending(e, now)
        e.state = "dead"
        e.dead_reason = reason
        e.failed_at = now
        e.seq = 0
        self.dead.add(e)
        ts.dead += 1
        ts.stats.failed += 1
        self.metrics.tenant(e.tenant_id).dead_lettered.inc()
        self._notify("dead_letter.added", e.tenant_id, {"event_id": e.event_id, "reason": reason})
        log.error(
            "Webhook moved to dead-letter queue - Event: %s, Reason: %s",
            e.event_id,
            reason,
            extra={"event_id": e.event_id, "tenant": e.tenant_id, "attempt": e.tries},
        )

    async def _dead_in_background(self, ts: TenantState, e: Entry, reason: str) -> None:
        try:
            await self._to_dead(ts, e, reason)
        except Exception as exc:
            # Put it back: it stays pending (and is tried again) rather than "delivering" for good.
            log.error("could not move %s to the dead-letter queue (%s); it stays pending", e.event_id, exc)
            if e.state == "delivering":
                e.back_in_line()
                ts.schedule(e, self._clock() + RETRY_LATER, self._clock())

    def _settle(self, ts: TenantState, e: Entry, state: str) -> None:
        ts.drop_pending(e, self._clock())
        self.entries.pop(e.event_id, None)
        if self.dead.remove(e.event_id) is not None:
            ts.dead -= 1
        e.state = state
        self._recent[e.event_id] = e
        if len(self._recent) > RECENT_SETTLED:
            self._recent.popitem(last=False)
        self._forget_if_gone(ts)

    # ---- config changes --------------------------------------------------------------------

    def apply_config(self, snap: Snapshot) -> None:
        """Called after a new snapshot is in force. Removed tenants' pending events go to the DLQ;
        a removed tenant with nothing pending or dead is forgotten (state, task, series)."""
        now = self._clock()
        for tid, cfg in snap.tenants.items():
            ts = self._tenant(tid)
            self.metrics.tenant(tid)
            ep = self._endpoint(tid)
            before = ep.base_url
            self._announce(ts, ep.url_is(cfg.base_url, now))
            if ep.base_url != before:
                self._endpoint_file.changed()
            fifo = cfg.ordering == "fifo"
            if fifo and not ts.fifo:
                ts.unspill_all()  # every pending event joins its key's line
                for e in ts.pending.values():
                    if e.okey is None:
                        e.okey = self._read_okey(e.event_id)
            ts.set_fifo(fifo, now)
        for ts in list(self.tenants.values()):
            if ts.tenant_id not in snap.tenants:
                self._dead_letter_all(ts, "tenant removed")
                if self._forget_if_gone(ts):
                    continue
            ts.wake.set()
            self._ensure_task(ts)

    def _forget_if_gone(self, ts: TenantState) -> bool:
        if ts.tenant_id in self._config().tenants or not ts.idle():
            return False
        if self.tenants.get(ts.tenant_id) is not ts:
            return True
        del self.tenants[ts.tenant_id]
        if self.endpoints.pop(ts.tenant_id, None) is not None:
            self._endpoint_file.changed()
        self.dead.drop_tenant_order(ts.tenant_id)
        if ts.task is not None and ts.task is not asyncio.current_task():
            ts.task.cancel()
        self.metrics.forget_tenant(ts.tenant_id)
        return True

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg_done)

    def _bg_done(self, task: asyncio.Task[Any]) -> None:
        self._bg.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed: %r", task.exception())

    # ---- management ------------------------------------------------------------------------

    def dead_entry(self, event_id: str) -> Entry | None:
        """A dead letter still in the journal (retention may have dropped it a moment ago)."""
        e = self.dead.get(event_id)
        if e is not None and not self.journal.is_live(event_id):
            self.prune_dead()
            return None
        return e

    async def requeue(self, event_id: str) -> bool:
        return await self.requeue_many([event_id]) == 1

    async def requeue_many(self, event_ids: Iterable[str]) -> int:
        """Replay dead letters, one journal commit per `BATCH` events; returns how many."""
        n = 0
        for chunk in _chunks(event_ids, BATCH):
            todo = [e for eid in chunk if (e := self.dead_entry(eid)) is not None]
            if not todo:
                continue
            await self.journal.requeue_many([e.event_id for e in todo])
            now = self._clock()
            for e in todo:
                if self.dead.remove(e.event_id) is None:
                    continue  # replayed or purged by someone else meanwhile
                ts = self._tenant(e.tenant_id)
                ts.dead -= 1
                # A replayed event gets a fresh retry budget; its earlier attempts stay on record.
                e.tries = 0
                e.round_at = now
                e.state = "queued"
                e.dead_reason = e.failed_at = None
                if ts.fifo and e.okey is None:
                    e.okey = self._read_okey(e.event_id)
                ts.add_pending(e)
                ts.breaker = Breaker()  # an operator asked for delivery: give the endpoint a fresh chance
                ts.admit(e, None, now)  # a replayed event joins the end of its key's line
                self._ensure_task(ts)
                n += 1
        return n

    async def purge(self, event_id: str) -> bool:
        return await self.purge_many([event_id]) == 1

    async def purge_many(self, event_ids: Iterable[str]) -> int:
        """Delete dead letters for good, one journal commit per `BATCH` events."""
        n = 0
        for chunk in _chunks(event_ids, BATCH):
            todo = [e for eid in chunk if (e := self.dead_entry(eid)) is not None]
            if not todo:
                continue
            await self.journal.purge_many([e.event_id for e in todo])
            for e in todo:
                if e.state == "dead":
                    self._settle(self._tenant(e.tenant_id), e, "purged")
                    n += 1
        return n

    def prune_dead(self) -> int:
        """Forget dead letters the journal dropped (retention); called after compaction."""
        gone = [eid for eid in self.dead.entries if not self.journal.is_live(eid)]
        for eid in gone:
            e = self.dead.entries[eid]
            self._settle(self._tenant(e.tenant_id), e, "purged")
        return len(gone)

    def dead_letters(self, tenant_id: str | None, after: Key | None = None) -> Iterator[Entry]:
        """Dead letters oldest first, from just after the cursor key `after`."""
        live = self.journal.is_live
        return (e for e in self.dead.page(tenant_id, after) if live(e.event_id))

    def ledger(self, f: LedgerFilter, after: Key | None = None) -> Iterator[Entry]:
        """Dead letters matching `f` (SPEC §11), oldest first, from just after the cursor key
        `after`: a bisect to `since`, a stop at `until`; the type is read from the journal only
        when a pattern asks for it."""
        start = after
        if f.since is not None and (start is None or start < (f.since, "")):
            start = (f.since, "")  # before every id failed at exactly `since`
        for e in self.dead_letters(f.tenant_id, start):
            if f.until is not None and (e.failed_at or 0.0) > f.until:
                return
            if f.event_type is not None and not f.matches_type(self._event_type(e)):
                continue
            yield e

    def _event_type(self, e: Entry) -> str:
        try:
            return decode_stored(self.journal.read_blob(e.event_id)).event_type
        except (OSError, KeyError, ValueError, msgspec.MsgspecError):
            return ""  # purged meanwhile, or unreadable: matches no pattern but "*"

    def attempts_of(self, e: Entry) -> list[Attempt]:
        """The whole attempt history: from the journal while it holds the event, else what RAM kept."""
        if e.state not in ("delivered", "purged") and self.journal.is_live(e.event_id):
            try:
                return number_rounds([decode_attempt(b) for b in self.journal.read_attempts(e.event_id)])
            except (OSError, ValueError, KeyError) as exc:
                log.warning("could not read the attempts of %s from the journal: %s", e.event_id, exc)
        return list(e.attempts)

    def event_view(self, event_id: str) -> dict[str, Any] | None:
        e = self.entries.get(event_id) or self._recent.get(event_id)
        if e is None:
            return self._spilled_view(event_id)
        return {"event_id": event_id, "tenant_id": e.tenant_id, "status": e.state, "attempts": self.attempts_of(e)}

    def _spilled_view(self, event_id: str) -> dict[str, Any] | None:
        """A pending event kept packed (scheduler.Spill): never attempted; its tenant is in the
        journaled envelope."""
        if not self.journal.is_live(event_id):
            return None
        try:
            env = msgspec.json.decode(decode_stored(self.journal.read_blob(event_id)).envelope, type=_TenantOf)
        except (OSError, KeyError, ValueError, msgspec.MsgspecError):
            return None  # settled meanwhile
        return {"event_id": event_id, "tenant_id": env.tenant_id, "status": "queued", "attempts": []}

    def read_event(self, event_id: str) -> msgspec.Raw:
        return msgspec.Raw(decode_stored(self.journal.read_blob(event_id)).envelope)

    def tenant_metrics(self, tenant_id: str) -> dict[str, Any]:
        ts = self.tenants.get(tenant_id) or TenantState(tenant_id)
        st = ts.stats
        return {
            "tenant_id": tenant_id,
            "total_events": st.total,
            "successful_events": st.delivered,
            "failed_events": st.failed,
            "pending_retries": ts.retrying,
            "pending_events": ts.pending_count,
            "dead_letter_count": ts.dead,
            "avg_response_time_ms": round(st.response_ms_sum / st.responses, 3) if st.responses else 0.0,
            "circuit_open": ts.breaker.is_open(self._clock()),
            **self.endpoint_view(tenant_id),
            "last_updated": rfc3339(self._clock(), millis=False),
        }

    def gauges(self) -> dict[str, TenantGauges]:
        """Per-tenant figures for /metrics: O(tenants), every count is kept incrementally."""
        now = self._clock()
        out: dict[str, TenantGauges] = {}
        for tid, ts in self.tenants.items():
            oldest = next(iter(ts.pending.values()), None)
            first = oldest.accepted_at if oldest else None
            if ts.spilled:
                spilled = ts.oldest_spilled()
                first = spilled if first is None or (spilled is not None and spilled < first) else first
            out[tid] = TenantGauges(
                pending=ts.pending_count,
                dead=ts.dead,
                oldest_pending_age=max(0.0, now - first) if first is not None else 0.0,
                circuit_open=ts.breaker.is_open(now),
                endpoint_state=ep.state if (ep := self.endpoints.get(tid)) else "enabled",
            )
        return out


class _TenantOf(msgspec.Struct):
    tenant_id: str


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
