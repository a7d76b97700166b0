"""A real redis-server for the shared-store tests: its own directory, a free loopback port,
`appendonly yes` with `appendfsync always`, stopped by its pid. Tests skip, saying why, where
the binary is missing (`.ci/run` installs Debian's redis-server when it can)."""

from __future__ import annotations

import importlib.util
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import free_port

REDIS_SERVER = shutil.which("redis-server")
HAS_CLIENT = importlib.util.find_spec("redis") is not None
needs_redis = [
    pytest.mark.skipif(
        REDIS_SERVER is None,
        reason="redis-server is not installed (apt-get install redis-server; .ci/run does it where it can)",
    ),
    pytest.mark.skipif(not HAS_CLIENT, reason="the redis package is not installed (pip install -e '.[test]')"),
]


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "redis.log"
        self.password: str | None = None  # requirepass, when set before start()
        # Overrides of the durable defaults below (e.g. {"appendonly": "no"}), set before start().
        self.settings: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.dir),
                "--appendonly", self.settings.get("appendonly", "yes"),
                "--appendfsync", self.settings.get("appendfsync", "always"),
                "--save", "",
                "--maxmemory-policy", self.settings.get("maxmemory-policy", "noeviction"),
                "--logfile", str(self.log),
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited {self.proc.returncode}: {self.log.read_text()}")
            if self.ping():
                return self
            time.sleep(0.05)
        raise AssertionError("redis-server did not answer within 10s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as c:
                c.sendall(b"PING\r\n")
                reply = c.recv(64)
                return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """One command in RESP, its raw reply (enough for the few the tests send)."""
        payload = f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
        )
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as c:
            c.sendall(payload)
            time.sleep(0.05)
            return c.recv(1 << 16)

    def kill(self) -> None:
        """SIGKILL: what a crash does (the AOF, fsynced on every write, is all that survives)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
