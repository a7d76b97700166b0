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

log = logging.getLogger("relay.journal")

NAME: Final = "CHECKPOINT"
_MAGIC: Final = b"HRJCKP1\n"
_COUNT: Final = struct.Struct("<I")
_ENTRY: Final = struct.Struct("<dH")


def write_checkpoint(jdir: Path, settled: dict[str, float]) -> None:
    parts = [_MAGIC, _COUNT.pack(len(settled))]
    for eid, ts in settled.items():
        b = eid.encode()
        parts.append(_ENTRY.pack(ts, len(b)))
        parts.append(b)
    body = b"".join(parts)
    data = body + _COUNT.pack(zlib.crc32(body))
    tmp = jdir / (NAME + ".tmp")
    write_fsync(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), data)
    os.replace(tmp, jdir / NAME)
    fsync_dir(jdir)


def read_checkpoint(jdir: Path) -> tuple[dict[str, float], str | None]:
    """(settled ids, problem). A bad checkpoint costs only idempotency memory, so it is reported,
    not fatal: no live event depends on it."""
    try:
        with open(jdir / NAME, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}, None
    if len(data) < len(_MAGIC) + 8 or not data.startswith(_MAGIC):
        return {}, "checkpoint has a bad header"
    body = memoryview(data)[:-4]
    if zlib.crc32(body) != _COUNT.unpack_from(data, len(data) - 4)[0]:
        return {}, "checkpoint checksum mismatch"
    (count,) = _COUNT.unpack_from(data, len(_MAGIC))
    p = len(_MAGIC) + 4
    out: dict[str, float] = {}
    try:
        for _ in range(count):
            ts, n = _ENTRY.unpack_from(data, p)
            p += _ENTRY.size
            out[data[p : p + n].decode()] = ts
            p += n
    except (struct.error, UnicodeDecodeError):
        return {}, "checkpoint is malformed"
    return out, None
