"""The packed event table (relay/journal/table.py): the id index, slots, the id arena and the
settled-id window, against plain dict/set models."""

from __future__ import annotations

import random
import secrets

import pytest

from relay.journal.state import Index
from relay.journal.table import EventTable, SettledIds, pack_id


def relay_id() -> str:
    return "evt_" + secrets.token_hex(12)


def test_relay_ids_are_stored_as_twelve_bytes_and_client_ids_as_utf8() -> None:
    rid = relay_id()
    assert pack_id(rid)[0] == bytes.fromhex(rid[4:])
    assert pack_id("order-17/ü") == ("order-17/ü".encode(), len("order-17/ü".encode()))
    assert pack_id("evt_" + "G" * 24)[0] == b"evt_" + b"G" * 24  # not hex: kept as text
    t = EventTable()
    slots = {i: t.add(i) for i in (rid, "order-17/ü", "evt_short", "")}
    for i, s in slots.items():
        assert t.find(i) == s and t.id_of(s) == i
    assert t.find(relay_id()) == -1 and t.find("order-17") == -1


def test_a_client_id_with_a_relay_ids_bytes_is_a_different_id() -> None:
    t = EventTable()
    rid = relay_id()
    raw = bytes.fromhex(rid[4:])
    twin = raw.decode("latin-1")  # 12 characters; its UTF-8 differs, but the length check is what matters
    a = t.add(rid)
    assert t.find(twin) == -1
    b = t.add(twin)
    assert a != b and t.find(rid) == a and t.find(twin) == b


class _Collide(str):
    """A str whose hash is fixed: every id lands on the same bucket."""

    __slots__ = ()

    def __hash__(self) -> int:
        return 42


def test_hash_collisions_are_told_apart_by_the_stored_id() -> None:
    t = EventTable()
    ids = [_Collide(f"c{i}") for i in range(50)]
    slots = [t.add(i) for i in ids]
    assert len(set(slots)) == 50
    for i, s in zip(ids, slots, strict=True):
        assert t.find(i) == s
    assert t.find(_Collide("c50")) == -1
    # Remove every other one: the probe chain must still reach the ones behind the tombstones.
    for i, s in zip(ids[::2], slots[::2], strict=True):
        t.remove(s, i)
    for k, (i, s) in enumerate(zip(ids, slots, strict=True)):
        assert t.find(i) == (-1 if k % 2 == 0 else s)


def test_growth_deletion_and_reuse_match_a_dict_model() -> None:
    rnd = random.Random(7)
    t = EventTable()
    model: dict[str, int] = {}
    for step in range(30_000):
        if model and rnd.random() < 0.45:
            eid = rnd.choice(list(model)) if step % 97 == 0 else next(iter(model))
            t.remove(model.pop(eid))
        else:
            eid = relay_id() if rnd.random() < 0.7 else f"client-{step}-{'x' * rnd.randrange(40)}"
            model[eid] = t.add(eid)
    assert len(t) == len(model)
    assert len(set(model.values())) == len(model)  # no slot handed out twice
    for eid, s in model.items():
        assert t.find(eid) == s and t.id_of(s) == eid
    assert sorted(t.slots()) == sorted(model.values())
    # The bucket array stays within its load factor, tombstones included.
    assert t.buckets >= len(model) * 10 // 7


def test_freed_slots_are_reused_and_the_arena_is_compacted() -> None:
    t = EventTable()
    big = [f"client-id-{i:06d}-" + "y" * 100 for i in range(2000)]
    slots = [t.add(i) for i in big]
    arena_full = t.nbytes()
    for s in slots[:1500]:
        t.remove(s)
    # Garbage outweighed the live ids: the arena was rewritten with the 500 left.
    assert t.nbytes() < arena_full - 1000 * 100
    for i, s in zip(big[1500:], slots[1500:], strict=True):
        assert t.find(i) == s and t.id_of(s) == i
    again = [t.add(relay_id()) for _ in range(1500)]
    assert set(again) == set(slots[:1500])  # freed slots come back before new ones
    assert max(again) < 2000


def test_a_drained_table_gives_its_memory_back() -> None:
    t = EventTable()
    col = t.column("d")
    slots = [t.add(relay_id()) for _ in range(5000)]
    assert len(col) >= 5000
    for s in slots:
        t.remove(s)
    assert len(t) == 0 and len(col) == 0
    s = t.add("again")
    assert t.find("again") == s == 0 and len(col) >= 1


def test_a_slot_removed_while_pinned_is_not_reused_until_released() -> None:
    t = EventTable()
    a = t.add("a")
    t.remove(a, reuse=False)
    assert t.removed(a) and t.find("a") == -1
    b = t.add("b")
    assert b != a
    t.reuse_later(a)
    assert t.add("c") == a


def test_index_pins_keep_a_settled_slot_from_changing_hands() -> None:
    idx = Index()
    idx.accepted("x", 1, 8, 100, 40, "t", 1, 5.0)
    s = idx.find("x")
    idx.pin(s)
    assert idx.settle("x", 1, 6.0)
    assert idx.find("x") == -1 and "x" in idx.settled
    idx.accepted("y", 1, 108, 100, 40, "t", 1, 6.0)
    assert idx.find("y") != s
    idx.unpin(s)
    idx.accepted("z", 1, 208, 100, 40, "t", 1, 7.0)
    assert idx.find("z") == s


def test_index_live_order_is_acceptance_order() -> None:
    idx = Index()
    for i in range(10):
        idx.accepted(f"e{i}", 1, 8 + 100 * i, 100, 40, "t", 1, 100.0 + i // 3)  # batches share a time
    idx.settle("e2", 2, 200.0)
    # Older events moved forward by compaction (snapshots) go back to their place; ties on the
    # accept time keep the order the records appeared in.
    idx.snapshot("late", 2, 8, 100, 40, None, None, "t", 1, 50.0)
    idx.snapshot("mid", 2, 108, 100, 40, None, None, "t", 1, 101.0)
    idx.snapshot("last", 2, 208, 100, 40, None, None, "t", 1, 500.0)
    order = [idx.table.id_of(s) for s in idx.live_slots()]
    assert order == ["late", "e0", "e1", "e3", "e4", "e5", "mid", "e6", "e7", "e8", "e9", "last"]


def test_settled_ids_prune_by_time_and_count_and_survive_resettling() -> None:
    st = SettledIds()
    for i in range(100):
        st.add(f"id{i}", float(i))
    st.add("id5", 500.0)  # settled again later: its newer time counts
    assert len(st) == 100 and "id5" in st and "id99" in st and "nope" not in st
    assert st.prune(50.0) == 49  # id0..id49 except id5
    assert "id5" in st and "id49" not in st and "id50" in st and len(st) == 51
    assert st.prune(0.0, keep=10) == 41
    assert len(st) == 10 and "id5" in st and "id91" in st and "id90" not in st
    assert [ts for _, ts in st.items()] == [*(float(i) for i in range(91, 100)), 500.0]


def test_settled_ids_sort_puts_checkpointed_ids_in_time_order() -> None:
    st = SettledIds()
    st.add("young", 100.0)
    st.add("old", 1.0)
    assert st.prune(50.0) == 0  # the young one first in the ring stops the scan
    st.sort()
    assert st.prune(50.0) == 1 and "old" not in st and "young" in st


@pytest.mark.parametrize("n", [0, 1, 5000])
def test_settled_ids_ring_wraps_and_stays_consistent(n: int) -> None:
    st = SettledIds()
    t = 0.0
    for round_no in range(4):
        for i in range(n):
            t += 1.0
            st.add(f"r{round_no}-{i}", t)
        st.prune(t - n / 2)  # keeps about half of this round
        assert len(st) == len(list(st.items()))
        assert all(f"r{round_no}-{i}" in st for i in range(n - n // 2 + 1, n))
        if n > 1:
            assert f"r{round_no}-0" not in st


def test_dead_reasons_are_shared_between_dead_letters() -> None:
    idx = Index()
    for i in range(3):
        idx.accepted(f"d{i}", 1, 8 + 100 * i, 100, 40, "t", 1, 1.0)
        idx.dead_at(f"d{i}", 1, 400 + 100 * i, 60, "".join(["HTTP 500 ", "after 6 attempts"]), 2.0)
    reasons = [r for r, _ in idx.dead.values()]
    assert reasons == ["HTTP 500 after 6 attempts"] * 3
    assert reasons[0] is reasons[1] is reasons[2]
    long = "x" * 300
    idx.accepted("d9", 1, 900, 100, 40, "t", 1, 1.0)
    idx.dead_at("d9", 1, 1000, 60, long, 2.0)
    assert long not in idx._reasons  # long, likely unique reasons are not kept after their dead letter
