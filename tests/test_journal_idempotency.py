"""Settled ids are remembered for idempotency, bounded by time and by count."""

from __future__ import annotations

from pathlib import Path

from relay.journal import Journal


async def test_settled_ids_survive_restart_and_are_capped(tmp_path: Path) -> None:
    j = Journal(tmp_path, idempotency_max=3)
    j.open()
    ids = [f"evt_{i}" for i in range(5)]
    await j.accept([(eid, "t", 1, 0.0, b"blob") for eid in ids])
    for eid in ids:
        await j.delivered(eid)
    assert all(j.was_settled(eid) for eid in ids)
    await j.compact()  # prunes to the newest 3
    assert [j.was_settled(eid) for eid in ids] == [False, False, True, True, True]
    await j.close()

    again = Journal(tmp_path, idempotency_max=3)
    rec = again.open()
    assert len(rec.live) == 0
    assert [again.was_settled(eid) for eid in ids] == [False, False, True, True, True]
    await again.close()


async def test_settled_ids_expire_with_the_window(tmp_path: Path) -> None:
    now = [1000.0]
    j = Journal(tmp_path, idempotency_window=60.0, _clock=lambda: now[0])
    j.open()
    await j.accept([("evt_old", "t", 1, 0.0, b"b")])
    await j.delivered("evt_old")
    now[0] += 120.0
    await j.accept([("evt_new", "t", 1, 0.0, b"b")])
    await j.delivered("evt_new")
    await j.compact()
    assert not j.was_settled("evt_old") and j.was_settled("evt_new")
    await j.close()
