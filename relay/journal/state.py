"""The in-memory index: where each live event's records are, and which ids settled when.

Replay and the live writer apply records through the same methods, so the state after a restart is
by construction the state before it. Payloads are never held here, only file positions.

Per-event fields are columns of a packed `EventTable`, indexed by slot number: a live event costs
about 80 bytes here (columns, its compact id and its hash bucket) and no Python object. Only
events with records after their base record (attempts, dead-lettering, a replay) have a small
array of those positions, and dead letters their reason.
"""

from __future__ import annotations

from array import array

from .table import EventTable, SettledIds

Loc = tuple[int, int, int]  # segment, offset, record length

_SNAP_BASE = 1  # flags: the base record is a SNAPSHOT (it may carry attempts)
_HAS_ATTEMPT = 2  # flags: an ATTEMPT record follows the base


class Index:
    def __init__(self) -> None:
        t = self.table = EventTable()
        self.seg = t.column("I")  # base record (ACCEPTED or SNAPSHOT)
        self.off = t.column("I")
        self.ln = t.column("I")
        self.bo = t.column("I")  # blob offset within the base record; the blob runs to its end
        # Oldest segment that may still hold a record of this event; see `settle`.
        self.first = t.column("I")
        self.tenant = t.column("I")  # number into `tenants`
        self.severity = t.column("H")
        self.accepted_at = t.column("d")
        self.seq = t.column("I")  # order of first appearance: acceptance order, on replay too
        self.flags = t.column("B")
        self._seq = 0
        self.tenants: list[str] = []
        self._tenant_no: dict[str, int] = {}
        # ATTEMPT / DEAD / REQUEUED records since the base, as flat (seg, off, len) triples.
        self.extra: dict[int, array[int]] = {}
        self.dead: dict[int, tuple[str, float]] = {}  # (reason, failed_at) of dead letters
        self.due: dict[int, float] = {}  # next_due, of the events that have one (retrying)
        # Dead reasons repeat ("HTTP 500 ...", "tenant removed"): one string each, shared.
        self._reasons: dict[str, str] = {}
        self.busy: dict[int, int] = {}  # records queued in the writer and not yet applied
        self.settled = SettledIds()
        self.seg_live: dict[int, int] = {}  # bytes of live events' records per segment
        # For each segment: the oldest segment holding a record of an event settled in it. The
        # segment may only be removed once all segments from there up to it are gone, or an
        # ACCEPTED whose DELIVERED was removed would come back to life on the next replay.
        self.seg_minref: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.table)

    def find(self, eid: str) -> int:
        return self.table.find(eid)

    def tenant_no(self, tenant_id: str) -> int:
        n = self._tenant_no.get(tenant_id)
        if n is None:
            n = self._tenant_no[tenant_id] = len(self.tenants)
            self.tenants.append(tenant_id)
        return n

    def extra_locs(self, s: int) -> list[Loc]:
        a = self.extra.get(s)
        if a is None:
            return []
        return [(a[i], a[i + 1], a[i + 2]) for i in range(0, len(a), 3)]

    def get_due(self, s: int) -> float | None:
        return self.due.get(s)

    def _set_due(self, s: int, due: float | None) -> None:
        if due is None:
            self.due.pop(s, None)
        else:
            self.due[s] = due

    def has_attempts(self, s: int) -> bool:
        """Whether the event may have attempts on record (read them back to know)."""
        return bool(self.flags[s])

    # ---- pins: a slot named by records in the writer keeps its place -------------------------

    def pin(self, s: int) -> None:
        self.busy[s] = self.busy.get(s, 0) + 1

    def unpin(self, s: int) -> None:
        n = self.busy[s] - 1
        if n:
            self.busy[s] = n
            return
        del self.busy[s]
        if self.table.removed(s):  # settled while pinned
            self.table.reuse_later(s)

    # ---- records -----------------------------------------------------------------------------

    def _add(self, seg: int, ln: int) -> None:
        self.seg_live[seg] = self.seg_live.get(seg, 0) + ln

    def _drop(self, s: int) -> None:
        live = self.seg_live
        live[self.seg[s]] -= self.ln[s]
        a = self.extra.pop(s, None)
        if a is not None:
            for i in range(0, len(a), 3):
                live[a[i]] -= a[i + 2]

    def _extra(self, s: int, seg: int, off: int, ln: int) -> None:
        a = self.extra.get(s)
        if a is None:
            a = self.extra[s] = array("I")
        a.append(seg)
        a.append(off)
        a.append(ln)
        self._add(seg, ln)

    def _new(self, eid: str, seg: int, off: int, ln: int, bo: int, tenant: str, severity: int, acc: float) -> int:
        return self._fill(self.table.add(eid), seg, off, ln, bo, tenant, severity, acc)

    def _fill(self, s: int, seg: int, off: int, ln: int, bo: int, tenant: str, severity: int, acc: float) -> int:
        # The replay's hottest path (once per event): written flat on purpose.
        self.seg[s] = seg
        self.off[s] = off
        self.ln[s] = ln
        self.bo[s] = bo
        self.first[s] = seg
        n = self._tenant_no.get(tenant)
        self.tenant[s] = self.tenant_no(tenant) if n is None else n
        self.severity[s] = severity
        self.accepted_at[s] = acc
        self.seq[s] = self._seq & 0xFFFFFFFF
        self._seq += 1
        self.flags[s] = 0
        live = self.seg_live
        live[seg] = live.get(seg, 0) + ln
        return s

    def accepted(
        self, eid: str, seg: int, off: int, ln: int, bo: int, tenant: str = "", severity: int = 0, acc: float = 0.0
    ) -> bool:
        # A second ACCEPTED for a live id is ignored, live and on replay alike.
        s = self.table.find_or_add(eid)
        if s < 0:
            return False
        self._fill(s, seg, off, ln, bo, tenant, severity, acc)
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
        tenant: str = "",
        severity: int = 0,
        acc: float = 0.0,
    ) -> None:
        s = self.table.find(eid)
        if s < 0:
            s = self._new(eid, seg, off, ln, bo, tenant, severity, acc)
        else:
            self._drop(s)
            self.seg[s], self.off[s], self.ln[s], self.bo[s] = seg, off, ln, bo
            self._add(seg, ln)
        self._set_due(s, due)
        self.flags[s] = _SNAP_BASE
        if dead is None:
            self.dead.pop(s, None)
        else:
            self.dead[s] = (self._reason(dead[0]), dead[1])

    def attempt(self, eid: str, seg: int, off: int, ln: int, due: float | None) -> bool:
        s = self.table.find(eid)
        if s < 0:
            return False
        self._extra(s, seg, off, ln)
        self._set_due(s, due)
        self.flags[s] |= _HAS_ATTEMPT
        return True

    def _reason(self, reason: str) -> str:
        got = self._reasons.get(reason)
        if got is not None:
            return got
        # Bounded (at most 1,024 short reasons, ~300 KB) so unique reasons cannot pile up here.
        if len(reason) <= 256 and len(self._reasons) < 1024:
            self._reasons[reason] = reason
        return reason

    def dead_at(self, eid: str, seg: int, off: int, ln: int, reason: str, failed_at: float) -> bool:
        s = self.table.find(eid)
        if s < 0:
            return False
        self._extra(s, seg, off, ln)
        self.dead[s] = (self._reason(reason), failed_at)
        return True

    def requeued(self, eid: str, seg: int, off: int, ln: int) -> bool:
        s = self.table.find(eid)
        if s < 0:
            return False
        self._extra(s, seg, off, ln)
        self.dead.pop(s, None)
        self.due.pop(s, None)
        return True

    def settle(self, eid: str, seg: int, ts: float) -> bool:
        self.settled.add(eid, ts)
        s = self.table.find(eid)
        if s < 0:
            return False
        self._drop(s)
        self.dead.pop(s, None)
        self.due.pop(s, None)
        first = self.first[s]
        m = self.seg_minref.get(seg)
        if m is None or first < m:
            self.seg_minref[seg] = first
        self.table.remove(s, eid, reuse=s not in self.busy)
        return True

    def prune_settled(self, cutoff: float, keep: int | None = None) -> int:
        """Forget ids settled before `cutoff`, and all but the newest `keep`."""
        return self.settled.prune(cutoff, keep)

    def forget_segment(self, seg: int) -> None:
        self.seg_live.pop(seg, None)
        self.seg_minref.pop(seg, None)

    def live_slots(self) -> array[int]:
        """Every live slot in acceptance order.

        Events based on their ACCEPTED record are in the order they first appeared in the files,
        which is acceptance order, so they are laid out by `seq` in one flat array (4 bytes per
        event seen, no sort). Only events moved forward by compaction (SNAPSHOT-based) can be out
        of place: those are sorted on (accepted_at, seq) and merged in. A full sort with Python
        keys would cost ~80 bytes an event at the moment memory matters most, after a restart.
        """
        seq, acc, flags = self.seq, self.accepted_at, self.flags
        by_seq = array("i", [-1]) * self._seq
        moved: list[int] = []
        for s in self.table.slots():
            if flags[s] & _SNAP_BASE:
                moved.append(s)
            else:
                by_seq[seq[s]] = s
        moved.sort(key=lambda s: (acc[s], seq[s]))
        out = array("I")
        j, m = 0, len(moved)
        for s in by_seq:
            if s < 0:
                continue
            while j < m and (acc[moved[j]], seq[moved[j]]) < (acc[s], seq[s]):
                out.append(moved[j])
                j += 1
            out.append(s)
        out.extend(moved[j:])
        return out
