"""A tenant's queues: due events by lane and severity, a timer heap, FIFO keys, and the claim rules.

No asyncio and no I/O here: `claim` takes the caller's clock, so the scheduling rules (severity,
lanes, keys, breaker, rate limit, stale heap items) are tested with a fake one.

- Two lanes of due events, first attempts and retries, each one FIFO per severity. When both
  lanes have due events, a retry is taken only while fewer retries than first attempts are in
  flight, so retries never hold more than half the slots while fresh events wait; a lane alone
  takes every slot.
- With `ordering: fifo`, only the oldest pending event of each ordering key is ever due; the
  rest are `held` until it is delivered or dead-lettered. Severity therefore orders keys, never
  events within a key.
- A backlog does not cost an `Entry` per event: once a tenant has `WINDOW` entries pending, new
  first attempts wait in a per-severity `Spill` (packed id + accept time, ~21 bytes an event)
  behind that severity's ready queue, and become entries as the queue drains (`REFILL` at a
  time). Spilled events are never attempted, never held and due now, so nothing else about them
  needs memory. fifo tenants never spill: their key lines need every event's key.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from relay.config import TenantConfig
from relay.events import SEVERITY_NAME

from .breaker import Breaker
from .entry import Entry
from .ratelimit import TokenBucket

_seq = itertools.count(1)

WINDOW = 1024  # pending entries per tenant before new first attempts spill
REFILL = 256  # spilled events turned into entries at a time, when their ready queue runs dry


def _lanes() -> tuple[deque[Entry], ...]:
    return tuple(deque() for _ in SEVERITY_NAME)


class Spill:
    """Never-attempted events of one tenant and severity, oldest first, packed: a relay id as a
    marker byte and its 12 raw bytes, any other id as a marker, a u16 length and its UTF-8; the
    accept times in a parallel array. Consumed from the front; the consumed prefix is dropped
    once it is half the buffer."""

    __slots__ = ("_at", "_buf", "_head", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # read position in _buf
        self._at = array("d")
        self._head = 0  # read position in _at

    def __len__(self) -> int:
        return len(self._at) - self._head

    def push(self, event_id: str, accepted_at: float, relay_id: bytes | None = None) -> None:
        """Queue an event; `relay_id`: the id's 12 raw bytes if the caller has them (a restore)."""
        raw = relay_id or b""
        if not raw and len(event_id) == 28 and event_id.startswith("evt_"):
            tail = event_id[4:]
            try:
                raw = bytes.fromhex(tail)
            except ValueError:
                raw = b""
            if len(raw) != 12 or raw.hex() != tail:  # lower-case hex only: it must come back the same
                raw = b""
        if raw:
            self._buf.append(0)
            self._buf += raw
        else:
            b = event_id.encode()
            self._buf.append(1)
            self._buf += len(b).to_bytes(2, "little")
            self._buf += b
        self._at.append(accepted_at)

    def oldest(self) -> float:
        return self._at[self._head]

    def pop(self) -> tuple[str, float]:
        buf, p = self._buf, self._pos
        if buf[p] == 0:
            eid = "evt_" + buf[p + 1 : p + 13].hex()
            p += 13
        else:
            n = int.from_bytes(buf[p + 1 : p + 3], "little")
            eid = buf[p + 3 : p + 3 + n].decode()
            p += 3 + n
        at = self._at[self._head]
        self._head += 1
        self._pos = p
        if self._head == len(self._at):  # empty: start over (gives the buffers back)
            self._buf, self._pos, self._at, self._head = bytearray(), 0, array("d"), 0
        elif self._pos > 65536 and self._pos * 2 > len(buf):
            del buf[: self._pos]
            del self._at[: self._head]
            self._pos = self._head = 0
        return eid, at

    def nbytes(self) -> int:
        return len(self._buf) + 8 * len(self._at)


def _spills() -> tuple[Spill, ...]:
    return tuple(Spill() for _ in SEVERITY_NAME)


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
    # Due events, one FIFO per severity (index = rank) in each lane: 8 bytes an event, where a
    # heap of tuples costs about 100.
    ready: tuple[deque[Entry], ...] = field(default_factory=_lanes)  # first attempts
    retry_ready: tuple[deque[Entry], ...] = field(default_factory=_lanes)  # retries
    delayed: list[tuple[float, int, Entry]] = field(default_factory=list)  # (due, seq, entry)
    # Not settled and not dead, in arrival order. An OrderedDict so the oldest is found in O(1)
    # however many were removed from the front (a plain dict scans its holes).
    pending: OrderedDict[str, Entry] = field(default_factory=OrderedDict)
    retrying: int = 0  # pending events with at least one failed attempt (kept incrementally)
    dead: int = 0  # dead letters of this tenant
    in_flight: int = 0
    retry_in_flight: int = 0  # of in_flight, attempts that are retries
    # ordering: fifo: each key's pending events in acceptance order; only the head is ever due.
    fifo: bool = False
    keys: dict[str, deque[Entry]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    breaker: Breaker = field(default_factory=Breaker)
    bucket: TokenBucket = field(default_factory=TokenBucket)
    stats: TenantStats = field(default_factory=TenantStats)
    swept_at: float = 0.0
    # First attempts past the window, per severity (index = rank); see the module docstring.
    spill: tuple[Spill, ...] = field(default_factory=_spills)
    spilled: int = 0
    # When a held endpoint came back (restart_held): spilled events' rounds start no earlier, as
    # the entries' do, so expiry behind a breaker does not count the time they were held.
    spill_round: float = 0.0
    window: int = WINDOW
    # Called with each entry made from a spilled event (the engine indexes it).
    on_unspill: Callable[[Entry], None] | None = None

    # ---- the spill -----------------------------------------------------------------------

    def try_spill(self, event_id: str, severity: int, accepted_at: float, relay_id: bytes | None = None) -> bool:
        """Keep a new event (never attempted, due now) packed instead of as an entry, if the
        tenant is past its window or this severity already spills (its order must hold)."""
        if self.fifo:
            return False
        sp = self.spill[severity]
        if not sp and len(self.pending) < self.window:
            return False
        sp.push(event_id, accepted_at, relay_id)
        self.spilled += 1
        self.wake.set()
        return True

    def _unspill(self, severity: int, n: int) -> list[Entry]:
        sp = self.spill[severity]
        q = self.ready[severity]
        out = []
        for _ in range(min(n, len(sp))):
            eid, at = sp.pop()
            e = Entry(eid, self.tenant_id, severity, at)
            if self.spill_round > at:
                e.round_at = self.spill_round
            self.pending[eid] = e
            e.in_ready = True
            q.append(e)
            out.append(e)
            if self.on_unspill is not None:
                self.on_unspill(e)
        self.spilled -= len(out)
        return out

    def unspill_all(self) -> None:
        """Every spilled event becomes an entry (a switch to fifo, a removed tenant)."""
        for sev in range(len(self.spill)):
            self._unspill(sev, len(self.spill[sev]))

    def unspill_older(self, cutoff: float, limit: int) -> list[Entry]:
        """Entries for up to `limit` spilled events accepted before `cutoff` (expiry)."""
        out: list[Entry] = []
        if self.spill_round >= cutoff:
            return out  # every spilled event's round began at spill_round or later
        for sev, sp in enumerate(self.spill):
            n = 0
            for k in range(len(sp)):
                if n >= limit - len(out) or sp._at[sp._head + k] >= cutoff:
                    break
                n += 1
            out += self._unspill(sev, n)
        return out

    def oldest_spilled(self) -> float | None:
        return min((sp.oldest() for sp in self.spill if sp), default=None)

    @property
    def pending_count(self) -> int:
        return len(self.pending) + self.spilled

    # ---- membership ----------------------------------------------------------------------

    def add_pending(self, e: Entry) -> None:
        self.pending[e.event_id] = e
        if e.tries:
            self.retrying += 1

    def drop_pending(self, e: Entry, now: float) -> None:
        """`e` leaves the pending set (delivered, dead-lettered): its key's next event is due."""
        if self.pending.pop(e.event_id, None) is not None and e.tries:
            self.retrying -= 1
        if self.fifo and e.okey is not None:
            self._release_key(e, now)

    def counted_retry(self, e: Entry, tries_before: int) -> None:
        """`e.tries` went from `tries_before` to its value now while pending."""
        if not tries_before and e.tries and e.event_id in self.pending:
            self.retrying += 1

    def idle(self) -> bool:
        """Nothing of this tenant is pending, dead or in flight: its state can be dropped."""
        return not self.pending and not self.spilled and not self.dead and not self.in_flight

    # ---- ordering keys -------------------------------------------------------------------

    def admit(self, e: Entry, due: float | None, now: float) -> None:
        """Schedule a newly pending event: at once, or behind the earlier events of its key."""
        if not self.fifo:
            self.schedule(e, due, now)
            return
        assert e.okey is not None, "fifo events need their key"
        q = self.keys.get(e.okey)
        if q is None:
            self.keys[e.okey] = deque((e,))
            e.held = False
            self.schedule(e, due, now)
            return
        q.append(e)
        e.held = True
        e.next_due = due

    def _release_key(self, e: Entry, now: float) -> None:
        assert e.okey is not None
        q = self.keys.get(e.okey)
        if q is None:
            return
        if not q or q[0] is not e:  # not the head (dead-lettered while held): just leave the line
            with contextlib.suppress(ValueError):
                q.remove(e)
            if not q:
                del self.keys[e.okey]
            return
        q.popleft()
        e.held = False
        if not q:
            del self.keys[e.okey]
            return
        nxt = q[0]
        nxt.held = False
        self.schedule(nxt, nxt.next_due, now)

    def set_fifo(self, fifo: bool, now: float) -> None:
        """Switch ordering on or off (a reload). Every pending event's `okey` must be loaded
        before switching on; events in flight keep their attempt."""
        if fifo == self.fifo:
            return
        assert not self.spilled, "unspill before switching to fifo"
        self.fifo = fifo
        if not fifo:
            self.keys.clear()
            for e in self.pending.values():
                if e.held:
                    e.held = False
                    self.schedule(e, e.next_due, now)
            return
        for e in self.pending.values():  # arrival order
            assert e.okey is not None
            q = self.keys.get(e.okey)
            if q is None:
                self.keys[e.okey] = deque((e,))
            else:
                q.append(e)
                e.held = True

    # ---- timing ----------------------------------------------------------------------------

    def schedule(self, e: Entry, due: float | None, now: float) -> None:
        e.next_due = due
        if e.held:
            return  # becomes due when its key's earlier events are done
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
            (self.retry_ready if e.tries else self.ready)[e.severity].append(e)

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
        for lane in (self.ready, self.retry_ready):
            for q in lane:
                for e in q:
                    e.in_ready = False
                q.clear()
        for e in self.pending.values():
            if e.claimable:
                e.round_at = now
                self.schedule(e, None, now)
        self.spill_round = now

    def _peek(
        self, lane: tuple[deque[Entry], ...], spill: tuple[Spill, ...] | None
    ) -> tuple[deque[Entry], Entry] | None:
        """The lane's next event (highest severity, then oldest), dropping stale slots; a queue
        that runs dry takes the next spilled events of its severity."""
        for sev in range(len(lane) - 1, -1, -1):
            q = lane[sev]
            while True:
                while q:
                    e = q[0]
                    if e.claimable:
                        return q, e
                    q.popleft()  # settled, dead-lettered, claimed or held since it was queued
                    e.in_ready = False
                if spill is None or not spill[sev]:
                    break
                self._unspill(sev, REFILL)
        return None

    def peek(self) -> Entry | None:
        got = self._pick()
        return got[1] if got else None

    def _pick(self) -> tuple[deque[Entry], Entry] | None:
        fresh = self._peek(self.ready, self.spill if self.spilled else None)
        retry = self._peek(self.retry_ready, None)
        if fresh and retry:
            # Both lanes waiting: retries get a slot only while they hold fewer than first
            # attempts do, so they never take more than half of them.
            return retry if self.retry_in_flight < self.in_flight - self.retry_in_flight else fresh
        return fresh or retry

    # ---- claiming --------------------------------------------------------------------------

    def claim(self, cfg: TenantConfig, now: float) -> tuple[Entry, int] | float | None:
        """Take the next due event if the breaker and rate limit allow.

        Returns (event now "delivering", its breaker probe token or 0), or how long until a
        limit may lift, or None when nothing is due or only a wake-up helps (a probe in
        flight). The caller counts the attempt in `in_flight` and calls `finished` after it.
        """
        got = self._pick()
        if got is None:
            return None
        q, e = got
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
        q.popleft()
        e.in_ready = False
        e.state = "delivering"
        if e.tries:
            self.retry_in_flight += 1
        return e, br.begin(now) if enabled else 0

    def finished(self, retry: bool) -> None:
        """An attempt claimed as a retry (`retry`) or a first attempt ended."""
        if retry:
            self.retry_in_flight -= 1
