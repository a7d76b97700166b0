"""Disk full: ingest answers 503 and /readyz 503, both recover, nothing acknowledged is lost.

ENOSPC is injected through the journal's write seam, under the real API and engine in-process.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from relay.api import AppState, make_app
from relay.delivery import DeliveryEngine
from relay.journal import Journal
from relay.metrics import Metrics
from relay.reload import ConfigManager
from tests.support import write_tenant


class Disk:
    full = False

    def write(self, fd: int, data: bytes) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)


async def _stack(tmp_path: Path, disk: Disk) -> tuple[TestClient[Any, Any], Journal, DeliveryEngine]:
    # The tenant points at a closed port with a long delay: events stay pending in the journal.
    write_tenant(tmp_path / "cfg", "t", "http://127.0.0.1:9/", retry_policy={"initial_delay_seconds": 3600})
    metrics = Metrics()
    config = ConfigManager(tmp_path / "cfg", metrics)
    config.load_initial()
    journal = Journal(tmp_path / "data", _write=disk.write)
    engine = DeliveryEngine(journal, lambda: config.snapshot, metrics)
    engine.restore(journal.open())
    state = AppState(engine=engine, config=config, metrics=metrics, max_body_bytes=1 << 20)
    client: TestClient[Any, Any] = TestClient(TestServer(make_app(state)))
    await client.start_server()
    return client, journal, engine


async def test_disk_full_then_recovery(tmp_path: Path) -> None:
    disk = Disk()
    client, journal, engine = await _stack(tmp_path, disk)
    event = {"tenant_id": "t", "event_type": "a", "payload": {"x": 1}}
    acked = []
    try:
        r = await client.post("/api/v1/webhooks/send", json=event)
        assert r.status == 202
        acked.append((await r.json())["event_id"])

        disk.full = True
        r = await client.post("/api/v1/webhooks/send", json=event)
        assert r.status == 503
        assert (await r.json())["error"]["code"] == "journal_unavailable"
        r = await client.post("/api/v1/webhooks/send-batch", json={"events": [event, event]})
        results = (await r.json())["results"]
        assert [x["error"]["code"] for x in results] == ["journal_unavailable"] * 2
        r = await client.get("/readyz")
        assert r.status == 503
        assert "journal" in (await r.json())["reason"]

        disk.full = False
        assert await journal.probe() is True
        r = await client.get("/readyz")
        assert r.status == 200
        r = await client.post("/api/v1/webhooks/send", json=event)
        assert r.status == 202
        acked.append((await r.json())["event_id"])
    finally:
        await client.close()
        await engine.stop(0)
        await journal.close()

    reopened = Journal(tmp_path / "data")
    live = {e.event_id for e in reopened.open().live}
    await reopened.close()
    assert set(acked) <= live
    assert len(live) == len(acked)  # nothing from the failed writes was half-accepted
