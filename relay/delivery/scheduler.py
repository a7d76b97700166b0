"""A tenant's queues: due events by severity, a timer heap for the rest, and the claim rules.

No asyncio and no I/O here: `claim` takes the caller's clock, so the scheduling rules (severity,
breaker, rate limit, stale heap items) are tested with a fake one. Within a tenant, due events go
out highest severity first, then in arrival order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from relay.config import TenantConfig
from relay.events import SEVERITY_NAME

from .breaker import Breaker
from .entry import Entry
from .ratelimit import TokenBucket

_seq = itertools.count(1)


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
    delayed: list[tuple[float, int, Entry]] = field(default_factory=list)  # (due, seq, entry)
    # Not settled and not dead, in arrival order. An OrderedDict so the oldest is found in O(1)
    # however many were removed from the front (a plain dict scans its holes).
    pending: OrderedDict[str, Entry] = field(default_factory=OrderedDict)
    retrying: int = 0  # pending events with at least one failed attempt (kept incrementally)
    dead: int = 0  # dead letters of this tenant
    in_flight: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    breaker: Breaker = field(default_factory=Breaker)
    bucket: TokenBucket = field(default_factory=TokenBucket)
    stats: TenantStats = field(default_factory=TenantStats)
    swept_at: float = 0.0

    # ---- membership ----------------------------------------------------------------------

    def add_pending(self, e: Entry) -> None:
        self.pending[e.event_id] = e
        if e.tries:
            self.retrying += 1

    def drop_pending(self, e: Entry) -> None:
        if self.pending.pop(e.event_id, None) is not None and e.tries:
            self.retrying -= 1

    def counted_retry(self, e: Entry, tries_before: int) -> None:
        """`e.tries` went from `tries_before` to its value now while pending."""
        if not tries_before and e.tries and e.event_id in self.pending:
            self.retrying += 1

    def idle(self) -> bool:
        """Nothing of this tenant is pending, dead or in flight: its state can be dropped."""
        return not self.pending and not self.dead and not self.in_flight

    # ---- timing ----------------------------------------------------------------------------

    def schedule(self, e: Entry, due: float | None, now: float) -> None:
        e.next_due = due
        if due is None or due <= now:
            e.seq = 0  # any `delayed` item of this event is now stale
            self.make_ready(e)
        else:
            e.seq = next(_seq)
            heapq.heappush(self.delayed, (due, e.seq, e))
        self.wake.set()

    def make_ready(self, e: Entry) -> None:
        # Already queued (e.g. a dead letter replayed before its stale slot was popped): keep
        # that place in line rather than queue it twice.
        if not e.in_ready:
            e.in_ready = True
            self.ready[e.severity].append(e)

    def release_due(self, now: float) -> None:
        """Move events whose time has come from the timer heap to the ready queues."""
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            _, seq, e = heapq.heappop(delayed)
            if e.seq == seq and e.claimable:
                self.make_ready(e)

    def next_timer(self, now: float) -> float | None:
        return max(0.0, self.delayed[0][0] - now) if self.delayed else None

    def restart_held(self, now: float) -> None:
        """An endpoint is back: every pending event is due now, in arrival order, and starts a
        fresh round (its retry clock stopped while it was held)."""
        for q in self.ready:
            for e in q:
                e.in_ready = False
            q.clear()
        for e in self.pending.values():
            if e.claimable:
                e.round_at = now
                self.schedule(e, None, now)

    def peek(self) -> Entry | None:
        """The next event to send (highest severity, then oldest), dropping stale slots."""
        for q in reversed(self.ready):
            while q:
                e = q[0]
                if e.claimable:
                    return e
                q.popleft()  # settled, dead-lettered or claimed since it was queued
                e.in_ready = False
        return None

    # ---- claiming --------------------------------------------------------------------------

    def claim(self, cfg: TenantConfig, now: float) -> tuple[Entry, int] | float | None:
        """Take the next due event if the breaker and rate limit allow.

        Returns (event now "delivering", its breaker probe token or 0), or how
        long until a limit may lift, or None when nothing is due or only a wake-up helps (a
        probe in flight).
        """
        e = self.peek()
        if e is None:
            return None
        br = self.breaker
        enabled = cfg.circuit_breaker.enabled
        if enabled:
            wait = br.wait(now)
            if wait is not None:
                return wait or None
        if cfg.rate_limit_per_second:
            wait = self.bucket.take(cfg.rate_limit_per_second, now)
            if wait:
                return wait
        self.ready[e.severity].popleft()
        e.in_ready = False
        e.state = "delivering"
        return e, br.begin(now) if enabled else 0
