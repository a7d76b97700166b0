"""The shared store on Redis (SPEC §10) against the local journal: `python -m bench --store redis`.

One redis-server (its own dir, `appendonly yes`, `appendfsync always`: the durable setting, as
the local journal's group-commit fsync is), then, alternating configurations within the run:

- ingest: `/send` (1 KB, 64 concurrent in all) into 1 local relay, and into 1, 2 and 3 relays
  on one Redis (one load generator per relay, the 64 connections split between them); events are
  held by a rate limit, so only ingest is measured;
- deliver: a backlog of held events, then the limit lifted in the shared config file (the relays
  reload it): the time until the sink counts the whole backlog, with 1 local relay, and with 1, 2
  and 3 relays on one Redis.

CPU per event: utime + stime (/proc/<pid>/stat) over the measured window of every relay (summed)
and of redis-server, divided by the events handled.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from bench.common import cpu_seconds, free_port, median, wait_for
from bench.parties import HOLD, Server, tenant, write_tenants
from bench.scenarios import Figure, Runner

RELAY_COUNTS = (1, 2, 3)


@dataclass
class Measure:
    rate: float  # events/s, all relays together
    relay_cpu_ms: float  # per event, every relay's CPU summed
    redis_cpu_ms: float  # per event, redis-server's CPU (0 for the local store)


class RedisProc:
    def __init__(self, r: Runner) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.dir = r.p.work / "redis"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.port = free_port()
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--maxmemory-policy", "noeviction"]
        with open(r.procs.log_dir / "redis-server.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        r.procs.live.append(self.proc)
        if not wait_for(self._ping, 10):
            raise RuntimeError("redis-server did not answer")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as c:
                c.sendall(b"PING\r\n")
                return c.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return int(self.proc.pid)


class Fleet:
    """k relays sharing one config dir; on Redis (one namespace per fleet) or one local relay."""

    def __init__(self, r: Runner, name: str, k: int, redis: RedisProc | None, tenants: list[dict[str, Any]]) -> None:
        self.r = r
        self.config = r.p.work / f"{name}-config"
        write_tenants(self.config, tenants)
        self.relays: list[Server] = []
        extra = ["--config", str(self.config)]
        if redis is not None:
            extra += ["--store", redis.url, "--store-namespace", f"bench-{name}-{r.seq}-{time.monotonic_ns()}"]
        for i in range(k):
            self.relays.append(r.p.start_daemon(f"{name}-{i}", None, extra=extra))

    def configure(self, tenants: list[dict[str, Any]]) -> None:
        write_tenants(self.config, tenants)

    def stop(self) -> None:
        for d in self.relays:
            self.r.p.stop(d)

    def cpu(self) -> float:
        return sum(cpu_seconds(d.pid) for d in self.relays)


def _ingest(r: Runner, fleet: Fleet, redis: RedisProc | None, seconds: float) -> Measure:
    jobs = []
    per = max(1, 64 // len(fleet.relays))
    for d in fleet.relays:
        r.seq += 1
        args = ["-m", "bench.load", "send", *d.target_args(), "--duration", str(seconds)]
        args += ["--payload-bytes", "1024", "--concurrency", str(per)]
        jobs.append((f"load-{r.seq:03d}-{d.name}", args))
    c0, k0 = fleet.cpu(), cpu_seconds(redis.pid) if redis else 0.0
    results = r.procs.run_json_many(jobs, timeout=seconds + 60)
    cpu, kcpu = fleet.cpu() - c0, (cpu_seconds(redis.pid) - k0) if redis else 0.0
    n = sum(int(x["events_ok"]) for x in results)
    rate = sum(float(x["events_per_s"]) for x in results)
    return Measure(rate, 1000 * cpu / n if n else float("nan"), 1000 * kcpu / n if n else float("nan"))


def _pending(r: Runner, d: Server) -> int:
    return int(r.p.tenant_metrics(d, "drain")["pending_events"])


def _deliver(r: Runner, name: str, k: int, redis: RedisProc | None, backlog: int) -> Measure:
    url = f"{r.p.sink_url}/hook/redis-drain"
    held = [tenant("drain", url, **HOLD)]
    fleet = Fleet(r, name, k, redis, held)
    try:
        first = fleet.relays[0]
        r.seq += 1
        load = ["-m", "bench.load", "send", *first.target_args(), "--tenant", "drain", "--batch", "100"]
        load += ["--requests", str(backlog // 100), "--duration", "300", "--concurrency", "8"]
        r.procs.run_json(f"load-{r.seq:03d}-{first.name}", load, timeout=360)
        wait_for(lambda: _pending(r, first) >= backlog - 1, 60)
        pending = _pending(r, first)
        before = r.p.sink_count()
        c0, k0 = fleet.cpu(), cpu_seconds(redis.pid) if redis else 0.0
        t0 = time.monotonic()
        fleet.configure([tenant("drain", url)])  # every relay reloads it: the backlog is released
        r.p.wait_sink(before + pending, timeout=300)
        elapsed = time.monotonic() - t0
        got = r.p.sink_count() - before
        cpu, kcpu = fleet.cpu() - c0, (cpu_seconds(redis.pid) - k0) if redis else 0.0
    finally:
        fleet.stop()
    r.expected_deliveries = r.p.sink_count()
    return Measure(got / elapsed, 1000 * cpu / got if got else float("nan"), 1000 * kcpu / got if got else 0.0)


def _figure(name: str, runs: dict[str, list[Measure]], a: str, b: str, target: float | None, note: str) -> Figure:
    fig = Figure(
        "redis",
        name,
        median([m.rate for m in runs[a]]),
        "events/s",
        b,
        median([m.rate for m in runs[b]]),
        cpu_ms=median([m.relay_cpu_ms for m in runs[a]]),
        baseline_cpu_ms=median([m.relay_cpu_ms for m in runs[b]]),
        rounds={a: [round(m.rate, 1) for m in runs[a]], b: [round(m.rate, 1) for m in runs[b]]},
        note=note,
    )
    if target is not None:
        fig.target = f"ratio >= {target}"
        fig.met = fig.ratio >= target
    return fig


def _cpu_figure(name: str, runs: dict[str, list[Measure]], a: str, b: str) -> Figure:
    """Relay CPU per event on Redis against the local store's: the target is at most 2x."""
    value = median([m.relay_cpu_ms for m in runs[a]])
    base = median([m.relay_cpu_ms for m in runs[b]])
    redis = median([m.redis_cpu_ms for m in runs[a]])
    fig = Figure(
        "redis",
        name,
        value,
        "relay CPU ms/event",
        b,
        base,
        target="ratio <= 2.0",
        cpu_ms=value,
        baseline_cpu_ms=base,
        note=f"redis-server's own CPU: {redis:.3f} ms/event on top",
    )
    fig.met = fig.ratio <= 2.0
    return fig


def redis(r: Runner) -> list[Figure]:
    s = r.s
    server = RedisProc(r)
    labels = {0: "local journal, 1 relay"} | {k: f"redis, {k} relay{'s' if k > 1 else ''}" for k in RELAY_COUNTS}
    hold = [tenant("bench", f"{r.p.sink_url}/hook/redis-ingest", **HOLD)]
    # ---- ingest: every configuration up at once, rounds alternate between them.
    fleets = {0: Fleet(r, "ingest-local", 1, None, hold)}
    fleets |= {k: Fleet(r, f"ingest-redis{k}", k, server, hold) for k in RELAY_COUNTS}
    ingest: dict[str, list[Measure]] = {labels[k]: [] for k in fleets}
    try:
        for k, fleet in fleets.items():
            _ingest(r, fleet, server if k else None, 0.5)  # warm-up, discarded
        for _ in range(s.rounds):
            for k, fleet in fleets.items():
                ingest[labels[k]].append(_ingest(r, fleet, server if k else None, s.round_s))
    finally:
        for fleet in fleets.values():
            fleet.stop()
    # ---- deliver: a fresh fleet for each round (the backlog is queued, then released).
    deliver: dict[str, list[Measure]] = {labels[k]: [] for k in fleets}
    for i in range(max(1, min(2, s.rounds))):
        for k in fleets:
            name = f"deliver-{'local' if k == 0 else f'redis{k}'}-{i}"
            deliver[labels[k]].append(_deliver(r, name, max(k, 1), server if k else None, s.backlog))
    r.procs.stop(server.proc, grace=10.0)

    local, one, three = labels[0], labels[1], labels[3]
    kcpu_in = median([m.redis_cpu_ms for m in ingest[one]])
    kcpu_out = median([m.redis_cpu_ms for m in deliver[one]])
    figs = [
        _figure(
            "redis ingest /send, 1 relay vs local",
            ingest,
            one,
            local,
            0.5,
            f"1 KB /send, 64 concurrent; redis-server CPU {kcpu_in:.3f} ms/event",
        ),
        _cpu_figure("redis ingest relay CPU/event vs local", ingest, one, local),
    ]
    for k in RELAY_COUNTS[1:]:
        figs.append(_figure(f"redis ingest /send, {k} relays vs 1", ingest, labels[k], one, None, "2 cores shared"))
    figs += [
        _figure(
            "redis deliver backlog, 1 relay vs local",
            deliver,
            one,
            local,
            0.5,
            f"{s.backlog} held events released by a config reload; redis-server CPU {kcpu_out:.3f} ms/event",
        ),
        _cpu_figure("redis deliver relay CPU/event vs local", deliver, one, local),
        _figure("redis deliver backlog, 2 relays vs 1", deliver, labels[2], one, None, "2 cores shared"),
        _figure("redis deliver backlog, 3 relays vs 1", deliver, three, one, 1.0, "contention never collapses it"),
    ]
    return figs


SCENARIOS = {"redis": redis}
