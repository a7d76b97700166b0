"""A small forward proxy on 127.0.0.1 for tests: CONNECT tunnels (https) and absolute-form
requests (http), optional Basic credentials (407 without them), and a record of what it carried."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from tests.support import free_port


@dataclass
class Carried:
    method: str
    target: str  # host:port for CONNECT, the absolute URL otherwise
    proxy_authorization: str | None
    allowed: bool


class Proxy:
    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        self.port = free_port()
        self.expected = (
            "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() if user is not None else None
        )
        self.carried: list[Carried] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> Proxy:
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self) -> None:
        async def _down() -> None:
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(_down(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def seen(self) -> list[Carried]:
        with self._lock:
            return list(self.carried)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            auth = headers.get("proxy-authorization")
            allowed = self.expected is None or auth == self.expected
            with self._lock:
                self.carried.append(Carried(method, target, auth, allowed))
            if not allowed:
                writer.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
                )
                await writer.drain()
                return
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                # Absolute-form: forward to the origin as it came (aiohttp servers accept it).
                parts = urlsplit(target)
                assert parts.hostname is not None
                up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
                up_writer.write(head)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except ConnectionError:
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()
