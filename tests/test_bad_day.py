"""The bad day, against the real daemon: poison events, damaged journals, concurrent duplicate
ids, a full disk, admission limits, and tenants that come and go."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from relay.events import StoredEvent, encode_stored
from relay.journal import Journal, check
from tests.support import Reply, Sink, write_tenant
from tests.test_journal import ev, opened, record_offsets, seg_path

FAST = {"max_retries": 2, "initial_delay_seconds": 0.05, "max_delay_seconds": 0.1, "jitter": False}


def _journal_poison(data_dir: Path, tenant: str, url: str) -> str:
    """An event an earlier version accepted whose request can never be built (IDNA-invalid host)."""

    async def put() -> None:
        j = Journal(data_dir)
        j.open()
        env = b'{"id":"evt_poison","event_type":"x.y","tenant_id":"%s","payload":{}}' % tenant.encode()
        blob = encode_stored(StoredEvent(env, "x.y", url, None))
        await j.accept([("evt_poison", tenant, 1, time.time(), blob)])
        await j.close()

    asyncio.run(put())
    return "evt_poison"


def test_poison_event_is_dead_lettered_with_its_reason(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    # Allowed, so the request gets as far as being built (a 64-character label fails IDNA there).
    write_tenant(d.config, "p", sink.url + "/p", retry_policy=FAST, allowed_target_hosts=["*.example.com"])
    eid = _journal_poison(d.data_dir, "p", "http://" + "a" * 64 + ".example.com/hook")
    d.start()
    view = d.wait_status(eid, "dead", timeout=10)
    assert len(view["attempts"]) == 3  # the policy's attempts, then the dead-letter queue
    _, page = d.request("GET", "/api/v1/webhooks/dead-letter?tenant_id=p")
    (item,) = page["items"]
    assert "request could not be built" in item["failure_reason"]
    assert "Traceback" not in d.logs()
    # The tenant is not wedged by it.
    code, body = d.send("p")
    assert code == 202
    sink.wait_event(body["event_id"])


@pytest.mark.parametrize(
    ("field", "url", "headers"),
    [
        ("target_url", "http://" + "b" * 64 + ".example.com/hook", None),
        ("target_url", "http://user:pw@{host}/hook", {"Authorization": "Bearer x"}),
    ],
)
def test_unbuildable_targets_are_refused_at_ingest(
    make_daemon: Any, sink: Sink, field: str, url: str, headers: dict[str, str] | None
) -> None:
    d = make_daemon()
    write_tenant(d.config, "p", sink.url + "/p")
    d.start()
    target = url.replace("{host}", sink.url.removeprefix("http://"))
    code, body = d.send("p", target_url=target, custom_headers=headers or {})
    assert code == 422 and body["error"]["details"]["field"] == field, body


def test_config_refuses_idna_invalid_hosts_and_userinfo_with_auth(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    write_tenant(cfg, "a", "http://" + "c" * 64 + ".example.com/")
    write_tenant(cfg, "b", "http://u:p@127.0.0.1/", auth_config={"auth_type": "Bearer", "token": "tok"})
    out = subprocess.run(
        [sys.executable, "-m", "relay", "check-config", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 1
    assert "a.yaml" in out.stderr + out.stdout and "base_url" in out.stderr + out.stdout
    assert "b.yaml" in out.stderr + out.stdout and "auth_config" in out.stderr + out.stdout
    assert "tok" not in out.stderr + out.stdout


def test_five_flipped_bytes_cost_at_most_five_events(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def run() -> None:
        j, _ = opened(data)
        for i in range(0, 400, 50):
            await j.accept([ev(k) for k in range(i, i + 50)])
        await j.close()
        image = bytearray(seg_path(data).read_bytes())
        recs = record_offsets(bytes(image))
        for k in (210, 250, 290, 330, 370):  # the second half of the segment
            start, end = recs[k]
            image[(start + end) // 2] ^= 0x5A
        seg_path(data).write_bytes(bytes(image))
        rep = check(data)
        assert rep.corrupt_records == 5 and "intact records follow" in rep.format()
        j, rec = opened(data)
        assert len(rec.live) == 395 and rec.corrupt_records == 5
        await j.close()
        assert len(list((data / "corrupt").iterdir())) == 5

    asyncio.run(run())


def test_twenty_concurrent_sends_of_one_id_are_delivered_once(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    write_tenant(d.config, "t", sink.url + "/t")
    d.start()
    answers: list[tuple[int, Any]] = []
    barrier = threading.Barrier(20)

    def one(i: int) -> None:
        barrier.wait()
        body = {"tenant_id": "t", "event_type": "a.b", "payload": {"i": i}, "event_id": "order-42"}
        if i % 2:
            code, res = d.request("POST", "/api/v1/webhooks/send-batch", {"events": [body, body]})
            answers.extend((code, r) for r in res["results"])
        else:
            answers.append(d.request("POST", "/api/v1/webhooks/send", body))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    queued = [a for a in answers if not a[1].get("duplicate")]
    assert len(answers) == 30 and len(queued) == 1, answers
    d.wait_status("order-42", "delivered")
    time.sleep(0.5)
    assert len([r for r in sink.received if r.headers.get("X-Event-ID") == "order-42"]) == 1
    # A settled id inside the idempotency window stays settled.
    code, res = d.send("t", event_id="order-42")
    assert code == 200 and res["duplicate"] and res["status"] == "delivered"


def test_max_pending_answers_queue_full_and_recovers(make_daemon: Any, sink: Sink) -> None:
    down = True
    sink.responder = lambda n, r: Reply(503 if down else 200)
    d = make_daemon(args=["--max-pending", "5"])
    policy = {"max_retries": 100, "initial_delay_seconds": 0.1, "max_delay_seconds": 0.2, "jitter": False}
    write_tenant(d.config, "t", sink.url + "/t", retry_policy=policy, circuit_breaker={"enabled": False})
    d.start()
    ids = [d.send("t")[1]["event_id"] for _ in range(5)]
    req = d.request("POST", "/api/v1/webhooks/send", {"tenant_id": "t", "event_type": "a", "payload": {}})
    assert req[0] == 503 and req[1]["error"]["code"] == "queue_full"
    assert d.request("GET", "/readyz")[0] == 200  # the relay is healthy; the receiver is not
    down = False
    for eid in ids:
        d.wait_status(eid, "delivered", timeout=10)
    code, body = d.send("t")
    assert code == 202, body


def test_queue_full_carries_retry_after(make_daemon: Any, sink: Sink) -> None:
    import urllib.error
    import urllib.request

    sink.responder = lambda n, r: Reply(503)
    d = make_daemon(args=["--max-pending", "1"])
    write_tenant(d.config, "t", sink.url + "/t", retry_policy={"max_retries": 100, "initial_delay_seconds": 5})
    d.start()
    assert d.send("t")[0] == 202
    data = b'{"tenant_id":"t","event_type":"a","payload":{}}'
    req = urllib.request.Request(d.url + "/api/v1/webhooks/send", data=data, method="POST")
    req.add_header("Content-Type", "application/json")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 503 and err.value.headers["Retry-After"]


def test_configure_delete_cycles_leave_the_series_count_flat(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon(args=["--log-level", "warning"])
    write_tenant(d.config, "keep", sink.url + "/k")
    d.start()

    def series() -> int:
        _, text = d.request("GET", "/metrics")
        return sum(1 for line in text.splitlines() if line and not line.startswith("#"))

    def cycle(i: int) -> None:
        body = {"tenant_id": f"tmp{i}", "base_url": sink.url + "/tmp", "secret_key": "s"}
        assert d.request("POST", "/api/v1/webhooks/configure", body)[0] in (200, 201)
        assert d.request("DELETE", f"/api/v1/webhooks/config/tmp{i}")[0] == 204

    cycle(0)
    before = series()
    for i in range(1, 200):
        cycle(i)
    assert series() == before


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], check=False)
    return r.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="needs root to mount a tmpfs")
def test_full_disk_answers_503_and_recovers_by_itself_when_space_returns(
    make_daemon: Any, sink: Sink, tmp_path: Path
) -> None:
    data = tmp_path / "small"
    if not _mount_tmpfs(data, "2m"):
        pytest.skip("cannot mount a tmpfs here (no privilege in this container)")
    try:
        d = make_daemon(data_dir=data, args=["--segment-bytes", "65536"])
        write_tenant(d.config, "t", sink.url + "/t")
        d.start()
        assert d.send("t")[0] == 202
        # Fill the filesystem to the last byte.
        with open(data / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC
        big = {"blob": "x" * 100_000}
        statuses = [d.send("t", payload=big)[0] for _ in range(3)]
        assert 503 in statuses and d.request("GET", "/readyz")[0] == 503
        code, body = d.send("t", payload=big)
        assert code == 503 and body["error"]["code"] == "journal_unavailable"
        # The filesystem grows (no file is removed): the relay notices by itself.
        subprocess.run(["mount", "-o", "remount,size=16m", str(data)], check=True)
        deadline = time.time() + 10
        while d.request("GET", "/readyz")[0] != 200:
            assert time.time() < deadline, "readyz did not recover after the disk grew"
            time.sleep(0.1)
        code, body = d.send("t", payload=big)
        assert code == 202
        sink.wait_event(body["event_id"])
        d.stop()
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)
