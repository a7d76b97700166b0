"""A backlog kept packed (relay/delivery/scheduler.py `Spill`): past a tenant's window, new first
attempts wait as packed ids and become entries as their ready queue drains, in the same order,
and the engine answers for them (status, view, counts, duplicates, restart)."""

from __future__ import annotations

import secrets
from typing import Any

from prometheus_client import CollectorRegistry

from relay.config import Snapshot, TenantConfig, parse_tenant
from relay.delivery import DeliveryEngine, Entry
from relay.delivery.scheduler import REFILL, Spill, TenantState
from relay.events import StoredEvent, encode_stored
from relay.journal import Recovered
from relay.journal.model import LiveEvent
from relay.metrics import Metrics
from tests.memstore import MemoryStore


def tenant(**kw: Any) -> TenantConfig:
    data = {"tenant_id": "t", "base_url": "http://127.0.0.1:9/hook", "secret_key": "s", **kw}
    return parse_tenant(data, "test")


def test_spill_keeps_order_and_ids_through_buffer_compaction() -> None:
    sp = Spill()
    ids = [("evt_" + secrets.token_hex(12)) if i % 3 else f"client/{i}/ü" for i in range(20_000)]
    for i, eid in enumerate(ids[:15_000]):
        sp.push(eid, float(i))
    out = [sp.pop() for _ in range(10_000)]  # past the 64 KiB point: the read prefix is dropped
    for i, eid in enumerate(ids[15_000:]):
        sp.push(eid, float(15_000 + i))
    out += [sp.pop() for _ in range(len(sp))]
    assert out == [(eid, float(i)) for i, eid in enumerate(ids)]
    assert len(sp) == 0 and sp.nbytes() == 0  # empty gives its buffers back
    sp.push("evt_" + "0" * 24, 1.0)
    assert sp.nbytes() == 13 + 8  # a relay id costs its 12 bytes, a marker and its time


def claim_all(ts: TenantState, cfg: TenantConfig, now: float) -> list[str]:
    out = []
    while isinstance(got := ts.claim(cfg, now), tuple):
        e = got[0]
        out.append(e.event_id)
        ts.finished(False)
        ts.drop_pending(e, now)
    return out


def test_past_the_window_events_spill_and_come_back_by_severity_then_arrival() -> None:
    ts, cfg, now = TenantState("t", window=4), tenant(), 100.0
    made: list[Entry] = []
    ts.on_unspill = made.append
    sevs = [1, 1, 3, 1, 0, 3, 1, 2, 0, 3] * 100
    for i, sev in enumerate(sevs):
        eid = f"e{i:04d}"
        if not ts.try_spill(eid, sev, float(i)):
            e = Entry(eid, "t", sev, float(i))
            ts.add_pending(e)
            ts.admit(e, None, now)
    assert len(ts.pending) == 4 and ts.spilled == len(sevs) - 4 and ts.pending_count == len(sevs)
    assert ts.oldest_spilled() == 4.0
    got = claim_all(ts, cfg, now)
    expect = sorted((f"e{i:04d}" for i in range(len(sevs))), key=lambda eid: (-sevs[int(eid[1:])], eid))
    assert got == expect
    assert ts.spilled == 0 and not ts.pending and ts.idle()
    assert {e.event_id for e in made} == set(expect) - {f"e{i:04d}" for i in range(4)}


def test_a_severity_that_spills_keeps_spilling_until_drained() -> None:
    """Once a severity spills, a new event of it must queue behind the spilled ones even when the
    window has room again: order within a severity is acceptance order."""
    ts, cfg, now = TenantState("t", window=2), tenant(), 100.0
    for i in range(2):
        e = Entry(f"a{i}", "t", 1, 0.0)
        ts.add_pending(e)
        ts.admit(e, None, now)
    assert ts.try_spill("b0", 1, 1.0)
    got = ts.claim(cfg, now)
    assert isinstance(got, tuple) and got[0].event_id == "a0"
    ts.finished(False)
    ts.drop_pending(got[0], now)
    assert len(ts.pending) == 1 and ts.spilled == 1
    assert ts.try_spill("b1", 1, 2.0)  # room in the window, but b0 is still spilled: b1 goes behind it
    assert claim_all(ts, cfg, now) == ["a1", "b0", "b1"]


def test_refill_is_bounded_and_expiry_takes_only_old_spilled_events() -> None:
    ts, now = TenantState("t", window=1), 100.0
    e = Entry("first", "t", 1, 0.0)
    ts.add_pending(e)
    ts.admit(e, None, now)
    for i in range(3 * REFILL):
        assert ts.try_spill(f"s{i}", 1, float(i))
    ts.drop_pending(e, now)
    e.state = "delivered"
    assert ts.peek() is not None
    assert len(ts.pending) == REFILL and ts.spilled == 2 * REFILL  # one refill at a time
    old = ts.unspill_older(float(REFILL + 10), 5)
    assert [x.event_id for x in old] == [f"s{REFILL + i}" for i in range(5)]  # at most `limit`
    old = ts.unspill_older(float(REFILL + 10), 1000)
    assert [x.event_id for x in old] == [f"s{REFILL + i}" for i in range(5, 10)]  # only older than the cutoff
    ts.unspill_all()
    assert ts.spilled == 0 and len(ts.pending) == 3 * REFILL


def test_a_held_endpoint_coming_back_starts_spilled_events_on_a_fresh_round() -> None:
    ts = TenantState("t", window=0)
    for i in range(5):
        assert ts.try_spill(f"s{i}", 1, float(i))
    ts.restart_held(100.0)  # the endpoint was disabled from t=0 to t=100
    assert ts.unspill_older(50.0, 10) == []  # held time does not count against their schedule
    old = ts.unspill_older(150.0, 10)
    assert [x.event_id for x in old] == ["s0", "s1", "s2", "s3", "s4"]
    assert {x.round_at for x in old} == {100.0} and old[0].accepted_at == 0.0
    for x in old:
        x.state = "delivering"  # claimed, as expiry does before dead-lettering them
    ts.try_spill("late", 1, 120.0)
    e = ts.peek()  # takes it in: accepted after the endpoint came back, its round began then
    assert e is not None and e.event_id == "late" and e.round_at == 120.0


def test_fifo_tenants_never_spill() -> None:
    ts = TenantState("t", window=0, fifo=True)
    assert not ts.try_spill("x", 1, 0.0)


def envelope_blob(eid: str) -> bytes:
    return encode_stored(StoredEvent(b'{"id":"%s","tenant_id":"t"}' % eid.encode(), "x.y", None, None))


def engine(store: MemoryStore, cfg: TenantConfig) -> DeliveryEngine:
    snap = Snapshot({cfg.tenant_id: cfg}, {}, "d")
    return DeliveryEngine(store, lambda: snap, Metrics(CollectorRegistry()), clock=lambda: 1000.0)


async def test_the_engine_answers_for_spilled_events() -> None:
    store = MemoryStore()
    eng = engine(store, tenant(active=False))
    eng._tenant("t").window = 3
    ids = [f"evt_{i}" for i in range(10)]
    assert await eng.accept([(eid, "t", 1, envelope_blob(eid)) for eid in ids]) == ids
    ts = eng.tenants["t"]
    assert len(eng.entries) == 3 and ts.spilled == 7
    assert eng.pending_count == 10 and eng.tenant_metrics("t")["pending_events"] == 10
    assert eng.gauges()["t"].pending == 10
    assert eng.lookup("evt_9") == "queued" and eng.lookup("evt_99") is None
    assert eng.event_view("evt_9") == {"event_id": "evt_9", "tenant_id": "t", "status": "queued", "attempts": []}
    assert eng.event_view("evt_99") is None
    # A spilled id is known: sending it again is a duplicate, not a second event.
    assert await eng.accept([("evt_9", "t", 1, envelope_blob("evt_9"))]) == []
    assert ts.spilled == 7 and len(store.events) == 10


async def test_a_restart_spills_never_attempted_events_and_keeps_the_rest_as_entries() -> None:
    store = MemoryStore()
    eng = engine(store, tenant(active=False))
    eng._tenant("t").window = 2
    live = [LiveEvent(f"evt_{i}", "t", 1, float(i), [], None, False, None, None) for i in range(6)]
    live.append(LiveEvent("dead", "t", 1, 7.0, [], None, True, "gone", 8.0))
    eng.restore(Recovered(live, 0, 0, 0))
    ts = eng.tenants["t"]
    assert ts.spilled == 4 and len(ts.pending) == 2 and ts.dead == 1
    assert set(eng.entries) == {"evt_0", "evt_1", "dead"}
    assert ts.oldest_spilled() == 2.0
