"""Durability with the real process: SIGKILL at any moment loses no acknowledged event (SPEC §5)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from tests.support import Reply, Sink, write_tenant


def test_200_acknowledged_events_survive_sigkill(make_daemon: Any, sink: Sink) -> None:
    sink.responder = lambda n, r: Reply(503)  # nothing gets through before the kill
    d = make_daemon()
    write_tenant(d.config, "dur", sink.url + "/d", retry_policy={"max_retries": 50, "initial_delay_seconds": 5})
    d.start()
    ids = set()
    for i in range(200):
        code, body = d.send("dur", "a", {"i": i})
        assert code == 202
        ids.add(body["event_id"])
    d.kill()
    sink.responder = lambda n, r: Reply(200)
    d2 = make_daemon(config=d.config, data_dir=d.data_dir)
    d2.start()
    deadline = time.time() + 20
    while time.time() < deadline and not ids <= {r.headers["X-Event-ID"] for r in sink.received}:
        time.sleep(0.1)
    assert ids <= {r.headers["X-Event-ID"] for r in sink.received}
    for eid in list(ids)[:10]:
        d2.wait_status(eid, "delivered")
    assert d2.stop() == 0


def test_kill_cycles_during_concurrent_sending_with_flapping_receiver(make_daemon: Any, sink: Sink) -> None:
    rng = random.Random(7)
    sink.responder = lambda n, r: Reply(500) if rng.random() < 0.4 else Reply(200)
    first = make_daemon()
    write_tenant(
        first.config,
        "flap",
        sink.url + "/f",
        retry_policy={"max_retries": 100, "initial_delay_seconds": 0.05, "max_delay_seconds": 0.2},
    )
    acked: set[str] = set()
    lock = threading.Lock()
    d = first
    for cycle in range(5):
        if cycle:
            d = make_daemon(config=first.config, data_dir=first.data_dir)
        d.start()
        stop = threading.Event()

        def sender(daemon: Any = d, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                try:
                    code, body = daemon.send("flap", "a", {"c": 1})
                except OSError:
                    return
                if code == 202:
                    with lock:
                        acked.add(body["event_id"])

        threads = [threading.Thread(target=sender) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3 + rng.random() * 0.7)
        d.kill()  # SIGKILL at a random moment, mid-traffic
        stop.set()
        for t in threads:
            t.join(10)
    sink.responder = lambda n, r: Reply(200)
    final = make_daemon(config=first.config, data_dir=first.data_dir)
    final.start()
    deadline = time.time() + 30
    while time.time() < deadline:
        delivered = {r.headers["X-Event-ID"] for r in sink.received if r.path == "/f"}
        if acked <= delivered:
            break
        time.sleep(0.2)
    delivered = {r.headers["X-Event-ID"] for r in sink.received if r.path == "/f"}
    assert len(acked) > 20
    missing = acked - delivered
    assert not missing, f"{len(missing)} acknowledged events never delivered"
    assert final.stop() == 0
    check = subprocess.run(
        [sys.executable, "-m", "relay", "journal", "check", "--data-dir", str(first.data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_second_daemon_on_same_data_dir_exits_2(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    write_tenant(d.config, "x", sink.url)
    d.start()
    other = make_daemon(config=d.config, data_dir=d.data_dir)
    proc = subprocess.run(other.command(), capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert str(d.proc.pid) in proc.stderr


def test_sigterm_with_events_in_flight_exits_0_and_loses_nothing(make_daemon: Any, sink: Sink) -> None:
    sink.responder = lambda n, r: Reply(200, delay=30)  # receivers that never answer in time
    d = make_daemon(args=["--shutdown-grace", "1"])
    write_tenant(d.config, "g", sink.url + "/g", timeout_seconds=60)
    d.start()
    ids = {d.send("g", "a")[1]["event_id"] for _ in range(10)}
    sink.wait_for(10, "/g")
    started = time.time()
    d.signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0
    assert time.time() - started < 1 + 3
    sink.responder = lambda n, r: Reply(200)
    d2 = make_daemon(config=d.config, data_dir=d.data_dir)
    d2.start()
    for eid in ids:
        d2.wait_status(eid, "delivered")
    assert d2.stop() == 0


def test_second_sigint_skips_the_grace_period(make_daemon: Any, sink: Sink) -> None:
    sink.responder = lambda n, r: Reply(200, delay=30)
    d = make_daemon(args=["--shutdown-grace", "20"])
    write_tenant(d.config, "g", sink.url + "/g", timeout_seconds=60)
    d.start()
    eid = d.send("g", "a")[1]["event_id"]
    sink.wait_for(1, "/g")
    d.signal(signal.SIGINT)
    time.sleep(0.5)
    assert d.proc.poll() is None  # still draining the in-flight attempt
    started = time.time()
    d.signal(signal.SIGINT)
    assert d.proc.wait(10) == 130
    assert time.time() - started < 3
    sink.responder = lambda n, r: Reply(200)
    d2 = make_daemon(config=d.config, data_dir=d.data_dir)
    d2.start()
    d2.wait_status(eid, "delivered")


def test_journal_check_reports_counts_and_corruption(make_daemon: Any, sink: Sink) -> None:
    sink.responder = lambda n, r: Reply(500)
    d = make_daemon()
    write_tenant(d.config, "c", sink.url, retry_policy={"initial_delay_seconds": 3600})
    d.start()
    for _ in range(5):
        d.send("c", "a")
    assert d.stop() == 0
    cmd = [sys.executable, "-m", "relay", "journal", "check", "--data-dir", str(d.data_dir)]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "pending" in ok.stdout and "5" in ok.stdout
    seg = sorted((d.data_dir / "journal").glob("*.seg"))[0]
    data = bytearray(seg.read_bytes())
    data[40] ^= 0xFF  # inside the first record
    seg.write_bytes(bytes(data))
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1, bad.stdout
    assert seg.read_bytes() == bytes(data)  # the check never modifies the journal
    # Start-up still succeeds: the damaged part is moved aside, not deleted, and counted.
    d2 = make_daemon(config=d.config, data_dir=d.data_dir)
    d2.start()
    _, text = d2.request("GET", "/metrics")
    assert "hookrelay_journal_corrupt_records_total 1.0" in text
    assert list((d.data_dir / "corrupt").iterdir())


def test_compaction_in_the_running_daemon(make_daemon: Any, sink: Sink) -> None:
    """Small segments and frequent compaction under real traffic: settled segments go, nothing
    pending or dead is lost, and settled events are not delivered again after a SIGKILL."""
    d = make_daemon(args=["--segment-bytes", "16384", "--compact-interval", "0.3"])
    write_tenant(d.config, "c", sink.url + "/c", retry_policy={"max_retries": 0})
    d.start()
    sink.responder = lambda n, r: Reply(500) if r.json()["payload"].get("fail") else Reply(200)
    dead = [d.send("c", "a", {"fail": True})[1]["event_id"] for _ in range(3)]
    ok = [d.send("c", "a", {"i": i, "pad": "x" * 400})[1]["event_id"] for i in range(200)]
    sink.wait_for(203, "/c")
    for eid in dead:
        d.wait_status(eid, "dead")
    segs = lambda: sorted((d.data_dir / "journal").glob("*.seg"))  # noqa: E731
    deadline = time.time() + 10
    while time.time() < deadline and len(segs()) > 3:
        time.sleep(0.2)
    assert len(segs()) <= 3, [p.name for p in segs()]  # most of the ~8 segments written are gone
    d.kill()
    d2 = make_daemon(config=d.config, data_dir=d.data_dir)
    d2.start()
    _, dl = d2.request("GET", "/api/v1/webhooks/dead-letter")
    assert {i["event_id"] for i in dl["items"]} == set(dead)
    time.sleep(0.5)
    assert len(sink.on("/c")) == 203  # no settled event came back to life
    # Its segment is gone, but the checkpoint still knows the id: a resend is a duplicate.
    code, dup = d2.send("c", "a", event_id=ok[0])
    assert (code, dup["duplicate"], dup["status"]) == (200, True, "delivered")
    assert d2.stop() == 0
