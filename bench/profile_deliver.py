"""Profile a backlog drain without the HTTP API: the engine and its journal in this process, the
sink (`python -m bench.sink`) in another.

`python -m bench.profile_deliver [--events N] [--cprofile]` queues N events (fsync never: the
journal is not what is measured), starts delivery, waits until the sink has counted them all and
prints the CPU time of this process per delivered event. With `--cprofile` it also prints the
functions of the relay that cost most. Compare with `python -m bench.load raw --url ... --count
N` on the same sink: that is the raw client's figure. Run it under py-spy for a sampled profile.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import uvloop
from prometheus_client import CollectorRegistry

from bench.common import free_port
from relay.config import Snapshot, parse_tenant
from relay.delivery import DeliveryEngine
from relay.dispatch import EgressPolicy
from relay.events import StoredEvent, encode_stored
from relay.journal import Journal
from relay.metrics import Metrics


async def sink_count(session: aiohttp.ClientSession, port: int) -> int:
    async with session.get(f"http://127.0.0.1:{port}/count") as r:
        return int((await r.json())["count"])


async def run(n: int, profile: bool) -> None:
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-m", "bench.sink", "--port", str(port)])
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    await sink_count(session, port)
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            url = f"http://127.0.0.1:{port}/hook/p"
            cfg = parse_tenant({"tenant_id": "t", "base_url": url, "secret_key": "s", "max_in_flight": 64}, "bench")
            snap = Snapshot({"t": cfg}, {}, "bench")
            with tempfile.TemporaryDirectory() as tmp:
                journal = Journal(Path(tmp), fsync="never")
                engine = DeliveryEngine(journal, lambda: snap, Metrics(CollectorRegistry()), egress=EgressPolicy())
                engine.restore(journal.open())
                blob = encode_stored(StoredEvent(b'{"payload":"' + b"x" * 1000 + b'"}', "a.b", None, None))
                for i in range(0, n, 500):
                    await engine.accept([(f"e{k}", "t", 1, blob) for k in range(i, min(n, i + 500))])
                prof = cProfile.Profile() if profile else None
                c0, t0 = time.process_time(), time.monotonic()
                if prof is not None:
                    prof.enable()
                await engine.start()
                while await sink_count(session, port) < n:
                    await asyncio.sleep(0.02)
                if prof is not None:
                    prof.disable()
                cpu, wall = time.process_time() - c0, time.monotonic() - t0
                print(f"{n} events: {1000 * cpu / n:.3f} ms CPU an event, {n / wall:,.0f} events/s")
                await engine.stop(1)
                await journal.close()
            if prof is not None:
                pstats.Stats(prof).sort_stats("tottime").print_stats("relay/", 30)
    finally:
        sink.kill()
        sink.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=6000)
    ap.add_argument("--cprofile", action="store_true")
    args = ap.parse_args()
    uvloop.run(run(args.events, args.cprofile))


if __name__ == "__main__":
    main()
