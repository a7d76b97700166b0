"""Replay: rebuild the index from the segments, and find (not fix) torn tails and corruption.

Replay never modifies files, so `check()` uses it as is; `Journal.open()` applies the fixes after.
Each segment is read with one read() and parsed in place with struct.unpack_from; records go
straight into the packed index (state.Index): no object per event, so a restart needs no more
memory than the running daemon's index.
"""

from __future__ import annotations

import gc
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import read_checkpoint
from .records import (
    ACCEPTED,
    ATTEMPT,
    DEAD,
    DELIVERED,
    HEAD,
    HEADER_SIZE,
    MAGIC,
    MAX_BODY,
    MIN_BODY,
    PAD,
    PURGED,
    REQUEUED,
    SNAPSHOT,
    parse_snapshot_tail,
    valid_record_at,
)
from .segments import list_segments, read_file, seg_name
from .state import Index

# How far past a bad record to look for the next good one. Past it the rest of the segment counts
# as damaged: the scan is byte by byte, and a record is never larger than an event (a few MB).
_RESYNC_WINDOW = 8 * 1024 * 1024


@dataclass(slots=True)
class Damage:
    seg: int
    offset: int  # first bad byte; the segment is good up to here
    size: int  # damaged bytes: up to the next valid record, or to the end of the file
    torn: bool  # a torn tail of the last segment (vs corruption to move aside)
    reason: str
    resync: bool = False  # intact records follow: only [offset, offset + size) is damaged
    intact_after: int = 0  # records read after the damage, up to the next damage or the end


@dataclass(slots=True)
class Replay:
    index: Index
    segments: list[int]
    sizes: dict[int, int]  # size each segment will have once damage is cut off
    records: int = 0
    damage: list[Damage] = field(default_factory=list)
    checkpoint_problem: str | None = None
    seen_ids: set[str] | None = None


def _scan(
    data: bytes,
    seg: int,
    index: Index,
    seen: set[str] | None,
    start: int = 0,
) -> tuple[int, int, str | None]:
    """Apply the records of one segment from `start` (0: the segment header); returns
    (good end offset, records applied, error)."""
    n = len(data)
    if n == 0:
        return 0, 0, None
    if start == 0 and data[: len(MAGIC)] != MAGIC:
        return 0, 0, "bad segment header"
    mv = memoryview(data)
    unpack = HEAD.unpack_from
    crc32 = zlib.crc32
    tenants: dict[bytes, str] = {}
    p = start or len(MAGIC)
    count = 0
    try:
        while p < n:
            if n - p < HEADER_SIZE:
                return p, count, "incomplete record header"
            crc, blen, rtype, _flags, idl, auxl, small, ts, f = unpack(data, p)
            if blen < MIN_BODY or blen > MAX_BODY or idl + auxl > blen - MIN_BODY:
                return p, count, f"impossible record length {blen}"
            end = p + 8 + blen
            if end > n:
                return p, count, "incomplete record"
            if crc32(mv[p + 4 : end]) != crc:
                return p, count, "checksum mismatch"
            q = p + HEADER_SIZE
            eid = data[q : q + idl].decode()
            q += idl
            if rtype in (ACCEPTED, SNAPSHOT):
                tb = data[q : q + auxl]
                tenant = tenants.get(tb)
                if tenant is None:
                    tenant = tenants[tb] = tb.decode()
                if rtype == ACCEPTED:
                    index.accepted(eid, seg, p, end - p, q + auxl - p, tenant, small, f)
                else:
                    tail = parse_snapshot_tail(data, q + auxl, end, False)
                    index.snapshot(eid, seg, p, end - p, tail.blob_off - p, tail.next_due, tail.dead, tenant, small, f)
                if seen is not None:
                    seen.add(eid)
            elif rtype == ATTEMPT:
                index.attempt(eid, seg, p, end - p, None if f != f else f)
            elif rtype in (DELIVERED, PURGED):
                index.settle(eid, seg, ts)
            elif rtype == DEAD:
                index.dead_at(eid, seg, p, end - p, data[q : q + auxl].decode(), f)
            elif rtype == REQUEUED:
                index.requeued(eid, seg, p, end - p)
            elif rtype == PAD:
                pass
            else:
                return p, count, f"unknown record type {rtype}"
            p = end
            count += 1
    except (UnicodeDecodeError, struct.error, ValueError) as e:
        # The checksum matched, so this is a writer bug rather than disk damage; still never fatal.
        return p, count, f"malformed record: {e}"
    return p, count, None


def _next_valid(data: bytes, bad: int) -> int | None:
    """Where the next intact record after the damage at `bad` starts (resynchronisation)."""
    lim = min(len(data) - HEADER_SIZE, bad + _RESYNC_WINDOW)
    for q in range(max(bad + 1, len(MAGIC)), lim + 1):
        if valid_record_at(data, q):
            return q
    return None


def replay(jdir: Path, *, count_ids: bool = False) -> Replay:
    """Replay every segment in `jdir`, oldest first, into a packed index (no object per event)."""
    # Replay allocates millions of short-lived objects (ids, slices) and keeps none: the
    # cyclic GC would only rescan the heap for nothing.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _replay(jdir, count_ids)
    finally:
        if was_enabled:
            gc.enable()


def _replay(jdir: Path, count_ids: bool) -> Replay:
    index = Index()
    settled, problem = read_checkpoint(jdir)
    for h, ts in settled:
        index.settled.add_hash(h, ts)
    segs = list_segments(jdir)
    rep = Replay(index, segs, {}, checkpoint_problem=problem)
    if count_ids:
        rep.seen_ids = set()
    for i, seg in enumerate(segs):
        data = read_file(jdir / seg_name(seg))
        _scan_segment(rep, data, seg, last=i == len(segs) - 1)
        del data
    return rep


def _scan_segment(rep: Replay, data: bytes, seg: int, last: bool) -> None:
    """Apply one segment, resynchronising after each damaged range on the next valid record.

    A damaged range costs only its own bytes: every intact record before and after it is
    applied. Damage with no valid record after it ends the segment: in the last segment that is
    a torn write (a crash mid-append), elsewhere corruption up to the end of the file.
    """
    pos = 0
    prev: Damage | None = None
    while True:
        end, count, err = _scan(data, seg, rep.index, rep.seen_ids, pos)
        rep.records += count
        if prev is not None:
            prev.intact_after = count
        if err is None:
            rep.sizes[seg] = end
            return
        q = _next_valid(data, end)
        if q is None:
            rep.sizes[seg] = end
            rep.damage.append(Damage(seg, end, len(data) - end, last, err))
            return
        prev = Damage(seg, end, q - end, False, err, resync=True)
        rep.damage.append(prev)
        pos = q
