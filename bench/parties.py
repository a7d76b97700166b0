"""Starting the parties of a scenario: the sink, daemons with their tenants, baseline servers."""

from __future__ import annotations

import json
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Procs, free_port, http, wait_for, wait_until_ready

SLOW_SECONDS = 2.0


@dataclass
class Server:
    """A process that serves the ingest API (daemon or baseline), reachable by TCP and/or Unix socket."""

    name: str
    proc: Any
    port: int = 0
    unix: str = ""
    config: Path = field(default_factory=Path)
    data: Path = field(default_factory=Path)

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def target_args(self, via_unix: bool = False) -> list[str]:
        return ["--unix", self.unix] if via_unix else ["--port", str(self.port)]


def tenant(tenant_id: str, base_url: str, **extra: Any) -> dict[str, Any]:
    t: dict[str, Any] = {
        "tenant_id": tenant_id,
        "base_url": base_url,
        "secret_key": f"{tenant_id}-bench-secret",
        "max_in_flight": 64,
    }
    t.update(extra)
    return t


HOLD = {"rate_limit_per_second": 0.0001}  # events stay queued: one token every ~3 hours
LONG_RETRY = {"retry_policy": {"max_retries": 50, "initial_delay_seconds": 3600, "jitter": False}}


def write_tenants(config_dir: Path, tenants: list[dict[str, Any]]) -> None:
    """Tenant files are written as JSON, which is YAML."""
    config_dir.mkdir(parents=True, exist_ok=True)
    for old in config_dir.glob("*.yaml"):
        old.unlink()
    for t in tenants:
        path = config_dir / f"{t['tenant_id']}.yaml"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(t, indent=1))
        tmp.replace(path)


def wait_unix(path: str, proc: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(path)
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing serving on {path} within {timeout}s")


class Parties:
    def __init__(self, procs: Procs, work: Path) -> None:
        self.procs = procs
        self.work = work
        self.sink_port = 0
        self.sink_proc: Any = None

    @property
    def sink_url(self) -> str:
        return f"http://127.0.0.1:{self.sink_port}"

    def start_sink(self) -> None:
        self.sink_port = free_port()
        self.sink_proc = self.procs.spawn(
            "sink", ["-m", "bench.sink", "--port", str(self.sink_port), "--slow", str(SLOW_SECONDS)]
        )
        wait_until_ready(self.sink_port, self.sink_proc, 20, path="/count")

    def sink_count(self) -> int:
        return int(http(self.sink_port, "GET", "/count")[1]["count"])

    def wait_sink(self, at_least: int, timeout: float) -> bool:
        return wait_for(lambda: self.sink_count() >= at_least, timeout)

    def daemon_dirs(self, name: str, fresh: bool = True) -> tuple[Path, Path]:
        base = self.work / name
        if fresh and base.exists():
            shutil.rmtree(base)
        return base / "config", base / "data"

    def start_daemon(
        self,
        name: str,
        tenants: list[dict[str, Any]] | None,
        *,
        fsync: str = "batch",
        unix: bool = False,
        fresh: bool = True,
        wait: bool = True,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> Server:
        config, data = self.daemon_dirs(name, fresh)
        if tenants is not None:
            write_tenants(config, tenants)
        port = free_port()
        args = ["-m", "relay", "run", "--config", str(config), "--data-dir", str(data)]
        args += ["--listen", f"127.0.0.1:{port}", "--fsync", fsync, "--log-level", "warning"]
        sock = ""
        if unix:
            sock = str(self.work / f"{name}.sock")
            args += ["--unix-socket", sock]
        args += extra or []
        proc = self.procs.spawn(name, args, env)
        server = Server(name, proc, port=port, unix=sock, config=config, data=data)
        if wait:
            wait_until_ready(port, proc, 60)
        return server

    def start_baseline(self, kind: str, unix: bool = False) -> Server:
        name = f"{kind}-unix" if unix else kind
        args = ["-m", "bench.baselines", kind, "--sink", f"{self.sink_url}/hook/naive"]
        if unix:
            sock = str(self.work / f"{name}.sock")
            proc = self.procs.spawn(name, [*args, "--unix", sock])
            wait_unix(sock, proc, 20)
            return Server(name, proc, unix=sock)
        port = free_port()
        proc = self.procs.spawn(name, [*args, "--port", str(port)])
        wait_until_ready(port, proc, 20)
        return Server(name, proc, port=port)

    def stop(self, server: Server) -> None:
        self.procs.stop(server.proc, grace=30.0)

    def tenant_metrics(self, server: Server, tenant_id: str) -> dict[str, Any]:
        status, body = http(server.port, "GET", f"/api/v1/webhooks/metrics/{tenant_id}")
        if status != 200:
            raise RuntimeError(f"metrics for {tenant_id}: {status} {body}")
        result: dict[str, Any] = body
        return result
