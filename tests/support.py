"""Test support: a real aiohttp sink on loopback (in a thread) and the real daemon as a process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: bytes = b"ok"


class Sink:
    """A webhook receiver on 127.0.0.1 that records requests and answers what the test programs.

    `responder(n, request)` (n counts from 0 per path) returns a Reply; default 200 at once.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.ssl_context = ssl_context  # serve HTTPS with it (e.g. one that requires a client cert)
        self.received: list[Received] = []
        self.responder: Callable[[int, Received], Reply] = lambda n, r: Reply()
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(
            web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_context).start()
        )
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        rec = Received(request.path, dict(request.headers), body, time.time())
        with self._lock:
            n = self._counts.get(request.path, 0)
            self._counts[request.path] = n + 1
            self.received.append(rec)
        reply = self.responder(n, rec)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)

    def start(self) -> Sink:
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self) -> None:
        async def _down() -> None:
            await self._runner.cleanup()

        async def _down_all() -> None:
            await _down()
            # Handlers still sleeping (programmed delays) must not outlive the loop.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        fut = asyncio.run_coroutine_threadsafe(_down_all(), self._loop)
        try:
            fut.result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def on(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def wait_event(self, event_id: str, timeout: float = 10.0) -> Received:
        """The first request carrying `X-Event-ID: event_id`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self._lock:
                for r in self.received:
                    if r.headers.get("X-Event-ID") == event_id:
                        return r
            time.sleep(0.02)
        raise AssertionError(f"{event_id} was not delivered within {timeout}s")

    def wait_for(self, count: int, path: str | None = None, timeout: float = 10.0) -> list[Received]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.on(path) if path else list(self.received)
            if len(got) >= count:
                return got
            time.sleep(0.02)
        got = self.on(path) if path else list(self.received)
        raise AssertionError(f"sink got {len(got)} requests, expected {count} within {timeout}s")


def raw_http(port: int, data: bytes, wait: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or `wait` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as c:
        c.sendall(data)
        out = b""
        try:
            while chunk := c.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return out


def write_tenant(config_dir: Path, tenant_id: str, base_url: str, **extra: Any) -> Path:
    data: dict[str, Any] = {"tenant_id": tenant_id, "base_url": base_url, "secret_key": f"{tenant_id}-secret"}
    data.update(extra)
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / f"{tenant_id}.yaml"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)
    return path


class Daemon:
    """`python -m relay run` as a real process on a free loopback port."""

    def __init__(
        self,
        tmp: Path,
        *,
        config: Path | None = None,
        data_dir: Path | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.config = config or tmp / "config"
        self.config.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir or tmp / "data"
        self.args = args or []
        self.env = env or {}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = tmp / f"daemon-{self.port}.log"
        self._logs: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "relay",
            "run",
            "--config",
            str(self.config),
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--log-level",
            "debug",
            *self.args,
        ]

    def start(self, wait: bool = True) -> Daemon:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            self.command(), stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=str(REPO)
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.logs()}")
            try:
                status, _ = self.request("GET", "/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready within {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if data is not None and "Content-Type" not in (headers or {}):
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                payload = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            payload = err.read()
            status = err.code
        try:
            return status, json.loads(payload) if payload else None
        except ValueError:
            return status, payload.decode(errors="replace")

    def send(self, tenant_id: str, event_type: str = "user.created", payload: Any = None, **kw: Any) -> tuple[int, Any]:
        body = {"tenant_id": tenant_id, "event_type": event_type, "payload": payload or {"n": 1}, **kw}
        return self.request("POST", "/api/v1/webhooks/send", body)

    def event(self, event_id: str) -> Any:
        return self.request("GET", f"/api/v1/webhooks/events/{event_id}")[1]

    def wait_status(self, event_id: str, status: str, timeout: float = 10.0) -> Any:
        deadline = time.time() + timeout
        view: Any = None
        while time.time() < deadline:
            code, view = self.request("GET", f"/api/v1/webhooks/events/{event_id}")
            if code == 200 and view["status"] == status:
                return view
            time.sleep(0.03)
        raise AssertionError(f"event {event_id} not {status} within {timeout}s: {view}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"daemon did not stop within {timeout}s:\n{self.logs()}") from None

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
