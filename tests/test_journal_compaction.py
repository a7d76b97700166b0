"""Compaction: removal of settled segments, rewrite forward, retention, crash between steps."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from relay.journal import Journal, Recovered

SEG = 4096
DAY = 86400.0


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def ev(i: int, size: int = 500) -> tuple[str, str, int, float, bytes]:
    return (f"ev-{i:04d}", "tenant", 1, 1_700_000_000.0 + i, bytes([i % 251]) * size)


def segs(data: Path) -> list[str]:
    return sorted(p.name for p in (data / "journal").glob("*.seg"))


def opened(data: Path, clock: Clock | None = None, **kw: float) -> tuple[Journal, Recovered]:
    j = Journal(data, segment_max_bytes=SEG, _clock=clock or Clock(), **kw)  # type: ignore[arg-type]
    return j, j.open()


def settled_exactly(j: Journal, rec: Recovered, ids: set[str]) -> bool:
    """The journal remembers exactly `ids` as settled (it keeps their hashes, not the ids)."""
    return rec.settled_count == len(ids) and all(j.was_settled(i) for i in ids)


async def fill(j: Journal, n: int, size: int = 500) -> None:
    for i in range(n):
        await j.accept([ev(i, size)])


async def test_settled_segments_removed_and_ids_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    j, _ = opened(data)
    await fill(j, 30)
    before = segs(data)
    assert len(before) >= 4
    for i in range(20):
        await j.delivered(ev(i)[0])
    size = j.bytes_total
    await j.compact()
    after = segs(data)
    assert len(after) < len(before) and after[-1] == before[-1]
    assert j.bytes_total < size
    assert (data / "journal" / "CHECKPOINT").exists()
    assert all(j.read_blob(ev(i)[0]) == ev(i)[4] for i in range(20, 30))
    await j.close()
    j, rec = opened(data)
    assert [e.event_id for e in rec.live] == [ev(i)[0] for i in range(20, 30)]
    assert settled_exactly(j, rec, {ev(i)[0] for i in range(20)})
    await j.close()


async def test_mostly_settled_segment_rewritten_forward(tmp_path: Path) -> None:
    data = tmp_path / "data"
    j, _ = opened(data)
    await fill(j, 48, 250)
    first = segs(data)[0]
    # Keep one event of the first segment alive, with attempts and a dead-letter state.
    await j.attempt(ev(1)[0], b"attempt-1", 123.0)
    await j.attempt(ev(1)[0], b"attempt-2", 456.0)
    await j.dead(ev(1)[0], "HTTP 500 forever", 1_699_999_000.0)
    await j.attempt(ev(2)[0], b"a", 99.0)
    await j.dead(ev(2)[0], "x", 1_699_999_500.0)
    await j.requeue(ev(2)[0])
    for i in range(48):
        if i not in (1, 2):
            await j.delivered(ev(i)[0])
    await j.compact()
    assert first not in segs(data)
    assert j.read_blob(ev(1)[0]) == ev(1, 250)[4] and j.read_blob(ev(2)[0]) == ev(2, 250)[4]
    await j.close()

    j, rec = opened(data)
    assert [e.event_id for e in rec.live] == [ev(1)[0], ev(2)[0]]
    e1, e2 = rec.live
    assert e1.attempts == [b"attempt-1", b"attempt-2"] and e1.next_due == 456.0
    assert e1.dead and e1.dead_reason == "HTTP 500 forever" and e1.failed_at == 1_699_999_000.0
    assert (e1.tenant_id, e1.severity, e1.accepted_at) == ("tenant", 1, ev(1)[3])
    assert e2.attempts == [b"a"] and e2.next_due is None and not e2.dead
    assert j.read_blob(ev(1)[0]) == ev(1, 250)[4]
    # A snapshot can be moved forward again, and events keep changing after the move.
    await j.attempt(ev(2)[0], b"b", 7.0)
    await fill_more(j, 100, 20)
    await j.compact()
    await j.close()
    j, rec = opened(data)
    by_id = {e.event_id: e for e in rec.live}
    assert by_id[ev(2)[0]].attempts == [b"a", b"b"] and by_id[ev(2)[0]].next_due == 7.0
    assert by_id[ev(1)[0]].dead and j.read_blob(ev(1)[0]) == ev(1, 250)[4]
    await j.close()


async def fill_more(j: Journal, start: int, n: int) -> None:
    for i in range(start, start + n):
        await j.accept([ev(i)])
        await j.delivered(ev(i)[0])


async def test_retention_purges_old_dead_letters(tmp_path: Path) -> None:
    data = tmp_path / "data"
    clock = Clock()
    j, _ = opened(data, clock, dead_letter_retention=30 * DAY)
    await fill(j, 3)
    await j.dead(ev(0)[0], "old", clock.t - 31 * DAY)
    await j.dead(ev(1)[0], "young", clock.t - 29 * DAY)
    await j.compact()
    assert not j.is_live(ev(0)[0]) and j.is_live(ev(1)[0]) and j.is_live(ev(2)[0])
    await j.close()
    j, rec = opened(data, clock)
    assert [e.event_id for e in rec.live] == [ev(1)[0], ev(2)[0]]
    assert j.was_settled(ev(0)[0])
    await j.close()


async def test_idempotency_window_expires(tmp_path: Path) -> None:
    data = tmp_path / "data"
    clock = Clock()
    j, _ = opened(data, clock, idempotency_window=100.0)
    await fill(j, 30)
    for i in range(30):
        await j.delivered(ev(i)[0])
    clock.t += 50
    await fill_more(j, 100, 1)
    clock.t += 60  # the first 30 are now 110 s old, ev-0100 50 s
    await j.compact()
    await j.close()
    j, rec = opened(data, clock, idempotency_window=100.0)
    assert settled_exactly(j, rec, {ev(100)[0]})
    await j.close()


async def test_crash_between_checkpoint_and_unlink(tmp_path: Path) -> None:
    data = tmp_path / "data"
    j, _ = opened(data)
    await fill(j, 30)
    for i in range(25):
        await j.delivered(ev(i)[0])
    saved = tmp_path / "saved"
    shutil.copytree(data / "journal", saved / "journal")
    await j.compact()
    removed = sorted(set(segs(saved)) - set(segs(data)))
    assert removed
    await j.close()
    # The crash: the checkpoint is on disk but the segments were never unlinked.
    for name in removed:
        shutil.copy(saved / "journal" / name, data / "journal" / name)
    j, rec = opened(data)
    assert [e.event_id for e in rec.live] == [ev(i)[0] for i in range(25, 30)]
    assert settled_exactly(j, rec, {ev(i)[0] for i in range(25)})
    assert rec.corrupt_records == 0
    await j.compact()  # and the next compaction finishes the job
    assert not set(removed) & set(segs(data))
    await j.close()


async def test_no_resurrection_when_later_segment_removed_first(tmp_path: Path) -> None:
    """An event accepted in an old segment and settled in a later, removable one must not come back
    to life because the later segment went while the old one stayed."""
    data = tmp_path / "data"
    j, _ = opened(data)
    await fill(j, 8)  # segment 1 (and a bit of 2)
    # Keep segment 1 more than 25% live so it is neither removed nor rewritten.
    for i in range(100, 130):
        await j.accept([ev(i)])
        await j.delivered(ev(i)[0])
    await j.delivered(ev(0)[0])  # settles an event of segment 1 in a much later segment
    for i in range(130, 140):
        await j.accept([ev(i)])
        await j.delivered(ev(i)[0])
    await j.compact()
    await j.close()
    j, rec = opened(data)
    assert ev(0)[0] not in {e.event_id for e in rec.live}
    assert {e.event_id for e in rec.live} == {ev(i)[0] for i in range(1, 8)}
    await j.close()


class Model:
    def __init__(self) -> None:
        self.live: dict[str, tuple[list[bytes], float | None, tuple[str, float] | None, bytes]] = {}
        self.settled: set[str] = set()


@pytest.mark.parametrize("seed", range(4))
async def test_random_operations_match_a_model(tmp_path: Path, seed: int) -> None:
    """Random operations, compactions and restarts: the journal always replays to the model."""
    rnd = random.Random(seed)
    data = tmp_path / "data"
    m = Model()
    j, _ = opened(data)
    n = 0
    for step in range(400):
        op = rnd.random()
        ids = list(m.live)
        if op < 0.3 or not ids:
            batch = []
            for _ in range(rnd.randint(1, 3)):
                e = ev(n, rnd.randint(1, 900))
                n += 1
                batch.append(e)
                m.live[e[0]] = ([], None, None, e[4])
            await j.accept(batch)
            continue
        eid = rnd.choice(ids)
        atts, due, dead, blob = m.live[eid]
        if op < 0.5:
            a = rnd.randbytes(rnd.randint(0, 200))
            nd = rnd.choice([None, float(step)])
            await j.attempt(eid, a, nd)
            m.live[eid] = ([*atts, a], nd, dead, blob)
        elif op < 0.6:
            reason = f"r{step}"
            await j.dead(eid, reason, 1_700_000_000.0 - step)
            m.live[eid] = (atts, due, (reason, 1_700_000_000.0 - step), blob)
        elif op < 0.65:
            await j.requeue(eid)
            if dead is not None:
                m.live[eid] = (atts, None, None, blob)
        elif op < 0.85:
            await (j.delivered(eid) if rnd.random() < 0.8 else j.purge(eid))
            del m.live[eid]
            m.settled.add(eid)
        elif op < 0.95:
            await j.compact()
        else:
            await j.close()
            j, rec = opened(data)
            assert rec.corrupt_records == 0 and rec.torn_tail_bytes == 0
            assert settled_exactly(j, rec, m.settled)
            got = {
                e.event_id: (e.attempts, e.next_due, (e.dead_reason, e.failed_at) if e.dead else None) for e in rec.live
            }
            assert got == {k: v[:3] for k, v in m.live.items()}
            assert [e.event_id for e in rec.live] == sorted(m.live)  # ids grow with accept order
        for k, v in m.live.items():
            assert j.read_blob(k) == v[3]
    await j.compact()
    await j.close()
    j, rec = opened(data)
    assert {e.event_id for e in rec.live} == set(m.live) and settled_exactly(j, rec, m.settled)
    await j.close()
