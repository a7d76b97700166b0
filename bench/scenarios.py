"""The scenarios. Each returns Figures: a value, its baseline from the same run, the ratio, the target.

Rounds alternate between the parties (A, B, A, B ...); a figure is the median over its rounds.
CPU per event is the CPU time (utime + stime, /proc/<pid>/stat) of the serving process over the
round divided by the events it handled.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.common import (
    Procs,
    cpu_seconds,
    http,
    median,
    percentile,
    rss_hwm_mb,
    rss_mb,
    wait_for,
    wait_until_ready,
)
from bench.parties import HOLD, Parties, Server, tenant, write_tenants


@dataclass
class Figure:
    scenario: str
    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    target: str = ""
    met: bool | None = None
    cpu_ms: float | None = None  # CPU ms per event, measured party
    baseline_cpu_ms: float | None = None
    rounds: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline_value if self.baseline_value else float("nan")


@dataclass
class Settings:
    quick: bool
    rounds: int
    round_s: float
    backlog: int  # deliver
    mem_events: int
    recovery_events: int
    iso_s: float
    backlog_events: int = 1_000_000  # the backlog scenario: events held pending (--backlog-events)


def settings(quick: bool, backlog_events: int | None = None) -> Settings:
    if quick:
        s = Settings(quick, rounds=1, round_s=1.5, backlog=5000, mem_events=10_000, recovery_events=20_000, iso_s=3)
        s.backlog_events = 50_000
    else:
        s = Settings(quick, rounds=3, round_s=4.0, backlog=20_000, mem_events=50_000, recovery_events=100_000, iso_s=5)
    if backlog_events is not None:
        s.backlog_events = backlog_events
    return s


@dataclass
class Sample:
    rate: float  # events/s (or requests/s)
    cpu_ms: float  # per event
    result: dict[str, Any]


class Runner:
    def __init__(self, procs: Procs, parties: Parties, s: Settings) -> None:
        self.procs = procs
        self.p = parties
        self.s = s
        self.expected_deliveries = 0  # what the sink should have counted once everything settles
        self.seq = 0

    def load(self, server: Server, *, via_unix: bool = False, per_request: bool = False, **opts: Any) -> Sample:
        """Run the load generator against `server`; CPU of the server process over the run."""
        args = ["-m", "bench.load", "send", *server.target_args(via_unix)]
        for k, v in opts.items():
            flag = "--" + k.replace("_", "-")
            args += [flag] if v is True else [flag, str(v)]
        self.seq += 1
        c0 = cpu_seconds(server.pid)
        res = self.procs.run_json(f"load-{self.seq:03d}-{server.name}", args, timeout=opts.get("duration", 60) + 60)
        cpu = cpu_seconds(server.pid) - c0
        n = res["requests"] if per_request else res["events_ok"]
        rate = res["requests_per_s"] if per_request else res["events_per_s"]
        return Sample(rate, 1000 * cpu / n if n else float("nan"), res)

    def settle(self, delivered: int) -> None:
        """Let background delivery of the previous round finish, so it does not steal the next one's CPU."""
        self.expected_deliveries += delivered
        self.p.wait_sink(self.expected_deliveries, timeout=30)
        self.expected_deliveries = max(self.expected_deliveries, self.p.sink_count())

    def alternate(self, parties: list[tuple[str, Callable[[], Sample]]], rounds: int) -> dict[str, list[Sample]]:
        out: dict[str, list[Sample]] = {name: [] for name, _ in parties}
        for _ in range(rounds):
            for name, fn in parties:
                out[name].append(fn())
        return out


def med_rate(samples: list[Sample]) -> float:
    return median([x.rate for x in samples])


def med_cpu(samples: list[Sample]) -> float:
    return median([x.cpu_ms for x in samples])


def compare(
    scenario: str,
    name: str,
    runs: dict[str, list[Sample]],
    a: str,
    b: str,
    unit: str,
    target: float | None,
    note: str = "",
) -> Figure:
    fig = Figure(
        scenario,
        name,
        med_rate(runs[a]),
        unit,
        b,
        med_rate(runs[b]),
        cpu_ms=med_cpu(runs[a]),
        baseline_cpu_ms=med_cpu(runs[b]),
        rounds={a: [round(x.rate, 1) for x in runs[a]], b: [round(x.rate, 1) for x in runs[b]]},
        note=note,
    )
    if target is not None:
        fig.target = f"ratio >= {target}"
        fig.met = fig.ratio >= target
    return fig


# ---- ingest ------------------------------------------------------------------------------------


def ingest(r: Runner) -> list[Figure]:
    s = r.s
    sink = r.p.sink_url
    hook = [tenant("bench", f"{sink}/hook/bench")]
    d_batch = r.p.start_daemon("ingest-batch", hook, fsync="batch", unix=True)
    d_never = r.p.start_daemon("ingest-never", hook, fsync="never")
    bare = r.p.start_baseline("bare")
    naive = r.p.start_baseline("naive")
    bare_unix = r.p.start_baseline("bare", unix=True)

    def run(server: Server, via_unix: bool = False, delivers: bool = True) -> Callable[[], Sample]:
        def go() -> Sample:
            x = r.load(server, via_unix=via_unix, duration=s.round_s, payload_bytes=1024, concurrency=64)
            r.settle(x.result["events_ok"] if delivers else 0)
            return x

        return go

    parties = [
        ("hookrelay (tcp, fsync batch)", run(d_batch)),
        ("bare 202 server (tcp)", run(bare, delivers=False)),
        ("naive forwarder (tcp)", run(naive)),
        ("hookrelay (tcp, fsync never)", run(d_never)),
        ("hookrelay (unix, fsync batch)", run(d_batch, via_unix=True)),
        ("bare 202 server (unix)", run(bare_unix, via_unix=True, delivers=False)),
    ]
    # Warm-up: one short discarded run each (imports, connection pools, first segment).
    for server, unix, delivers in [(d_batch, False, True), (d_never, False, True), (bare, False, False)]:
        x = r.load(server, via_unix=unix, duration=0.5)
        r.settle(x.result["events_ok"] if delivers else 0)
    x = r.load(naive, duration=0.5)
    r.settle(x.result["events_ok"])
    r.load(bare_unix, via_unix=True, duration=0.5)
    runs = r.alternate(parties, s.rounds)
    for server in (d_batch, d_never, bare, naive, bare_unix):
        r.p.stop(server)
    unit = "events/s"
    return [
        compare("ingest", "ingest /send vs naive", runs, parties[0][0], parties[2][0], unit, 0.9),
        compare("ingest", "ingest /send vs bare", runs, parties[0][0], parties[1][0], unit, 0.5),
        compare("ingest", "ingest /send over unix vs bare unix", runs, parties[4][0], parties[5][0], unit, 0.5),
        compare(
            "ingest",
            "ingest fsync batch vs never",
            runs,
            parties[0][0],
            parties[3][0],
            unit,
            None,
            note="issue 3: the cost of durability (202 only after the covering fdatasync)",
        ),
    ]


# ---- batch -------------------------------------------------------------------------------------


def batch(r: Runner) -> list[Figure]:
    s = r.s
    # The events are held (rate limit): at ~10x the delivery rate, delivering them would spill into the
    # baseline's rounds. Ingest while delivering is what the ingest scenario measures.
    d = r.p.start_daemon("batch", [tenant("bench", f"{r.p.sink_url}/hook/batch", **HOLD)])
    bare = r.p.start_baseline("bare")

    def daemon_round() -> Sample:
        return r.load(d, duration=s.round_s, batch=100, concurrency=64)

    def bare_round() -> Sample:
        return r.load(bare, duration=s.round_s, concurrency=64, per_request=True)

    r.load(d, duration=0.5, batch=100)
    r.load(bare, duration=0.5)
    a, b = "hookrelay send-batch x100 (events/s)", "bare 202 server (requests/s)"
    runs = r.alternate([(a, daemon_round), (b, bare_round)], s.rounds)
    r.p.stop(d)
    r.p.stop(bare)
    note = "100 x 1 KB events a request, 64 concurrent; events held by a rate limit (ingest only)"
    return [compare("batch", "batch events/s vs bare requests/s", runs, a, b, "events/s", 5.0, note=note)]


# ---- deliver -----------------------------------------------------------------------------------


def preload(
    r: Runner, server: Server, tenant_id: str, n: int, payload_bytes: int = 1024, batch: int = 100, **opts: Any
) -> int:
    """Queue n events through send-batch; returns how many were accepted."""
    x = r.load(
        server,
        tenant=tenant_id,
        batch=batch,
        requests=n // batch,
        duration=300,
        concurrency=8,
        payload_bytes=payload_bytes,
        **opts,
    )
    return int(x.result["events_ok"])


def drain(
    r: Runner, name: str, tenant_id: str, url: str, backlog: int, env: dict[str, str] | None = None, **opts: Any
) -> Sample:
    """Queue `backlog` held events (load options `opts`), restart without the hold (with `env`),
    and time from /readyz 200 to the sink counting them all."""
    d = r.p.start_daemon(name, [tenant(tenant_id, url, **HOLD)])
    preload(r, d, tenant_id, backlog, **opts)
    r.settle(0)
    wait_for(lambda: r.p.tenant_metrics(d, tenant_id)["pending_events"] >= backlog - 1, 30)
    pending = int(r.p.tenant_metrics(d, tenant_id)["pending_events"])
    r.p.stop(d)
    before = r.p.sink_count()
    d = r.p.start_daemon(name, [tenant(tenant_id, url)], fresh=False, wait=False, env=env)
    wait_until_ready(d.port, d.proc, 60)
    t0 = time.monotonic()
    c0 = cpu_seconds(d.pid)
    at_ready = r.p.sink_count()
    done = r.p.wait_sink(before + pending, timeout=120)
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(d.pid) - c0
    got = r.p.sink_count() - at_ready
    r.p.stop(d)
    r.expected_deliveries = r.p.sink_count()
    res = {"pending": pending, "delivered_in_window": got, "elapsed": elapsed, "complete": done}
    return Sample(got / elapsed, 1000 * cpu / got if got else float("nan"), res)


def deliver(r: Runner) -> list[Figure]:
    s = r.s
    url = f"{r.p.sink_url}/hook/drain"

    def daemon_round() -> Sample:
        return drain(r, "deliver", "drain", url, s.backlog)

    def aiohttp_round() -> Sample:  # the same daemon with aiohttp's client for every POST
        return drain(r, "deliver", "drain", url, s.backlog, env={"HOOKRELAY_HTTP_CLIENT": "aiohttp"})

    def raw_round() -> Sample:
        r.seq += 1
        res = r.procs.run_json(
            f"load-{r.seq:03d}-raw",
            ["-m", "bench.load", "raw", "--url", url, "--count", str(s.backlog), "--concurrency", "64"],
            timeout=180,
        )
        r.settle(res["events_ok"])
        return Sample(res["events_per_s"], 1000 * res["cpu_s"] / max(1, res["events_ok"]), res)

    a, b = f"hookrelay drains {s.backlog} backlog", "raw ClientSession, 64 concurrent"
    c = "hookrelay, HOOKRELAY_HTTP_CLIENT=aiohttp"
    runs = r.alternate([(a, daemon_round), (b, raw_round), (c, aiohttp_round)], max(1, min(2, s.rounds)))
    with_aiohttp = compare(
        "deliver",
        "deliver backlog, aiohttp's client vs raw client",
        runs,
        c,
        b,
        "events/s",
        None,
        note="the relay with its lean HTTP client turned off: what relay/http1.py saves",
    )
    fig = compare(
        "deliver",
        "deliver backlog vs raw client",
        runs,
        a,
        b,
        "events/s",
        0.8,
        note="from /readyz 200 after restart to the sink counting the whole backlog; "
        "CPU: daemon process vs the raw client's own process",
    )
    return [fig, with_aiohttp]


# ---- memory ------------------------------------------------------------------------------------


def memory(r: Runner) -> list[Figure]:
    s = r.s
    closed = "http://127.0.0.1:9/never"  # never contacted: the rate limit holds every event

    def mem_round(payload: int) -> tuple[float, float, float]:
        d = r.p.start_daemon(
            f"memory-{payload}", [tenant("mem", closed, **HOLD)], extra=["--max-body-bytes", "8388608"]
        )
        batch = 100 if payload <= 4096 else 25
        warm = preload(r, d, "mem", 1000, payload, batch)
        time.sleep(0.5)
        rss0 = rss_mb(d.pid)
        c0 = cpu_seconds(d.pid)
        n = preload(r, d, "mem", s.mem_events, payload, batch)
        cpu = cpu_seconds(d.pid) - c0
        wait_for(lambda: r.p.tenant_metrics(d, "mem")["pending_events"] >= warm + n - 1, 30)
        time.sleep(0.5)
        rss1 = rss_mb(d.pid)
        r.p.stop(d)
        return (rss1 - rss0) * 10_000 / n, rss0, 1000 * cpu / n

    results: dict[int, list[tuple[float, float, float]]] = {1024: [], 16384: []}
    for _ in range(max(1, min(2, s.rounds))):
        for payload in (1024, 16384):
            results[payload].append(mem_round(payload))
    per_1k = median([x[0] for x in results[1024]])
    per_16k = median([x[0] for x in results[16384]])
    rss0 = median([x[1] for x in results[1024]])
    n = s.mem_events
    f1 = Figure(
        "memory",
        "RSS growth per 10k queued, 1 KB payloads",
        per_1k,
        "MB/10k",
        "RSS after start + 1000 events (MB)",
        rss0,
        target="<= 1.0 MB/10k",
        met=per_1k <= 1.0,
        cpu_ms=median([x[2] for x in results[1024]]),
        rounds={"1KB MB/10k": [round(x[0], 3) for x in results[1024]]},
        note=f"{n} events queued (held by a rate limit), VmRSS before/after",
    )
    f16 = Figure(
        "memory",
        "RSS growth per 10k queued, 16 KB vs 1 KB",
        per_16k,
        "MB/10k",
        "1 KB payloads (MB/10k)",
        per_1k,
        target="<= 1.0 MB/10k and ratio <= 1.2",
        met=per_16k <= 1.0 and (per_16k <= per_1k * 1.2 or per_16k - per_1k <= 0.05),
        cpu_ms=median([x[2] for x in results[16384]]),
        baseline_cpu_ms=f1.cpu_ms,
        rounds={"16KB MB/10k": [round(x[0], 3) for x in results[16384]]},
        note="within 20% (or 0.05 MB/10k absolute, below the noise of VmRSS)",
    )
    return [f1, f16]


# ---- backlog -----------------------------------------------------------------------------------

BACKLOG_LIMIT_MIB = 256.0  # the shipped sidecar's memory limit (deploy/k8s)


def backlog(r: Runner) -> list[Figure]:
    """A day-long outage: N events (150-byte payloads, send-batch) held pending by a tenant that
    delivers nothing, then SIGTERM and a restart. Peak RSS is the kernel's high-water mark
    (VmHWM) of each process, so nothing between two samples is missed."""
    n = r.s.backlog_events
    tenants = [tenant("backlog", "http://127.0.0.1:9/never", **HOLD)]
    extra = ["--max-pending", str(n + 10_000)]
    d = r.p.start_daemon("backlog", tenants, extra=extra)
    warm = preload(r, d, "backlog", min(10_000, n // 10), payload_bytes=150, batch=500)
    time.sleep(0.5)
    rss0 = rss_mb(d.pid)
    t0 = time.monotonic()
    c0 = cpu_seconds(d.pid)
    got = preload(r, d, "backlog", n - warm, payload_bytes=150, batch=500)
    queue_s = time.monotonic() - t0
    cpu = cpu_seconds(d.pid) - c0
    wait_for(lambda: r.p.tenant_metrics(d, "backlog")["pending_events"] >= warm + got - 1, 60)
    pending = int(r.p.tenant_metrics(d, "backlog")["pending_events"])
    time.sleep(0.5)
    rss1 = rss_mb(d.pid)
    peak_queued = rss_hwm_mb(d.pid)
    r.p.stop(d)  # SIGTERM
    t1 = time.monotonic()
    d = r.p.start_daemon("backlog", None, fresh=False, wait=False, extra=extra)
    ready = wait_until_ready(d.port, d.proc, 300) - t1
    after = int(r.p.tenant_metrics(d, "backlog")["pending_events"])
    time.sleep(1.0)
    peak_restart = rss_hwm_mb(d.pid)
    rss_after = rss_mb(d.pid)
    r.p.stop(d)
    slope = (rss1 - rss0) * 10_000 / max(1, got)
    lim = BACKLOG_LIMIT_MIB
    common = f"{pending} pending (150-byte payloads via send-batch x500, tenant held by a rate limit)"
    return [
        Figure(
            "backlog",
            f"peak RSS with {pending} queued",
            peak_queued,
            "MiB",
            "the shipped memory limit (MiB)",
            lim,
            target=f"<= {lim:g} MiB",
            met=peak_queued <= lim,
            cpu_ms=1000 * cpu / max(1, got),
            note=f"{common}; VmHWM; queued in {queue_s:.0f} s; RSS {rss0:.0f} MiB after the warm-up, "
            f"{rss1:.0f} MiB at the end: {slope:.2f} MB per 10k",
        ),
        Figure(
            "backlog",
            "peak RSS through SIGTERM + restart",
            peak_restart,
            "MiB",
            "the shipped memory limit (MiB)",
            lim,
            target=f"<= {lim:g} MiB",
            met=peak_restart <= lim,
            note=f"VmHWM of the restarted process 1 s after /readyz (RSS then {rss_after:.0f} MiB); "
            f"pending after the restart: {after}",
        ),
        Figure(
            "backlog",
            f"time to /readyz with {pending} pending",
            ready,
            "s",
            "target (s)",
            15.0,
            target="<= 15 s",
            met=ready <= 15.0 and after == pending,
            note="from spawn after the SIGTERM'd process exited (Python start-up included)",
        ),
    ]


# ---- recovery ----------------------------------------------------------------------------------


def recovery(r: Runner) -> list[Figure]:
    s = r.s
    tenants = [tenant("rec", "http://127.0.0.1:9/never", **HOLD)]
    d = r.p.start_daemon("recovery-full", tenants)
    n = preload(r, d, "rec", s.recovery_events)
    wait_for(lambda: r.p.tenant_metrics(d, "rec")["pending_events"] >= n - 1, 60)
    pending = int(r.p.tenant_metrics(d, "rec")["pending_events"])
    r.p.stop(d)
    r.p.stop(r.p.start_daemon("recovery-empty", tenants))  # creates the empty journal once

    def timed(name: str) -> Callable[[], Sample]:
        def go() -> Sample:
            t0 = time.monotonic()
            d = r.p.start_daemon(name, None, fresh=False, wait=False)
            ready = wait_until_ready(d.port, d.proc, 60)
            got = int(r.p.tenant_metrics(d, "rec")["pending_events"])
            cpu = cpu_seconds(d.pid)
            rss = rss_mb(d.pid)
            r.p.stop(d)
            return Sample(ready - t0, cpu * 1000, {"pending_after": got, "rss_mb": rss})

        return go

    a, b = f"ready with {pending} pending", "ready with an empty journal"
    runs = r.alternate([(b, timed("recovery-empty")), (a, timed("recovery-full"))], max(2, s.rounds))
    full = med_rate(runs[a])
    fig = Figure(
        "recovery",
        f"time to /readyz with {pending} pending",
        full,
        "s",
        b,
        med_rate(runs[b]),
        target="<= 2.0 s",
        met=full <= 2.0,
        rounds={a: [round(x.rate, 3) for x in runs[a]], b: [round(x.rate, 3) for x in runs[b]]},
        note=f"from spawn (Python start-up included); pending after restart: {runs[a][-1].result['pending_after']}; "
        f"CPU ms for the whole start-up: {med_cpu(runs[a]):.0f} vs {med_cpu(runs[b]):.0f}; "
        f"RSS {runs[a][-1].result['rss_mb']:.0f} MB vs {runs[b][-1].result['rss_mb']:.0f} MB",
    )
    return [fig]


# ---- latency and isolation --------------------------------------------------------------------

LATENCY_RATE = 1000.0  # events/s to the measured tenant (issue 14: latency under load)
BAD_RATE = 1000.0  # events/s to the tenant whose endpoint always times out, "at the same rate"


def latency_round(
    r: Runner, server: Server, tenant_id: str, rate: float, seconds: float, others: Sequence[tuple[str, list[str]]] = ()
) -> Sample:
    """Send `tenant_id` events at `rate` (open loop) while `others` load jobs run beside it; the
    figure is the p99 from the 202 at the client to arrival at the sink, per event id."""
    http(r.p.sink_port, "POST", "/record")
    before = r.p.sink_count()
    r.seq += 1
    n = int(rate * seconds)
    args = ["-m", "bench.load", "send", *server.target_args(), "--tenant", tenant_id, "--rate", str(rate),
            "--requests", str(n), "--duration", str(seconds + 5), "--concurrency", "128", "--record"]  # fmt: skip
    jobs = [(f"load-{r.seq:03d}-{tenant_id}", args), *others]
    c0 = cpu_seconds(server.pid)
    results = r.procs.run_json_many(jobs, timeout=seconds + 60)
    cpu = cpu_seconds(server.pid) - c0
    mine = results[0]
    r.p.wait_sink(before + mine["events_ok"], timeout=30)
    arrivals: dict[str, float] = http(r.p.sink_port, "GET", "/arrivals")[1]["arrivals"]
    accepted: dict[str, float] = mine["accepted"]
    lat = [1000 * (arrivals[e] - t) for e, t in accepted.items() if e in arrivals]
    r.expected_deliveries = r.p.sink_count()
    events = sum(x["events_ok"] for x in results)
    res = {
        "p50_ms": percentile(lat, 0.5),
        "p99_ms": percentile(lat, 0.99),
        "missing": len(accepted) - len(lat),
        "n": len(lat),
        "achieved_rate": mine["events_per_s"],
    }
    if others:
        res["others_accepted"] = [x["events_ok"] for x in results[1:]]
    return Sample(percentile(lat, 0.99), 1000 * cpu / events if events else float("nan"), res)


def p99_figure(
    scenario: str, name: str, runs: dict[str, list[Sample]], a: str, b: str, limit: float, note: str
) -> Figure:
    value, base = med_rate(runs[a]), med_rate(runs[b])
    p50a = median([x.result["p50_ms"] for x in runs[a]])
    p50b = median([x.result["p50_ms"] for x in runs[b]])
    missing = sum(x.result["missing"] for x in runs[a])
    return Figure(
        scenario,
        name,
        value,
        "ms",
        b,
        base,
        target=f"ratio <= {limit}",
        met=value <= limit * base,
        cpu_ms=med_cpu(runs[a]),
        baseline_cpu_ms=med_cpu(runs[b]),
        rounds={a: [round(x.rate, 2) for x in runs[a]], b: [round(x.rate, 2) for x in runs[b]]},
        note=f"{note}; p50 {p50a:.1f} vs {p50b:.1f} ms; missing {missing}",
    )


def latency(r: Runner) -> list[Figure]:
    """202 -> arrival p99 at 1,000 events/s: hookrelay vs the naive forwarder (which journals
    nothing and fires the POST at once), same sink, alternating rounds."""
    s = r.s
    d = r.p.start_daemon("latency", [tenant("lat", f"{r.p.sink_url}/hook/lat")])
    naive = r.p.start_baseline("naive")
    r.load(d, tenant="lat", duration=0.5, concurrency=8)  # warm-up
    r.load(naive, duration=0.5, concurrency=8)
    r.settle(0)
    a, b = "hookrelay p99 at 1,000 ev/s", "naive forwarder p99 at 1,000 ev/s"
    runs = r.alternate(
        [
            (b, lambda: latency_round(r, naive, "lat", LATENCY_RATE, s.iso_s)),
            (a, lambda: latency_round(r, d, "lat", LATENCY_RATE, s.iso_s)),
        ],
        s.rounds,
    )
    r.p.stop(d)
    r.p.stop(naive)
    note = f"202 at the client to sink receipt, {LATENCY_RATE:.0f} ev/s open loop, 1 KB payloads, fsync batch"
    return [p99_figure("latency", "delivery p99 under load vs naive forwarder", runs, a, b, 1.5, note)]


def _set_active(r: Runner, d: Server, tenants: list[dict[str, Any]], name: str, active: bool) -> None:
    """Rewrite the tenant files with `name` (in)active, SIGHUP, and wait until the API shows it."""
    for t in tenants:
        if t["tenant_id"] == name:
            t["active"] = active
    write_tenants(d.config, tenants)
    d.proc.send_signal(signal.SIGHUP)

    def shown() -> bool:
        status, body = http(d.port, "GET", "/api/v1/webhooks/configs")
        return status == 200 and any(c.get("tenant_id") == name and c.get("active") == active for c in body["configs"])

    if not wait_for(shown, 30, interval=0.1):
        raise RuntimeError(f"tenant {name} did not become active={active}")


def isolation(r: Runner) -> list[Figure]:
    """The healthy tenant's p99 at 1,000 ev/s, alone vs while a second tenant gets 1,000 ev/s to an
    endpoint that sleeps past its 1 s timeout (breaker off: every attempt times out). Between
    rounds the bad tenant is made inactive (its backlog held, no attempts), so the "alone" rounds
    are really alone."""
    s = r.s
    sink = r.p.sink_url
    no_breaker = {"circuit_breaker": {"enabled": False}}
    bad_policy = {"retry_policy": {"max_retries": 0, "initial_delay_seconds": 0.2, "jitter": False}}
    tenants = [
        tenant("healthy", f"{sink}/hook/healthy"),
        tenant("bad", f"{sink}/slow/bad", timeout_seconds=1, active=False, **no_breaker, **bad_policy),
    ]
    d = r.p.start_daemon("isolation", tenants)

    def bad_job() -> tuple[str, list[str]]:
        count, duration = str(int(BAD_RATE * s.iso_s)), str(s.iso_s + 5)
        args = ["-m", "bench.load", "send", *d.target_args(), "--tenant", "bad", "--rate", str(BAD_RATE),
                "--requests", count, "--duration", duration, "--concurrency", "128"]  # fmt: skip
        return (f"load-{r.seq + 1:03d}-bad", args)

    def with_bad() -> Sample:
        _set_active(r, d, tenants, "bad", True)
        try:
            return latency_round(r, d, "healthy", LATENCY_RATE, s.iso_s, [bad_job()])
        finally:
            _set_active(r, d, tenants, "bad", False)
            time.sleep(1.5)  # attempts already started end within their 1 s timeout

    r.load(d, tenant="healthy", duration=0.5, concurrency=8)  # warm-up
    r.settle(0)
    a, b = "healthy p99 with a timing-out tenant", "healthy p99 alone"
    runs = r.alternate([(b, lambda: latency_round(r, d, "healthy", LATENCY_RATE, s.iso_s)), (a, with_bad)], s.rounds)
    r.p.stop(d)
    note = (
        f"202 at the client to sink receipt, {LATENCY_RATE:.0f} ev/s healthy, {BAD_RATE:.0f} ev/s accepted for a "
        "tenant whose endpoint sleeps past its 1 s timeout (breaker off, max_in_flight 64: its 64 slots always full)"
    )
    return [p99_figure("isolation", "healthy tenant delivery p99, other tenant timing out", runs, a, b, 2.0, note)]


# ---- ordering ----------------------------------------------------------------------------------

ORDER_KEYS, ORDER_PER_KEY = 100, 10


def keys_in_order(ids: list[str], round_no: int) -> bool:
    """Whether, for every key, the events' first 2xx came in their acceptance (seq) order."""
    first: dict[str, int] = {}
    for i, eid in enumerate(ids):
        first.setdefault(eid, i)
    for k in range(ORDER_KEYS):
        at = [first.get(f"r{round_no}-k{k}-{j}", -1) for j in range(ORDER_PER_KEY)]
        if at != sorted(at) or -1 in at:
            return False
    return True


def ordering(r: Runner) -> list[Figure]:
    """100 keys x 10 events to a receiver failing 20% at random: `ordering: fifo` vs `none`."""
    sink = r.p.sink_url
    quick = {
        "retry_policy": {"max_retries": 100, "initial_delay_seconds": 0.02, "max_delay_seconds": 0.2, "jitter": False},
        "circuit_breaker": {"enabled": False},
    }
    tenants = [
        tenant("fifo", f"{sink}/flaky/fifo", ordering="fifo", **quick),
        tenant("none", f"{sink}/flaky/none", **quick),
    ]
    d = r.p.start_daemon("ordering", tenants)
    in_order: list[bool] = []

    def one_round(tid: str) -> Sample:
        r.seq += 1
        events = [
            {"tenant_id": tid, "event_type": "order.updated", "payload": {"key": k, "seq": j},
             "ordering_key": f"k{k}", "event_id": f"r{r.seq}-k{k}-{j}"}
            for j in range(ORDER_PER_KEY)
            for k in range(ORDER_KEYS)
        ]  # fmt: skip
        path = f"/flaky/{tid}"
        before = len(http(r.p.sink_port, "GET", f"/flaky-log?path={path}")[1]["ids"])
        c0 = cpu_seconds(d.pid)
        t0 = time.monotonic()
        status, body = http(d.port, "POST", "/api/v1/webhooks/send-batch", {"events": events}, timeout=60)
        assert status == 200, body
        want = {e["event_id"] for e in events}
        ids: list[str] = []

        def done() -> bool:
            nonlocal ids
            ids = http(r.p.sink_port, "GET", f"/flaky-log?path={path}")[1]["ids"][before:]
            return want <= set(ids)

        complete = wait_for(done, 120)
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(d.pid) - c0
        ok = complete and keys_in_order(ids, r.seq)
        if tid == "fifo":
            in_order.append(ok)
        n = len(events)
        return Sample(n / elapsed, 1000 * cpu / n, {"elapsed": elapsed, "complete": complete, "in_order": ok})

    a, b = "ordering: fifo, 100 keys", "ordering: none, same load"
    runs = r.alternate([(a, lambda: one_round("fifo")), (b, lambda: one_round("none"))], max(1, min(2, r.s.rounds)))
    r.p.stop(d)
    fig = compare(
        "ordering",
        "fifo (100 keys x 10, 20% failures) vs unordered",
        runs,
        a,
        b,
        "events/s",
        0.5,
        note=f"every key arrived in order: {'yes' if in_order and all(in_order) else 'NO'} "
        f"({sum(in_order)}/{len(in_order)} rounds); send-batch of 1,000 to the last first-2xx at the sink",
    )
    return [fig]


SCENARIOS: dict[str, Callable[[Runner], list[Figure]]] = {
    "ingest": ingest,
    "batch": batch,
    "deliver": deliver,
    "memory": memory,
    "backlog": backlog,
    "recovery": recovery,
    "latency": latency,
    "isolation": isolation,
    "ordering": ordering,
}
