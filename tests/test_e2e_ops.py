"""Observability and ops surface of the real daemon: /metrics, probes, ops listener, token, socket."""

from __future__ import annotations

import http.client
import json
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support import Reply, Sink, free_port, write_tenant
from tests.test_deploy import metric_names_from_exposition, queried_metric_names


def _samples(daemon: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    code, text = daemon.request("GET", "/metrics")
    assert code == 200
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_what_happened(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    write_tenant(d.config, "ok", sink.url + "/ok", enabled_events=["a.*"])
    write_tenant(d.config, "bad", sink.url + "/bad", retry_policy={"max_retries": 1, "initial_delay_seconds": 0.05})
    d.start()
    sink.responder = lambda n, r: Reply(500) if r.path == "/bad" else Reply(200)
    for _ in range(7):
        assert d.send("ok", "a.b")[0] == 202
    for _ in range(3):
        assert d.send("ok", "z.z")[1]["status"] == "filtered"
    bad = [d.send("bad", "a")[1]["event_id"] for _ in range(2)]
    for eid in bad:
        d.wait_status(eid, "dead")
    sink.wait_for(7, "/ok")
    time.sleep(0.2)
    m = _samples(d)
    t = lambda name: (("tenant", name),)  # noqa: E731
    assert m[("hookrelay_events_received_total", t("ok"))] == 7
    assert m[("hookrelay_events_received_total", t("bad"))] == 2
    assert m[("hookrelay_events_filtered_total", t("ok"))] == 3
    assert m[("hookrelay_events_delivered_total", t("ok"))] == 7
    assert m[("hookrelay_events_dead_lettered_total", t("bad"))] == 2
    assert m[("hookrelay_delivery_attempts_total", (("outcome", "http_error"), ("tenant", "bad")))] == 4
    assert m[("hookrelay_delivery_attempts_total", (("outcome", "success"), ("tenant", "ok")))] == 7
    assert m[("hookrelay_delivery_duration_seconds_count", t("ok"))] == 7
    assert m[("hookrelay_delivery_latency_seconds_count", t("ok"))] == 7
    assert m[("hookrelay_dead_letter_events", t("bad"))] == 2
    assert m[("hookrelay_pending_events", t("ok"))] == 0
    assert m[("hookrelay_tenants", ())] == 2
    assert m[("hookrelay_config_last_reload_success", ())] == 1
    assert m[("hookrelay_journal_bytes", ())] > 0
    assert m[("hookrelay_journal_fsync_seconds_count", ())] >= 1
    assert ("hookrelay_journal_corrupt_records_total", ()) in m
    code, tm = d.request("GET", "/api/v1/webhooks/metrics/ok")
    assert code == 200
    assert (tm["total_events"], tm["successful_events"], tm["failed_events"]) == (7, 7, 0)
    assert tm["avg_response_time_ms"] > 0 and tm["last_updated"].endswith("Z")
    _, tb = d.request("GET", "/api/v1/webhooks/metrics/bad")
    assert (tb["failed_events"], tb["dead_letter_count"], tb["pending_retries"]) == (2, 2, 0)
    assert d.request("GET", "/api/v1/webhooks/metrics/nobody")[0] == 404


def test_dashboard_and_alerts_query_only_real_metrics(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    write_tenant(d.config, "x", sink.url)
    d.start()
    d.send("x", "a")
    sink.wait_for(1)
    _, text = d.request("GET", "/metrics")
    exposed = metric_names_from_exposition(text)
    missing = queried_metric_names() - exposed
    assert not missing, f"dashboard/alerts query metrics the daemon does not expose: {sorted(missing)}"


def test_ops_listener_serves_only_ops(make_daemon: Any, sink: Sink) -> None:
    ops_port = free_port()
    d = make_daemon(args=["--ops-listen", f"127.0.0.1:{ops_port}"])
    write_tenant(d.config, "x", sink.url)
    d.start()

    def get(path: str, method: str = "GET") -> int:
        c = http.client.HTTPConnection("127.0.0.1", ops_port, timeout=5)
        c.request(method, path, body=b"{}" if method == "POST" else None)
        status = c.getresponse().status
        c.close()
        return status

    assert get("/metrics") == 200 and get("/healthz") == 200 and get("/readyz") == 200
    assert get("/api/v1/webhooks/configs") == 404
    assert get("/api/v1/webhooks/send", "POST") == 404


def test_ingest_token_enforced_both_ways(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon(args=["--ingest-token", "tok-secret-1"])
    write_tenant(d.config, "x", sink.url)
    d.start()
    body = {"tenant_id": "x", "event_type": "a", "payload": {}}
    code, res = d.request("POST", "/api/v1/webhooks/send", body)
    assert code == 401 and res["error"]["code"] == "unauthorized"
    code, _ = d.request("POST", "/api/v1/webhooks/send", body, headers={"Authorization": "Bearer wrong"})
    assert code == 401
    code, _ = d.request("POST", "/api/v1/webhooks/send", body, headers={"Authorization": "Bearer tok-secret-1"})
    assert code == 202
    assert d.request("GET", "/healthz")[0] == 200 and d.request("GET", "/metrics")[0] == 200
    assert "tok-secret-1" not in d.logs()


def test_non_loopback_listen_requires_token(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "relay", "run", "--listen", "0.0.0.0:0", "--config", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 2 and "--ingest-token" in proc.stderr


def test_startup_problems_exit_2(make_daemon: Any, tmp_path: Path, sink: Sink) -> None:
    bad = tmp_path / "badcfg"
    bad.mkdir()
    (bad / "t.yaml").write_text("tenant_id: t\nbase_url: http://x\nsecret_key: s\nretry_policy: {max_retries: x}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "relay", "run", "--config", str(bad), "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 2 and "t.yaml: retry_policy.max_retries" in proc.stderr
    d = make_daemon()
    write_tenant(d.config, "x", sink.url)
    d.start()
    clash = make_daemon(config=d.config, data_dir=tmp_path / "other-data")
    clash.port = d.port
    proc = subprocess.run(clash.command(), capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2 and "address already in use" in proc.stderr


def test_unix_socket_ingest_and_mode(make_daemon: Any, sink: Sink, tmp_path: Path) -> None:
    sock_path = tmp_path / "relay.sock"
    d = make_daemon(args=["--unix-socket", str(sock_path)])
    write_tenant(d.config, "x", sink.url + "/u")
    d.start()
    assert stat.S_IMODE(sock_path.stat().st_mode) == 0o660
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock_path))
    body = json.dumps({"tenant_id": "x", "event_type": "a", "payload": {"via": "socket"}}).encode()
    s.sendall(
        b"POST /api/v1/webhooks/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 202")
    (got,) = sink.wait_for(1, "/u")
    assert got.json()["payload"] == {"via": "socket"}
    # A live socket is refused to a second daemon.
    other = make_daemon(config=d.config, args=["--unix-socket", str(sock_path)])
    proc = subprocess.run(other.command(), capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2 and "socket" in proc.stderr


def test_stale_unix_socket_is_replaced(make_daemon: Any, sink: Sink, tmp_path: Path) -> None:
    sock_path = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_path))
    s.close()  # a socket file nobody listens on, as after a crash
    d = make_daemon(args=["--unix-socket", str(sock_path)])
    write_tenant(d.config, "x", sink.url)
    d.start()
    assert sock_path.is_socket()


def test_readyz_turns_503_on_shutdown_and_json_logs_parse(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon(args=["--log-format", "json"])
    write_tenant(d.config, "x", sink.url)
    d.start()
    code, body = d.request("GET", "/readyz")
    assert code == 200 and body["ready"] is True and body["config_digest"]
    assert d.stop() == 0
    lines = [line for line in d.logs().splitlines() if line.strip()]
    assert lines
    for line in lines:
        rec = json.loads(line)
        assert {"ts", "level", "msg"} <= set(rec)


def test_openapi_covers_every_route(make_daemon: Any, sink: Sink) -> None:
    from relay.api import make_app
    from relay.openapi import document

    doc = document()
    d = make_daemon()
    write_tenant(d.config, "x", sink.url)
    d.start()
    code, served = d.request("GET", "/api/v1/openapi.json")
    assert code == 200 and served["openapi"].startswith("3.1")

    class _Stub:
        max_body_bytes = 1
        ingest_token = None

    app = make_app(_Stub())  # type: ignore[arg-type]
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented
    for path, ops in doc["paths"].items():
        for method in ops:
            concrete = path.replace("{tenant_id}", "x").replace("{event_id}", "evt_nope")
            status, _ = d.request(method.upper(), concrete, {} if method == "post" else None)
            assert status not in (405, 500) and not (status == 404 and "{" not in path), (method, path, status)


def test_client_disconnect_mid_body_is_not_an_error(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    write_tenant(d.config, "x", sink.url)
    d.start()
    s = socket.create_connection(("127.0.0.1", d.port))
    s.sendall(b'POST /api/v1/webhooks/send HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{"tenant')
    time.sleep(0.2)
    s.close()
    time.sleep(0.3)
    assert d.request("GET", "/healthz")[0] == 200
    assert "unhandled error" not in d.logs() and "Traceback" not in d.logs()


def test_malformed_request_is_one_warning_line(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    write_tenant(d.config, "x", sink.url)
    d.start()
    s = socket.create_connection(("127.0.0.1", d.port))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(300)) + b"\r\n")
    s.settimeout(5)
    assert s.recv(100).startswith(b"HTTP/1.0 400")
    s.close()
    time.sleep(0.3)
    logs = d.logs()
    assert "Rejected a malformed request" in logs
    assert "Traceback" not in logs and " ERROR " not in logs
