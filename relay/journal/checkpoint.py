"""The checkpoint: settled ids (and when they settled) that would vanish with removed segments.

Written before compaction unlinks a segment, via tmp + fsync + rename + directory fsync, so at any
crash point either the old or the new checkpoint is complete; a crash after writing it but before
the unlink leaves the segment in place, and replaying both is harmless.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Final

from relay.fsutil import fsync_dir, write_fsync

from .table import stable_hash

log = logging.getLogger("relay.journal")

NAME: Final = "CHECKPOINT"
_MAGIC: Final = b"HRJCKP1\n"
_COUNT: Final = struct.Struct("<I")
_ENTRY: Final = struct.Struct("<dH")
# Version 2 keeps 64-bit id hashes instead of the ids (what the index keeps in RAM too).
_MAGIC2: Final = b"HRJCKP2\n"
_ENTRY2: Final = struct.Struct("<qd")


def write_checkpoint(jdir: Path, settled: list[tuple[int, float]]) -> None:
    """Save (stable id hash, settle time) pairs; see `table.SettledIds`."""
    parts = [_MAGIC2, _COUNT.pack(len(settled))]
    parts += [_ENTRY2.pack(h, ts) for h, ts in settled]
    body = b"".join(parts)
    data = body + _COUNT.pack(zlib.crc32(body))
    tmp = jdir / (NAME + ".tmp")
    write_fsync(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), data)
    os.replace(tmp, jdir / NAME)
    fsync_dir(jdir)


def read_checkpoint(jdir: Path) -> tuple[list[tuple[int, float]], str | None]:
    """(settled ids, problem). A bad checkpoint costs only idempotency memory, so it is reported,
    not fatal: no live event depends on it."""
    try:
        with open(jdir / NAME, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], None
    v2 = data.startswith(_MAGIC2)
    if len(data) < len(_MAGIC) + 8 or not (v2 or data.startswith(_MAGIC)):
        return [], "checkpoint has a bad header"
    body = memoryview(data)[:-4]
    if zlib.crc32(body) != _COUNT.unpack_from(data, len(data) - 4)[0]:
        return [], "checkpoint checksum mismatch"
    (count,) = _COUNT.unpack_from(data, len(_MAGIC))
    p = len(_MAGIC) + 4
    out: list[tuple[int, float]] = []
    try:
        if v2:
            if p + count * _ENTRY2.size + 4 != len(data):
                return [], "checkpoint is malformed"
            out = [(h, ts) for h, ts in _ENTRY2.iter_unpack(data[p : p + count * _ENTRY2.size])]
            return out, None
        for _ in range(count):  # version 1 (ids in full), as written before
            ts, n = _ENTRY.unpack_from(data, p)
            p += _ENTRY.size
            out.append((stable_hash(data[p : p + n].decode()), ts))
            p += n
    except (struct.error, UnicodeDecodeError):
        return [], "checkpoint is malformed"
    return out, None
