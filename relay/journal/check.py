"""`hookrelay journal check`: an offline, read-only look at a data dir."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .lock import lock_holder
from .recovery import replay
from .segments import CORRUPT_DIR, JOURNAL_DIR, seg_name


@dataclass(slots=True)
class CheckReport:
    data_dir: Path
    segments: int = 0
    records: int = 0
    events: int = 0  # distinct event ids with an ACCEPTED (or SNAPSHOT) record on disk
    pending: int = 0
    dead: int = 0
    settled: int = 0  # settled ids remembered (checkpoint + records)
    corrupt_records: int = 0
    torn_tail_bytes: int = 0
    bytes: int = 0
    quarantined_files: int = 0  # left in corrupt/ by earlier starts
    locked: bool = False
    locked_pid: int | None = None
    problems: list[str] = field(default_factory=list)
    ok: bool = True

    def format(self) -> str:
        lines = [f"journal in {self.data_dir}"]
        if self.locked:
            who = f"pid {self.locked_pid}" if self.locked_pid is not None else "another process"
            lines.append(f"  in use by {who}: figures may move while it runs")
        lines += [
            f"  segments:        {self.segments} ({self.bytes} bytes)",
            f"  records:         {self.records}",
            f"  events:          {self.events}",
            f"  pending:         {self.pending}",
            f"  dead letters:    {self.dead}",
            f"  settled ids:     {self.settled}",
            f"  corrupt records: {self.corrupt_records}",
            f"  torn tail bytes: {self.torn_tail_bytes}",
        ]
        if self.quarantined_files:
            lines.append(f"  files in {CORRUPT_DIR}/: {self.quarantined_files} (moved aside by earlier starts)")
        lines += [f"  problem: {p}" for p in self.problems]
        lines.append("  status: OK" if self.ok else "  status: CORRUPT")
        return "\n".join(lines)


def check(data_dir: Path) -> CheckReport:
    """Replay the journal without writing anything or taking the lock."""
    data_dir = Path(data_dir)
    rep = CheckReport(data_dir)
    if not data_dir.is_dir():
        rep.problems.append("data dir does not exist")
        rep.ok = False
        return rep
    rep.locked, rep.locked_pid = lock_holder(data_dir)
    cdir = data_dir / CORRUPT_DIR
    if cdir.is_dir():
        rep.quarantined_files = sum(1 for _ in cdir.iterdir())
    jdir = data_dir / JOURNAL_DIR
    if not jdir.is_dir():
        rep.problems.append("no journal yet")
        return rep
    r = replay(jdir, count_ids=True)
    rep.segments = len(r.segments)
    rep.bytes = sum(os.stat(jdir / seg_name(s)).st_size for s in r.segments)
    rep.records = r.records
    rep.events = len(r.seen_ids or ())
    rep.dead = len(r.index.dead)
    rep.pending = len(r.index) - rep.dead
    rep.settled = len(r.index.settled)
    if r.checkpoint_problem:
        rep.problems.append(r.checkpoint_problem)
        rep.ok = False
    for d in r.damage:
        where = f"{seg_name(d.seg)} at offset {d.offset}"
        if d.torn:
            rep.torn_tail_bytes += d.size
            rep.problems.append(f"torn tail in {where}: {d.reason}, {d.size} bytes (cut at next start)")
        else:
            rep.corrupt_records += 1
            rep.ok = False
            if d.resync:
                rep.problems.append(
                    f"damaged range in {where}, {d.size} bytes: {d.reason}; {d.intact_after} intact records "
                    f"follow it (the range is copied to {CORRUPT_DIR}/ and skipped at next start)"
                )
            else:
                rep.problems.append(
                    f"corrupt record in {where}: {d.reason}; the rest of the segment, {d.size} bytes, "
                    f"would move to {CORRUPT_DIR}/"
                )
    return rep
