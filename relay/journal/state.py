"""The in-memory index: where each live event's records are, and which ids settled when.

Replay and the live writer apply records through the same methods, so the state after a restart is
by construction the state before it. Payloads are never held here, only file positions.
"""

from __future__ import annotations

Loc = tuple[int, int, int]  # segment, offset, record length


class Ev:
    """One live event. Slotted and flat: this is the per-event RAM cost of the journal."""

    __slots__ = ("bo", "busy", "dead", "due", "extra", "first", "ln", "off", "seg")

    def __init__(self, seg: int, off: int, ln: int, bo: int) -> None:
        self.seg = seg  # base record (ACCEPTED or SNAPSHOT)
        self.off = off
        self.ln = ln
        self.bo = bo  # blob offset within the base record; the blob runs to its end
        self.extra: list[Loc] | None = None  # ATTEMPT / DEAD / REQUEUED records since the base
        self.due: float | None = None
        self.dead: tuple[str, float] | None = None  # (reason, failed_at)
        # Oldest segment that may still hold a record of this event; see Index.settle.
        self.first = seg
        self.busy = 0  # records queued in the writer and not yet applied


class Index:
    def __init__(self) -> None:
        self.events: dict[str, Ev] = {}
        # id -> settle time, kept in (roughly) time order so pruning stops at the first young one
        self.settled: dict[str, float] = {}
        self.seg_live: dict[int, int] = {}  # bytes of live events' records per segment
        # For each segment: the oldest segment holding a record of an event settled in it. The
        # segment may only be removed once all segments from there up to it are gone, or an
        # ACCEPTED whose DELIVERED was removed would come back to life on the next replay.
        self.seg_minref: dict[int, int] = {}

    def _add(self, seg: int, ln: int) -> None:
        self.seg_live[seg] = self.seg_live.get(seg, 0) + ln

    def _drop(self, ev: Ev) -> None:
        live = self.seg_live
        live[ev.seg] -= ev.ln
        if ev.extra:
            for s, _, ln in ev.extra:
                live[s] -= ln

    def _extra(self, ev: Ev, seg: int, off: int, ln: int) -> None:
        if ev.extra is None:
            ev.extra = [(seg, off, ln)]
        else:
            ev.extra.append((seg, off, ln))
        self._add(seg, ln)

    def accepted(self, eid: str, seg: int, off: int, ln: int, bo: int) -> bool:
        # A second ACCEPTED for a live id is ignored, live and on replay alike.
        if eid in self.events:
            return False
        self.events[eid] = Ev(seg, off, ln, bo)
        self._add(seg, ln)
        return True

    def snapshot(
        self,
        eid: str,
        seg: int,
        off: int,
        ln: int,
        bo: int,
        due: float | None,
        dead: tuple[str, float] | None,
    ) -> None:
        ev = self.events.get(eid)
        if ev is None:
            ev = self.events[eid] = Ev(seg, off, ln, bo)
        else:
            self._drop(ev)
            ev.seg, ev.off, ev.ln, ev.bo, ev.extra = seg, off, ln, bo, None
        ev.due = due
        ev.dead = dead
        self._add(seg, ln)

    def attempt(self, eid: str, seg: int, off: int, ln: int, due: float | None) -> bool:
        ev = self.events.get(eid)
        if ev is None:
            return False
        self._extra(ev, seg, off, ln)
        ev.due = due
        return True

    def dead(self, eid: str, seg: int, off: int, ln: int, reason: str, failed_at: float) -> bool:
        ev = self.events.get(eid)
        if ev is None:
            return False
        self._extra(ev, seg, off, ln)
        ev.dead = (reason, failed_at)
        return True

    def requeued(self, eid: str, seg: int, off: int, ln: int) -> bool:
        ev = self.events.get(eid)
        if ev is None:
            return False
        self._extra(ev, seg, off, ln)
        ev.dead = None
        ev.due = None
        return True

    def settle(self, eid: str, seg: int, ts: float) -> bool:
        settled = self.settled
        settled.pop(eid, None)
        settled[eid] = ts
        ev = self.events.pop(eid, None)
        if ev is None:
            return False
        self._drop(ev)
        m = self.seg_minref.get(seg)
        if m is None or ev.first < m:
            self.seg_minref[seg] = ev.first
        return True

    def prune_settled(self, cutoff: float, keep: int | None = None) -> int:
        """Forget ids settled before `cutoff`, and all but the newest `keep`."""
        excess = len(self.settled) - keep if keep is not None else 0
        old: list[str] = []
        for eid, ts in self.settled.items():
            if ts >= cutoff and len(old) >= excess:
                break
            old.append(eid)
        for eid in old:
            del self.settled[eid]
        return len(old)

    def forget_segment(self, seg: int) -> None:
        self.seg_live.pop(seg, None)
        self.seg_minref.pop(seg, None)
