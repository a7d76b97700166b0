"""Compaction file work; runs in a thread, the asyncio side decides what to do.

Two moves keep the journal small:
* a segment with no live record is removed, after the checkpoint has saved the settled ids it held;
* a segment that is mostly settled has its live events rewritten forward as SNAPSHOT records into
  the head, which empties it for the first move.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from relay.fsutil import fsync_dir

from .checkpoint import write_checkpoint
from .records import ACCEPTED, ATTEMPT, SNAPSHOT, decode, encode_snapshot, parse_snapshot_tail
from .segments import seg_name
from .state import Loc

log = logging.getLogger("relay.journal")

# A non-head segment whose live bytes are below this share of its size is rewritten forward.
REWRITE_BELOW = 0.25


@dataclass(slots=True)
class SnapJob:
    """What the loop captured about one event; the thread turns it into a SNAPSHOT record."""

    event_id: str
    base: Loc
    extra: list[Loc]
    due: float | None
    dead: tuple[str, float] | None


class _Reader:
    def __init__(self, jdir: Path) -> None:
        self.jdir = jdir
        self.fds: dict[int, int] = {}

    def read(self, loc: Loc) -> bytes:
        seg, off, ln = loc
        fd = self.fds.get(seg)
        if fd is None:
            fd = self.fds[seg] = os.open(self.jdir / seg_name(seg), os.O_RDONLY)
        data = os.pread(fd, ln, off)
        if len(data) != ln:
            raise ValueError(f"short read in {seg_name(seg)} at {off}")
        return data

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)


def build_snapshots(jdir: Path, jobs: list[SnapJob], now: float) -> list[tuple[str, bytes, int]]:
    """(event_id, record, blob offset) per job. Events whose records cannot be read are skipped
    (and logged): they stay where they are, which is always safe."""
    out: list[tuple[str, bytes, int]] = []
    reader = _Reader(jdir)
    try:
        for job in jobs:
            try:
                raw = reader.read(job.base)
                base = decode(raw)
                if base.rtype == ACCEPTED:
                    attempts: list[bytes] = []
                    blob = base.tail
                elif base.rtype == SNAPSHOT:
                    # Offsets in parse_snapshot_tail are absolute within `raw`.
                    q = len(raw) - len(base.tail)
                    tail = parse_snapshot_tail(raw, q, len(raw), True)
                    attempts = tail.attempts
                    blob = raw[tail.blob_off :]
                else:
                    raise ValueError(f"base record of type {base.rtype}")
                for loc in job.extra:
                    rec = decode(reader.read(loc))
                    if rec.rtype == ATTEMPT:
                        attempts.append(rec.tail)
                rec_bytes, bo = encode_snapshot(
                    job.event_id.encode(),
                    base.aux,
                    base.small,
                    base.f,
                    now,
                    job.due,
                    job.dead,
                    attempts,
                    blob,
                )
            except (OSError, ValueError) as e:
                log.error("journal compaction: cannot rewrite event %s: %s", job.event_id, e)
                continue
            out.append((job.event_id, rec_bytes, bo))
    finally:
        reader.close()
    return out


def remove_segments(jdir: Path, segs: list[int], settled: list[tuple[int, float]]) -> None:
    """Checkpoint first, unlink second: a crash in between leaves a segment that replays cleanly."""
    write_checkpoint(jdir, settled)
    for seg in segs:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(jdir / seg_name(seg))
    fsync_dir(jdir)


def removable(segments: list[int], head: int, seg_live: dict[int, int], seg_minref: dict[int, int]) -> list[int]:
    """Segments (oldest first) with no live record whose settled events left nothing behind.

    A segment holding DELIVERED x can go only once every segment that may hold an earlier record
    of x is gone (or going), else replay would see x's ACCEPTED without its DELIVERED.
    """
    out: list[int] = []
    gone = set()
    present = sorted(segments)
    for seg in present:
        if seg == head or seg_live.get(seg, 0) != 0:
            continue
        lo = seg_minref.get(seg, seg)
        if all(t in gone for t in present if lo <= t < seg):
            out.append(seg)
            gone.add(seg)
    return out
