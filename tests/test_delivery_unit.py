"""Unit tests of the delivery core with a fake clock: scheduler, breaker, rate limit, verdicts,
dead-letter order, and the engine on an in-memory store against a real loopback sink."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from relay.config import ConfigError, Snapshot, TenantConfig, parse_tenant
from relay.delivery import DeliveryEngine, Entry
from relay.delivery.attempt import decide
from relay.delivery.breaker import Breaker
from relay.delivery.deadletters import DeadLetters
from relay.delivery.ratelimit import TokenBucket
from relay.delivery.scheduler import TenantState
from relay.dispatch import EgressPolicy, Outcome
from relay.events import StoredEvent, encode_stored
from relay.metrics import Metrics
from tests.memstore import MemEvent, MemoryStore


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tenant(**kw: Any) -> TenantConfig:
    data = {"tenant_id": "t", "base_url": "http://127.0.0.1:9/hook", "secret_key": "s", **kw}
    return parse_tenant(data, "test")


def entry(eid: str, severity: int = 1, at: float = 0.0) -> Entry:
    return Entry(eid, "t", severity, at)


# ---- scheduler --------------------------------------------------------------------------------


async def test_claim_takes_highest_severity_first_then_arrival_order() -> None:
    ts, cfg, now = TenantState("t"), tenant(), 100.0
    for eid, sev in [("low", 0), ("med1", 1), ("crit", 3), ("med2", 1)]:
        ts.schedule(entry(eid, sev), None, now)
    order = []
    while isinstance(got := ts.claim(cfg, now), tuple):
        order.append(got[0].event_id)
    assert order == ["crit", "med1", "med2", "low"]
    assert got is None  # nothing left


async def test_timer_heap_releases_only_due_and_skips_stale_items() -> None:
    ts, cfg = TenantState("t"), tenant()
    a, b = entry("a"), entry("b")
    ts.schedule(a, 110.0, 100.0)
    ts.schedule(b, 120.0, 100.0)
    ts.schedule(a, 130.0, 100.0)  # rescheduled: its 110 item is stale
    ts.release_due(115.0)
    assert ts.claim(cfg, 115.0) is None
    assert ts.next_timer(115.0) == pytest.approx(5.0)
    ts.release_due(131.0)
    got = [ts.claim(cfg, 131.0), ts.claim(cfg, 131.0)]
    assert [g[0].event_id for g in got if isinstance(g, tuple)] == ["b", "a"]


async def test_claim_waits_for_an_open_breaker_and_for_a_probe() -> None:
    ts, cfg = TenantState("t"), tenant(circuit_breaker={"failure_threshold": 1})
    for i in range(3):
        ts.schedule(entry(f"e{i}"), None, 100.0)
    cool = ts.breaker.failure(100.0, 1, 1.0, 300.0)
    assert cool == pytest.approx(1.0)
    assert ts.claim(cfg, 100.5) == pytest.approx(0.5)  # wait for the cool-down
    got = ts.claim(cfg, 101.0)
    assert isinstance(got, tuple) and got[1] != 0  # the half-open probe
    assert ts.claim(cfg, 101.0) is None  # one probe at a time: wait for a wake-up
    ts.breaker.release(got[1])  # the probe ended without a verdict (refused, error, removed)
    again = ts.claim(cfg, 101.0)
    assert isinstance(again, tuple) and again[1] != 0, "a released probe must let the next one go"


async def test_rate_limit_spaces_claims() -> None:
    ts, cfg = TenantState("t"), tenant(rate_limit_per_second=2)
    for i in range(4):
        ts.schedule(entry(f"e{i}"), None, 100.0)
    # A burst of one second's worth (2), then one every 1/rate seconds.
    assert isinstance(ts.claim(cfg, 100.0), tuple) and isinstance(ts.claim(cfg, 100.0), tuple)
    wait = ts.claim(cfg, 100.0)
    assert wait == pytest.approx(0.5)
    assert isinstance(ts.claim(cfg, 100.5), tuple)
    assert ts.claim(cfg, 100.5) == pytest.approx(0.5)


def test_token_bucket_burst_is_one_second() -> None:
    b = TokenBucket()
    taken = sum(1 for _ in range(20) if b.take(10.0, 50.0) == 0.0)
    assert taken == 10


# ---- breaker ------------------------------------------------------------------------------


def test_breaker_opens_at_threshold_and_doubles_its_cool_down() -> None:
    br = Breaker()
    assert [br.failure(0.0, 3, 1.0, 300.0) for _ in range(3)] == [None, None, 1.0]
    assert br.is_open(0.5) and not br.is_open(1.5) and br.wait(1.5) is None
    token = br.begin(1.5)
    assert token and br.is_open(1.5)
    assert br.failure(1.6, 3, 1.0, 300.0) == 2.0  # the probe failed: open again, twice as long
    assert br.wait(2.0) == pytest.approx(1.6)
    br.release(token)  # a late release of the old probe changes nothing
    assert br.wait(2.0) == pytest.approx(1.6)
    token = br.begin(3.7)
    br.success()
    assert not br.is_open(3.7) and br.failures == 0


def test_breaker_in_flight_failures_do_not_re_trip() -> None:
    br = Breaker()
    br.failure(0.0, 1, 10.0, 300.0)
    until = br.open_until
    for _ in range(5):
        assert br.failure(1.0, 1, 10.0, 300.0) is None
    assert br.open_until == until and br.trips == 1


# ---- verdicts -----------------------------------------------------------------------------


def test_decide_retries_then_dead_letters_an_unusable_event_with_its_reason() -> None:
    cfg = tenant(retry_policy={"max_retries": 2, "jitter": False, "initial_delay_seconds": 1})
    bad = Outcome("error", None, "request could not be built: label too long", 0.0)
    assert decide(bad, 1, cfg).kind == "retry"
    assert decide(bad, 2, cfg).delay == 2.0
    final = decide(bad, 3, cfg)
    assert final.kind == "dead" and final.reason is not None and "label too long" in final.reason


def test_decide_410_and_refusal_are_final_and_retry_after_is_a_floor() -> None:
    cfg = tenant(retry_policy={"jitter": False, "max_delay_seconds": 60})
    assert decide(Outcome("http_error", 410, "HTTP 410", 0.0), 1, cfg).kind == "dead"
    assert decide(Outcome("refused", None, "metadata", 0.0), 1, cfg).kind == "dead"
    slow = decide(Outcome("http_error", 503, "HTTP 503", 0.0, retry_after=30.0), 1, cfg)
    assert slow.kind == "retry" and slow.delay == 30.0
    capped = decide(Outcome("http_error", 429, "HTTP 429", 0.0, retry_after=9999.0), 1, cfg)
    assert capped.delay == 60.0


# ---- dead letters ---------------------------------------------------------------------------


def test_dead_letters_page_in_failed_at_order_per_tenant() -> None:
    dl = DeadLetters()
    for i, (tid, at) in enumerate([("a", 5.0), ("b", 1.0), ("a", 3.0), ("a", 9.0)]):
        e = Entry(f"e{i}", tid, 1, 0.0)
        e.failed_at = at
        dl.add(e)
    assert [e.event_id for e in dl.page(None)] == ["e1", "e2", "e0", "e3"]
    assert [e.event_id for e in dl.page("a", (3.0, "e2"))] == ["e0", "e3"]
    dl.remove("e0")
    assert [e.event_id for e in dl.page("a")] == ["e2", "e3"]


# ---- the engine on an in-memory store, against a real sink -----------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Harness:
    def __init__(
        self, cfgs: list[TenantConfig], clock: Callable[[], float], egress: EgressPolicy | None = None
    ) -> None:
        self.store = MemoryStore()
        self.snap = Snapshot({c.tenant_id: c for c in cfgs}, {}, "d")
        self.engine = DeliveryEngine(
            self.store, lambda: self.snap, Metrics(CollectorRegistry()), egress=egress, clock=clock
        )
        self.n = 0

    async def send(self, tenant_id: str = "t", target_url: str | None = None, severity: int = 1) -> str:
        self.n += 1
        eid = f"evt_{self.n}"
        blob = encode_stored(StoredEvent(b'{"id":"%s"}' % eid.encode(), "x.y", target_url, None))
        await self.engine.accept([(eid, tenant_id, severity, blob)])
        return eid

    def status(self, eid: str) -> str | None:
        return self.engine.lookup(eid)

    async def until(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.01)

    def poke(self) -> None:
        for ts in self.engine.tenants.values():
            ts.wake.set()


async def sink(aiohttp_server: Any, handler: Handler) -> str:
    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    server = await aiohttp_server(app, host="127.0.0.1")
    return f"http://127.0.0.1:{server.port}"


async def test_refused_probe_does_not_wedge_the_tenant(aiohttp_server: Any) -> None:
    """The issue's wedge: the half-open probe ends in an egress refusal; deliveries must resume."""
    healthy = True

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=200 if healthy else 500)

    url = await sink(aiohttp_server, handler)
    clock = Clock()
    cfg = tenant(
        base_url=url + "/hook",
        circuit_breaker={"failure_threshold": 2},
        retry_policy={"max_retries": 50, "initial_delay_seconds": 1, "jitter": False},
    )
    # 169.254.0.0/16 is always refused by the egress guard.
    h = Harness([cfg], clock)
    await h.engine.start()
    try:
        healthy = False
        failing = [await h.send() for _ in range(2)]
        await h.until(lambda: h.engine.tenants["t"].breaker.open_until > 0)
        # The event that will be the probe: its own target is refused by the egress guard.
        poison = await h.send(target_url="http://169.254.169.254/latest")
        clock.now += 2.0  # past the cool-down: the next claim is the half-open probe
        h.poke()
        await h.until(lambda: h.status(poison) == "dead")
        # Before the fix the refused probe left the breaker half-open for good: nothing below
        # would ever be attempted again. Now the next due event is the next probe.
        healthy = True
        clock.now += 10.0
        h.poke()
        fresh = await h.send()
        await h.until(lambda: h.status(fresh) == "delivered" and all(h.status(e) == "delivered" for e in failing))
    finally:
        await h.engine.stop(1.0)


async def test_unbuildable_request_is_dead_lettered_after_the_policy(aiohttp_server: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    url = await sink(aiohttp_server, handler)
    clock = Clock()
    policy = {"max_retries": 2, "initial_delay_seconds": 1, "jitter": False}
    # Allowed, so the request gets as far as being built (a 64-character label fails IDNA there).
    cfg = tenant(base_url=url, retry_policy=policy, allowed_target_hosts=["*.example.com"])
    h = Harness([cfg], clock)
    await h.engine.start()
    try:
        bad = await h.send(target_url="http://" + "a" * 64 + ".example.com/")
        for _ in range(3):
            await h.until(lambda: h.status(bad) in ("retrying", "dead"))
            if h.status(bad) == "dead":
                break
            clock.now += 10.0
            h.poke()
            await asyncio.sleep(0.05)
        await h.until(lambda: h.status(bad) == "dead")
        e = h.engine.dead.get(bad)
        assert e is not None and e.dead_reason is not None
        assert "request could not be built" in e.dead_reason and e.tries == 3
    finally:
        await h.engine.stop(1.0)


async def test_max_in_flight_bounds_concurrency(aiohttp_server: Any) -> None:
    now_in, peak = 0, 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal now_in, peak
        now_in += 1
        peak = max(peak, now_in)
        await asyncio.sleep(0.05)
        now_in -= 1
        return web.Response()

    url = await sink(aiohttp_server, handler)
    h = Harness([tenant(base_url=url, max_in_flight=3)], Clock())
    await h.engine.start()
    try:
        ids = [await h.send() for _ in range(12)]
        await h.until(lambda: all(h.status(e) == "delivered" for e in ids))
        assert peak == 3
    finally:
        await h.engine.stop(1.0)


async def test_events_behind_an_open_breaker_expire_on_the_clock(aiohttp_server: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=500)

    url = await sink(aiohttp_server, handler)
    clock = Clock()
    cfg = tenant(
        base_url=url,
        timeout_seconds=1,
        circuit_breaker={"failure_threshold": 1},
        retry_policy={"max_retries": 1, "initial_delay_seconds": 100, "max_delay_seconds": 100, "jitter": False},
    )
    h = Harness([cfg], clock)
    await h.engine.start()
    try:
        first = await h.send()
        await h.until(lambda: h.status(first) == "retrying")
        waiting = await h.send()
        await asyncio.sleep(0.05)
        assert h.status(waiting) == "queued"  # behind the open breaker: no attempt, no retry spent
        # A breaker that keeps failing its probes stays open for long stretches.
        h.engine.tenants["t"].breaker.open_until = clock.now + 1000.0
        clock.now += 103.0  # past the schedule (100 s) plus the attempts' timeouts (2 x 1 s)
        h.poke()
        await h.until(lambda: h.status(waiting) == "dead")
        e = h.engine.dead.get(waiting)
        assert e is not None and e.tries == 0 and "circuit breaker open" in (e.dead_reason or "")
    finally:
        await h.engine.stop(1.0)


async def test_failed_background_dead_letter_puts_the_event_back(aiohttp_server: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    url = await sink(aiohttp_server, handler)
    cfg = tenant(base_url=url, active=False)
    h = Harness([cfg], Clock())
    await h.engine.start()
    try:
        eid = await h.send()
        h.store.fail_dead = True
        h.snap = Snapshot({}, {}, "d2")  # tenant removed: its events go to the DLQ... which fails
        h.engine.apply_config(h.snap)
        await h.until(lambda: not h.engine._bg)
        assert h.status(eid) == "queued", "a failed dead-letter write must not leave it 'delivering'"
        h.store.fail_dead = False
        h.engine.tenants["t"].swept_at = 0.0  # the removed tenant's sweep tries again
        h.poke()
        await h.until(lambda: h.status(eid) == "dead")
    finally:
        await h.engine.stop(1.0)


async def test_removed_idle_tenant_is_forgotten_with_its_series(aiohttp_server: Any) -> None:
    h = Harness([tenant(), tenant(tenant_id="gone")], Clock())
    await h.engine.start()
    try:
        reg = h.engine.metrics.registry
        assert reg.get_sample_value("hookrelay_events_received_total", {"tenant": "gone"}) == 0.0
        h.snap = Snapshot({"t": h.snap.tenants["t"]}, {}, "d2")
        h.engine.apply_config(h.snap)
        assert "gone" not in h.engine.tenants
        assert reg.get_sample_value("hookrelay_events_received_total", {"tenant": "gone"}) is None
        assert reg.get_sample_value("hookrelay_pending_events", {"tenant": "gone"}) is None
    finally:
        await h.engine.stop(1.0)


async def test_accept_never_revives_or_doubles_an_id(aiohttp_server: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    url = await sink(aiohttp_server, handler)
    h = Harness([tenant(base_url=url)], Clock())
    await h.engine.start()
    try:
        blob = encode_stored(StoredEvent(b"{}", "x.y", None, None))
        assert await h.engine.accept([("same", "t", 1, blob), ("same", "t", 1, blob)]) == ["same"]
        await h.until(lambda: h.status("same") == "delivered")
        assert await h.engine.accept([("same", "t", 1, blob)]) == []
        assert h.status("same") == "delivered"
    finally:
        await h.engine.stop(1.0)


async def test_management_writes_one_commit_per_thousand_and_history_is_capped_in_ram(
    aiohttp_server: Any,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=500, text="nope " * 50)

    url = await sink(aiohttp_server, handler)
    cfg = tenant(
        base_url=url,
        circuit_breaker={"enabled": False},
        retry_policy={"max_retries": 7, "initial_delay_seconds": 0.001, "max_delay_seconds": 0.001},
    )
    h = Harness([cfg], time.time)
    await h.engine.start()
    try:
        eid = await h.send()
        await h.until(lambda: h.status(eid) == "dead")
        e = h.engine.dead.get(eid)
        assert e is not None and len(e.attempts) == 5  # RAM keeps the newest few
        view = h.engine.event_view(eid)
        assert view is not None and [a.attempt for a in view["attempts"]] == list(range(1, 9))
        # 2,500 dead letters replayed and purged: three commits each, not 2,500.
        ts = h.engine.tenants["t"]
        for i in range(2500):
            d = Entry(f"d{i}", "t", 1, 0.0)
            d.state, d.failed_at = "dead", float(i)
            h.store.events[d.event_id] = MemEvent("t", b"", dead=("x", 0.0))
            h.engine.entries[d.event_id] = d
            h.engine.dead.add(d)
            ts.dead += 1
        h.snap = Snapshot({"t": tenant(base_url=url, active=False)}, {}, "d2")  # hold them
        before = h.store.commits
        ids = [e.event_id for e in h.engine.dead_letters("t") if e.event_id != eid]
        assert await h.engine.requeue_many(ids) == 2500
        assert h.store.commits - before == 3
        assert ts.dead == 1 and len(ts.pending) == 2500
    finally:
        await h.engine.stop(1.0)


async def test_a_tenant_task_that_raises_is_restarted_and_counted(aiohttp_server: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    url = await sink(aiohttp_server, handler)
    h = Harness([tenant(base_url=url)], time.time)
    ts = h.engine._tenant("t")
    real = ts.release_due
    calls = 0

    def flaky(now: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in the scheduler")
        real(now)

    ts.release_due = flaky  # type: ignore[method-assign]
    await h.engine.start()
    try:
        eid = await h.send()
        await h.until(lambda: h.status(eid) == "delivered")
        assert h.engine.metrics.registry.get_sample_value("hookrelay_task_restarts_total") == 1.0
    finally:
        await h.engine.stop(1.0)


# ---- delivery policy: FIFO keys, retry lanes, final statuses (SPEC §12) -----------------------


def keyed(eid: str, key: str, severity: int = 1) -> Entry:
    e = entry(eid, severity)
    e.okey = key
    return e


def drain(ts: TenantState, cfg: TenantConfig, now: float) -> list[str]:
    out = []
    while isinstance(got := ts.claim(cfg, now), tuple):
        out.append(got[0].event_id)
    return out


async def test_fifo_only_the_head_of_each_key_is_due_and_severity_orders_keys_not_events() -> None:
    ts, cfg, now = TenantState("t", fifo=True), tenant(ordering="fifo"), 100.0
    a1, a2, a3 = keyed("a1", "a", 0), keyed("a2", "a", 3), keyed("a3", "a", 1)
    b1 = keyed("b1", "b", 2)
    for e in (a1, a2, a3, b1):
        ts.add_pending(e)
        ts.admit(e, None, now)
    assert drain(ts, cfg, now) == ["b1", "a1"]  # a2 (Critical) waits behind a1 (Low)
    # a1 fails and is retried later: its key stays held; b's next event flows.
    a1.state, a1.tries = "retrying", 1
    ts.schedule(a1, now + 10, now)
    b2 = keyed("b2", "b")
    ts.add_pending(b2)
    ts.admit(b2, None, now)
    ts.drop_pending(b1, now)
    assert drain(ts, cfg, now) == ["b2"]
    ts.release_due(now + 10)
    assert drain(ts, cfg, now + 10) == ["a1"]
    ts.drop_pending(a1, now + 10)  # delivered (or dead-lettered): the next of its key is due
    assert drain(ts, cfg, now + 10) == ["a2"]
    ts.drop_pending(a2, now + 10)
    assert drain(ts, cfg, now + 10) == ["a3"]


async def test_fifo_switch_on_and_off_keeps_acceptance_order() -> None:
    ts, now = TenantState("t"), 100.0
    cfg = tenant()
    events = [keyed(f"e{i}", "k") for i in range(3)]
    for e in events:
        ts.add_pending(e)
        ts.admit(e, None, now)
    ts.set_fifo(True, now)
    assert drain(ts, tenant(ordering="fifo"), now) == ["e0"]
    ts.set_fifo(False, now)
    assert drain(ts, cfg, now) == ["e1", "e2"]


async def test_retries_take_at_most_half_the_slots_while_first_attempts_wait() -> None:
    ts, cfg, now = TenantState("t"), tenant(max_in_flight=8), 100.0
    for i in range(20):
        r = entry(f"r{i}")
        r.tries, r.state = 1, "retrying"
        ts.add_pending(r)
        ts.schedule(r, None, now)
        f = entry(f"f{i}")
        ts.add_pending(f)
        ts.schedule(f, None, now)
    taken = []
    for _ in range(8):
        got = ts.claim(cfg, now)
        assert isinstance(got, tuple)
        ts.in_flight += 1
        taken.append(got[0].event_id)
    assert sum(1 for t in taken if t.startswith("r")) == 4 and ts.retry_in_flight == 4
    # With no first attempt left, retries take every slot.
    only = TenantState("t")
    for i in range(8):
        r = entry(f"r{i}")
        r.tries, r.state = 1, "retrying"
        only.schedule(r, None, now)
    assert len(drain(only, cfg, now)) == 8


def test_final_statuses_dead_letter_at_once_and_are_validated() -> None:
    cfg = tenant(final_statuses=[404, 410])
    v = decide(Outcome("http_error", 404, "HTTP 404", 0.0), 1, cfg)
    assert v.kind == "dead" and v.reason is not None and "404" in v.reason
    assert decide(Outcome("http_error", 404, "HTTP 404", 0.0), 1, tenant()).kind == "retry"
    assert decide(Outcome("http_error", 410, "HTTP 410", 0.0), 1, tenant(final_statuses=[])).kind == "dead"
    with pytest.raises(ConfigError) as err:
        tenant(final_statuses=[404, 700])
    assert "final_statuses[1]" in str(err.value)
