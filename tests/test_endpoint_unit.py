"""Endpoint lifecycle (SPEC §11): the pure state machine with a fake clock, and the engine on an
in-memory store against a real loopback sink (short disable/probe intervals, real time)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from relay.config import Snapshot
from relay.delivery import DeliveryEngine
from relay.delivery.endpoint import Endpoint
from relay.delivery.ledger import parse_instant, pattern_problem, type_matches
from relay.metrics import Metrics
from relay.opshook import DeadLetterThrottle
from tests.memstore import MemoryStore
from tests.test_delivery_unit import Harness, sink, tenant

# ---- the state machine ---------------------------------------------------------------------


def test_failing_after_the_breaker_opens_then_disabled_after_the_window() -> None:
    ep = Endpoint(since=0.0)
    assert ep.failed(10.0, breaker_opened=False, disable_after=100.0) is None
    assert ep.state == "enabled" and ep.failing_since == 10.0
    ch = ep.failed(11.0, breaker_opened=True, disable_after=100.0)
    assert ch is not None and ch.state == "failing" and ch.previous == "enabled"
    assert ep.failed(50.0, breaker_opened=True, disable_after=100.0) is None  # already failing
    assert ep.check_expired(109.0, 100.0) is None
    ch = ep.check_expired(110.0, 100.0)  # 100 s after the first failure, not after "failing"
    assert ch is not None and ch.state == "disabled" and ep.probes
    assert ep.failed(200.0, True, 100.0) is None  # failures while disabled change nothing


def test_a_success_resets_the_failing_clock() -> None:
    ep = Endpoint()
    ep.failed(0.0, False, 100.0)
    assert ep.succeeded(50.0) is None  # enabled stays enabled: nothing to announce
    ep.failed(90.0, False, 100.0)
    assert ep.check_expired(150.0, 100.0) is None, "the window counts from the first failure after a success"
    assert ep.check_expired(190.0, 100.0) is not None


def test_gone_and_operator_disable_are_never_probed() -> None:
    for disable in (lambda ep: ep.gone(5.0), lambda ep: ep.disable(5.0)):
        ep = Endpoint()
        ch = disable(ep)
        assert ch is not None and ch.state == "disabled"
        assert not ep.probes and ep.probe_due(1e9) is None


def test_probes_are_spaced_and_one_at_a_time() -> None:
    ep = Endpoint()
    ep.failed(0.0, True, 10.0)
    ep.check_expired(10.0, 10.0)
    ep.after_restart(10.0)
    assert ep.probe_due(10.0) == 0.0
    ep.begin_probe(10.0, 3.0)
    assert ep.probe_due(20.0) is None  # in flight
    ep.end_probe()
    assert ep.probe_due(11.0) == 2.0
    ch = ep.succeeded(13.5)
    assert ch is not None and ch.state == "enabled" and ch.reason == "probe delivered"


def test_a_new_base_url_enables_and_the_state_round_trips() -> None:
    ep = Endpoint()
    assert ep.url_is("http://a/", 0.0) is None  # first sight
    ep.gone(1.0)
    assert ep.url_is("http://a/", 2.0) is None
    restored = Endpoint.from_json(json.loads(json.dumps(ep.to_json())))
    assert (restored.state, restored.cause, restored.base_url) == ("disabled", "gone", "http://a/")
    ch = restored.url_is("http://b/", 3.0)
    assert ch is not None and ch.state == "enabled" and ch.reason == "base_url changed"


def test_garbage_in_the_state_file_reads_as_enabled() -> None:
    ep = Endpoint.from_json({"state": "on fire", "cause": 7, "failing_since": "x"})
    assert ep.state == "enabled" and ep.cause == "" and ep.failing_since is None


# ---- the engine ----------------------------------------------------------------------------


async def test_disabled_endpoint_holds_probes_without_spending_retries_and_drains_in_order(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    healthy = False
    got: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        if not healthy:
            return web.Response(status=503)
        got.append(request.headers["X-Event-ID"])
        return web.Response()

    url = await sink(aiohttp_server, handler)
    cfg = tenant(
        base_url=url + "/hook",
        circuit_breaker={"failure_threshold": 2},
        retry_policy={"max_retries": 8, "initial_delay_seconds": 0.05, "backoff_multiplier": 1, "jitter": False},
        disable_after_seconds=0.2,
        probe_interval_seconds=0.1,
    )
    notes: list[tuple[str, str | None]] = []
    h = Harness([cfg], time.time)
    h.engine = DeliveryEngine(
        h.store,
        lambda: h.snap,
        Metrics(CollectorRegistry()),
        state_dir=tmp_path,
        ops=lambda kind, tid, data: notes.append((kind, tid)),
    )
    await h.engine.start()
    try:
        first = await h.send()
        await h.until(lambda: h.engine.endpoints["t"].state == "disabled")
        assert ("endpoint.failing", "t") in notes and ("endpoint.disabled", "t") in notes
        tries = h.engine.entries[first].tries
        held = [await h.send() for _ in range(3)]
        await asyncio.sleep(0.5)  # several probe intervals, several times the retry schedule
        e = h.engine.entries[first]
        assert e.tries == tries, "probes must spend none of the event's retries"
        assert all(h.status(x) in ("queued", "retrying", "delivering") for x in [first, *held]), "held, not dead"
        assert not h.engine.dead
        saved = json.loads((tmp_path / "endpoints.json").read_text())
        assert saved["endpoints"]["t"]["state"] == "disabled"
        healthy = True
        await h.until(lambda: all(h.status(x) == "delivered" for x in [first, *held]))
        assert got == [first, *held], "the backlog drains oldest first"
        assert h.engine.endpoints["t"].state == "enabled"
        assert ("endpoint.enabled", "t") in notes
        m = h.engine.tenant_metrics("t")
        assert m["endpoint_state"] == "enabled" and m["endpoint_state_reason"] == "probe delivered"
    finally:
        await h.engine.stop(1.0)
    saved = json.loads((tmp_path / "endpoints.json").read_text())
    assert saved["endpoints"]["t"]["state"] == "enabled"


async def test_410_disables_at_once_and_only_enable_or_a_new_url_brings_it_back(aiohttp_server: Any) -> None:
    answer = 410
    seen = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal seen
        seen += 1
        return web.Response(status=answer)

    url = await sink(aiohttp_server, handler)
    cfg = tenant(base_url=url + "/a", probe_interval_seconds=0.05)
    h = Harness([cfg], time.time)
    await h.engine.start()
    try:
        gone = await h.send()
        await h.until(lambda: h.status(gone) == "dead")
        assert h.engine.endpoints["t"].state == "disabled"
        held = await h.send()
        await asyncio.sleep(0.3)
        assert seen == 1, "an endpoint that answered 410 is not probed"
        assert h.status(held) == "queued"
        answer = 200
        h.snap = Snapshot({"t": tenant(base_url=url + "/b")}, {}, "d2")
        h.engine.apply_config(h.snap)
        await h.until(lambda: h.status(held) == "delivered")
        assert h.engine.tenant_metrics("t")["endpoint_state_reason"] == "base_url changed"
        h.engine.set_endpoint("t", False)
        later = await h.send()
        await asyncio.sleep(0.2)
        assert h.status(later) == "queued", "an operator-disabled endpoint holds"
        h.engine.set_endpoint("t", True)
        await h.until(lambda: h.status(later) == "delivered")
        text = generate_latest(h.engine.metrics.registry).decode()
        assert 'hookrelay_endpoint_state{state="enabled",tenant="t"} 1.0' in text
        assert 'hookrelay_endpoint_state{state="disabled",tenant="t"} 0.0' in text
    finally:
        await h.engine.stop(1.0)


async def test_state_file_is_read_back_on_start(tmp_path: Path) -> None:
    doc = {"version": 1, "endpoints": {"t": {"state": "disabled", "since": 5.0, "reason": "x", "cause": "operator"}}}
    (tmp_path / "endpoints.json").write_text(json.dumps(doc))
    eng = DeliveryEngine(MemoryStore(), lambda: Snapshot({}, {}, "d"), Metrics(CollectorRegistry()), state_dir=tmp_path)
    assert eng.endpoint_view("t")["endpoint_state"] == "disabled"
    (tmp_path / "endpoints.json").write_text("{not json")
    eng = DeliveryEngine(MemoryStore(), lambda: Snapshot({}, {}, "d"), Metrics(CollectorRegistry()), state_dir=tmp_path)
    assert eng.endpoint_view("t")["endpoint_state"] == "enabled"


# ---- the ledger's filters --------------------------------------------------------------------


def test_ledger_instants_and_patterns() -> None:
    assert parse_instant("2024-01-15T10:30:00Z") == parse_instant(1705314600) == 1705314600.0
    assert parse_instant("1705314600.5") == 1705314600.5
    for bad in ("2024-01-15T10:30:00", "tomorrow", "", "nan", True):
        with pytest.raises(ValueError):
            parse_instant(bad)  # type: ignore[arg-type]
    assert type_matches("order.*", "order.paid") and not type_matches("order.*", "orders.paid")
    assert type_matches("*", "x") and type_matches("a.b", "a.b") and not type_matches("a.b", "a.bc")
    assert pattern_problem(".*") and pattern_problem("") and pattern_problem("order.*") is None


# ---- operator events -------------------------------------------------------------------------


def test_dead_letter_notices_are_one_a_minute_per_tenant_with_the_count() -> None:
    th = DeadLetterThrottle(60.0)
    assert th.add("a", 0.0) == 1  # the first goes at once
    assert th.add("a", 1.0) is None and th.add("a", 2.0) is None
    assert th.add("b", 2.0) == 1  # another tenant has its own window
    assert th.next_due(2.0) == 58.0
    assert th.due(59.0) == []
    assert th.due(60.0) == [("a", 2)]
    assert th.next_due(60.0) is None
    assert th.add("a", 61.0) is None, "within a minute of the last notice"
    assert th.due(120.0) == [("a", 1)]
