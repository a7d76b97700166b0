"""The shared store on Redis (SPEC §10), end to end: real redis-server, real relay processes, a
real receiver, all on 127.0.0.1. Each test starts its own redis-server (own dir, AOF fsynced on
every write) so nothing is shared between tests."""

from __future__ import annotations

import re
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.redis_support import RedisServer, needs_redis
from tests.support import Daemon, Reply, Sink, write_tenant

pytestmark = needs_redis

FAST = {"max_retries": 3, "initial_delay_seconds": 0.1, "backoff_multiplier": 2.0, "max_delay_seconds": 1}


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    r = RedisServer(tmp_path / "redis").start()
    yield r
    r.stop()


@pytest.fixture
def relays(tmp_path: Path, redis: RedisServer) -> Iterator[Callable[..., Daemon]]:
    """Relays on one shared config dir and one Redis, each with its own (throwaway) data dir."""
    started: list[Daemon] = []

    def factory(*extra: str, url: str | None = None) -> Daemon:
        n = len(started)
        d = Daemon(
            tmp_path,
            config=tmp_path / "config",
            data_dir=tmp_path / f"data-{n}",
            args=["--store", url or redis.url, *extra],
        )
        started.append(d)
        return d

    yield factory
    for d in started:
        d.__exit__(None, None, None)


def _batch(d: Daemon, tenant: str, n: int, **kw: Any) -> list[str]:
    events = [{"tenant_id": tenant, "event_type": "user.created", "payload": {"i": i}, **kw} for i in range(n)]
    status, body = d.request("POST", "/api/v1/webhooks/send-batch", {"events": events})
    assert status == 200, body
    assert all(r["status"] == "queued" for r in body["results"]), body
    return [r["event_id"] for r in body["results"]]


def _delivered_ids(sink: Sink) -> list[str]:
    return [r.headers["X-Event-ID"] for r in sink.received]


def _wait_distinct(sink: Sink, n: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(set(_delivered_ids(sink))) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{len(set(_delivered_ids(sink)))} of {n} events delivered within {timeout}s")


def _metric(d: Daemon, name: str) -> float:
    status, text = d.request("GET", "/metrics")
    assert status == 200
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not exported"
    return float(m.group(1))


def wait_for_metric(d: Daemon, name: str, value: float, timeout: float = 5.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if _metric(d, name) == value:
            return True
        time.sleep(0.1)
    return False


def _delivered_by(d: Daemon) -> int:
    return d.logs().count("Webhook delivered")


def test_two_relays_drain_one_backlog_without_delivering_twice(relays: Any, sink: Sink, tmp_path: Path) -> None:
    # 50 ms a request with 8 in flight fleet-wide: a drain of ~2 s, long enough that both relays'
    # claim loops take part (at 10 ms the first relay could drain all 300 before the other woke).
    sink.responder = lambda n, r: Reply(200, delay=0.05)
    a, b = relays(), relays()
    write_tenant(a.config, "acme", sink.url + "/hook", max_in_flight=8)
    a.start()
    b.start()
    ids = _batch(a, "acme", 200) + _batch(b, "acme", 100)
    _wait_distinct(sink, 300, timeout=60)
    time.sleep(0.5)  # anything sent twice would arrive by now
    counts = Counter(_delivered_ids(sink))
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1]
    # Both relays delivered (one queue, two workers), and both tell the same story.
    assert _delivered_by(a) > 0 and _delivered_by(b) > 0, (_delivered_by(a), _delivered_by(b))
    assert _delivered_by(a) + _delivered_by(b) == 300  # each delivery told by the relay that made it
    assert a.event(ids[0]) == b.event(ids[0])
    assert a.event(ids[0])["status"] == "delivered"
    deadline = time.time() + 15
    while (fig_a := a.request("GET", "/api/v1/webhooks/metrics/acme")[1])["successful_events"] < 300:
        assert time.time() < deadline, fig_a  # the last verdicts may still be on their way to Redis
        time.sleep(0.05)
    fig_b = b.request("GET", "/api/v1/webhooks/metrics/acme")[1]
    for key in ("total_events", "successful_events", "pending_events"):
        assert fig_a[key] == fig_b[key], key
    assert fig_a["total_events"] == 300 and fig_a["successful_events"] == 300
    # An idempotency id accepted by one relay is a duplicate on the other.
    assert a.send("acme", event_id="order-1")[0] == 202
    status, body = b.send("acme", event_id="order-1")
    assert status == 200 and body["duplicate"] is True


def test_sigkill_mid_delivery_the_other_relay_delivers_after_the_claim_idle(relays: Any, sink: Sink) -> None:
    first_seen: dict[str, float] = {}

    def responder(n: int, r: Any) -> Reply:
        eid = r.headers["X-Event-ID"]
        if eid not in first_seen:
            first_seen[eid] = r.at
            return Reply(200, delay=1.5)  # relay A is killed while this request is open
        return Reply(200)

    sink.responder = responder
    a = relays("--claim-idle", "3")
    write_tenant(a.config, "acme", sink.url + "/hook", timeout_seconds=2)
    a.start()
    status, body = a.send("acme")
    assert status == 202
    eid = body["event_id"]
    sink.wait_event(eid, timeout=10)
    a.kill()
    killed_at = time.time()
    b = relays("--claim-idle", "3").start()
    deadline = time.time() + 20
    while len([r for r in sink.received if r.headers["X-Event-ID"] == eid]) < 2:
        assert time.time() < deadline, "the event was not taken over"
        time.sleep(0.05)
    second = [r for r in sink.received if r.headers["X-Event-ID"] == eid][1]
    # Not before the lease (3 s from the claim) ran out: a live relay's event is never taken.
    assert second.at - first_seen[eid] >= 2.5, second.at - first_seen[eid]
    assert second.at - killed_at < 10
    view = b.wait_status(eid, "delivered")
    assert len(view["attempts"]) == 1  # the killed relay recorded nothing; the taking one did
    assert _metric(b, "hookrelay_events_claimed_total") == 1.0


def test_deleting_a_relays_data_dir_changes_nothing(relays: Any, sink: Sink) -> None:
    healthy = threading.Event()
    sink.responder = lambda n, r: Reply(200) if healthy.is_set() else Reply(503)
    a = relays("--claim-idle", "2")
    write_tenant(a.config, "acme", sink.url + "/hook", timeout_seconds=1, retry_policy={**FAST, "max_retries": 50})
    a.start()
    ids = _batch(a, "acme", 20)
    deadline = time.time() + 20
    # Every event was tried, and its failure recorded, by relay A.
    while a.request("GET", "/api/v1/webhooks/metrics/acme")[1]["pending_retries"] < 20:
        assert time.time() < deadline
        time.sleep(0.05)
    a.kill()
    shutil.rmtree(a.data_dir, ignore_errors=True)
    healthy.set()
    b = relays("--claim-idle", "2").start()
    _wait_distinct(sink, 20, timeout=30)
    for eid in ids:
        view = b.wait_status(eid, "delivered", timeout=10)
        # The attempts relay A made are on record: they lived in Redis, not in its data dir.
        assert view["attempts"][0]["status_code"] == 503


def test_redis_restart_loses_no_acknowledged_event(relays: Any, sink: Sink, redis: RedisServer) -> None:
    healthy = threading.Event()
    sink.responder = lambda n, r: Reply(200) if healthy.is_set() else Reply(503)
    # A claim whose answer the crash cut off leaves a lease the relay never heard of: taken over
    # after the claim idle (short here).
    a = relays("--claim-idle", "3")
    write_tenant(a.config, "acme", sink.url + "/hook", timeout_seconds=1, retry_policy={**FAST, "max_retries": 100})
    a.start()
    ids = [a.send("acme", payload={"i": i})[1]["event_id"] for i in range(30)] + _batch(a, "acme", 70)
    redis.kill()  # SIGKILL: only the AOF survives
    redis.start()
    healthy.set()
    _wait_distinct(sink, 100, timeout=60)
    assert set(_delivered_ids(sink)) == set(ids)
    for eid in ids[:5]:
        a.wait_status(eid, "delivered", timeout=10)


def test_redis_stopped_503_then_resumes_by_itself(tmp_path: Path, relays: Any, sink: Sink) -> None:
    secure = RedisServer(tmp_path / "redis-pw")
    secure.password = "s3cr3t-pass"
    secure.start()
    try:
        url = f"redis://:{secure.password}@127.0.0.1:{secure.port}/0"
        a = relays(url=url)
        write_tenant(a.config, "acme", sink.url + "/hook")
        a.start()
        assert a.send("acme")[0] == 202
        assert _metric(a, "hookrelay_store_up") == 1.0
        secure.stop()
        status, body = a.send("acme")
        assert status == 503 and body["error"]["code"] == "journal_unavailable", body
        assert secure.password not in body["error"]["message"]
        deadline = time.time() + 10
        while a.request("GET", "/readyz")[0] != 503:
            assert time.time() < deadline, "/readyz stayed 200 with Redis down"
            time.sleep(0.05)
        assert _metric(a, "hookrelay_store_up") == 0.0
        ready = a.request("GET", "/readyz")[1]
        assert "Redis store" in ready["reason"] and secure.password not in ready["reason"]
        secure.start()
        a.wait_ready(timeout=20)  # by itself: nobody restarted the relay
        assert _metric(a, "hookrelay_store_up") == 1.0
        status, body = a.send("acme")
        assert status == 202
        sink.wait_event(body["event_id"], timeout=10)
        assert secure.password not in a.logs()
        assert "Redis store" in a.logs()  # the outage was logged (with the URL's password masked)
    finally:
        secure.stop()


def test_fleet_wide_rate_limit_holds_across_three_relays(relays: Any, sink: Sink) -> None:
    relay_set = [relays(), relays(), relays()]
    write_tenant(relay_set[0].config, "acme", sink.url + "/hook", rate_limit_per_second=20, max_in_flight=64)
    for d in relay_set:
        d.start()
    _batch(relay_set[0], "acme", 300)
    sink.wait_for(40, timeout=20)
    start = sink.received[0].at
    # The bucket starts full (one second's worth); from then on, 20 a second in all.
    time.sleep(max(0.0, start + 6.5 - time.time()))
    window = [r for r in sink.received if start + 1.5 <= r.at < start + 6.5]
    rate = len(window) / 5.0
    assert 18.0 <= rate <= 22.0, rate
    assert sum(1 for d in relay_set if _delivered_by(d) > 0) >= 2  # the limit held for a fleet


def test_dead_letters_are_listed_and_replayed_from_another_relay(relays: Any, sink: Sink) -> None:
    healthy = threading.Event()
    sink.responder = lambda n, r: Reply(200) if healthy.is_set() else Reply(500, body=b"nope")
    a = relays()
    write_tenant(a.config, "acme", sink.url + "/hook", retry_policy={**FAST, "max_retries": 1})
    a.start()
    ids = []
    for i in range(3):
        eid = a.send("acme", payload={"i": i})[1]["event_id"]
        a.wait_status(eid, "dead", timeout=15)
        ids.append(eid)
    a.stop()
    b = relays().start()
    status, page = b.request("GET", "/api/v1/webhooks/dead-letter?tenant_id=acme&limit=2")
    assert status == 200
    assert [it["event_id"] for it in page["items"]] == ids[:2]  # oldest failed_at first
    assert page["next_cursor"]
    first = page["items"][0]
    assert first["event"]["payload"] == {"i": 0}
    assert [x["status_code"] for x in first["attempts"]] == [500, 500]
    assert first["can_retry"] is True and "max retries" in first["failure_reason"]
    status, rest = b.request("GET", f"/api/v1/webhooks/dead-letter?tenant_id=acme&cursor={page['next_cursor']}")
    assert [it["event_id"] for it in rest["items"]] == ids[2:] and rest["next_cursor"] is None
    assert b.request("GET", "/api/v1/webhooks/metrics/acme")[1]["dead_letter_count"] == 3
    healthy.set()
    assert b.request("POST", f"/api/v1/webhooks/retry/{ids[0]}")[0] == 202
    view = b.wait_status(ids[0], "delivered", timeout=10)
    assert [x["round"] for x in view["attempts"]] == [1, 1, 2]
    status, body = b.request("POST", "/api/v1/webhooks/retry-all", {"tenant_id": "acme"})
    assert status == 202 and body["matched"] == 2
    for eid in ids[1:]:
        b.wait_status(eid, "delivered", timeout=10)
    assert b.request("GET", "/api/v1/webhooks/dead-letter")[1]["items"] == []
    assert b.request("POST", f"/api/v1/webhooks/retry/{ids[0]}")[0] == 404


def test_a_backlog_does_not_starve_another_tenants_fresh_events(relays: Any, sink: Sink) -> None:
    sink.responder = lambda n, r: Reply(200, delay=0.05 if r.path == "/big" else 0.0)
    a = relays()
    write_tenant(a.config, "big", sink.url + "/big", max_in_flight=4)
    write_tenant(a.config, "small", sink.url + "/small")
    a.start()
    _batch(a, "big", 500)  # at 4 in flight and 50 ms each: several seconds of work
    sink.wait_for(10, path="/big", timeout=10)
    sent = time.time()
    eid = a.send("small")[1]["event_id"]
    got = sink.wait_event(eid, timeout=10)
    assert got.at - sent < 2.0, got.at - sent
    assert len(sink.on("/big")) < 450  # it went ahead of most of the backlog


def test_min_replicas_refuses_a_202_redis_cannot_replicate(relays: Any, sink: Sink) -> None:
    a = relays("--store-min-replicas", "1")
    write_tenant(a.config, "acme", sink.url + "/hook")
    a.start()
    status, body = a.send("acme", event_id="needs-a-replica")
    assert status == 503 and body["error"]["code"] == "journal_unavailable"
    assert "replica" in body["error"]["message"]


def test_a_relay_whose_lease_was_taken_over_cannot_settle(relays: Any, sink: Sink) -> None:
    seen: list[str] = []

    def responder(n: int, r: Any) -> Reply:
        seen.append(r.headers["X-Event-ID"])
        return Reply(200, delay=0.3) if len(seen) == 1 else Reply(200)

    sink.responder = responder
    a = relays("--claim-idle", "2")
    write_tenant(a.config, "acme", sink.url + "/hook", timeout_seconds=1)
    a.start()
    eid = a.send("acme")[1]["event_id"]
    sink.wait_event(eid, timeout=10)
    a.signal(signal.SIGSTOP)  # frozen mid-request, holding the lease past its end
    try:
        b = relays("--claim-idle", "2").start()
        view = b.wait_status(eid, "delivered", timeout=15)
        assert len(view["attempts"]) == 1
        assert _metric(b, "hookrelay_events_claimed_total") == 1.0
    finally:
        a.signal(signal.SIGCONT)
    deadline = time.time() + 10
    while "was taken over" not in a.logs():
        assert time.time() < deadline, "relay A's late verdict was not refused"
        time.sleep(0.05)
    # A's late verdict changed nothing: one attempt on record, still delivered.
    assert b.event(eid) == view


def test_lifting_a_limit_in_the_config_releases_held_events_at_once(relays: Any, sink: Sink) -> None:
    a = relays()
    write_tenant(a.config, "acme", sink.url + "/hook", rate_limit_per_second=0.001)
    a.start()
    _batch(a, "acme", 10)
    sink.wait_for(1, timeout=10)  # the bucket's one token
    time.sleep(1.0)
    assert len(sink.received) == 1  # the rest is held by the limit (next token in ~17 min)
    write_tenant(a.config, "acme", sink.url + "/hook")  # the file watcher reloads it
    _wait_distinct(sink, 10, timeout=15)


def test_fifo_order_holds_across_relays_and_retries(relays: Any, sink: Sink) -> None:
    failed_once: set[str] = set()

    def responder(n: int, r: Any) -> Reply:
        eid = r.headers["X-Event-ID"]
        if r.json()["payload"]["i"] % 7 == 0 and eid not in failed_once:
            failed_once.add(eid)
            return Reply(500)  # a retry of this event must hold back the later ones of its key
        return Reply(200, delay=0.005)

    sink.responder = responder
    a, b = relays(), relays()
    write_tenant(a.config, "acme", sink.url + "/hook", ordering="fifo", max_in_flight=16, retry_policy=FAST)
    a.start()
    b.start()
    keys = ["k1", "k2", "k3"]
    events = [
        {"tenant_id": "acme", "event_type": "t", "payload": {"i": i}, "ordering_key": keys[i % 3]} for i in range(60)
    ]
    assert a.request("POST", "/api/v1/webhooks/send-batch", {"events": events})[0] == 200
    _wait_distinct(sink, 60, timeout=60)
    assert len(failed_once) == 9  # i = 0, 7, ..., 56 each failed once and was retried
    for k, key in enumerate(keys):
        # Per key, in arrival order: an event, its retries, then the next one; never a later event
        # before an earlier one has been delivered (its retry included).
        seen = [r.json()["payload"]["i"] for r in list(sink.received) if r.json()["payload"]["i"] % 3 == k]
        assert seen == sorted(seen), (key, seen)
        assert sorted(set(seen)) == list(range(k, 60, 3))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_relays_memory_does_not_grow_with_the_backlog(relays: Any, sink: Sink) -> None:
    a = relays()
    write_tenant(a.config, "acme", sink.url + "/hook", rate_limit_per_second=0.001)  # held in Redis
    a.start()
    for _ in range(4):  # warm-up: pools, caches, first allocations
        _batch(a, "acme", 250, payload={"data": "x" * 2048})
    assert a.proc is not None
    before = _rss_mb(a.proc.pid)
    for _ in range(80):
        _batch(a, "acme", 250, payload={"data": "x" * 2048})
    after = _rss_mb(a.proc.pid)
    fig = a.request("GET", "/api/v1/webhooks/metrics/acme")[1]
    assert fig["pending_events"] >= 20_000
    # 20,000 more pending events carrying 2 KB each (40 MB of payload) live in Redis: not even the
    # ~600 bytes an event the local store's index would keep (12 MB here).
    assert after - before < 6, (before, after)


def test_dead_letter_retention_prunes_the_shared_queue(relays: Any, sink: Sink) -> None:
    sink.responder = lambda n, r: Reply(500)
    a = relays("--dead-letter-retention", "2s")
    write_tenant(a.config, "acme", sink.url + "/hook", retry_policy={**FAST, "max_retries": 0})
    a.start()
    eid = a.send("acme")[1]["event_id"]
    a.wait_status(eid, "dead", timeout=10)
    assert len(a.request("GET", "/api/v1/webhooks/dead-letter")[1]["items"]) == 1
    view = a.wait_status(eid, "purged", timeout=10)  # older than 2 s: gone from the queue
    assert view["attempts"][0]["status_code"] == 500
    assert a.request("GET", "/api/v1/webhooks/dead-letter")[1]["items"] == []
    assert a.request("GET", "/api/v1/webhooks/metrics/acme")[1]["dead_letter_count"] == 0


def test_unsafe_redis_settings_are_warned_about_once_at_start(tmp_path: Path, relays: Any, sink: Sink) -> None:
    loose = RedisServer(tmp_path / "redis-loose")
    loose.settings = {"appendonly": "no", "maxmemory-policy": "allkeys-lru"}
    loose.start()
    try:
        a = relays(url=loose.url)
        write_tenant(a.config, "acme", sink.url + "/hook")
        a.start()
        assert a.send("acme")[0] == 202
        logs = a.logs()
        assert logs.count("appendonly is not yes") == 1, logs
        assert logs.count("maxmemory-policy is allkeys-lru") == 1, logs
    finally:
        loose.stop()


def test_the_durable_settings_draw_no_warning(relays: Any, sink: Sink) -> None:
    a = relays()
    write_tenant(a.config, "acme", sink.url + "/hook")
    a.start()
    assert a.send("acme")[0] == 202
    assert "can lose" not in a.logs() and "appendonly is not" not in a.logs()


def test_a_bad_store_url_is_refused_without_showing_its_password(relays: Any) -> None:
    a = relays(url="http://user:hunter2-secret@127.0.0.1:6379/0")
    write_tenant(a.config, "acme", "http://127.0.0.1:9/hook")
    a.start(wait=False)
    assert a.proc is not None
    assert a.proc.wait(20) == 2
    assert "--store" in a.logs() and "hunter2-secret" not in a.logs()


def test_endpoint_state_is_shared_between_relays(relays: Any, sink: Sink) -> None:
    a, b = relays(), relays()
    write_tenant(a.config, "acme", sink.url + "/hook")
    a.start()
    b.start()
    status, body = a.request("POST", "/api/v1/webhooks/endpoints/acme/disable")
    assert status == 202 and body["endpoint_state"] == "disabled"
    assert b.request("GET", "/api/v1/webhooks/metrics/acme")[1]["endpoint_state"] == "disabled"
    eid = b.send("acme")[1]["event_id"]
    time.sleep(1.0)
    assert sink.received == []  # held by every relay, not just the one that was told
    assert a.event(eid)["status"] == "queued"
    status, body = b.request("POST", "/api/v1/webhooks/endpoints/acme/enable")
    assert status == 202 and body["endpoint_state"] == "enabled"
    sink.wait_event(eid, timeout=10)
    assert a.request("GET", "/api/v1/webhooks/metrics/acme")[1]["endpoint_state"] == "enabled"


def test_the_circuit_breaker_is_shared_between_relays(relays: Any, sink: Sink) -> None:
    sink.responder = lambda n, r: Reply(503)
    a, b = relays(), relays()
    write_tenant(
        a.config,
        "acme",
        sink.url + "/hook",
        circuit_breaker={"failure_threshold": 2},
        retry_policy={"max_retries": 10, "initial_delay_seconds": 5, "max_delay_seconds": 5},
    )
    a.start()
    b.start()
    _batch(a, "acme", 4)
    deadline = time.time() + 15
    while not a.request("GET", "/api/v1/webhooks/metrics/acme")[1]["circuit_open"]:
        assert time.time() < deadline, "the breaker did not open"
        time.sleep(0.05)
    assert b.request("GET", "/api/v1/webhooks/metrics/acme")[1]["circuit_open"] is True
    tried = len(sink.received)
    time.sleep(1.0)
    # Open for the fleet: neither relay starts an attempt during the cool-down (1 s and up).
    assert len(sink.received) == tried, (tried, len(sink.received))
    # And B's gauge says so too (refreshed from Redis every second).
    assert wait_for_metric(b, 'hookrelay_circuit_open{tenant="acme"}', 1.0)
