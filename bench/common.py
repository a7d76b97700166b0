"""Shared helpers: /proc readers, loopback HTTP, process bookkeeping, statistics."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of the full line


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def rss_hwm_mb(pid: int) -> float:
    """Peak resident set of the process so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmHWM for pid {pid}")


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def percentile(xs: Sequence[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = min(len(s) - 1, max(0, round(q * (len(s) - 1))))
    return float(s[k])


def http(port: int, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One loopback request; returns (status, parsed JSON or text)."""
    conn = HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode(errors="replace")
    finally:
        conn.close()


def wait_until_ready(port: int, proc: subprocess.Popen[bytes], timeout: float, path: str = "/readyz") -> float:
    """Poll `path` until 200; return the monotonic time it answered. Raises on exit or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited {proc.returncode} before ready")
        try:
            status, _ = http(port, "GET", path, timeout=1.0)
            if status == 200:
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"not ready on port {port}{path} within {timeout}s")


def wait_for(cond: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll cond() until true or timeout; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return bool(cond())


class Procs:
    """Every child process of a run, so that all are killed at the end, even on error."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.live: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO)
            )
        self.live.append(proc)
        return proc

    def run_json(self, name: str, args: list[str], timeout: float) -> dict[str, Any]:
        """Run a short-lived child (the load generator) and parse the JSON it prints."""
        return self.run_json_many([(name, args)], timeout)[0]

    def run_json_many(self, jobs: list[tuple[str, list[str]]], timeout: float) -> list[dict[str, Any]]:
        """Run short-lived children at the same time; parse the JSON each prints on stdout."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        started: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        deadline = time.monotonic() + timeout
        try:
            for name, args in jobs:
                err = self.log_dir / f"{name}.log"
                with open(err, "ab") as log:
                    proc = subprocess.Popen(
                        [sys.executable, *args], stdout=subprocess.PIPE, stderr=log, env=env, cwd=str(REPO)
                    )
                self.live.append(proc)
                started.append((name, proc, err))
            results = []
            for name, proc, err in started:
                out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
                if proc.returncode != 0:
                    raise RuntimeError(f"{name} exited {proc.returncode}; see {err}")
                results.append(json.loads(out))
            return results
        finally:
            for _, proc, _ in started:
                self.stop(proc, grace=1.0)

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 15.0) -> int:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc in self.live:
            self.live.remove(proc)
        return proc.returncode

    def kill_all(self) -> None:
        for proc in list(self.live):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self.live.clear()
