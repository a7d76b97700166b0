"""Record codec: framing, checksum and the binary header shared by every record type.

A segment file starts with `MAGIC`, then records back to back:

    crc32  u32   zlib.crc32 of every byte that follows it in the record (length included)
    length u32   bytes after this field (the body)
    type   u8    ACCEPTED .. SNAPSHOT
    flags  u8    reserved, 0
    id_len u16   UTF-8 event id length
    aux_len u16  tenant (ACCEPTED, SNAPSHOT) or dead reason (DEAD) length
    small  u32   severity (ACCEPTED, SNAPSHOT); 0 otherwise
    ts     f64   wall-clock time the record was written (idempotency window, retention)
    f      f64   accepted_at / next_due / failed_at, by type; NaN stands for None
    id, aux, then the type's tail (the opaque blob for ACCEPTED and ATTEMPT)

All integers little-endian. The checksum covers the length so that a flipped length is caught
instead of sending the reader off into the middle of another record.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Final, NamedTuple

MAGIC: Final = b"HRJSEG1\n"

ACCEPTED: Final = 1
ATTEMPT: Final = 2
DELIVERED: Final = 3
DEAD: Final = 4
REQUEUED: Final = 5
PURGED: Final = 6
# A whole live event in one record (base fields, attempts, state, blob). Compaction writes it
# when it moves an event forward; one record is atomic, so a crash mid-copy cannot leave an
# event half moved, and replaying it over the originals is harmless (it replaces their state).
SNAPSHOT: Final = 7
# Filler written over a damaged range once its bytes are copied aside, so the segment reads
# cleanly (and the damage is counted once) from then on. Replay skips it.
PAD: Final = 8

TYPE_NAMES: Final = {
    ACCEPTED: "ACCEPTED",
    ATTEMPT: "ATTEMPT",
    DELIVERED: "DELIVERED",
    DEAD: "DEAD",
    REQUEUED: "REQUEUED",
    PURGED: "PURGED",
    SNAPSHOT: "SNAPSHOT",
    PAD: "PAD",
}

HEAD: Final = struct.Struct("<IIBBHHIdd")
_COVERED: Final = struct.Struct("<IBBHHIdd")  # the part of HEAD the checksum covers
_CRC: Final = struct.Struct("<I")
HEADER_SIZE: Final = HEAD.size
MIN_BODY: Final = HEAD.size - 8
# Webhook payloads are small; a length beyond this can only be damage, and refusing it keeps a
# flipped bit from making recovery allocate gigabytes.
MAX_BODY: Final = 256 * 1024 * 1024
MAX_TEXT: Final = 0xFFFF

# SNAPSHOT tail: next_due, failed_at (NaN = not dead), attempt count, reason length; then the
# reason, each attempt as u32 length + bytes, and last the accept blob (so it can be pread).
SNAP: Final = struct.Struct("<ddIH")
ATT_LEN: Final = struct.Struct("<I")


def nan_if_none(x: float | None) -> float:
    return math.nan if x is None else x


def none_if_nan(x: float) -> float | None:
    return None if x != x else x


def clip_text(s: str, limit: int = MAX_TEXT) -> bytes:
    """UTF-8 bytes of `s`, cut to fit a u16 length without splitting a character."""
    b = s.encode()
    if len(b) <= limit:
        return b
    return b[:limit].decode(errors="ignore").encode()


def encode(rtype: int, eid: bytes, aux: bytes, small: int, ts: float, f: float, *tail: bytes) -> bytes:
    """One framed record. The checksum is computed piecewise so the blob is copied only once."""
    if len(eid) > MAX_TEXT or len(aux) > MAX_TEXT:
        raise ValueError("event id, tenant or reason longer than 65535 bytes")
    body_len = MIN_BODY + len(eid) + len(aux) + sum(len(t) for t in tail)
    if body_len > MAX_BODY:
        raise ValueError(f"record of {body_len} bytes exceeds the {MAX_BODY} byte limit")
    covered = _COVERED.pack(body_len, rtype, 0, len(eid), len(aux), small, ts, f)
    crc = zlib.crc32(aux, zlib.crc32(eid, zlib.crc32(covered)))
    for t in tail:
        crc = zlib.crc32(t, crc)
    return b"".join((_CRC.pack(crc), covered, eid, aux, *tail))


def encode_snapshot(
    eid: bytes,
    tenant: bytes,
    severity: int,
    accepted_at: float,
    ts: float,
    next_due: float | None,
    dead: tuple[str, float] | None,
    attempts: list[bytes],
    blob: bytes,
) -> tuple[bytes, int]:
    """A SNAPSHOT record and the offset of its blob within the record."""
    reason = clip_text(dead[0]) if dead else b""
    parts = [SNAP.pack(nan_if_none(next_due), dead[1] if dead else math.nan, len(attempts), len(reason))]
    parts.append(reason)
    for a in attempts:
        parts.append(ATT_LEN.pack(len(a)))
        parts.append(a)
    blob_off = HEADER_SIZE + len(eid) + len(tenant) + sum(len(p) for p in parts)
    parts.append(blob)
    return encode(SNAPSHOT, eid, tenant, severity, ts, accepted_at, *parts), blob_off


class SnapshotTail(NamedTuple):
    next_due: float | None
    dead: tuple[str, float] | None
    attempts: list[bytes]
    blob_off: int  # absolute offset in the buffer parsed


def parse_snapshot_tail(data: bytes, q: int, end: int, collect: bool) -> SnapshotTail:
    """Parse a SNAPSHOT tail starting at `q`; raises ValueError if it does not fit in `end`."""
    due, failed_at, n_att, rlen = SNAP.unpack_from(data, q)
    q += SNAP.size
    dead: tuple[str, float] | None = None
    if failed_at == failed_at:
        dead = (data[q : q + rlen].decode(), failed_at)
    q += rlen
    attempts: list[bytes] = []
    for _ in range(n_att):
        (alen,) = ATT_LEN.unpack_from(data, q)
        q += ATT_LEN.size
        if q + alen > end:
            raise ValueError("snapshot attempt runs past the record")
        if collect:
            attempts.append(data[q : q + alen])
        q += alen
    if q > end:
        raise ValueError("snapshot tail runs past the record")
    return SnapshotTail(none_if_nan(due), dead, attempts, q)


class Record(NamedTuple):
    """A decoded record (slow path: compaction, check and tests; replay parses inline)."""

    rtype: int
    event_id: str
    aux: bytes
    small: int
    ts: float
    f: float
    tail: bytes


def decode(data: bytes) -> Record:
    """Decode one whole framed record, verifying its checksum."""
    if len(data) < HEADER_SIZE:
        raise ValueError("record shorter than its header")
    crc, blen, rtype, _flags, idl, auxl, small, ts, f = HEAD.unpack_from(data, 0)
    if blen + 8 != len(data) or idl + auxl > blen - MIN_BODY:
        raise ValueError("record length does not match")
    if zlib.crc32(memoryview(data)[4:]) != crc:
        raise ValueError("record checksum mismatch")
    q = HEADER_SIZE
    eid = data[q : q + idl].decode()
    q += idl
    return Record(rtype, eid, data[q : q + auxl], small, ts, f, data[q + auxl :])


def valid_record_at(data: bytes, p: int) -> bool:
    """True when a well-formed record with a matching checksum starts at `p`."""
    n = len(data)
    if n - p < HEADER_SIZE:
        return False
    crc, blen, rtype = struct.unpack_from("<IIB", data, p)
    if blen < MIN_BODY or blen > MAX_BODY or p + 8 + blen > n or not ACCEPTED <= rtype <= PAD:
        return False
    return bool(zlib.crc32(memoryview(data)[p + 4 : p + 8 + blen]) == crc)


def encode_pad(size: int, ts: float) -> bytes:
    """A PAD record of exactly `size` bytes (at least HEADER_SIZE)."""
    if size < HEADER_SIZE:
        raise ValueError(f"a PAD record needs at least {HEADER_SIZE} bytes")
    return encode(PAD, b"", b"", 0, ts, 0.0, bytes(size - HEADER_SIZE))
