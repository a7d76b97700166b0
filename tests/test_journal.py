"""Journal round trips, recovery from damage, disk errors, group commit, lock and check()."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import struct
import time
from pathlib import Path

import pytest

from relay.journal import Journal, JournalLocked, JournalUnavailable, Recovered, UnknownEvent, check
from relay.journal.records import MAGIC

Event = tuple[str, str, int, float, bytes]


def ev(i: int, size: int = 40) -> Event:
    blob = (f"payload-{i}-".encode() * (size // 8 + 1))[:size]
    return (f"ev-{i:05d}", f"tenant-{i % 3}", i % 4, 1_700_000_000.0 + i, blob)


def opened(data: Path, **kw: object) -> tuple[Journal, Recovered]:
    j = Journal(data, **kw)  # type: ignore[arg-type]
    return j, j.open()


def seg_path(data: Path, n: int = 1) -> Path:
    return data / "journal" / f"{n:08d}.seg"


def record_offsets(buf: bytes) -> list[tuple[int, int]]:
    """(start, end) of each record in a segment image."""
    out = []
    p = len(MAGIC)
    while p < len(buf):
        (blen,) = struct.unpack_from("<I", buf, p + 4)
        out.append((p, p + 8 + blen))
        p += 8 + blen
    return out


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


async def test_round_trip_through_reopen(tmp_path: Path) -> None:
    data = tmp_path / "data"
    j, rec = opened(data)
    assert len(rec.live) == 0 and rec.settled_count == 0 and rec.corrupt_records == 0
    events = [ev(i, size=100 + i) for i in range(6)]
    await j.accept(events[:3])
    await j.accept(events[3:])
    await j.attempt("ev-00000", b"attempt-0a", 1_700_000_100.0)
    await j.attempt("ev-00001", b"attempt-1a", 1_700_000_101.0)
    await j.attempt("ev-00001", b"attempt-1b", None)
    await j.delivered("ev-00002")
    await j.attempt("ev-00003", b"attempt-3a", 5.0)
    await j.dead("ev-00003", "HTTP 410 gone", 1_700_000_200.0)
    await j.dead("ev-00004", "too many attempts", 1_700_000_300.0)
    await j.requeue("ev-00004")
    await j.dead("ev-00005", "nope", 1_700_000_400.0)
    await j.purge("ev-00005")
    await j.delivered("ev-00002")  # settled already: a no-op
    assert j.is_live("ev-00000") and not j.is_live("ev-00002") and not j.is_live("ev-00005")
    with pytest.raises(UnknownEvent):
        await j.attempt("ev-00002", b"x", None)
    with pytest.raises(KeyError):
        j.read_blob("nope")
    for e in events:
        if j.is_live(e[0]):
            assert j.read_blob(e[0]) == e[4]
    assert j.bytes_total == seg_path(data).stat().st_size
    await j.close()

    j, rec = opened(data)
    assert [e.event_id for e in rec.live] == ["ev-00000", "ev-00001", "ev-00003", "ev-00004"]
    by_id = {e.event_id: e for e in rec.live}
    e0, e1, e3, e4 = (by_id[k] for k in ("ev-00000", "ev-00001", "ev-00003", "ev-00004"))
    assert (e0.tenant_id, e0.severity, e0.accepted_at) == ("tenant-0", 0, 1_700_000_000.0)
    assert e0.attempts == [b"attempt-0a"] and e0.next_due == 1_700_000_100.0 and not e0.dead
    assert e1.attempts == [b"attempt-1a", b"attempt-1b"] and e1.next_due is None
    assert e3.dead and e3.dead_reason == "HTTP 410 gone" and e3.failed_at == 1_700_000_200.0
    assert e3.attempts == [b"attempt-3a"]
    assert not e4.dead and e4.dead_reason is None and e4.next_due is None
    assert rec.settled_count == 2 and j.was_settled("ev-00002") and j.was_settled("ev-00005")
    for e in events:
        if j.is_live(e[0]):
            assert j.read_blob(e[0]) == e[4]
    await j.close()


async def test_segments_roll_and_blobs_read_across_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    j, _ = opened(data, segment_max_bytes=4096)
    events = [ev(i, size=700) for i in range(40)]
    for i in range(0, 40, 4):
        await j.accept(events[i : i + 4])
    segs = sorted((data / "journal").glob("*.seg"))
    assert len(segs) >= 6
    assert all(p.stat().st_size <= 4096 for p in segs)
    assert j.bytes_total == sum(p.stat().st_size for p in segs)
    await j.close()
    j, rec = opened(data, segment_max_bytes=4096)
    assert [e.event_id for e in rec.live] == [e[0] for e in events]
    assert all(j.read_blob(e[0]) == e[4] for e in events)
    await j.close()


async def _write_journal(data: Path, events: list[Event], **kw: object) -> None:
    j, _ = opened(data, **kw)
    for e in events:
        await j.accept([e])
    await j.close()


async def test_torn_tail_at_every_offset_of_the_last_record(tmp_path: Path) -> None:
    src = tmp_path / "src"
    events = [ev(i, size=24) for i in range(5)]
    await _write_journal(src, events)
    image = seg_path(src).read_bytes()
    start, end = record_offsets(image)[-1]
    assert end == len(image)
    for cut in range(start + 1, end):
        data = tmp_path / f"cut{cut}"
        seg_path(data).parent.mkdir(parents=True)
        seg_path(data).write_bytes(image[:cut])
        j, rec = opened(data, fsync="never")  # fsyncs would only slow this loop down
        assert [e.event_id for e in rec.live] == [e[0] for e in events[:-1]], cut
        assert rec.torn_tail_bytes == cut - start and rec.corrupt_records == 0
        assert seg_path(data).stat().st_size == start
        # The journal is writable where the tail was cut, and the result replays cleanly.
        await j.accept([events[-1]])
        await j.close()
        j, rec = opened(data, fsync="never")
        assert [e.event_id for e in rec.live] == [e[0] for e in events]
        assert rec.torn_tail_bytes == 0
        await j.close()


async def test_torn_tail_inside_the_segment_header(tmp_path: Path) -> None:
    data = tmp_path / "data"
    seg_path(data).parent.mkdir(parents=True)
    seg_path(data).write_bytes(MAGIC[:3])
    j, rec = opened(data)
    assert rec.torn_tail_bytes == 3 and len(rec.live) == 0
    await j.accept([ev(1)])
    await j.close()
    j, rec = opened(data)
    assert [e.event_id for e in rec.live] == ["ev-00001"]
    await j.close()


async def test_flipped_bytes_cost_only_the_damaged_record(tmp_path: Path) -> None:
    src = tmp_path / "src"
    events = [ev(i, size=500) for i in range(20)]
    await _write_journal(src, events, segment_max_bytes=4096)
    segs = sorted((src / "journal").glob("*.seg"))
    assert len(segs) >= 3
    # Which events live in which segment, from the untouched journal.
    layout: list[list[str]] = []
    k = 0
    for p in segs:
        n = len(record_offsets(p.read_bytes()))
        layout.append([e[0] for e in events[k : k + n]])
        k += n
    images = {p.name: p.read_bytes() for p in segs}
    runs = 0
    for si in (1, len(segs) - 1):  # a segment in the middle of the journal, and the head
        name = segs[si].name
        image = images[name]
        recs = record_offsets(image)
        last_rec = len(recs) - 1 if si == len(segs) - 1 else len(recs)
        for ri, (start, end) in enumerate(recs[:last_rec]):
            for pos in sorted({start, start + 4, start + 9, (start + end) // 2, end - 1}):
                runs += 1
                data = tmp_path / f"flip{runs}"
                (data / "journal").mkdir(parents=True)
                for other, content in images.items():
                    (data / "journal" / other).write_bytes(content)
                damaged = bytearray(image)
                damaged[pos] ^= 0x5A
                (data / "journal" / name).write_bytes(bytes(damaged))
                seen: list[int] = []
                j, rec = opened(data, segment_max_bytes=4096, on_corrupt=seen.append)
                # Recovery resynchronises on the next record: only the damaged one is lost.
                lost = layout[si][ri]
                expect = [eid for ids in layout for eid in ids if eid != lost]
                assert [e.event_id for e in rec.live] == expect, (name, ri, pos)
                assert rec.corrupt_records == 1 and seen == [1] and rec.torn_tail_bytes == 0
                moved = list((data / "corrupt").iterdir())
                assert len(moved) == 1 and moved[0].name == f"{name}.{start}.bad"
                assert moved[0].read_bytes() == bytes(damaged[start:end])
                # Last record of the segment: nothing to resync on, the segment is cut there.
                size = start if end == len(image) else len(image)
                assert (data / "journal" / name).stat().st_size == size
                await j.close()
                # Corruption was dealt with once (covered by a PAD record); the next start is clean.
                j, rec = opened(data, segment_max_bytes=4096)
                assert rec.corrupt_records == 0 and [e.event_id for e in rec.live] == expect
                await j.accept([ev(900)])  # and the journal takes new records after it
                await j.close()
                j, rec = opened(data, segment_max_bytes=4096)
                assert rec.live[-1].event_id == "ev-00900" and len(rec.live) == len(expect) + 1
                await j.close()
    assert runs > 20


async def test_flipped_byte_in_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    data = tmp_path / "data"
    events = [ev(i) for i in range(4)]
    await _write_journal(data, events)
    image = bytearray(seg_path(data).read_bytes())
    start, end = record_offsets(bytes(image))[-1]
    image[(start + end) // 2] ^= 1
    seg_path(data).write_bytes(bytes(image))
    j, rec = opened(data)
    assert [e.event_id for e in rec.live] == [e[0] for e in events[:-1]]
    assert rec.torn_tail_bytes == end - start and rec.corrupt_records == 0
    # Nothing is thrown away silently, even a torn tail.
    assert [p.name for p in (data / "corrupt").iterdir()] == [f"00000001.seg.{start}.torn"]
    await j.close()


class Flaky:
    """Write/fsync seams that fail on demand, like a full or failing disk."""

    def __init__(self) -> None:
        self.fail_write = False
        self.fail_fsync = False
        self.partial = False

    def write(self, fd: int, data: bytes) -> int:
        if self.fail_write:
            if self.partial and len(data) > 1:
                self.partial = False
                return os.write(fd, data[: len(data) // 2])  # half a batch lands, then ENOSPC
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        if self.fail_fsync:
            raise OSError(errno.EIO, "Input/output error")
        os.fdatasync(fd)


@pytest.mark.parametrize("how", ["enospc", "partial", "fsync-eio"])
async def test_disk_errors_refuse_then_recover(tmp_path: Path, how: str) -> None:
    data = tmp_path / "data"
    flaky = Flaky()
    j, _ = opened(data, _write=flaky.write, _fsync=flaky.fsync, segment_max_bytes=4096)
    await j.accept([ev(0), ev(1)])
    assert j.healthy and await j.probe()
    flaky.fail_write = how != "fsync-eio"
    flaky.partial = how == "partial"
    flaky.fail_fsync = how == "fsync-eio"
    size_before = j.bytes_total
    with pytest.raises(JournalUnavailable):
        await j.accept([ev(2, size=500), ev(3, size=500)])
    results = await asyncio.gather(*(j.accept([ev(i)]) for i in range(4, 8)), return_exceptions=True)
    assert all(isinstance(r, JournalUnavailable) for r in results)
    # After a failed write or fsync the head is abandoned: the next commit starts a new segment,
    # and that roll makes the old head durable first, so even a progress record (which needs no
    # fsync of its own) fails while the disk does.
    with pytest.raises(JournalUnavailable):
        await j.attempt("ev-00000", b"a", None)
    assert not j.healthy and not await j.probe() and not j.healthy
    assert not j.is_live("ev-00002")
    # Nothing of a failed batch stays on disk, so the file never holds garbage mid-way.
    on_disk = sum(p.stat().st_size for p in (data / "journal").glob("*.seg"))
    assert on_disk == size_before
    head_before = max(int(p.stem) for p in (data / "journal").glob("*.seg"))
    flaky.fail_write = flaky.fail_fsync = False
    assert await j.probe() and j.healthy
    await j.accept([ev(8)])
    assert max(int(p.stem) for p in (data / "journal").glob("*.seg")) == head_before + 1
    await j.attempt("ev-00000", b"a", None)
    assert j.healthy
    # Rolls a few segments after the failure too.
    for i in range(9, 30):
        await j.accept([ev(i, size=400)])
    await j.close()
    j, rec = opened(data)
    assert [e.event_id for e in rec.live] == [ev(i)[0] for i in (0, 1, 8, *range(9, 30))]
    assert rec.corrupt_records == 0 and rec.torn_tail_bytes == 0
    assert rec.live[0].attempts == [b"a"]
    await j.close()


async def test_recovers_through_next_append_without_probe(tmp_path: Path) -> None:
    data = tmp_path / "data"
    flaky = Flaky()
    j, _ = opened(data, _write=flaky.write)
    flaky.fail_write = True
    with pytest.raises(JournalUnavailable):
        await j.accept([ev(0)])
    assert not j.healthy
    flaky.fail_write = False
    await j.accept([ev(1)])
    assert j.healthy
    await j.close()


async def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    fsyncs: list[float] = []
    j, _ = opened(tmp_path / "data", on_fsync=fsyncs.append)
    await asyncio.gather(*(j.accept([ev(i)]) for i in range(200)))
    n = len(fsyncs)
    assert n <= 20, n
    assert all(s >= 0 for s in fsyncs)
    print(f"\n200 concurrent accept() calls -> {n} fdatasync calls")
    await j.close()
    j, rec = opened(tmp_path / "data")
    assert len(rec.live) == 200
    await j.close()


async def test_fsync_always_and_never(tmp_path: Path) -> None:
    fsyncs: list[float] = []
    j, _ = opened(tmp_path / "a", fsync="always", on_fsync=fsyncs.append)
    await asyncio.gather(*(j.accept([ev(i)]) for i in range(20)))
    assert len(fsyncs) == 20
    await j.close()
    fsyncs.clear()
    j, _ = opened(tmp_path / "n", fsync="never", on_fsync=fsyncs.append)
    await asyncio.gather(*(j.accept([ev(i)]) for i in range(20)))
    assert fsyncs == []
    await j.close()  # close still makes it durable
    assert len(fsyncs) == 1
    j, rec = opened(tmp_path / "n")
    assert len(rec.live) == 20
    await j.close()


async def test_second_journal_is_locked_out(tmp_path: Path) -> None:
    data = tmp_path / "data"
    j, _ = opened(data)
    other = Journal(data)
    with pytest.raises(JournalLocked) as info:
        other.open()
    assert info.value.pid == os.getpid()
    assert str(os.getpid()) in str(info.value)
    rep = check(data)
    assert rep.locked and rep.locked_pid == os.getpid()
    await j.close()
    j, _ = opened(data)
    await j.close()
    assert not check(data).locked


async def test_check_counts_and_reports_corruption_read_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    j, _ = opened(data, segment_max_bytes=4096)
    for i in range(12):
        await j.accept([ev(i, size=400)])
    await j.delivered("ev-00000")
    await j.dead("ev-00001", "gone", 1.0)
    await j.attempt("ev-00002", b"x", None)
    await j.close()
    rep = check(data)
    nsegs = len(list((data / "journal").glob("*.seg")))
    assert (rep.segments, rep.records, rep.events) == (nsegs, 15, 12)
    assert (rep.pending, rep.dead, rep.settled) == (10, 1, 1)
    assert rep.ok and rep.corrupt_records == 0 and rep.torn_tail_bytes == 0 and not rep.locked
    assert "status: OK" in rep.format()

    image = bytearray(seg_path(data).read_bytes())
    start, _ = record_offsets(bytes(image))[0]
    image[start + 20] ^= 0xFF
    seg_path(data).write_bytes(bytes(image))
    before = tree_digest(data)
    rep = check(data)
    assert not rep.ok and rep.corrupt_records == 1
    text = rep.format()
    assert "CORRUPT" in text and f"00000001.seg at offset {start}" in text
    # Each damaged range is reported with its length and the intact records that follow it.
    assert f"{record_offsets(bytes(image))[1][0] - start} bytes" in text and "intact records follow" in text
    assert tree_digest(data) == before and not (data / "corrupt").exists()

    # A torn tail is reported but is not corruption.
    j, _ = opened(data, segment_max_bytes=4096)
    await j.close()
    last = sorted((data / "journal").glob("*.seg"))[-1]
    with open(last, "ab") as f:
        f.write(b"\x01\x02\x03")
    rep = check(data)
    assert rep.ok and rep.torn_tail_bytes == 3 and rep.quarantined_files == 1


def test_check_missing_dir(tmp_path: Path) -> None:
    assert not check(tmp_path / "nope").ok
    (tmp_path / "empty").mkdir()
    rep = check(tmp_path / "empty")
    assert rep.ok and rep.segments == 0


async def test_recovery_time_100k(tmp_path: Path) -> None:
    data = tmp_path / "data"
    j, _ = opened(data, fsync="never")
    n = 100_000
    blob = b"x" * 64
    for b in range(0, n, 5000):
        await j.accept([(f"evt_{i:08d}", "tenant", 1, 1.7e9 + i, blob) for i in range(b, b + 5000)])
    await j.close()
    t0 = time.perf_counter()
    j, rec = opened(data)
    took = time.perf_counter() - t0
    assert len(rec.live) == n
    print(f"\nrecovery of {n} pending events: {took:.3f} s")
    await j.close()


async def test_failure_after_a_roll_undoes_new_segments(tmp_path: Path) -> None:
    data = tmp_path / "data"
    calls = {"n": 0, "fail_at": -1}

    def write(fd: int, buf: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == calls["fail_at"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, buf)

    j, _ = opened(data, _write=write, segment_max_bytes=4096)
    await j.accept([ev(0, 500)])
    before = tree_digest(data / "journal")
    calls["fail_at"] = calls["n"] + 3  # the batch below writes one chunk per segment
    with pytest.raises(JournalUnavailable):
        await j.accept([ev(i, 1500) for i in range(1, 10)])
    assert tree_digest(data / "journal") == before
    await j.accept([ev(i, 1500) for i in range(1, 10)])
    await j.close()
    j, rec = opened(data)
    assert len(rec.live) == 10 and rec.corrupt_records == 0 and rec.torn_tail_bytes == 0
    assert all(j.read_blob(ev(i)[0]) == ev(i, 1500)[4] for i in range(1, 10))
    await j.close()


async def test_cancelled_caller_does_not_break_the_writer(tmp_path: Path) -> None:
    j, _ = opened(tmp_path / "data")
    task = asyncio.ensure_future(j.accept([ev(0)]))
    await asyncio.sleep(0)
    task.cancel()
    await j.accept([ev(1)])
    assert j.is_live(ev(1)[0])
    await j.close()
    await j.close()  # twice is fine


async def test_a_lazy_batch_that_rolls_makes_the_old_head_durable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    synced: list[int] = []

    def fsync(fd: int) -> None:
        synced.append(fd)
        os.fdatasync(fd)

    j, _ = opened(data, _fsync=fsync, segment_max_bytes=4096)
    await j.accept([ev(0)])
    synced.clear()
    # Progress records need no fsync of their own... until one rolls to a new segment.
    for _ in range(120):
        await j.attempt("ev-00000", b"x" * 60, None)
    assert len(list((data / "journal").glob("*.seg"))) >= 2
    assert synced, "the old head must be fsynced before records land in the next segment"
    await j.close()
