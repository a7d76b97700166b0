"""Endpoint lifecycle against the real daemon and a real sink (SPEC §11): disable after a short
`disable_after_seconds`, hold, probe, re-enable, drain in order; 410; operator control; restart."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tests.support import Daemon, Received, Reply, Sink, write_tenant


def _until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.03)
    raise AssertionError(f"{what} not met within {timeout}s")


def _state(d: Daemon, tenant: str) -> dict[str, Any]:
    code, body = d.request("GET", f"/api/v1/webhooks/metrics/{tenant}")
    assert code == 200, body
    return dict(body)


def _metric_line(d: Daemon, tenant: str, state: str) -> str:
    _, text = d.request("GET", "/metrics")
    return next(
        line
        for line in text.splitlines()
        if line.startswith("hookrelay_endpoint_state{") and f'tenant="{tenant}"' in line and f'state="{state}"' in line
    )


def test_failing_endpoint_is_disabled_holds_survives_a_kill_and_drains_in_order(
    make_daemon: Callable[..., Daemon], sink: Sink
) -> None:
    healthy = False
    delivered: list[str] = []

    def responder(n: int, r: Received) -> Reply:
        if not healthy:
            return Reply(503)
        delivered.append(r.headers["X-Event-ID"])
        return Reply(200)

    sink.responder = responder
    d = make_daemon()
    write_tenant(
        d.config,
        "shop",
        sink.url + "/hook",
        retry_policy={"max_retries": 50, "initial_delay_seconds": 0.05, "backoff_multiplier": 1, "jitter": False},
        circuit_breaker={"failure_threshold": 2},
        disable_after_seconds=0.4,
        probe_interval_seconds=0.3,
    )
    d.start()
    first = d.send("shop")[1]["event_id"]
    _until(lambda: _state(d, "shop")["endpoint_state"] == "disabled", what="disabled")
    st = _state(d, "shop")
    assert st["endpoint_state_reason"] == "failing continuously for 0.4s"
    assert _metric_line(d, "shop", "disabled").endswith(" 1.0")
    held = [d.send("shop", payload={"n": i})[1]["event_id"] for i in range(3)]
    time.sleep(0.8)  # probes come and fail; nothing may be dead-lettered for waiting
    code, dl = d.request("GET", "/api/v1/webhooks/dead-letter")
    assert code == 200 and dl["items"] == []
    assert all(d.event(e)["status"] in ("queued", "retrying", "delivering") for e in [first, *held])
    # The state is on disk: a SIGKILL does not forget it.
    _until(
        lambda: (
            json.loads((d.data_dir / "endpoints.json").read_text())["endpoints"]["shop"]["state"] == "disabled"
            if (d.data_dir / "endpoints.json").exists()
            else False
        ),
        what="state file",
    )
    d.kill()
    d.start()
    assert _state(d, "shop")["endpoint_state"] == "disabled"
    healthy = True
    for e in [first, *held]:
        d.wait_status(e, "delivered", timeout=10)
    assert delivered == [first, *held], "the held backlog drains oldest first"
    st = _state(d, "shop")
    assert st["endpoint_state"] == "enabled" and st["endpoint_state_reason"] == "probe delivered"
    assert _metric_line(d, "shop", "enabled").endswith(" 1.0")


def test_410_disables_at_once_no_probes_until_enabled_by_api_or_new_base_url(
    make_daemon: Callable[..., Daemon], sink: Sink
) -> None:
    answer = 410
    sink.responder = lambda n, r: Reply(answer)
    d = make_daemon(args=["--config-rescan-interval", "0.5"])
    write_tenant(d.config, "gone", sink.url + "/a", probe_interval_seconds=0.1)
    d.start()
    first = d.send("gone")[1]["event_id"]
    d.wait_status(first, "dead")
    st = _state(d, "gone")
    assert st["endpoint_state"] == "disabled" and "410" in st["endpoint_state_reason"]
    held = d.send("gone")[1]["event_id"]
    time.sleep(0.6)
    assert len(sink.received) == 1, "an endpoint that answered 410 is never probed"
    assert d.event(held)["status"] == "queued"
    answer = 200
    code, body = d.request("POST", "/api/v1/webhooks/endpoints/gone/enable")
    assert code == 202 and body["endpoint_state"] == "enabled"
    d.wait_status(held, "delivered")
    # Operator disable holds; a changed base_url enables.
    code, body = d.request("POST", "/api/v1/webhooks/endpoints/gone/disable")
    assert code == 202 and body["endpoint_state"] == "disabled"
    later = d.send("gone")[1]["event_id"]
    time.sleep(0.4)
    assert d.event(later)["status"] == "queued"
    write_tenant(d.config, "gone", sink.url + "/b", probe_interval_seconds=0.1)
    d.wait_status(later, "delivered")
    assert sink.on("/b") and _state(d, "gone")["endpoint_state_reason"] == "base_url changed"
    assert d.request("POST", "/api/v1/webhooks/endpoints/nobody/enable")[0] == 404


def test_ledger_filters_by_window_and_type_and_replays_only_those(
    make_daemon: Callable[..., Daemon], sink: Sink
) -> None:
    ok = False
    sink.responder = lambda n, r: Reply(200 if ok else 500)
    d = make_daemon()
    write_tenant(d.config, "shop", sink.url + "/s", retry_policy={"max_retries": 0}, circuit_breaker={"enabled": False})
    d.start()

    def dead(event_type: str) -> str:
        eid = d.send("shop", event_type)[1]["event_id"]
        d.wait_status(eid, "dead")
        return str(eid)

    early = [dead("order.created"), dead("order.created"), dead("user.created")]
    time.sleep(0.1)
    middle = time.time()
    time.sleep(0.1)
    late = [dead("order.paid"), dead("order.paid"), dead("user.deleted")]

    def listed(query: str) -> list[str]:
        code, body = d.request("GET", "/api/v1/webhooks/dead-letter?" + query)
        assert code == 200, body
        return [i["event_id"] for i in body["items"]]

    assert listed("event_type=order.*") == [*early[:2], *late[:2]]
    assert listed(f"since={middle}") == late
    stamp = datetime.fromtimestamp(middle, UTC).isoformat().replace("+00:00", "Z")
    assert listed(f"until={stamp}&event_type=user.created") == [early[2]]
    assert listed(f"since={middle}&limit=1&event_type=order.*") == [late[0]]  # paged, still filtered
    code, body = d.request("GET", "/api/v1/webhooks/dead-letter?since=yesterday")
    assert code == 422 and body["error"]["details"]["field"] == "since"
    code, body = d.request("POST", "/api/v1/webhooks/retry-all", {"event_type": "order.*", "since": "soon"})
    assert code == 422 and body["error"]["details"]["field"] == "since"
    code, body = d.request("POST", "/api/v1/webhooks/retry-all", {"tenant": "shop"})
    assert code == 422 and body["error"]["details"]["field"] == "tenant"

    ok = True
    before = len(sink.received)
    code, body = d.request(
        "POST", "/api/v1/webhooks/retry-all", {"tenant_id": "shop", "since": stamp, "event_type": "order.*"}
    )
    assert (code, body) == (202, {"matched": 2})
    for eid in late[:2]:
        d.wait_status(eid, "delivered")
    time.sleep(0.3)
    assert sorted(r.headers["X-Event-ID"] for r in sink.received[before:]) == sorted(late[:2]), "only those"
    code, body = d.request("POST", "/api/v1/webhooks/purge-all", {"event_type": "user.*"})
    assert (code, body) == (200, {"matched": 2})
    assert listed("") == early[:2]
    assert d.request("POST", "/api/v1/webhooks/purge-all", {"until": middle - 3600})[1] == {"matched": 0}


def _cli(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "relay", *args, "--url", d.url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def test_cli_endpoint_and_filtered_dlq(make_daemon: Callable[..., Daemon], sink: Sink) -> None:
    sink.responder = lambda n, r: Reply(500)
    d = make_daemon()
    write_tenant(d.config, "t", sink.url + "/t", retry_policy={"max_retries": 0}, circuit_breaker={"enabled": False})
    d.start()
    ids = {}
    for kind in ("order.paid", "user.created"):
        ids[kind] = d.send("t", kind)[1]["event_id"]
        d.wait_status(ids[kind], "dead")
    out = _cli(d, "dlq", "list", "--tenant", "t", "--since", "1h", "--type", "order.*", "--json")
    assert out.returncode == 0, out.stderr
    assert [i["event_id"] for i in json.loads(out.stdout)] == [ids["order.paid"]]
    out = _cli(d, "dlq", "list", "--until", "1h", "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == [], "nothing failed more than an hour ago"
    bad = _cli(d, "dlq", "list", "--since", "last tuesday")
    assert bad.returncode == 2 and "--since" in bad.stderr
    sink.responder = lambda n, r: Reply(200)
    out = _cli(d, "dlq", "retry-all", "--tenant", "t", "--type", "user.*", "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == {"requeued": 1}, out
    d.wait_status(ids["user.created"], "delivered")
    assert d.event(ids["order.paid"])["status"] == "dead"
    out = _cli(d, "endpoint", "disable", "t")
    assert out.returncode == 0 and "t: disabled" in out.stdout, out
    out = _cli(d, "endpoint", "status", "t", "--json")
    assert json.loads(out.stdout)["endpoint_state"] == "disabled"
    assert _cli(d, "endpoint", "enable", "t").returncode == 0
    assert "t: enabled" in _cli(d, "endpoint", "status", "t").stdout
    assert _cli(d, "endpoint", "status", "nobody").returncode == 1
