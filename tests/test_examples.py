"""examples/: the usage script against the real daemon, and the Python and Node receivers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from relay.client import RelayClient
from relay.signing import sign
from tests.support import REPO, Daemon, free_port, write_tenant

EXAMPLES = REPO / "examples"


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@contextmanager
def process(cmd: list[str], log: Path, ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """Start `cmd`, wait until `ready_url` answers, stop it at the end."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=str(REPO))
        try:
            deadline = time.time() + 15
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"{cmd[:2]} exited {proc.returncode}:\n{log.read_text()}")
                try:
                    get_json(ready_url)
                    break
                except OSError:
                    if time.time() > deadline:
                        raise AssertionError(f"{cmd[:2]} not ready:\n{log.read_text()}") from None
                    time.sleep(0.05)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def wait_for(pred: Any, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while not pred():
        if time.time() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_webhook_usage_script(make_daemon: Any) -> None:
    d: Daemon = make_daemon().start()
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "webhook_usage.py"), "--url", d.url],
        capture_output=True,
        text=True,
        timeout=40,
        cwd=str(REPO),
    )
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}\ndaemon:\n{d.logs()[-3000:]}"
    out = r.stdout
    assert "queued evt_" in out
    assert "status: delivered" in out
    assert "dead letter evt_" in out
    assert "OK:" in out
    # It cleaned up after itself: the tenant and its dead letters are gone.
    c = RelayClient(d.url)
    assert "example-webhook-usage" not in {cfg["tenant_id"] for cfg in c.configs()}
    assert c.dead_letters() == []


def test_webhook_usage_script_fails_cleanly_without_daemon() -> None:
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "webhook_usage.py"), "--url", f"http://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=str(REPO),
    )
    assert r.returncode == 1
    assert "connection_error" in r.stderr


def envelope(event_id: str, age: float = 0.0) -> bytes:
    """A delivery body as hookrelay builds it, created `age` seconds ago."""
    created = datetime.fromtimestamp(time.time() - age, UTC).isoformat(timespec="milliseconds")
    body = {
        "id": event_id,
        "event_type": "user.created",
        "tenant_id": "rcv",
        "created_at": created.replace("+00:00", "Z"),
    }
    return json.dumps({**body, "severity": "Medium", "context": {}, "payload": {}}).encode()


def post_signed(
    port: int, body: bytes, secret: str, *, event_id: str | None = None, timestamp: float | None = None
) -> tuple[int, Any]:
    """POST `body` signed with `secret`, with the headers hookrelay sends (overridable, as a replay would)."""
    headers = {
        "X-Event-ID": event_id or json.loads(body)["id"],
        "X-Webhook-Signature": sign(body, secret),
        "X-Timestamp": str(int(time.time() if timestamp is None else timestamp)),
        "Content-Type": "application/json",
    }
    req = urllib.request.Request(f"http://127.0.0.1:{port}/webhooks", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _replays_are_refused(port: int, secret: str) -> None:
    """The replay attacks of issue 13 against a running receiver: none of them is processed."""
    captured = envelope("evt_replayed")
    # One signed body, three times, under three X-Event-ID headers: processed once.
    answers = [post_signed(port, captured, secret, event_id=f"evt_fake{i}") for i in range(3)]
    assert [a[1]["status"] for a in answers] == ["ok", "duplicate", "duplicate"]
    # A stale X-Timestamp (the header hookrelay sets per attempt) is refused...
    assert post_signed(port, envelope("evt_old_stamp"), secret, timestamp=1)[0] == 401
    assert post_signed(port, envelope("evt_future"), secret, timestamp=time.time() + 3600)[0] == 401
    # ...and so is a body whose signed created_at is older than the receiver's max age, whatever
    # fresh headers the replay carries.
    assert post_signed(port, envelope("evt_old_body", age=2 * 86400), secret)[0] == 401
    stats = get_json(f"http://127.0.0.1:{port}/stats")
    assert (stats["accepted"], stats["duplicates"], stats["rejected"]) == (1, 2, 3)


def test_python_receiver_refuses_replays(tmp_path: Path) -> None:
    port, secret = free_port(), "rcv-secret"
    cmd = [sys.executable, str(EXAMPLES / "receiver_aiohttp.py"), "--port", str(port), "--secret", secret]
    with process(cmd, tmp_path / "r.log", f"http://127.0.0.1:{port}/stats"):
        _replays_are_refused(port, secret)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed: the Node.js receiver is not run")
def test_node_receiver_refuses_replays(tmp_path: Path) -> None:
    port, secret = free_port(), "node-secret"
    cmd = [str(shutil.which("node")), str(EXAMPLES / "receiver_node.js"), str(port), secret]
    with process(cmd, tmp_path / "n.log", f"http://127.0.0.1:{port}/stats"):
        _replays_are_refused(port, secret)


def _deliver_to_receiver(make_daemon: Any, tmp_path: Path, port: int, secret: str) -> tuple[Daemon, list[str]]:
    write_tenant(
        tmp_path / "config",
        "rcv",
        f"http://127.0.0.1:{port}/webhooks",
        secret_key=secret,
        retry_policy={"max_retries": 0},
    )
    write_tenant(
        tmp_path / "config",
        "forger",
        f"http://127.0.0.1:{port}/webhooks",
        secret_key="not-the-receivers-secret",
        retry_policy={"max_retries": 0},
    )
    d: Daemon = make_daemon().start()
    c = RelayClient(d.url)
    good = [c.send("rcv", "user.created", {"i": i}) for i in range(2)]
    c.send("rcv", "user.created", {"i": 0}, event_id=good[0] + "-dup")
    forged = c.send("forger", "user.created", {"evil": True})
    for eid in [*good, good[0] + "-dup"]:
        d.wait_status(eid, "delivered")
    d.wait_status(forged, "dead")  # the receiver answered 401
    return d, [*good, forged]


def test_python_receiver(make_daemon: Any, tmp_path: Path) -> None:
    port, secret = free_port(), "rcv-secret"
    cmd = [sys.executable, str(EXAMPLES / "receiver_aiohttp.py"), "--port", str(port), "--secret", secret]
    log = tmp_path / "receiver.log"
    with process(cmd, log, f"http://127.0.0.1:{port}/stats"):
        _, (a, b, forged) = _deliver_to_receiver(make_daemon, tmp_path, port, secret)
        stats = get_json(f"http://127.0.0.1:{port}/stats")
        assert stats["accepted"] == 3
        assert stats["rejected"] == 1
        assert {e["id"] for e in stats["events"]} == {a, b, a + "-dup"}

        # At-least-once: the same event redelivered (a requeued dead letter, or a lost answer) is
        # acknowledged but not processed twice. Replay one delivery by hand.
        status, answer = post_signed(port, envelope(a), secret)
        assert (status, answer) == (200, {"status": "duplicate"})
        stats = get_json(f"http://127.0.0.1:{port}/stats")
        assert (stats["accepted"], stats["duplicates"]) == (3, 1)
    text = log.read_text()
    assert f"accepted {a}" in text
    assert f"rejected {forged}" in text
    assert f"duplicate {a}" in text


def test_python_receiver_accepts_rotated_secret(tmp_path: Path) -> None:
    """A receiver started with both keys accepts signatures made with either."""
    port = free_port()
    cmd = [sys.executable, str(EXAMPLES / "receiver_aiohttp.py"), "--port", str(port)]
    cmd += ["--secret", "new", "--secret", "old"]
    with process(cmd, tmp_path / "r.log", f"http://127.0.0.1:{port}/stats"):
        for i, key in enumerate(["new", "old", "wrong"]):
            status, _ = post_signed(port, envelope(f"e{i}"), key)
            assert status == (401 if key == "wrong" else 200)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed: the Node.js receiver is not run")
def test_node_receiver(make_daemon: Any, tmp_path: Path) -> None:
    port, secret = free_port(), "node-secret"
    node = shutil.which("node")
    assert node is not None
    cmd = [node, str(EXAMPLES / "receiver_node.js"), str(port), secret]
    log = tmp_path / "node.log"
    with process(cmd, log, f"http://127.0.0.1:{port}/stats"):
        _, (a, _b, forged) = _deliver_to_receiver(make_daemon, tmp_path, port, secret)
        stats = get_json(f"http://127.0.0.1:{port}/stats")
        assert stats == {"accepted": 3, "duplicates": 0, "rejected": 1}
    text = log.read_text()
    assert f"accepted {a}" in text
    assert f"rejected {forged}" in text


def test_node_receiver_uses_timing_safe_equal() -> None:
    src = (EXAMPLES / "receiver_node.js").read_text()
    code = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith("//"))
    assert "crypto.timingSafeEqual(" in code
    assert "given.length === expected.length" in code
    assert "=== sign(" not in code and "== sign(" not in code
