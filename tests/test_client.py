"""relay.client against the real daemon: TCP and Unix socket, errors, token, async client, builder."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay import client as client_mod
from relay.client import AsyncRelayClient, RelayClient, RelayError, WebhookEvent
from relay.signing import verify_signature
from tests.support import Daemon, Received, Reply, Sink, free_port, write_tenant

TENANTS: dict[str, dict[str, Any]] = {
    "acme": {},
    "acme-sock": {},
    "acme-async": {},
    "acme-batch": {},
    "only-users": {"enabled_events": ["user.*"]},
    "dlq-client": {"retry_policy": {"max_retries": 0}},
    "dlq-async": {"retry_policy": {"max_retries": 0}},
}


def _responder(n: int, r: Received) -> Reply:
    return Reply(status=500) if r.path.startswith("/fail") else Reply()


@pytest.fixture(scope="module")
def shared_sink() -> Iterator[Sink]:
    s = Sink()
    s.responder = _responder
    s.start()
    yield s
    s.stop()


def _path_of(tenant: str) -> str:
    return f"/fail/{tenant}" if tenant.startswith("dlq") else f"/{tenant}"


@pytest.fixture(scope="module")
def daemon(shared_sink: Sink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("client")
    for tenant, extra in TENANTS.items():
        write_tenant(tmp / "config", tenant, shared_sink.url + _path_of(tenant), **extra)
    d = Daemon(tmp, args=["--unix-socket", str(tmp / "r.sock")])
    d.start()
    yield d
    d.__exit__(None, None, None)


def sock_of(d: Daemon) -> str:
    return str(d.tmp / "r.sock")


def wait_status(c: RelayClient, event_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.time() + timeout
    view: dict[str, Any] = {}
    while time.time() < deadline:
        try:
            view = c.event(event_id)
        except RelayError as exc:
            if exc.code != "event_not_found":
                raise
        if view.get("status") == status:
            return view
        time.sleep(0.03)
    raise AssertionError(f"{event_id} not {status} within {timeout}s: {view}")


# ---- sync client ---------------------------------------------------------------------------


def test_send_over_tcp_is_delivered(daemon: Daemon, shared_sink: Sink) -> None:
    c = RelayClient(daemon.url)
    eid = c.send(
        "acme",
        "user.created",
        {"user_id": 42},
        severity="High",
        context={"source": "test"},
        custom_headers={"X-Custom": "yes"},
    )
    assert eid.startswith("evt_")
    got = shared_sink.wait_event(eid)
    assert got.path == "/acme"
    body = got.json()
    assert body["id"] == eid
    assert body["tenant_id"] == "acme"
    assert body["event_type"] == "user.created"
    assert body["severity"] == "High"
    assert body["context"] == {"source": "test"}
    assert body["payload"] == {"user_id": 42}
    assert got.headers["X-Custom"] == "yes"
    assert verify_signature(got.body, got.headers["X-Webhook-Signature"], "acme-secret")
    view = wait_status(c, eid, "delivered")
    assert view["tenant_id"] == "acme"
    assert view["attempts"][0]["status_code"] == 200


def test_send_over_unix_socket_is_delivered(daemon: Daemon, shared_sink: Sink) -> None:
    with RelayClient(unix_socket=sock_of(daemon)) as c:
        eid = c.send("acme-sock", "user.created", {"via": "socket"})
        got = shared_sink.wait_event(eid)
        assert got.path == "/acme-sock"
        assert got.json()["payload"] == {"via": "socket"}
        assert c.event(eid)["event_id"] == eid
        assert c.ready()


def test_given_event_id_is_kept_and_idempotent(daemon: Daemon, shared_sink: Sink) -> None:
    c = RelayClient(daemon.url)
    first = c.send_result("acme", "user.updated", {"n": 1}, event_id="order-1001")
    assert first == {"event_id": "order-1001", "status": "queued"}
    again = c.send_result("acme", "user.updated", {"n": 1}, event_id="order-1001")
    assert again["event_id"] == "order-1001"
    assert again["duplicate"] is True
    assert c.send("acme", "user.updated", {"n": 1}, event_id="order-1001") == "order-1001"
    got = shared_sink.wait_event("order-1001")
    assert got.json()["id"] == "order-1001"
    time.sleep(0.3)
    assert sum(1 for r in shared_sink.received if r.headers.get("X-Event-ID") == "order-1001") == 1


def test_filtered_answer_still_returns_the_id(daemon: Daemon) -> None:
    c = RelayClient(daemon.url)
    answer = c.send_result("only-users", "order.created", {"n": 1})
    assert answer["status"] == "filtered"
    assert answer["event_id"].startswith("evt_")
    assert c.send("only-users", "order.created", {"n": 1}, event_id="flt-1") == "flt-1"


def test_send_returns_an_id_that_tells_queued_filtered_and_duplicate(daemon: Daemon, shared_sink: Sink) -> None:
    c = RelayClient(daemon.url)
    first = c.send("acme", "user.created", {}, event_id="sr-1")
    assert isinstance(first, str) and first == "sr-1" and first.event_id == "sr-1"
    assert (first.status, first.duplicate, first.queued, first.filtered) == ("queued", False, True, False)
    again = c.send("acme", "user.created", {}, event_id="sr-1")
    assert again == "sr-1" and again.duplicate and not again.queued
    assert again.status in ("queued", "delivering", "delivered")  # the earlier event's status
    dropped = c.send("only-users", "order.created", {})
    assert dropped.startswith("evt_") and dropped.filtered and dropped.status == "filtered"
    built = c.send_event(WebhookEvent("acme", "user.created", {}).with_event_id("sr-1"))
    assert built.duplicate

    async def go() -> tuple[bool, str]:
        async with AsyncRelayClient(daemon.url) as ac:
            r = await ac.send("only-users", "order.created", {})
            return r.filtered, (await ac.send("acme", "user.created", {}, event_id="sr-1")).status

    filtered, status = asyncio.run(go())
    assert filtered and status in ("queued", "delivering", "delivered")


def test_unknown_tenant_raises_tenant_not_found(daemon: Daemon) -> None:
    c = RelayClient(daemon.url)
    with pytest.raises(RelayError) as info:
        c.send("no-such-tenant", "user.created", {"n": 1})
    err = info.value
    assert err.code == "tenant_not_found"
    assert err.status == 404
    assert "no-such-tenant" in err.message
    assert not err.connection_failed


def test_invalid_field_is_422_with_details(daemon: Daemon) -> None:
    c = RelayClient(daemon.url)
    with pytest.raises(RelayError) as info:
        c.send("acme", "user.created", {"n": 1}, severity="Urgent")
    assert info.value.status == 422
    assert info.value.code == "invalid_field"
    assert info.value.details["field"] == "severity"
    with pytest.raises(RelayError) as info:
        c.send("acme", "user.created", {}, custom_headers={"X-Bad": "a\r\nInjected: 1"})
    assert info.value.status == 422
    assert info.value.details["field"].startswith("custom_headers")


def test_event_not_found(daemon: Daemon) -> None:
    with pytest.raises(RelayError) as info:
        RelayClient(daemon.url).event("evt_does_not_exist")
    assert info.value.status == 404
    assert info.value.code == "event_not_found"


def test_connection_error_is_fast_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    real_sleep = time.sleep

    def fake_sleep(s: float) -> None:
        sleeps.append(s)
        real_sleep(s)

    monkeypatch.setattr(client_mod.time, "sleep", fake_sleep)
    c = RelayClient(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    t0 = time.monotonic()
    with pytest.raises(RelayError) as info:
        c.send("acme", "user.created", {})
    assert time.monotonic() - t0 < 2.0
    assert info.value.code == "connection_error"
    assert info.value.status is None
    assert info.value.connection_failed
    assert sleeps == [0.1, 0.2]  # retries=2, backing off 0.1 s then 0.2 s

    sleeps.clear()
    with pytest.raises(RelayError):
        RelayClient(f"http://127.0.0.1:{free_port()}", retries=0).event("x")
    assert sleeps == []


def test_missing_unix_socket_is_a_connection_error(tmp_path: Path) -> None:
    with pytest.raises(RelayError) as info:
        RelayClient(unix_socket=str(tmp_path / "absent.sock"), retries=0).send("acme", "x", {})
    assert info.value.code == "connection_error"
    assert "absent.sock" in info.value.message


def test_connection_retry_reaches_a_daemon_that_comes_up(tmp_path: Path, shared_sink: Sink) -> None:
    """A connect failure is retried: a send made just before the listener opens still succeeds."""
    import socket
    import threading

    port = free_port()
    served: list[bytes] = []

    def late_server() -> None:
        time.sleep(0.15)
        with socket.socket() as srv:
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind(("127.0.0.1", port))
            srv.listen(1)
            conn, _ = srv.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int(
                    next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
                )
                while len(rest) < length:
                    rest += conn.recv(65536)
                served.append(rest)
                answer = b'{"event_id":"evt_late","status":"queued"}'
                conn.sendall(
                    b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(answer)).encode()
                    + b"\r\nConnection: close\r\n\r\n"
                    + answer
                )

    t = threading.Thread(target=late_server, daemon=True)
    t.start()
    assert RelayClient(f"http://127.0.0.1:{port}", retries=3).send("acme", "user.created", {}) == "evt_late"
    t.join(5)
    sent = json.loads(served[0])
    assert sent["event_id"].startswith("evt_")  # generated by the client: retries stay idempotent


def test_send_batch(daemon: Daemon, shared_sink: Sink) -> None:
    c = RelayClient(daemon.url)
    events: list[dict[str, Any]] = [
        {"tenant_id": "acme-batch", "event_type": "user.created", "payload": {"i": 0}},
        {"tenant_id": "nobody", "event_type": "user.created", "payload": {"i": 1}},
        {"tenant_id": "acme-batch", "event_type": "user.created", "payload": {"i": 2}, "event_id": "batch-2"},
    ]
    results = c.send_batch(events)
    assert "event_id" not in events[0]  # the caller's dicts are not modified
    assert len(results) == 3
    assert results[0]["status"] == "queued"
    assert results[1]["error"]["code"] == "tenant_not_found"
    assert results[2] == {"event_id": "batch-2", "status": "queued"}
    shared_sink.wait_event(results[0]["event_id"])
    shared_sink.wait_event("batch-2")


def test_dead_letters_retry_purge(daemon: Daemon) -> None:
    c = RelayClient(daemon.url)
    ids = [c.send("dlq-client", "user.created", {"i": i}) for i in range(3)]
    for eid in ids:
        wait_status(c, eid, "dead")
    items = c.dead_letters("dlq-client", limit=2)  # 2 per page: the client follows next_cursor
    assert sorted(i["event"]["id"] for i in items) == sorted(ids)
    item = items[0]
    assert item["can_retry"] is True
    assert item["failure_reason"]
    assert item["attempts"][0]["status_code"] == 500
    assert item["event"]["tenant_id"] == "dlq-client"

    assert c.retry(ids[0])["event_id"] == ids[0]
    wait_status(c, ids[0], "dead")  # the sink still answers 500
    with pytest.raises(RelayError) as info:
        c.retry("evt_never_dead")
    assert info.value.code == "not_dead_lettered"
    assert info.value.status == 404

    assert c.retry_all("dlq-client") == 3
    for eid in ids:
        wait_status(c, eid, "dead")
    c.delete_dead_letter(ids[1])
    assert len(c.dead_letters("dlq-client")) == 2
    assert c.purge("dlq-client") == 2
    assert c.dead_letters("dlq-client") == []
    metrics = c.metrics("dlq-client")
    assert metrics["dead_letter_count"] == 0
    assert metrics["total_events"] == 3


def test_configure_metrics_delete(daemon: Daemon, shared_sink: Sink) -> None:
    c = RelayClient(daemon.url)
    answer = c.configure({"tenant_id": "made-by-api", "base_url": shared_sink.url + "/made", "secret_key": "s3"})
    assert answer["config"]["tenant_id"] == "made-by-api"
    assert answer["config"]["secret_key"] == "***"
    masked = {cfg["tenant_id"]: cfg for cfg in c.configs()}
    assert masked["made-by-api"]["secret_key"] == "***"
    eid = c.send("made-by-api", "user.created", {})
    got = shared_sink.wait_event(eid)
    assert verify_signature(got.body, got.headers["X-Webhook-Signature"], "s3")
    wait_status(c, eid, "delivered")
    m = c.metrics("made-by-api")
    assert m["total_events"] == 1
    assert m["successful_events"] == 1
    with pytest.raises(RelayError) as info:
        c.configure({"tenant_id": "bad", "base_url": "not a url", "secret_key": "x"})
    assert info.value.status == 422
    c.delete_config("made-by-api")
    with pytest.raises(RelayError) as info:
        c.send("made-by-api", "user.created", {})
    assert info.value.code == "tenant_not_found"
    with pytest.raises(RelayError) as info:
        c.metrics("never-existed")
    assert info.value.code == "tenant_not_found"


# ---- builder -------------------------------------------------------------------------------


def test_builder_is_immutable_and_builds_the_body() -> None:
    base = WebhookEvent("acme", "payment.completed", {"amount": 100})
    built = (
        base.with_severity("high")
        .with_context("k", "v")
        .with_context("k2", "v2")
        .with_target_url("http://127.0.0.1:1/x")
        .with_header("X-A", "1")
        .with_event_id("pay-1")
    )
    assert base.to_dict() == {"tenant_id": "acme", "event_type": "payment.completed", "payload": {"amount": 100}}
    assert built.to_dict() == {
        "tenant_id": "acme",
        "event_type": "payment.completed",
        "payload": {"amount": 100},
        "target_url": "http://127.0.0.1:1/x",
        "custom_headers": {"X-A": "1"},
        "severity": "High",
        "context": {"k": "v", "k2": "v2"},
        "event_id": "pay-1",
    }
    with pytest.raises(ValueError, match="severity"):
        base.with_severity("Urgent")


def test_send_event_with_builder(daemon: Daemon, shared_sink: Sink) -> None:
    c = RelayClient(daemon.url)
    event = (
        WebhookEvent("acme", "user.created", {"n": 7})
        .with_severity("Critical")
        .with_context("region", "eu")
        .with_target_url(shared_sink.url + "/override")
        .with_header("X-Trace", "t-1")
    )
    eid = c.send_event(event)
    got = shared_sink.wait_event(eid)
    assert got.path == "/override"
    assert got.headers["X-Trace"] == "t-1"
    body = got.json()
    assert body["severity"] == "Critical"
    assert body["context"] == {"region": "eu"}


def test_constructor_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        RelayClient("ftp://example.com")
    with pytest.raises(ValueError):
        RelayClient("http://127.0.0.1:1", unix_socket="/tmp/x.sock")
    assert RelayClient().endpoint == "http://127.0.0.1:8787"


# ---- token ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_daemon(shared_sink: Sink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("client-token")
    write_tenant(tmp / "config", "acme", shared_sink.url + "/tok")
    d = Daemon(tmp, args=["--ingest-token", "tok"])
    d.start()
    yield d
    d.__exit__(None, None, None)


def test_token(token_daemon: Daemon, shared_sink: Sink) -> None:
    with pytest.raises(RelayError) as info:
        RelayClient(token_daemon.url).send("acme", "user.created", {})
    assert info.value.code == "unauthorized"
    assert info.value.status == 401
    with pytest.raises(RelayError) as info:
        RelayClient(token_daemon.url, token="wrong").send("acme", "user.created", {})
    assert info.value.code == "unauthorized"
    eid = RelayClient(token_daemon.url, token="tok").send("acme", "user.created", {})
    assert shared_sink.wait_event(eid).path == "/tok"


# ---- async client --------------------------------------------------------------------------


async def test_async_send_tcp_and_socket(daemon: Daemon, shared_sink: Sink) -> None:
    async with AsyncRelayClient(daemon.url) as c:
        eid = await c.send("acme-async", "user.created", {"a": 1}, severity="Low", context={"x": "y"})
        event = WebhookEvent("acme-async", "user.deleted", {"a": 2}).with_severity("High")
        eid2 = await c.send_event(event)
    async with AsyncRelayClient(unix_socket=sock_of(daemon)) as cs:
        eid3 = await cs.send("acme-async", "user.created", {"via": "socket"})
        assert await cs.ready()
    got = await asyncio.to_thread(shared_sink.wait_event, eid)
    assert got.json()["severity"] == "Low"
    assert got.json()["context"] == {"x": "y"}
    assert (await asyncio.to_thread(shared_sink.wait_event, eid2)).json()["severity"] == "High"
    assert (await asyncio.to_thread(shared_sink.wait_event, eid3)).json()["payload"] == {"via": "socket"}


async def test_async_errors(daemon: Daemon, tmp_path: Path) -> None:
    async with AsyncRelayClient(daemon.url) as c:
        with pytest.raises(RelayError) as info:
            await c.send("no-such-tenant", "user.created", {})
        assert info.value.code == "tenant_not_found"
        assert info.value.status == 404
        with pytest.raises(RelayError) as info:
            await c.send("acme-async", "user.created", {}, severity="Nope")
        assert info.value.code == "invalid_field"
    t0 = time.monotonic()
    async with AsyncRelayClient(f"http://127.0.0.1:{free_port()}") as dead:
        with pytest.raises(RelayError) as info:
            await dead.send("acme", "user.created", {})
    assert info.value.code == "connection_error"
    assert info.value.status is None
    assert time.monotonic() - t0 < 2.0
    async with AsyncRelayClient(unix_socket=str(tmp_path / "absent.sock"), retries=0) as dead:
        with pytest.raises(RelayError) as info:
            await dead.event("x")
    assert info.value.code == "connection_error"


async def test_async_management(daemon: Daemon) -> None:
    async with AsyncRelayClient(daemon.url) as c:
        eid = await c.send("dlq-async", "user.created", {})
        deadline = time.monotonic() + 10
        while (await c.event(eid))["status"] != "dead":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.03)
        items = await c.dead_letters("dlq-async")
        assert [i["event"]["id"] for i in items] == [eid]
        batch = await c.send_batch([{"tenant_id": "dlq-async", "event_type": "user.created", "payload": {}}])
        assert batch[0]["status"] == "queued"
        assert (await c.metrics("dlq-async"))["total_events"] == 2
        assert await c.purge("dlq-async") >= 1


async def test_async_token(token_daemon: Daemon) -> None:
    async with AsyncRelayClient(token_daemon.url) as c:
        with pytest.raises(RelayError) as info:
            await c.send("acme", "user.created", {})
        assert info.value.code == "unauthorized"
    async with AsyncRelayClient(token_daemon.url, token="tok") as c:
        assert (await c.send("acme", "user.created", {})).startswith("evt_")


async def test_async_client_without_context_manager_can_close(daemon: Daemon) -> None:
    c = AsyncRelayClient(daemon.url)
    assert await c.ready()
    await c.close()
    await c.close()  # twice is fine


def test_generated_event_ids_are_unique_and_differ_in_a_forked_child() -> None:
    """Ids come from blocks of OS randomness; a forked worker must not reuse its parent's block."""
    from relay.events import new_event_id

    ids = [new_event_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids) and all(len(i) == 28 and i.startswith("evt_") for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child writes the id it would use next, and leaves at once
        os.write(write, new_event_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 64).decode() != new_event_id()
