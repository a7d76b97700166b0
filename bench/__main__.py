"""`python -m bench [--quick] [--only NAME[,NAME]] [--store local|redis]`: run the scenarios, print the table,
write bench/out/latest.json. `--store redis` runs the shared-store scenario (needs redis-server)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from bench.common import OUT, Procs
from bench.contracts import SCENARIOS as CONTRACT_SCENARIOS
from bench.parties import Parties
from bench.redis_store import SCENARIOS as REDIS_SCENARIOS
from bench.scenarios import SCENARIOS as CORE_SCENARIOS
from bench.scenarios import Figure, Runner, settings

SCENARIOS = {**CORE_SCENARIOS, **CONTRACT_SCENARIOS}
# Not in the default run: it needs a redis-server (`--store redis`, or `--only redis`).
EVERY_SCENARIO = {**SCENARIOS, **REDIS_SCENARIOS}


def machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def fmt(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}" if abs(x) >= 10 else f"{x:.{digits + 2}f}"


def table(figures: list[Figure]) -> str:
    head = ["figure", "value", "unit", "baseline", "baseline value", "ratio", "target", "met", "CPU ms/ev", "base CPU"]
    rows = [head]
    for f in figures:
        met = "-" if f.met is None else ("yes" if f.met else "NO")
        rows.append(
            [
                f.name,
                fmt(f.value),
                f.unit,
                f.baseline,
                fmt(f.baseline_value),
                f"{f.ratio:.2f}x",
                f.target or "-",
                met,
                fmt(f.cpu_ms, 2),
                fmt(f.baseline_cpu_ms, 2),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short smoke run (~1 min)")
    ap.add_argument("--only", default="", help=f"comma-separated subset of: {','.join(EVERY_SCENARIO)}")
    ap.add_argument(
        "--store",
        choices=["local", "redis"],
        default="local",
        help="redis: the shared store on one redis-server, 1-3 relays vs the local journal",
    )
    ap.add_argument(
        "--backlog-events",
        type=int,
        default=None,
        help="events the backlog scenario queues (default 1,000,000; 50,000 with --quick)",
    )
    args = ap.parse_args()
    default = list(REDIS_SCENARIOS) if args.store == "redis" else list(SCENARIOS)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or default
    unknown = [n for n in names if n not in EVERY_SCENARIO]
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(unknown)}")
    signal.signal(signal.SIGTERM, on_sigterm)

    s = settings(args.quick, args.backlog_events)
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = OUT / "logs" / stamp
    work = Path(tempfile.mkdtemp(prefix="hookrelay-bench-"))
    procs = Procs(log_dir)
    parties = Parties(procs, work)
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    started = time.monotonic()
    print(f"hookrelay bench ({'quick' if args.quick else 'full'}): {', '.join(names)}; logs in {log_dir}", flush=True)
    try:
        for name in names:
            t0 = time.monotonic()
            print(f"-- {name} ...", flush=True)
            try:
                if parties.sink_proc is None or parties.sink_proc.poll() is not None:
                    parties.start_sink()
                runner = Runner(procs, parties, s)
                runner.expected_deliveries = parties.sink_count()
                got = EVERY_SCENARIO[name](runner)
                figures += got
                for f in got:
                    print(
                        f"   {f.name}: {fmt(f.value)} {f.unit} vs {fmt(f.baseline_value)} ({f.ratio:.2f}x)", flush=True
                    )
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
                procs.kill_all()  # a failed scenario leaves nothing running; the sink restarts
                parties.sink_proc = None
            print(f"   ({time.monotonic() - t0:.0f} s)", flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        errors["interrupted"] = "KeyboardInterrupt"
    finally:
        procs.kill_all()
        shutil.rmtree(work, ignore_errors=True)

    total = time.monotonic() - started
    print()
    print(table(figures))
    for f in figures:
        if f.note:
            print(f"  * {f.name}: {f.note}")
    for name, err in errors.items():
        print(f"  ! {name} failed: {err}")
    print(f"total {total:.0f} s")
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mode": "quick" if args.quick else "full",
        "scenarios": names,
        "machine": machine(),
        "settings": dataclasses.asdict(s),
        "seconds": round(total, 1),
        "figures": [{**dataclasses.asdict(f), "ratio": f.ratio} for f in figures],
        "errors": errors,
    }
    (OUT / "latest.json").write_text(json.dumps(report, indent=2, default=str))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
