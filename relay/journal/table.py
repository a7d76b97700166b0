"""Packed per-event storage: slot numbers, compact event ids and an id -> slot hash index.

A live event costs a few dozen bytes in flat `array`s instead of a Python object, its dict slot
and its id string (~600 bytes, measured before this module). The journal's index keeps its
per-event fields as columns indexed by the slot number this table hands out.

* Ids live in one byte arena. Ids the relay generates (`evt_` + 24 hex digits) are stored as
  their 12 raw bytes; any other id as its UTF-8 bytes. Freed ids leave garbage behind that is
  reclaimed by copying the live ids into a fresh arena once garbage outweighs them.
* The index is open addressing over two arrays, probed like CPython's dict (i = 5i + 1 +
  perturb, which avoids linear probing's long clusters at a 70% load): the low 32 bits of the id's
  hash (enough to rehash, since no table has 2**32 buckets) and its slot: 8 bytes a bucket. A
  hash hit is confirmed against the stored id, so collisions cost a comparison, never a wrong
  answer. Deleted buckets become tombstones until the next rehash.
* `SettledIds` is the idempotency window: 64-bit hashes only (a stable hash, since they are
  checkpointed to disk), kept in settle order in a ring so that pruning the oldest is O(pruned).
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterator
from typing import Final

_EMPTY: Final = -1
_TOMB: Final = -2
_MIN_BUCKETS: Final = 64
_PACKED: Final = 0x8000  # id_len flag: the stored bytes are a relay id's 12 raw bytes
_MAX_ID: Final = 0x7FFF
_GONE: Final = 0xFFFF  # id_len of a removed slot


def pack_id(event_id: str) -> tuple[bytes, int]:
    """The stored form of an id and its length field (what a lookup compares against)."""
    if len(event_id) == 28 and event_id.startswith("evt_"):
        tail = event_id[4:]
        try:
            raw = bytes.fromhex(tail)
        except ValueError:
            raw = b""
        if len(raw) == 12 and raw.hex() == tail:  # lower-case hex only: it must come back the same
            return raw, 12 | _PACKED
    b = event_id.encode()
    if len(b) > _MAX_ID:
        raise ValueError("event id longer than 32767 bytes")
    return b, len(b)


def _grow_to(col: array, n: int, fill: int | float) -> None:  # type: ignore[type-arg]
    if len(col) < n:
        col.extend(array(col.typecode, [fill]) * (n - len(col)))  # type: ignore[arg-type]


class EventTable:
    """Slots, ids and the id index. Columns registered with `column` grow with the slots."""

    def __init__(self) -> None:
        self._cap = 0  # slots every column has room for
        self._high = 0  # slots ever handed out (the rest of the columns is unused)
        self._free = array("i")  # freed slots, reused last-in first-out
        self._cols: list[tuple[array, int | float]] = []  # type: ignore[type-arg]
        self._id_off = self.column("I")
        self._id_len = self.column("H")
        self._arena = bytearray()
        self._garbage = 0  # arena bytes of freed ids
        self._hash = array("I", bytes(4 * _MIN_BUCKETS))
        self._bslot = array("i", [_EMPTY]) * _MIN_BUCKETS
        self._mask = _MIN_BUCKETS - 1
        self._used = 0  # buckets not empty (live + tombstones)
        self._live = 0
        self._held = 0  # removed slots not reusable yet (see `remove`)

    def column(self, typecode: str, fill: int | float = 0) -> array:  # type: ignore[type-arg]
        col = array(typecode, [fill]) * self._cap  # type: ignore[arg-type]
        self._cols.append((col, fill))
        return col

    def __len__(self) -> int:
        return self._live

    @property
    def buckets(self) -> int:
        return len(self._bslot)

    # ---- ids ---------------------------------------------------------------------------------

    def _stored(self, slot: int) -> memoryview:
        n = self._id_len[slot] & _MAX_ID
        o = self._id_off[slot]
        return memoryview(self._arena)[o : o + n]

    def relay_bytes(self, slot: int) -> bytes | None:
        """The 12 raw bytes of a relay-generated id, or None for any other id."""
        if self._id_len[slot] & _PACKED:
            return bytes(self._stored(slot))
        return None

    def id_of(self, slot: int) -> str:
        raw = bytes(self._stored(slot))
        if self._id_len[slot] & _PACKED:
            return "evt_" + raw.hex()
        return raw.decode()

    def removed(self, slot: int) -> bool:
        return bool(self._id_len[slot] == _GONE)

    def _compact_arena(self) -> None:
        """Copy the live ids into a fresh arena (freed ids' bytes are dropped)."""
        old = memoryview(self._arena)
        new = bytearray()
        off, lens, bslot = self._id_off, self._id_len, self._bslot
        for b in range(len(bslot)):
            s = bslot[b]
            if s >= 0:
                o = off[s]
                n = lens[s] & _MAX_ID
                off[s] = len(new)
                new += old[o : o + n]
        old.release()
        self._arena = new
        self._garbage = 0

    # ---- the index ---------------------------------------------------------------------------

    def find(self, event_id: str) -> int:
        """The slot of `event_id`, or -1."""
        h = hash(event_id) & 0xFFFFFFFF
        mask = self._mask
        i = h & mask
        perturb = h
        hs, bs = self._hash, self._bslot
        packed: tuple[bytes, int] | None = None
        while True:
            s = bs[i]
            if s == _EMPTY:
                return -1
            if s >= 0 and hs[i] == h:
                if packed is None:
                    packed = pack_id(event_id)
                if self._id_len[s] == packed[1] and self._stored(s) == packed[0]:
                    return s
            perturb >>= 5
            i = (i * 5 + perturb + 1) & mask

    def add(self, event_id: str) -> int:
        """A new slot for `event_id` (which must not be in the table)."""
        s = self.find_or_add(event_id)
        if s < 0:
            raise KeyError(event_id)
        return s

    def find_or_add(self, event_id: str) -> int:
        """A new slot for `event_id`, or -1 if it is in the table already (one probe for both)."""
        packed, lenfield = pack_id(event_id)  # raises before anything changes; no state yet
        if (self._used + 1) * 10 > len(self._bslot) * 7:
            self._rehash()
        h = hash(event_id) & 0xFFFFFFFF
        mask = self._mask
        i = h & mask
        perturb = h
        hs, bs, lens = self._hash, self._bslot, self._id_len
        tomb = -1
        while True:
            s = bs[i]
            if s == _EMPTY:
                break
            if s == _TOMB:
                if tomb < 0:
                    tomb = i
            elif hs[i] == h and lens[s] == lenfield and self._stored(s) == packed:
                return -1
            perturb >>= 5
            i = (i * 5 + perturb + 1) & mask
        if tomb >= 0:
            i = tomb
        else:
            self._used += 1
        if self._free:
            slot = self._free.pop()
        else:
            slot = self._high
            if slot >= self._cap:
                self._grow(max(1024, self._cap + self._cap // 4))  # 1.25x: at most 20% of the columns unused
            self._high += 1
        self._id_off[slot] = len(self._arena)
        self._id_len[slot] = lenfield
        self._arena += packed
        bs[i] = slot
        hs[i] = h
        self._live += 1
        return slot

    def remove(self, slot: int, event_id: str | None = None, reuse: bool = True) -> None:
        """Forget the id of `slot` (`event_id`, when the caller has it at hand); the slot is
        reusable at once, or after `reuse_later(slot)` (a slot still named by records on their
        way to disk must not change hands)."""
        h = hash(self.id_of(slot) if event_id is None else event_id) & 0xFFFFFFFF
        mask = self._mask
        i = h & mask
        perturb = h
        bs = self._bslot
        while bs[i] != slot:
            if bs[i] == _EMPTY:
                raise KeyError(slot)
            perturb >>= 5
            i = (i * 5 + perturb + 1) & mask
        bs[i] = _TOMB
        self._live -= 1
        self._garbage += self._id_len[slot] & _MAX_ID
        self._id_len[slot] = _GONE
        if reuse:
            self._free.append(slot)
        else:
            self._held += 1
        if self._garbage > 65536 and self._garbage * 2 > len(self._arena):
            self._compact_arena()
        if self._live == 0 and self._held == 0 and self._high > 1024:
            self._reset()

    def reuse_later(self, slot: int) -> None:
        """A slot removed with `reuse=False` may now be handed out again."""
        self._held -= 1
        self._free.append(slot)
        if self._live == 0 and self._held == 0 and self._high > 1024:
            self._reset()

    def _reset(self) -> None:
        """Empty again: give the columns and the arena back (a drained backlog frees its RAM)."""
        self._high = 0
        self._cap = 0
        self._free = array("i")
        for col, _ in self._cols:
            del col[:]
        self._arena = bytearray()
        self._garbage = 0
        self._hash = array("I", bytes(4 * _MIN_BUCKETS))
        self._bslot = array("i", [_EMPTY]) * _MIN_BUCKETS
        self._mask = _MIN_BUCKETS - 1
        self._used = 0

    def _rehash(self) -> None:
        n = _MIN_BUCKETS
        while n * 7 < (self._live + 1) * 20:  # live load after the rehash at most 35%
            n *= 2
        oh, ob = self._hash, self._bslot
        hs = array("I", bytes(4 * n))
        bs = array("i", [_EMPTY]) * n
        mask = n - 1
        for b in range(len(ob)):
            s = ob[b]
            if s >= 0:
                h = oh[b]
                i = h & mask
                perturb = h
                while bs[i] != _EMPTY:
                    perturb >>= 5
                    i = (i * 5 + perturb + 1) & mask
                bs[i] = s
                hs[i] = h
        self._hash, self._bslot, self._mask, self._used = hs, bs, mask, self._live

    def _grow(self, cap: int) -> None:
        for col, fill in self._cols:
            _grow_to(col, cap, fill)
        self._cap = cap

    def slots(self) -> Iterator[int]:
        """Every live slot (in bucket order, not a meaningful one)."""
        for s in self._bslot:
            if s >= 0:
                yield s

    def nbytes(self) -> int:
        """Bytes held by the arrays and the arena (what the table costs in RAM)."""
        cols = sum(c.itemsize * len(c) for c, _ in self._cols)
        return cols + len(self._arena) + 8 * len(self._bslot) + 4 * len(self._free)


def stable_hash(event_id: str) -> int:
    """A 64-bit hash that is the same in every process (settled ids are checkpointed as these)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little", signed=True)


class SettledIds:
    """Ids settled (delivered or purged) within the idempotency window, as 64-bit hashes.

    A set of hashes answers "seen?" with a false positive chance of about n / 2**64 per lookup
    (n = ids kept): an id wrongly taken as settled would be refused as a duplicate. At 100,000
    ids that is 1 in 10**14 lookups, far below any disk's error rate.
    The set maps hash -> position in the ring of (hash, settle time) kept in settle order; a
    ring item whose hash maps to a later position is a stale duplicate (settled twice).
    """

    def __init__(self) -> None:
        self._hash = array("q", bytes(8 * _MIN_BUCKETS))
        self._pos = array("q", [_EMPTY]) * _MIN_BUCKETS
        self._mask = _MIN_BUCKETS - 1
        self._used = 0
        self._live = 0
        self._ring_h = array("q")
        self._ring_t = array("d")
        self._head = 0  # ring items before it are pruned
        self._base = 0  # absolute position of _ring_h[0]

    def __len__(self) -> int:
        return self._live

    def __contains__(self, event_id: str) -> bool:
        return self._find(stable_hash(event_id)) >= 0

    def contains_hash(self, h: int) -> bool:
        return self._find(h) >= 0

    def _find(self, h: int) -> int:
        mask = self._mask
        i = h & mask
        hs, ps = self._hash, self._pos
        while True:
            p = ps[i]
            if p == _EMPTY:
                return -1
            if p >= 0 and hs[i] == h:
                return i
            i = (i + 1) & mask

    def add(self, event_id: str, ts: float) -> None:
        self.add_hash(stable_hash(event_id), ts)

    def add_hash(self, h: int, ts: float) -> None:
        pos = self._base + len(self._ring_h)
        self._ring_h.append(h)
        self._ring_t.append(ts)
        b = self._find(h)
        if b >= 0:
            self._pos[b] = pos  # settled again: the newer time counts
            return
        if (self._used + 1) * 10 > len(self._pos) * 7:
            self._rehash()
        mask = self._mask
        i = h & mask
        ps = self._pos
        while ps[i] >= 0:
            i = (i + 1) & mask
        if ps[i] == _EMPTY:
            self._used += 1
        ps[i] = pos
        self._hash[i] = h
        self._live += 1

    def _rehash(self) -> None:
        n = _MIN_BUCKETS
        while n * 7 < (self._live + 1) * 20:
            n *= 2
        oh, op = self._hash, self._pos
        hs = array("q", bytes(8 * n))
        ps = array("q", [_EMPTY]) * n
        mask = n - 1
        for b in range(len(op)):
            p = op[b]
            if p >= 0:
                h = oh[b]
                i = h & mask
                while ps[i] != _EMPTY:
                    i = (i + 1) & mask
                ps[i] = p
                hs[i] = h
        self._hash, self._pos, self._mask, self._used = hs, ps, mask, self._live

    def prune(self, cutoff: float, keep: int | None = None) -> int:
        """Forget ids settled before `cutoff`, and all but the newest `keep`; returns how many."""
        gone = 0
        rh, rt = self._ring_h, self._ring_t
        while self._head < len(rh):
            if rt[self._head] >= cutoff and (keep is None or self._live <= keep):
                break
            h = rh[self._head]
            b = self._find(h)
            if b >= 0 and self._pos[b] == self._base + self._head:  # not settled again later
                self._pos[b] = _TOMB
                self._live -= 1
                gone += 1
            self._head += 1
        if self._head > 4096 and self._head * 2 > len(rh):
            del rh[: self._head]
            del rt[: self._head]
            self._base += self._head
            self._head = 0
        if self._used > 2 * self._live + _MIN_BUCKETS:  # mostly tombstones: shrink
            self._rehash()
        return gone

    def sort(self) -> None:
        """Put the ring in settle-time order (replay adds checkpointed ids before the segments'),
        so that pruning can stop at the first young id."""
        keep = sorted(self.items(), key=lambda x: x[1])
        self.__init__()  # type: ignore[misc]
        for h, ts in keep:
            self.add_hash(h, ts)

    def items(self) -> Iterator[tuple[int, float]]:
        """(hash, settle time) of every id kept, oldest first (what the checkpoint saves)."""
        rh, rt = self._ring_h, self._ring_t
        for k in range(self._head, len(rh)):
            h = rh[k]
            b = self._find(h)
            if b >= 0 and self._pos[b] == self._base + k:
                yield h, rt[k]

    def nbytes(self) -> int:
        return 16 * len(self._pos) + 16 * len(self._ring_h)
