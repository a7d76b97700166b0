"""Operator events against the real daemon (SPEC §11): a second sink receives signed
`endpoint.failing|disabled|enabled`, `dead_letter.added` and `journal.corruption`, each once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from relay.signing import sign
from tests.support import Daemon, Received, Reply, Sink, write_tenant

SECRET = "ops-secret-value-1234"


def _events(ops: Sink) -> list[dict[str, Any]]:
    out = []
    seen = set()
    for r in ops.received:
        if r.headers.get("X-Webhook-Signature") != sign(r.body, SECRET):
            raise AssertionError(f"unsigned or badly signed operator event: {r.body!r}")
        if r.headers["X-Event-ID"] in seen:
            continue  # a retry of one that failed
        seen.add(r.headers["X-Event-ID"])
        out.append(r.json())
    return out


def _wait_type(ops: Sink, kind: str, tenant: str | None, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for ev in _events(ops):
            if ev["type"] == kind and ev["tenant_id"] == tenant:
                return ev
        time.sleep(0.03)
    raise AssertionError(f"no {kind} for {tenant}: {_events(ops)}")


def test_operator_events_arrive_signed_once(make_daemon: Callable[..., Daemon], sink: Sink) -> None:
    ops = Sink().start()
    try:
        # The operator's receiver fails once: the event is retried, not lost, and not doubled.
        ops.responder = lambda n, r: Reply(500 if n == 0 else 200)
        healthy = False

        def tenants(n: int, r: Received) -> Reply:
            if r.path == "/down":
                return Reply(200 if healthy else 503)
            return Reply(410 if r.path == "/gone" else 500)

        sink.responder = tenants
        d = make_daemon(args=["--ops-webhook", ops.url + "/ops", "--ops-webhook-secret", SECRET])
        fast = {"max_retries": 50, "initial_delay_seconds": 0.05, "backoff_multiplier": 1, "jitter": False}
        write_tenant(
            d.config,
            "down",
            sink.url + "/down",
            retry_policy=fast,
            circuit_breaker={"failure_threshold": 1},
            disable_after_seconds=0.3,
            probe_interval_seconds=0.2,
        )
        write_tenant(d.config, "gone", sink.url + "/gone")
        write_tenant(
            d.config, "bad", sink.url + "/bad", retry_policy={"max_retries": 0}, circuit_breaker={"enabled": False}
        )
        d.start()
        d.send("down")
        d.send("gone")
        for _ in range(3):
            d.send("bad")
        failing = _wait_type(ops, "endpoint.failing", "down")
        assert failing["data"]["state"] == "failing" and failing["at"].endswith("Z")
        assert _wait_type(ops, "endpoint.disabled", "down")["data"]["reason"].startswith("failing continuously")
        assert "410" in _wait_type(ops, "endpoint.disabled", "gone")["data"]["reason"]
        first = _wait_type(ops, "dead_letter.added", "bad")
        assert first["data"] == {"count": 1}, "the first dead letter is told at once"
        healthy = True
        assert _wait_type(ops, "endpoint.enabled", "down")["data"]["reason"] == "probe delivered"
        assert set(_wait_type(ops, "endpoint.enabled", "down")) == {"type", "tenant_id", "at", "data"}
        time.sleep(0.5)
        # The failed first request is retried 1 s later (FIRST_DELAY): on a fast run that can be
        # after this point, and a stop keeps an event not yet due in the outbox. Wait for it.
        deadline = time.time() + 10
        while len(ops.received) == len({r.headers["X-Event-ID"] for r in ops.received}) and time.time() < deadline:
            time.sleep(0.05)
        dl = [e for e in _events(ops) if e["type"] == "dead_letter.added" and e["tenant_id"] == "bad"]
        assert len(dl) == 1, "at most one a minute per tenant"
        # Shutdown tells the rest of the minute's count rather than lose it.
        assert d.stop() == 0
        later = [e for e in _events(ops) if e["type"] == "dead_letter.added" and e["tenant_id"] == "bad"]
        assert [e["data"]["count"] for e in later] == [1, 2]
        kinds = [(e["type"], e["tenant_id"]) for e in _events(ops)]
        once = [k for k in kinds if k[0] != "dead_letter.added"]
        assert len(once) == len(set(once)) == 4, kinds  # failing, disabled, enabled; gone's disabled
        assert len(ops.received) > len(kinds), "the first request failed and was retried"
        assert SECRET not in d.logs()

        # A damaged journal is told once the daemon is back.
        seg = sorted((d.data_dir / "journal").glob("*.seg"))[0]
        data = bytearray(seg.read_bytes())
        data[40] ^= 0xFF
        seg.write_bytes(bytes(data))
        d2 = make_daemon(
            config=d.config,
            data_dir=d.data_dir,
            args=["--ops-webhook", ops.url + "/ops", "--ops-webhook-secret", SECRET],
        )
        d2.start()
        corrupt = _wait_type(ops, "journal.corruption", None)
        assert corrupt["data"]["corrupt_records"] >= 1
    finally:
        ops.stop()


def test_ops_webhook_flags_go_together(make_daemon: Callable[..., Daemon]) -> None:
    d = make_daemon(args=["--ops-webhook", "http://127.0.0.1:9/ops"])
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(15) == 2
    assert "--ops-webhook-secret" in d.logs()
