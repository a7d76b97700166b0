"""The real daemon process delivering to a real aiohttp sink on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support import Reply, Sink, write_tenant

FAST = {"max_retries": 3, "initial_delay_seconds": 0.1, "backoff_multiplier": 2.0, "max_delay_seconds": 1}


@pytest.fixture
def daemon(make_daemon: Any, sink: Sink) -> Any:
    d = make_daemon()
    write_tenant(
        d.config,
        "acme",
        sink.url + "/hook",
        default_headers={"X-API-Version": "v2", "X-Clash": "default"},
        retry_policy=FAST,
        timeout_seconds=1,
        enabled_events=["user.*", "payment.completed"],
    )
    return d.start()


def test_delivery_headers_and_signature(daemon: Any, sink: Sink) -> None:
    code, body = daemon.send(
        "acme",
        "user.created",
        {"user_id": "usr_1", "name": "João"},
        custom_headers={"X-Event-Priority": "high", "X-Clash": "custom"},
        context={"transaction_id": "txn_1"},
        severity="High",
    )
    assert code == 202 and body["status"] == "queued" and body["event_id"].startswith("evt_")
    (got,) = sink.wait_for(1, "/hook")
    h = got.headers
    expected = hmac.new(b"acme-secret", got.body, hashlib.sha256).hexdigest()
    assert h["X-Webhook-Signature"] == f"sha256={expected}"
    assert h["Content-Type"] == "application/json"
    assert h["X-Event-Type"] == "user.created"
    assert h["X-Event-ID"] == body["event_id"]
    assert h["X-Tenant-ID"] == "acme"
    assert abs(int(h["X-Timestamp"]) - time.time()) < 10
    assert h["User-Agent"].startswith("hookrelay/")
    assert h["X-API-Version"] == "v2"
    assert h["X-Event-Priority"] == "high"
    assert h["X-Clash"] == "custom"  # the event's custom headers win over default_headers
    env = got.json()
    assert list(env) == ["id", "event_type", "tenant_id", "created_at", "severity", "context", "payload"]
    assert env["id"] == body["event_id"] and env["severity"] == "High"
    assert env["payload"] == {"user_id": "usr_1", "name": "João"}
    assert env["context"] == {"transaction_id": "txn_1"}
    assert env["created_at"].endswith("Z")
    view = daemon.wait_status(body["event_id"], "delivered")
    assert view["attempts"][0]["status_code"] == 200


@pytest.mark.parametrize(
    ("auth", "header", "value"),
    [
        ({"auth_type": "Bearer", "token": "sk_live_1"}, "Authorization", "Bearer sk_live_1"),
        ({"auth_type": "Bearer", "token": "t2", "header_name": "X-Auth"}, "X-Auth", "Bearer t2"),
        ({"auth_type": "ApiKey", "token": "key_1"}, "X-API-Key", "key_1"),
        ({"auth_type": "ApiKey", "token": "key_2", "header_name": "X-Key"}, "X-Key", "key_2"),
        (
            {"auth_type": "Basic", "token": "user:pa:ss"},
            "Authorization",
            "Basic " + base64.b64encode(b"user:pa:ss").decode(),
        ),
    ],
)
def test_auth_types(make_daemon: Any, sink: Sink, auth: dict[str, str], header: str, value: str) -> None:
    d = make_daemon()
    write_tenant(d.config, "t", sink.url + "/a", auth_config=auth)
    d.start()
    assert d.send("t", "x.y")[0] == 202
    (got,) = sink.wait_for(1, "/a")
    assert got.headers[header] == value
    assert auth["token"] not in d.logs()


def test_filters(daemon: Any, sink: Sink) -> None:
    assert daemon.send("acme", "user.updated")[1]["status"] == "queued"
    assert daemon.send("acme", "payment.completed")[1]["status"] == "queued"
    for event_type in ("payment.failed", "users.created", "user", "order.created"):
        code, body = daemon.send("acme", event_type)
        assert (code, body["status"]) == (200, "filtered"), event_type
    sink.wait_for(2, "/hook")
    time.sleep(0.3)
    assert len(sink.on("/hook")) == 2


def test_send_errors(daemon: Any) -> None:
    send = "/api/v1/webhooks/send"
    code, body = daemon.request("POST", send, raw=b"{not json")
    assert code == 400 and body["error"]["code"] == "bad_json"
    code, body = daemon.request("POST", send, {"tenant_id": "nope", "event_type": "a", "payload": {}})
    assert code == 404 and body["error"]["code"] == "tenant_not_found"
    code, body = daemon.request("POST", send, {"tenant_id": "acme", "payload": {}})
    assert code == 422 and body["error"]["details"]["field"] == "event_type"
    code, body = daemon.request("POST", send, {"tenant_id": "acme", "event_type": "user.x"})
    assert code == 422 and body["error"]["details"]["field"] == "payload"
    code, body = daemon.request("POST", send, {"tenant_id": "acme", "event_type": "a", "payload": 1, "severity": "X"})
    assert code == 422 and body["error"]["details"]["field"] == "severity"
    code, body = daemon.request(
        "POST", send, {"tenant_id": "acme", "event_type": "a", "payload": 1, "custom_headers": {"X-A": "a\r\nB: c"}}
    )
    assert code == 422 and body["error"]["details"]["field"] == "custom_headers.X-A"
    code, body = daemon.request(
        "POST", send, {"tenant_id": "acme", "event_type": "a", "payload": 1, "custom_headers": {"X-Event-ID": "x"}}
    )
    assert code == 422 and body["error"]["details"]["field"] == "custom_headers.X-Event-ID"
    code, body = daemon.request(
        "POST", send, {"tenant_id": "acme", "event_type": "a", "payload": 1, "target_url": "ftp://x"}
    )
    assert code == 422 and body["error"]["details"]["field"] == "target_url"
    code, body = daemon.request("POST", send, {"tenant_id": "acme", "event_type": "a", "payload": 1, "extra": 1})
    assert code == 422 and body["error"]["details"]["field"] == "extra"
    code, body = daemon.request("POST", send, {"tenant_id": "acme", "event_type": "a", "payload": "x" * 1_100_000})
    assert code == 413 and body["error"]["code"] == "payload_too_large"
    code, body = daemon.request("GET", "/api/v1/webhooks/nope")
    assert code == 404 and body["error"]["code"] == "not_found"


def test_inactive_tenant_is_409(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    write_tenant(d.config, "off", sink.url, active=False)
    d.start()
    code, body = d.send("off", "a")
    assert code == 409 and body["error"]["code"] == "tenant_inactive"


def test_retry_then_success_within_jitter_bounds(daemon: Any, sink: Sink) -> None:
    sink.responder = lambda n, r: Reply(500) if n < 2 else Reply(200)
    _, body = daemon.send("acme", "user.created")
    got = sink.wait_for(3, "/hook")
    view = daemon.wait_status(body["event_id"], "delivered")
    assert [a["status_code"] for a in view["attempts"]] == [500, 500, 200]
    gaps = [got[i + 1].at - got[i].at for i in (0, 1)]
    # delay before retry n is min(0.1 * 2^(n-1), 1), jittered into [d/2, d]
    for gap, d in zip(gaps, (0.1, 0.2), strict=True):
        assert d / 2 - 0.02 <= gap <= d + 0.25, gaps
    assert len({r.headers["X-Event-ID"] for r in got}) == 1
    assert len({r.body for r in got}) == 1  # every attempt sends the same signed bytes


def test_dead_letter_after_last_retry_and_replay(daemon: Any, sink: Sink) -> None:
    sink.responder = lambda n, r: Reply(503, body=b"down")
    _, body = daemon.send("acme", "user.created", {"k": "v"})
    eid = body["event_id"]
    sink.wait_for(4, "/hook")
    view = daemon.wait_status(eid, "dead")
    assert len(view["attempts"]) == 4  # max_retries 3 -> 4 attempts
    code, dl = daemon.request("GET", "/api/v1/webhooks/dead-letter?tenant_id=acme")
    assert code == 200 and dl["next_cursor"] is None
    (item,) = dl["items"]
    assert item["event"]["id"] == eid and item["event"]["payload"] == {"k": "v"}
    assert [a["attempt"] for a in item["attempts"]] == [1, 2, 3, 4]
    assert all(a["status_code"] == 503 and a["duration_ms"] >= 0 and a["at"] for a in item["attempts"])
    assert "max retries" in item["failure_reason"] and item["can_retry"] is True
    code, m = daemon.request("GET", "/api/v1/webhooks/metrics/acme")
    assert m["failed_events"] == 1 and m["dead_letter_count"] == 1 and m["total_events"] == 1
    sink.responder = lambda n, r: Reply(200)
    code, _ = daemon.request("POST", f"/api/v1/webhooks/retry/{eid}")
    assert code == 202
    daemon.wait_status(eid, "delivered")
    assert daemon.request("POST", f"/api/v1/webhooks/retry/{eid}")[0] == 404
    _, dl = daemon.request("GET", "/api/v1/webhooks/dead-letter")
    assert dl["items"] == []


def test_410_is_final(daemon: Any, sink: Sink) -> None:
    sink.responder = lambda n, r: Reply(410)
    _, body = daemon.send("acme", "user.created")
    view = daemon.wait_status(body["event_id"], "dead")
    assert len(view["attempts"]) == 1


def test_timeout_is_a_failed_attempt(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    write_tenant(d.config, "slow", sink.url + "/slow", timeout_seconds=0.3, retry_policy={**FAST, "max_retries": 1})
    d.start()
    sink.responder = lambda n, r: Reply(200, delay=2.0) if n == 0 else Reply(200)
    _, body = d.send("slow", "a")
    view = d.wait_status(body["event_id"], "delivered")
    first = view["attempts"][0]
    assert first["status_code"] is None and "timed out" in first["error"]
    assert 250 <= first["duration_ms"] < 1500


def test_retry_after_sets_a_floor(daemon: Any, sink: Sink) -> None:
    sink.responder = lambda n, r: Reply(429, headers={"Retry-After": "1"}) if n == 0 else Reply(200)
    daemon.send("acme", "user.created")
    got = sink.wait_for(2, "/hook")
    assert got[1].at - got[0].at >= 0.95  # not the policy's 0.1 s


def test_redirects_are_not_followed(daemon: Any, sink: Sink) -> None:
    sink.responder = lambda n, r: (
        Reply(302, headers={"Location": sink.url + "/elsewhere"}) if r.path == "/hook" else Reply()
    )
    _, body = daemon.send("acme", "user.created")
    daemon.wait_status(body["event_id"], "dead", timeout=15)
    assert sink.on("/elsewhere") == []


def test_configs_are_masked(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    write_tenant(
        d.config,
        "m",
        sink.url,
        secret_key="top-secret-value",
        auth_config={"auth_type": "Bearer", "token": "tok-value"},
    )
    d.start()
    code, body = d.request("GET", "/api/v1/webhooks/configs")
    assert code == 200
    text = json.dumps(body)
    assert "top-secret-value" not in text and "tok-value" not in text
    (cfg,) = body["configs"]
    assert cfg["secret_key"] == "***" and cfg["auth_config"]["token"] == "***"
    assert cfg["base_url"] == sink.url and cfg["retry_policy"]["max_retries"] == 5


def test_idempotent_event_id(daemon: Any, sink: Sink) -> None:
    code, body = daemon.send("acme", "user.created", event_id="order-42")
    assert (code, body["event_id"]) == (202, "order-42")
    code, again = daemon.send("acme", "user.created", event_id="order-42")
    assert code == 200 and again["duplicate"] is True and again["event_id"] == "order-42"
    (got,) = sink.wait_for(1, "/hook")
    assert got.json()["id"] == "order-42" and got.headers["X-Event-ID"] == "order-42"
    daemon.wait_status("order-42", "delivered")
    code, again = daemon.send("acme", "user.created", event_id="order-42")
    assert code == 200 and again["duplicate"] is True and again["status"] == "delivered"
    time.sleep(0.3)
    assert len(sink.on("/hook")) == 1


def test_batch(daemon: Any, sink: Sink) -> None:
    events = [{"tenant_id": "acme", "event_type": "user.created", "payload": {"i": i}} for i in range(50)]
    events.insert(3, {"tenant_id": "ghost", "event_type": "user.created", "payload": {}})
    events.insert(5, {"tenant_id": "acme", "event_type": "order.created", "payload": {}})
    events.insert(7, {"tenant_id": "acme", "event_type": "user.created"})
    code, body = daemon.request("POST", "/api/v1/webhooks/send-batch", {"events": events})
    assert code == 200
    results = body["results"]
    assert len(results) == 53
    assert results[3]["error"]["code"] == "tenant_not_found"
    assert results[5]["status"] == "filtered"
    assert results[7]["error"]["details"]["field"] == "events[7].payload"
    queued = [r for r in results if r.get("status") == "queued"]
    assert len(queued) == 50
    got = sink.wait_for(50, "/hook")
    assert sorted(r.json()["payload"]["i"] for r in got) == list(range(50))
    too_many = {"events": [{"tenant_id": "acme", "event_type": "a", "payload": 1}] * 1001}
    code, body = daemon.request("POST", "/api/v1/webhooks/send-batch", too_many)
    assert code == 422 and body["error"]["details"]["field"] == "events"


def test_300_concurrent_sends_all_delivered(daemon: Any, sink: Sink) -> None:
    def one(i: int) -> str:
        code, body = daemon.send("acme", "user.created", {"i": i})
        assert code == 202
        return str(body["event_id"])

    with ThreadPoolExecutor(32) as pool:
        ids = list(pool.map(one, range(300)))
    got = sink.wait_for(300, "/hook", timeout=30)
    assert {r.headers["X-Event-ID"] for r in got} == set(ids)


def test_receive_verifies_signatures(daemon: Any) -> None:
    body = b'{"event":"test"}'
    sig = "sha256=" + hmac.new(b"acme-secret", body, hashlib.sha256).hexdigest()
    ok = daemon.request(
        "POST", "/api/v1/webhooks/receive", raw=body, headers={"X-Tenant-ID": "acme", "X-Webhook-Signature": sig}
    )
    assert ok == (200, {"valid": True})
    bad = daemon.request(
        "POST", "/api/v1/webhooks/receive", raw=body + b" ", headers={"X-Tenant-ID": "acme", "X-Webhook-Signature": sig}
    )
    assert bad == (401, {"valid": False})


def test_slow_tenant_does_not_delay_another(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    write_tenant(d.config, "slow", sink.url + "/slow", timeout_seconds=2, max_in_flight=4)
    write_tenant(d.config, "fast", sink.url + "/fast")
    d.start()
    sink.responder = lambda n, r: Reply(200, delay=1.5) if r.path == "/slow" else Reply()
    for _ in range(20):
        d.send("slow", "a")
    started = time.time()
    d.send("fast", "a")
    (got,) = sink.wait_for(1, "/fast")
    assert got.at - started < 0.5


def test_sample_config_delivers_to_own_receive(make_daemon: Any) -> None:
    from tests.support import REPO

    d = make_daemon(config=REPO / "config")
    # The sample tenant points at 127.0.0.1:8787; run there only if that port is free.
    import socket

    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 8787)) == 0:
            pytest.skip("port 8787 is in use on this machine")
    d.port = 8787
    d.start()
    code, body = d.send("local-demo", "user.created", {"hello": "world"})
    assert code == 202
    view = d.wait_status(body["event_id"], "delivered")
    assert view["attempts"][-1]["status_code"] == 200


def test_no_secret_in_logs(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon(args=["--log-format", "json"])
    write_tenant(
        d.config, "s", sink.url, secret_key="sekrit-123", auth_config={"auth_type": "ApiKey", "token": "tok-456"}
    )
    d.start()
    sink.responder = lambda n, r: Reply(500) if n == 0 else Reply()
    _, body = d.send("s", "a")
    d.wait_status(body["event_id"], "delivered", timeout=15)
    assert d.stop() == 0
    logs = d.logs()
    assert "sekrit-123" not in logs and "tok-456" not in logs
    lines = [json.loads(line) for line in logs.splitlines() if line.strip()]
    assert any(rec.get("event_id") == body["event_id"] and rec.get("status") == 200 for rec in lines)


def test_higher_severity_goes_first_when_events_wait(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    write_tenant(d.config, "sev", sink.url + "/s", max_in_flight=1)
    d.start()
    sink.responder = lambda n, r: Reply(200, delay=0.3) if n == 0 else Reply(200)
    d.send("sev", "a", {"name": "first"}, severity="Low")
    sink.wait_for(1, "/s")  # the first one is in flight; the rest wait behind it
    for i in range(3):
        d.send("sev", "a", {"name": f"low{i}"}, severity="Low")
    d.send("sev", "a", {"name": "medium"}, severity="Medium")
    d.send("sev", "a", {"name": "critical"}, severity="Critical")
    got = sink.wait_for(6, "/s")
    order = [r.json()["payload"]["name"] for r in got]
    assert order == ["first", "critical", "medium", "low0", "low1", "low2"]


def test_max_in_flight_bounds_concurrency(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    write_tenant(d.config, "mif", sink.url + "/m", max_in_flight=2)
    d.start()
    sink.responder = lambda n, r: Reply(200, delay=0.2)
    for _ in range(6):
        d.send("mif", "a")
    got = sink.wait_for(6, "/m")
    # With 2 in flight and 0.2 s each, 6 events arrive in 3 waves of 2.
    arrivals = sorted(r.at for r in got)
    assert arrivals[2] - arrivals[0] >= 0.15 and arrivals[4] - arrivals[2] >= 0.15


def test_check_config_cli(tmp_path: Any) -> None:
    import subprocess
    import sys

    good = tmp_path / "good"
    write_tenant(good, "a", "https://example.com/hook")
    ok = subprocess.run([sys.executable, "-m", "relay", "check-config", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and "1 tenant" in ok.stdout
    bad = tmp_path / "bad"
    write_tenant(bad, "acme", "https://example.com/hook", retry_policy={"max_retries": "x"}, extra_key=1)
    res = subprocess.run([sys.executable, "-m", "relay", "check-config", str(bad)], capture_output=True, text=True)
    assert res.returncode == 1
    assert f"{bad}/acme.yaml: retry_policy.max_retries: expected int, got str" in res.stderr
    assert f"{bad}/acme.yaml: extra_key: unknown key" in res.stderr


def test_attempts_carry_their_round_across_replays_and_restarts(make_daemon: Any, sink: Sink) -> None:
    failing = {"on": True}
    sink.responder = lambda n, r: Reply(status=500) if failing["on"] else Reply()
    d = make_daemon()
    policy = {"max_retries": 1, "initial_delay_seconds": 0.05, "jitter": False}
    write_tenant(d.config, "rounds", sink.url + "/rounds", retry_policy=policy)
    d.start()
    status, body = d.send("rounds")
    assert status == 202
    eid = body["event_id"]
    d.wait_status(eid, "dead")

    def rounds(view: Any) -> list[tuple[int, int]]:
        return [(a["round"], a["attempt"]) for a in view["attempts"]]

    assert d.request("POST", f"/api/v1/webhooks/retry/{eid}")[0] == 202
    deadline = time.time() + 10
    while len(d.event(eid)["attempts"]) < 4 or d.event(eid)["status"] != "dead":
        assert time.time() < deadline, d.event(eid)
        time.sleep(0.05)
    want = [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert rounds(d.event(eid)) == want
    code, item = d.request("GET", f"/api/v1/webhooks/dead-letter/{eid}")
    assert code == 200 and rounds(item) == want

    d.stop()  # recovery rebuilds the rounds from the journal
    d.start()
    assert rounds(d.event(eid)) == want
    failing["on"] = False
    assert d.request("POST", f"/api/v1/webhooks/retry/{eid}")[0] == 202
    d.wait_status(eid, "delivered")
    assert rounds(d.event(eid)) == [*want, (3, 1)]


def test_number_rounds_fills_in_records_written_before_rounds() -> None:
    from relay.events import Attempt, number_rounds

    def attempts(*spec: tuple[int, int]) -> list[Attempt]:
        return [Attempt(attempt=n, at="t", status_code=500, error=None, duration_ms=1.0, round=r) for n, r in spec]

    legacy = number_rounds(attempts((1, 0), (2, 0), (1, 0), (2, 0), (3, 0)))
    assert [a.round for a in legacy] == [1, 1, 2, 2, 2]
    mixed = number_rounds(attempts((1, 0), (2, 0), (1, 2), (1, 0)))  # old records, then new ones
    assert [a.round for a in mixed] == [1, 1, 2, 3]
    truncated = number_rounds(attempts((3, 0), (4, 0), (1, 0)))  # the history's start is not kept
    assert [a.round for a in truncated] == [1, 1, 2]
