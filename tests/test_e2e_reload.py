"""Hot reload of tenant configs on real files, with the real daemon (SPEC §2 Reload)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support import Reply, Sink, write_tenant


def _metric(daemon: Any, name: str, labels: str = "") -> float:
    _, text = daemon.request("GET", "/metrics")
    for line in text.splitlines():
        if line.startswith(name + (labels and "{" + labels + "}")) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            if head == name + ("{" + labels + "}" if labels else ""):
                return float(value)
    return float("nan")


def _wait(predicate: Any, timeout: float = 3.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    assert predicate(), "condition not met in time"


def test_edited_tenant_is_used_within_3s(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    write_tenant(d.config, "acme", sink.url + "/v1")
    d.start()
    d.send("acme", "a")
    sink.wait_for(1, "/v1")
    write_tenant(d.config, "acme", sink.url + "/v2", default_headers={"X-Rev": "2"})
    deadline = time.time() + 3
    while time.time() < deadline:
        _, cfgs = d.request("GET", "/api/v1/webhooks/configs")
        if cfgs["configs"][0]["base_url"].endswith("/v2"):
            break
        time.sleep(0.05)
    d.send("acme", "a")
    (got,) = sink.wait_for(1, "/v2", timeout=3)
    assert got.headers["X-Rev"] == "2"


def test_invalid_file_keeps_old_config_and_is_counted(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    path = write_tenant(d.config, "acme", sink.url + "/ok")
    d.start()
    before = _metric(d, "hookrelay_config_reloads_total", 'result="failure"')
    path.write_text(path.read_text().replace("base_url", "base_ur1"))
    _wait(lambda: _metric(d, "hookrelay_config_reloads_total", 'result="failure"') == before + 1)
    assert _metric(d, "hookrelay_config_last_reload_success") == 0
    assert "base_ur1" in d.logs()
    assert d.send("acme", "a")[0] == 202
    sink.wait_for(1, "/ok")
    _, ready = d.request("GET", "/readyz")
    digest = ready["config_digest"]
    write_tenant(d.config, "acme", sink.url + "/ok2")
    _wait(lambda: _metric(d, "hookrelay_config_last_reload_success") == 1)
    assert d.request("GET", "/readyz")[1]["config_digest"] != digest


def _k8s_publish(root: Path, n: int, files: dict[str, str]) -> None:
    """What the kubelet does: new timestamped dir, new ..data symlink renamed over the old one."""
    ts = root / f"..2026_11_29_{n:06d}"
    ts.mkdir()
    for name, text in files.items():
        (ts / name).write_text(text)
    tmp = root / "..data_tmp"
    os.symlink(ts.name, tmp)
    old = os.readlink(root / "..data") if (root / "..data").exists() else None
    os.replace(tmp, root / "..data")
    for name in files:
        if not (root / name).is_symlink():
            os.symlink(f"..data/{name}", root / name)
    if old:
        for f in (root / old).iterdir():
            f.unlink()
        (root / old).rmdir()


def test_configmap_symlink_swap_ten_updates(make_daemon: Any, sink: Sink) -> None:
    root = Path(make_daemon().tmp) / "cm"
    root.mkdir()

    def tenant(rev: int) -> str:
        return yaml.safe_dump(
            {
                "tenant_id": "cm",
                "base_url": f"{sink.url}/rev{rev}",
                "secret_key": "s",
                "default_headers": {"X-Rev": str(rev)},
            }
        )

    _k8s_publish(root, 0, {"cm.yaml": tenant(0)})
    d = make_daemon(config=root, args=["--config-rescan-interval", "60"])
    d.start()
    for rev in range(1, 11):
        _k8s_publish(root, rev, {"cm.yaml": tenant(rev)})
        deadline = time.time() + 3
        while time.time() < deadline:
            _, cfgs = d.request("GET", "/api/v1/webhooks/configs")
            if cfgs["configs"][0]["base_url"].endswith(f"/rev{rev}"):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"update {rev} not picked up within 3s")
    d.send("cm", "a")
    (got,) = sink.wait_for(1, "/rev10")
    assert got.headers["X-Rev"] == "10"


def test_sighup_reloads(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon(args=["--config-rescan-interval", "3600"])
    write_tenant(d.config, "acme", sink.url + "/a")
    d.start()
    before = _metric(d, "hookrelay_config_reloads_total", 'result="success"')
    d.signal(signal.SIGHUP)
    _wait(lambda: _metric(d, "hookrelay_config_reloads_total", 'result="success"') == before + 1)


def test_configure_and_delete_round_trip(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    d.start()
    body = {"tenant_id": "api-t", "base_url": sink.url + "/api", "secret_key": "s3cr3t-value", "enabled_events": ["*"]}
    code, res = d.request("POST", "/api/v1/webhooks/configure", body)
    assert code == 201 and res["config"]["secret_key"] == "***"
    path = d.config / "api-t.yaml"
    assert path.exists() and (path.stat().st_mode & 0o777) == 0o600
    assert d.send("api-t", "a")[0] == 202
    sink.wait_for(1, "/api")
    code, res = d.request("POST", "/api/v1/webhooks/configure", {**body, "retry_policy": {"max_retries": "x"}})
    assert code == 422 and "retry_policy.max_retries" in res["error"]["message"]
    assert d.request("DELETE", "/api/v1/webhooks/config/api-t")[0] == 204
    assert not path.exists()
    assert d.send("api-t", "a")[0] == 404
    assert d.request("DELETE", "/api/v1/webhooks/config/api-t")[0] == 404


def test_read_only_config_is_409(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon(args=["--read-only-config"])
    write_tenant(d.config, "acme", sink.url)
    d.start()
    body = {"tenant_id": "x", "base_url": sink.url, "secret_key": "s"}
    code, res = d.request("POST", "/api/v1/webhooks/configure", body)
    assert code == 409 and res["error"]["code"] == "config_read_only"
    assert d.request("DELETE", "/api/v1/webhooks/config/acme")[0] == 409


def test_removed_tenant_pending_events_are_dead_lettered(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    path = write_tenant(d.config, "gone", sink.url + "/g", retry_policy={"initial_delay_seconds": 30})
    d.start()
    sink.responder = lambda n, r: Reply(500)
    ids = [d.send("gone", "a")[1]["event_id"] for _ in range(3)]
    sink.wait_for(3, "/g")
    path.unlink()
    for eid in ids:
        d.wait_status(eid, "dead", timeout=3)
    _, dl = d.request("GET", "/api/v1/webhooks/dead-letter")
    assert {i["event"]["id"] for i in dl["items"]} == set(ids)
    assert all(i["failure_reason"] == "tenant removed" and i["can_retry"] is False for i in dl["items"])
    # Once the tenant is back, they can be retried.
    sink.responder = lambda n, r: Reply(200)
    write_tenant(d.config, "gone", sink.url + "/g")
    _wait(lambda: d.request("POST", f"/api/v1/webhooks/retry/{ids[0]}")[0] == 202)
    d.wait_status(ids[0], "delivered")


def test_deactivated_tenant_holds_pending_events(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    write_tenant(d.config, "p", sink.url + "/p", retry_policy={"initial_delay_seconds": 0.5, "jitter": False})
    d.start()
    sink.responder = lambda n, r: Reply(500) if n == 0 else Reply(200)
    _, body = d.send("p", "a")
    sink.wait_for(1, "/p")
    write_tenant(
        d.config, "p", sink.url + "/p", active=False, retry_policy={"initial_delay_seconds": 0.5, "jitter": False}
    )
    _wait(lambda: d.request("GET", "/api/v1/webhooks/configs")[1]["configs"][0]["active"] is False)
    assert d.send("p", "a")[0] == 409
    time.sleep(1.0)
    assert len(sink.on("/p")) == 1  # held, not attempted, not dropped
    assert d.event(body["event_id"])["status"] == "retrying"
    write_tenant(d.config, "p", sink.url + "/p", retry_policy={"initial_delay_seconds": 0.5, "jitter": False})
    d.wait_status(body["event_id"], "delivered", timeout=5)
