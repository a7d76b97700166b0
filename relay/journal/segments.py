"""Segment files and directory durability helpers."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

from relay.fsutil import fsync_dir, write_fsync

JOURNAL_DIR: Final = "journal"
CORRUPT_DIR: Final = "corrupt"
_SEG_RE: Final = re.compile(r"^(\d{8})\.seg$")


def seg_name(n: int) -> str:
    return f"{n:08d}.seg"


def list_segments(jdir: Path) -> list[int]:
    """Segment numbers present in `jdir`, oldest first."""
    try:
        names = os.listdir(jdir)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for m in map(_SEG_RE.match, names) if m)


def mkdir_durable(path: Path) -> None:
    """Create `path` (and parents) and fsync the parent of each directory created."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)  # payloads live here: owner only
        except FileExistsError:
            continue
        fsync_dir(d.parent)


def read_file(path: Path) -> bytes:
    """The whole file in one read: replay parses it in memory, which is what makes it fast."""
    with open(path, "rb", buffering=0) as f:
        return f.read()


def quarantine(data_dir: Path, name: str, data: bytes) -> Path:
    """Write `data` to `<data_dir>/corrupt/<name>` durably, never overwriting an earlier file."""
    cdir = data_dir / CORRUPT_DIR
    mkdir_durable(cdir)
    n = 0
    while True:
        path = cdir / (name if n == 0 else f"{name}.{n}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            n += 1
            continue
        break
    write_fsync(fd, data)
    fsync_dir(cdir)
    return path
