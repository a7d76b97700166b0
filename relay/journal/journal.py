"""The journal: one writer task, group commit, and the public operations.

Every record goes through `_enqueue` -> `_run` -> `SegmentWriter.commit`. While one commit (write +
fdatasync, in the writer thread) is in flight, new records pile up in `_pending`; the next commit
takes all of them, so under load one fdatasync covers many callers without any timer or sleep.
The in-memory index is only updated after a commit succeeds, so it never describes a record that
is not durable, and a failed batch leaves no trace in memory or on disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import overload

from relay.fsutil import fsync_dir

from .compaction import REWRITE_BELOW, SnapJob, build_snapshots, removable, remove_segments
from .errors import JournalError, JournalUnavailable, UnknownEvent
from .lock import DirLock
from .model import FsyncMode, LiveEvent, Recovered
from .records import (
    ACCEPTED,
    ATTEMPT,
    DEAD,
    DELIVERED,
    HEADER_SIZE,
    MAGIC,
    PURGED,
    REQUEUED,
    SNAPSHOT,
    clip_text,
    decode,
    encode,
    encode_pad,
    nan_if_none,
    parse_snapshot_tail,
)
from .recovery import Damage, replay
from .segments import JOURNAL_DIR, mkdir_durable, quarantine, seg_name
from .state import Index
from .writer import Commit, FsyncFn, SegmentWriter, WriteFn

log = logging.getLogger("relay.journal")

_MODES = ("always", "batch", "never")


class _Rec:
    """A record on its way to disk, with what the index needs once it is durable."""

    __slots__ = ("bo", "data", "dead", "eid", "f", "kind", "sev", "slot", "tenant")

    def __init__(
        self,
        kind: int,
        eid: str,
        data: bytes,
        *,
        bo: int = 0,
        f: float | None = None,
        dead: tuple[str, float] | None = None,
        slot: int = -1,
        tenant: str = "",
        sev: int = 0,
    ) -> None:
        self.kind = kind
        self.eid = eid
        self.data = data
        self.bo = bo
        # accepted_at (ACCEPTED), next_due (ATTEMPT, SNAPSHOT) or settle time (DELIVERED, PURGED)
        self.f = f
        self.dead = dead
        # The live event's slot: pinned (kept from compaction and from reuse) until applied.
        self.slot = slot
        self.tenant = tenant
        self.sev = sev


class _Req:
    __slots__ = ("fut", "lazy", "records", "sync")

    def __init__(self, records: list[_Rec], fut: asyncio.Future[None], sync: bool, lazy: bool) -> None:
        self.records = records
        self.fut = fut
        self.sync = sync  # fsync even with fsync=never (compaction barriers)
        self.lazy = lazy  # written now, made durable by the next commit that fsyncs


def _consume(fut: asyncio.Future[None]) -> None:
    # A failed write is already logged and reflected in `healthy`; nobody awaits this future.
    if not fut.cancelled():
        fut.exception()


class Journal:
    def __init__(
        self,
        data_dir: Path,
        *,
        fsync: FsyncMode = "batch",
        segment_max_bytes: int = 64 * 1024 * 1024,
        dead_letter_retention: float = 30 * 86400.0,
        idempotency_window: float = 86400.0,
        idempotency_max: int = 100_000,
        on_fsync: Callable[[float], None] | None = None,
        on_corrupt: Callable[[int], None] | None = None,
        _write: WriteFn = os.write,
        _fsync: FsyncFn = os.fdatasync,
        _clock: Callable[[], float] = time.time,
    ) -> None:
        if fsync not in _MODES:
            raise ValueError(f"fsync must be one of {', '.join(_MODES)}, not {fsync!r}")
        if segment_max_bytes < 4096:
            raise ValueError("segment_max_bytes must be at least 4096")
        if segment_max_bytes > 2**31:
            raise ValueError("segment_max_bytes must be at most 2 GiB")  # offsets are 32-bit in the index
        self._dir = Path(data_dir)
        self._jdir = self._dir / JOURNAL_DIR
        self._mode: FsyncMode = fsync
        self._max_bytes = segment_max_bytes
        self._retention = dead_letter_retention
        self._window = idempotency_window
        # Bounded by count too: at 1,000 events/s a day of ids would be gigabytes of RAM.
        self._idem_max = idempotency_max
        self._on_fsync = on_fsync
        self._on_corrupt = on_corrupt
        self._write_fn = _write
        self._fsync_fn = _fsync
        self._clock = _clock

        self._index = Index()
        self._seg_size: dict[int, int] = {}
        self._rfds: dict[int, int] = {}
        self._writer: SegmentWriter | None = None
        self._lock: DirLock | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: deque[_Req] = deque()
        self._wake = asyncio.Event()
        self._io_lock = asyncio.Lock()  # the writer thread runs one commit or probe at a time
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False
        self._healthy = True
        self._compacting = False

    # ----------------------------------------------------------------------------- open / recovery

    def open(self) -> Recovered:
        if self._lock is not None or self._closed:
            raise JournalError("journal already opened")
        mkdir_durable(self._dir)
        lock = DirLock.acquire(self._dir)
        try:
            recovered = self._recover()
        except BaseException:
            lock.release()
            raise
        self._lock = lock
        return recovered

    def _recover(self) -> Recovered:
        t0 = time.perf_counter()
        mkdir_durable(self._jdir)
        rep = replay(self._jdir)
        if rep.checkpoint_problem:
            log.error("journal: %s; settled ids of removed segments are forgotten", rep.checkpoint_problem)
        torn = corrupt = 0
        for d in rep.damage:
            self._cut(d)
            if d.torn:
                torn += d.size
            else:
                corrupt += 1
                if self._on_corrupt is not None:
                    self._on_corrupt(1)
        if rep.damage:
            fsync_dir(self._jdir)

        sizes = rep.sizes
        segs = rep.segments
        if not segs:
            segs = [1]
            sizes[1] = 0
        head = segs[-1]
        if sizes[head] < len(MAGIC):
            self._init_segment(head)
            sizes[head] = len(MAGIC)
        self._seg_size = sizes
        self._index = idx = rep.index

        idx.settled.sort()
        idx.prune_settled(self._clock() - self._window, self._idem_max)

        self._writer = SegmentWriter(
            self._jdir,
            head,
            sizes[head],
            self._max_bytes,
            self._write_fn,
            self._fsync_fn,
            roll_sync=self._mode != "never",
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-writer")
        log.info(
            "journal: recovered %d live events, %d settled ids from %d segments (%d records) in %.3f s",
            len(idx),
            len(idx.settled),
            len(segs),
            rep.records,
            time.perf_counter() - t0,
        )
        return Recovered(_LiveEvents(self, idx.live_slots()), len(idx.settled), corrupt, torn)

    def _init_segment(self, seg: int) -> None:
        fd = os.open(self._jdir / seg_name(seg), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, MAGIC)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self._jdir)

    def _cut(self, d: Damage) -> None:
        """Copy damaged bytes aside (never deleted); then cover a damaged range with a PAD record
        (intact records follow it) or truncate the segment (nothing intact follows)."""
        if d.resync:
            self._pad(d)
            return
        path = self._jdir / seg_name(d.seg)
        fd = os.open(path, os.O_RDWR)
        try:
            tail = os.pread(fd, d.size, d.offset)
            where = "nowhere (all zero bytes)"
            # A torn tail of zeros is what a crash during preallocation leaves; nothing to keep.
            if not d.torn or tail.count(0) != len(tail):
                kind = "torn" if d.torn else "bad"
                where = str(quarantine(self._dir, f"{seg_name(d.seg)}.{d.offset}.{kind}", tail))
            os.ftruncate(fd, d.offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        if d.torn:
            log.warning(
                "journal: torn tail in %s at offset %d (%s): %d bytes cut off, copy in %s",
                seg_name(d.seg),
                d.offset,
                d.reason,
                d.size,
                where,
            )
        else:
            log.error(
                "journal: corrupt record in %s at offset %d (%s): the rest of the segment, %d bytes, "
                "moved to %s; start-up continues",
                seg_name(d.seg),
                d.offset,
                d.reason,
                d.size,
                where,
            )

    def _pad(self, d: Damage) -> None:
        path = self._jdir / seg_name(d.seg)
        fd = os.open(path, os.O_RDWR)
        try:
            bad = os.pread(fd, d.size, d.offset)
            where = quarantine(self._dir, f"{seg_name(d.seg)}.{d.offset}.bad", bad)
            start = d.offset
            if start < len(MAGIC):  # the segment header itself was hit
                os.pwrite(fd, MAGIC, 0)
                start = len(MAGIC)
            size = d.offset + d.size - start
            if size >= HEADER_SIZE:
                os.pwrite(fd, encode_pad(size, self._clock()), start)
            # else: too short to cover (cannot happen for a real record); found again next start.
            os.fsync(fd)
        finally:
            os.close(fd)
        log.error(
            "journal: corrupt record in %s at offset %d (%s): %d damaged bytes copied to %s; "
            "%d intact records after them are kept; start-up continues",
            seg_name(d.seg),
            d.offset,
            d.reason,
            d.size,
            where,
            d.intact_after,
        )

    # ----------------------------------------------------------------------------- write path

    def _check_open(self) -> None:
        if self._writer is None or self._closed or self._stopping:
            raise JournalError("journal is not open")

    def _enqueue(self, records: list[_Rec], sync: bool = False, lazy: bool = False) -> asyncio.Future[None]:
        self._check_open()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        pin = self._index.pin
        for r in records:
            if r.slot >= 0:
                pin(r.slot)
        self._pending.append(_Req(records, fut, sync, lazy))
        if self._task is None:
            self._task = loop.create_task(self._run(), name="journal-writer")
        self._wake.set()
        return fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        writer = self._writer
        assert writer is not None
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._mode == "always":
                batch = [self._pending.popleft()]  # "always" means an fsync per call: no sharing
            else:
                batch = list(self._pending)
                self._pending.clear()
            bufs = [r.data for q in batch for r in q.records]
            # Only accepted events (and operator actions) need their fsync: progress records
            # (attempt, delivered, dead) lost to a power cut only repeat an attempt or a
            # delivery, so a batch of nothing but those is written without one.
            # With fsync=always every record gets its own fsync, as asked.
            mode = self._mode
            sync = (
                any(q.sync for q in batch) or mode == "always" or (mode == "batch" and not all(q.lazy for q in batch))
            )
            try:
                async with self._io_lock:
                    if sync:
                        res = await loop.run_in_executor(self._executor, writer.commit, bufs, True)
                    else:
                        # fsync=never: a buffered write is microseconds; a thread hop would cost more.
                        res = writer.commit(bufs, False)
            except OSError as e:
                self._fail(batch, e)
                continue
            except Exception as e:
                # A bug, not the disk; the writer must survive it or every later caller would hang.
                log.exception("journal: unexpected error in the writer")
                self._fail(batch, e)
                continue
            except BaseException as e:
                self._fail(batch, e)
                raise
            self._done(batch, res, sync or self._mode == "never")

    def _fail(self, batch: list[_Req], err: BaseException) -> None:
        if self._healthy:
            log.error("journal: write failed, refusing new events until the disk recovers: %s", err)
        self._healthy = False
        unpin = self._index.unpin
        for q in batch:
            for r in q.records:
                if r.slot >= 0:
                    unpin(r.slot)
            if not q.fut.done():
                exc = JournalUnavailable(f"journal write failed: {err}")
                exc.__cause__ = err
                q.fut.set_exception(exc)

    def _done(self, batch: list[_Req], res: Commit, proven: bool) -> None:
        # Only a commit that did what an accept needs (fsync included) proves the disk is back.
        if proven:
            if not self._healthy:
                log.warning("journal: writes succeed again")
            self._healthy = True
        self._seg_size.update(res.sizes)
        if self._on_fsync is not None:
            for secs in res.fsync_seconds:
                try:
                    self._on_fsync(secs)
                except Exception:
                    log.exception("journal: on_fsync callback failed")
        apply = self._apply
        unpin = self._index.unpin
        positions = iter(res.positions)
        for q in batch:
            for r in q.records:
                seg, off = next(positions)
                apply(r, seg, off)
                if r.slot >= 0:
                    unpin(r.slot)
            if not q.fut.done():
                q.fut.set_result(None)

    def _apply(self, r: _Rec, seg: int, off: int) -> None:
        idx = self._index
        k = r.kind
        ln = len(r.data)
        if k == ACCEPTED:
            assert r.f is not None
            idx.accepted(r.eid, seg, off, ln, r.bo, r.tenant, r.sev, r.f)
        elif k == ATTEMPT:
            idx.attempt(r.eid, seg, off, ln, r.f)
        elif k in (DELIVERED, PURGED):
            assert r.f is not None
            idx.settle(r.eid, seg, r.f)
        elif k == DEAD:
            assert r.dead is not None
            idx.dead_at(r.eid, seg, off, ln, r.dead[0], r.dead[1])
        elif k == REQUEUED:
            idx.requeued(r.eid, seg, off, ln)
        elif k == SNAPSHOT:
            idx.snapshot(r.eid, seg, off, ln, r.bo, r.f, r.dead)

    def _live(self, event_id: str) -> int:
        s = self._index.find(event_id)
        if s < 0:
            raise UnknownEvent(event_id)
        return s

    def _settle_rec(self, kind: int, event_id: str, now: float, slot: int) -> _Rec:
        return _Rec(kind, event_id, encode(kind, event_id.encode(), b"", 0, now, 0.0), f=now, slot=slot)

    # ----------------------------------------------------------------------------- public operations

    async def accept(self, events: Sequence[tuple[str, str, int, float, bytes]]) -> None:
        """Journal new events; returns once they are durable per the fsync mode."""
        if not events:
            return
        now = self._clock()
        recs: list[_Rec] = []
        for event_id, tenant_id, severity, accepted_at, blob in events:
            if not 0 <= severity <= 0xFFFF:
                raise ValueError(f"severity out of range: {severity}")
            eb = event_id.encode()
            tb = tenant_id.encode()
            data = encode(ACCEPTED, eb, tb, severity, now, accepted_at, blob)
            recs.append(
                _Rec(
                    ACCEPTED,
                    event_id,
                    data,
                    bo=HEADER_SIZE + len(eb) + len(tb),
                    f=accepted_at,
                    tenant=tenant_id,
                    sev=severity,
                )
            )
        await self._enqueue(recs)

    async def attempt(self, event_id: str, blob: bytes, next_due: float | None) -> None:
        s = self._live(event_id)
        data = encode(ATTEMPT, event_id.encode(), b"", 0, self._clock(), nan_if_none(next_due), blob)
        await self._enqueue([_Rec(ATTEMPT, event_id, data, f=next_due, slot=s)], lazy=True)

    async def delivered(self, event_id: str) -> None:
        """Settle a delivered event. A no-op for an id that is not live (already settled)."""
        s = self._index.find(event_id)
        if s >= 0:
            await self._enqueue([self._settle_rec(DELIVERED, event_id, self._clock(), s)], lazy=True)

    def delivered_nowait(self, event_id: str) -> None:
        """Settle a delivered event in the next group commit without waiting for it.

        Losing this record to a crash only means the event is delivered once more after the
        restart (at-least-once), so the delivery path does not hold its slot for the fsync.
        """
        s = self._index.find(event_id)
        if s >= 0:
            fut = self._enqueue([self._settle_rec(DELIVERED, event_id, self._clock(), s)], lazy=True)
            fut.add_done_callback(_consume)

    async def dead(self, event_id: str, reason: str, failed_at: float) -> None:
        s = self._live(event_id)
        rb = clip_text(reason, 4096)
        data = encode(DEAD, event_id.encode(), rb, 0, self._clock(), failed_at)
        await self._enqueue([_Rec(DEAD, event_id, data, dead=(rb.decode(), failed_at), slot=s)], lazy=True)

    async def requeue(self, event_id: str) -> None:
        """Dead -> pending (attempts kept, due now). A no-op for an event that is not dead."""
        await self.requeue_many([event_id])

    async def requeue_many(self, event_ids: Sequence[str]) -> None:
        """Requeue many dead letters in one commit; ids that are not dead are skipped."""
        now = self._clock()
        recs = []
        idx = self._index
        for eid in event_ids:
            s = idx.find(eid)
            if s < 0 or s not in idx.dead:
                continue
            recs.append(_Rec(REQUEUED, eid, encode(REQUEUED, eid.encode(), b"", 0, now, 0.0), slot=s))
        if recs:
            await self._enqueue(recs)

    async def purge(self, event_id: str) -> None:
        """Remove a (dead) event for good. A no-op for an id that is not live."""
        await self.purge_many([event_id])

    async def purge_many(self, event_ids: Sequence[str]) -> None:
        """Remove many events in one commit; ids that are not live are skipped."""
        now = self._clock()
        find = self._index.find
        recs = [self._settle_rec(PURGED, eid, now, s) for eid in event_ids if (s := find(eid)) >= 0]
        if recs:
            await self._enqueue(recs)

    def read_blob(self, event_id: str) -> bytes:
        """The accept blob, read from disk: payloads are not kept in memory."""
        s = self._live(event_id)
        idx = self._index
        bo = idx.bo[s]
        return self._pread(idx.seg[s], idx.off[s] + bo, idx.ln[s] - bo)

    def _pread(self, seg: int, off: int, n: int) -> bytes:
        fd = self._rfds.get(seg)
        if fd is None:
            fd = self._rfds[seg] = os.open(self._jdir / seg_name(seg), os.O_RDONLY)
        data = os.pread(fd, n, off)
        if len(data) != n:
            raise JournalError(f"short read in {seg_name(seg)} at offset {off}")
        return data

    def read_attempts(self, event_id: str) -> list[bytes]:
        """Every attempt blob of a live event, oldest first, read back from its records."""
        return self._read_attempts(self._live(event_id))

    def _read_attempts(self, s: int) -> list[bytes]:
        idx = self._index
        out: list[bytes] = []
        base = decode(self._pread(idx.seg[s], idx.off[s], idx.ln[s]))
        if base.rtype == SNAPSHOT:
            out += parse_snapshot_tail(base.tail, 0, len(base.tail), True).attempts
        for seg, off, ln in idx.extra_locs(s):
            rec = decode(self._pread(seg, off, ln))
            if rec.rtype == ATTEMPT:  # every round's: the history is the whole history
                out.append(rec.tail)
        return out

    def was_settled(self, event_id: str) -> bool:
        """Delivered or purged within the idempotency window (and among the newest ids kept)."""
        return event_id in self._index.settled

    def is_live(self, event_id: str) -> bool:
        return self._index.find(event_id) >= 0

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def bytes_total(self) -> int:
        return sum(self._seg_size.values())

    @property
    def live_count(self) -> int:
        return len(self._index)

    async def probe(self) -> bool:
        """True if the journal can write; when unhealthy, tries a tiny write + fsync first."""
        if self._writer is None or self._closed:
            return False
        if self._healthy:
            return True
        loop = asyncio.get_running_loop()
        try:
            async with self._io_lock:
                await loop.run_in_executor(self._executor, self._writer.probe)
        except OSError as e:
            log.debug("journal probe failed: %s", e)
            return False
        if not self._healthy:
            log.warning("journal: probe write succeeded, accepting events again")
        self._healthy = True
        return True

    # ----------------------------------------------------------------------------- compaction

    async def compact(self) -> None:
        """Purge expired dead letters, forget old settled ids, rewrite mostly-settled segments
        forward and remove segments with nothing live. File work runs in threads."""
        if self._compacting or self._writer is None or self._closed or self._stopping:
            return
        self._compacting = True
        try:
            await self._compact()
        except JournalError as e:
            log.warning("journal compaction stopped: %s", e)
        finally:
            self._compacting = False

    async def _compact(self) -> None:
        writer = self._writer
        assert writer is not None
        idx = self._index
        now = self._clock()

        expired = now - self._retention
        old = [
            self._settle_rec(PURGED, idx.table.id_of(s), now, s)
            for s, dead in idx.dead.items()
            if dead[1] < expired and s not in idx.busy
        ]
        if old:
            await self._enqueue(old)
            log.info("journal: purged %d dead letters older than the retention", len(old))

        idx.prune_settled(now - self._window, self._idem_max)

        head = writer.head
        targets = {
            s for s, size in self._seg_size.items() if s != head and 0 < idx.seg_live.get(s, 0) < REWRITE_BELOW * size
        }
        if targets:
            await self._rewrite(targets, now)

        if removable(list(self._seg_size), writer.head, idx.seg_live, idx.seg_minref):
            # Settle records must be durable before the segments they empty are removed (this
            # matters with fsync=never).
            await self._enqueue([], sync=True)
            gone = removable(list(self._seg_size), writer.head, idx.seg_live, idx.seg_minref)
            for s in gone:
                fd = self._rfds.pop(s, None)
                if fd is not None:
                    os.close(fd)
            await asyncio.to_thread(remove_segments, self._jdir, gone, list(idx.settled.items()))
            for s in gone:
                self._seg_size.pop(s, None)
                idx.forget_segment(s)
            log.info("journal: removed segments %s", ", ".join(seg_name(s) for s in gone))

    async def _rewrite(self, targets: set[int], now: float) -> None:
        idx = self._index
        jobs: list[SnapJob] = []
        seen: dict[str, tuple[int, int, int, int]] = {}
        budget = self._max_bytes  # bound the work (and head growth) of one pass
        segcol, offcol, lncol = idx.seg, idx.off, idx.ln
        for s in idx.table.slots():
            if s in idx.busy:
                continue
            extra = idx.extra_locs(s)
            seg = segcol[s]
            if seg not in targets and not any(loc[0] in targets for loc in extra):
                continue
            eid = idx.table.id_of(s)
            jobs.append(SnapJob(eid, (seg, offcol[s], lncol[s]), extra, idx.get_due(s), idx.dead.get(s)))
            seen[eid] = (s, seg, offcol[s], len(extra))
            budget -= lncol[s] + sum(loc[2] for loc in extra)
            if budget <= 0:
                break
        if not jobs:
            return
        snaps = await asyncio.to_thread(build_snapshots, self._jdir, jobs, now)
        recs: list[_Rec] = []
        for eid, data, bo in snaps:
            s, seg, off, n = seen[eid]
            # Skip events that changed while the thread read them: their snapshot is stale.
            if idx.find(eid) != s or s in idx.busy or (idx.seg[s], idx.off[s], len(idx.extra_locs(s))) != (seg, off, n):
                continue
            recs.append(_Rec(SNAPSHOT, eid, data, bo=bo, f=idx.get_due(s), dead=idx.dead.get(s), slot=s))
        if recs:
            await self._enqueue(recs)
            log.info("journal: rewrote %d live events forward out of %d segments", len(recs), len(targets))

    # ----------------------------------------------------------------------------- close

    async def close(self) -> None:
        """Flush, fsync and release the lock. Safe to call twice."""
        if self._closed:
            return
        if self._writer is None:
            self._closed = True
            return
        for _ in range(3000):  # let a running compaction finish (bounded: 30 s)
            if not self._compacting:
                break
            await asyncio.sleep(0.01)
        try:
            await self._enqueue([], sync=True)
        except JournalError as e:
            log.error("journal: final fsync failed: %s", e)
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._closed = True
        self._writer.close()
        for fd in self._rfds.values():
            os.close(fd)
        self._rfds.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._lock is not None:
            self._lock.release()


class _LiveEvents(Sequence[LiveEvent]):
    """`Recovered.live`: the live events in acceptance order, each built when read (its attempts
    read back from disk), so recovery holds no object per event."""

    def __init__(self, journal: Journal, order: array[int]) -> None:
        self._j = journal
        self._order = order

    def __len__(self) -> int:
        return len(self._order)

    @overload
    def __getitem__(self, i: int) -> LiveEvent: ...

    @overload
    def __getitem__(self, i: slice) -> list[LiveEvent]: ...

    def __getitem__(self, i: int | slice) -> LiveEvent | list[LiveEvent]:
        if isinstance(i, slice):
            return [self._event(s) for s in self._order[i]]
        return self._event(self._order[i])

    def __iter__(self) -> Iterator[LiveEvent]:
        event = self._event
        for s in self._order:
            yield event(s)

    def _event(self, s: int) -> LiveEvent:
        idx = self._j._index
        dead = idx.dead.get(s)
        raw = idx.table.relay_bytes(s)
        return LiveEvent(
            idx.table.id_of(s) if raw is None else "evt_" + raw.hex(),
            idx.tenants[idx.tenant[s]],
            idx.severity[s],
            idx.accepted_at[s],
            self._j._read_attempts(s) if idx.has_attempts(s) else [],
            idx.get_due(s),
            dead is not None,
            dead[0] if dead else None,
            dead[1] if dead else None,
            raw,
        )
