"""A lean HTTP/1.1 client for webhook POSTs: keep-alive connections pooled per origin, the request
head written in one call, the answer parsed by llhttp (httptools).

Why not aiohttp's client for this: a delivery is one POST of bytes we already hold, and all we
need back is the status, `Retry-After` and the first 64 KiB of the body. aiohttp's general
machinery (request/response objects, payload writers, stream readers, timers, trace hooks) costs
more CPU per attempt than the rest of the relay's work together (BENCHMARKS.md, "deliver"). The
engine still uses aiohttp for what this does not do: requests through a proxy, and OAuth2 token
requests. `HOOKRELAY_HTTP_CLIENT=aiohttp` turns this client off (a troubleshooting switch).

Guarantees kept from aiohttp's behaviour in relay.dispatch.post: the egress guard checks every
resolved address (`GuardedResolver`), a total timeout covers connect, send and read, redirects are
never followed (3xx is just a status), TLS verifies like `ssl=True` unless the tenant has its own
context, and CR/LF in a header is refused before anything is sent.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass

import httptools
from aiohttp.abc import AbstractResolver
from yarl import URL

IDLE_SECONDS = 30.0  # keep an idle connection this long (aiohttp's keepalive_timeout here)
MAX_IDLE_PER_ORIGIN = 256  # more idle connections than this to one origin are closed
DNS_TTL = 60.0  # seconds a resolved (and allowed) address list is reused, like ttl_dns_cache


class ServerDisconnected(ConnectionError):
    """The receiver closed the connection before a whole answer."""


class BadHeader(ValueError):
    """A header name or value that would split the request."""


@dataclass(frozen=True, slots=True)
class Target:
    """What a URL means to the wire: where to connect and what to write in the request line."""

    host: str  # IDNA-encoded, no brackets: what the resolver gets
    port: int
    tls: bool
    host_header: str
    path: str  # path and query, percent-encoded


@functools.lru_cache(maxsize=4096)
def target_of(url: str) -> Target:
    u = URL(url)
    if u.scheme not in ("http", "https") or not u.raw_host:
        raise ValueError(f"unsupported URL scheme or no host: {u.scheme!r}")
    assert u.port is not None  # yarl fills in the scheme's default port
    host = u.raw_host
    shown = f"[{host}]" if ":" in host else host
    default = 443 if u.scheme == "https" else 80
    host_header = shown if u.port == default else f"{shown}:{u.port}"
    return Target(host, u.port, u.scheme == "https", host_header, u.raw_path_qs or "/")


@dataclass(slots=True)
class Answer:
    status: int
    retry_after: str | None
    body: bytes


class _Conn(asyncio.Protocol):
    """One connection; one request at a time. The parser calls back into it (httptools)."""

    def __init__(self, key: tuple[object, ...], limit: int) -> None:
        self.key = key
        self.limit = limit
        self.transport: asyncio.WriteTransport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self.got_bytes = False
        self.complete = False
        self.status = 0
        self.retry_after: str | None = None
        self.body = bytearray()
        self._header = b""

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they have its methods.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        if self.waiter is None or self.complete:
            self.close()  # bytes nobody asked for: the connection's framing is lost
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ServerDisconnected("the receiver switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ServerDisconnected(f"invalid HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self.waiter is None or self.waiter.done():
            return
        if self.status:
            # The status line and headers came: that is the receiver's answer, whether the body
            # was framed by the connection's end or cut short.
            self._finish()
            return
        self._fail(ServerDisconnected(f"Server disconnected{f': {exc}' if exc else ''}"))

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self.retry_after = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if 100 <= self.status < 200:
            self.status = 0  # an interim answer (100 Continue): the real one follows

    def on_body(self, body: bytes) -> None:
        room = self.limit - len(self.body)
        if room > 0:
            self.body += body[:room]
        if len(body) > room:
            # More than we read: stop here; the rest would have to be drained, so close instead.
            self.reusable = False
            self._finish(keep=False)

    def on_message_complete(self) -> None:
        if self.status == 0:
            return  # the end of an interim answer
        self.complete = True
        self._finish(keep=self.parser.should_keep_alive())

    # -- helpers

    def _finish(self, keep: bool = False) -> None:
        self.reusable = keep and not self.closed
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self.reusable = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True

    async def exchange(self, data: bytes) -> Answer:
        """Write one request; wait for its whole answer (or the first `limit` bytes of the body)."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.parser = httptools.HttpResponseParser(self)
        self.got_bytes = self.complete = False
        self.status = 0
        self.retry_after = None
        self.body = bytearray()
        self.transport.write(data)
        try:
            await self.waiter
        finally:
            self.waiter = None
        return Answer(self.status, self.retry_after, bytes(self.body))


def request_head(t: Target, headers: Iterable[tuple[str, str]], length: int) -> bytes:
    lines = [f"POST {t.path} HTTP/1.1", f"Host: {t.host_header}"]
    for name, value in headers:
        if "\r" in name or "\n" in name or ":" in name or "\r" in value or "\n" in value:
            raise BadHeader(f"header {name!r}: CR, LF or ':' in a header name, or CR/LF in its value")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {length}")
    lines.append("\r\n")
    # UTF-8, as aiohttp writes header values (a tenant header may carry non-Latin-1 text).
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


class Pool:
    """Keep-alive connections per (host, port, TLS context, SNI name)."""

    def __init__(self, resolver: AbstractResolver, body_limit: int) -> None:
        self._resolver = resolver
        self._limit = body_limit
        self._idle: dict[tuple[object, ...], list[_Conn]] = {}
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._default_ctx: ssl.SSLContext | None = None
        self._closed = False
        self._swept = time.monotonic()

    async def post(
        self,
        url: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> Answer:
        """One POST. The caller bounds the time (asyncio.timeout); on cancellation the connection
        in use is aborted, never put back."""
        t = target_of(url)
        ctx = (ssl_context or self._default_context()) if t.tls else None
        key = (t.host, t.port, id(ctx) if ctx is not None else None, server_hostname)
        data = request_head(t, headers, len(body)) + body
        if time.monotonic() - self._swept > IDLE_SECONDS:
            self.sweep()
        conn = self._take(key)
        if conn is not None:
            try:
                return await self._use(conn, data)
            except ServerDisconnected:
                if conn.got_bytes:
                    raise
                # An idle connection the receiver had already closed (its keep-alive ran out as
                # we reused it): nothing was answered, so the request goes out once more on a
                # fresh connection, as browsers and HTTP client libraries do.
        conn = await self._connect(t, key, ctx, server_hostname)
        return await self._use(conn, data)

    async def _use(self, conn: _Conn, data: bytes) -> Answer:
        try:
            answer = await conn.exchange(data)
        except BaseException:
            conn.abort()
            raise
        if conn.reusable and not self._closed:
            conn.idle_since = time.monotonic()
            idle = self._idle.setdefault(conn.key, [])
            if len(idle) < MAX_IDLE_PER_ORIGIN:
                idle.append(conn)
            else:
                conn.close()
        else:
            conn.close()
        return answer

    def _take(self, key: tuple[object, ...]) -> _Conn | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have been closed
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            if now - conn.idle_since > IDLE_SECONDS:
                conn.close()
                continue
            return conn
        return None

    async def _connect(
        self, t: Target, key: tuple[object, ...], ctx: ssl.SSLContext | None, server_hostname: str | None
    ) -> _Conn:
        loop = asyncio.get_running_loop()
        last: Exception | None = None
        factory = functools.partial(_Conn, key, self._limit)
        for address in await self._addresses(t.host, t.port):
            try:
                if ctx is None:
                    _, conn = await loop.create_connection(factory, address, t.port)
                else:
                    sni = server_hostname or t.host
                    _, conn = await loop.create_connection(factory, address, t.port, ssl=ctx, server_hostname=sni)
                return conn
            except (OSError, ssl.SSLError) as exc:
                last = exc
        assert last is not None
        raise ConnectError(f"Cannot connect to host {t.host_header}: {last}") from last

    async def _addresses(self, host: str, port: int) -> list[str]:
        hit = self._dns.get((host, port))
        now = time.monotonic()
        if hit is not None and now - hit[0] < DNS_TTL:
            return hit[1]
        # The guarded resolver refuses (TargetRefused) when no address is allowed.
        found = [r["host"] for r in await self._resolver.resolve(host, port)]
        if len(self._dns) > 4096:
            self._dns.clear()
        self._dns[(host, port)] = (now, found)
        return found

    def _default_context(self) -> ssl.SSLContext:
        if self._default_ctx is None:
            self._default_ctx = ssl.create_default_context()
        return self._default_ctx

    def sweep(self) -> None:
        """Close idle connections past their time (called now and then by the engine)."""
        now = self._swept = time.monotonic()
        for key, idle in list(self._idle.items()):
            keep = [c for c in idle if not c.closed and now - c.idle_since <= IDLE_SECONDS]
            for c in idle:
                if c not in keep:
                    c.close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for c in idle:
                c.close()
        self._idle.clear()


class ConnectError(ConnectionError):
    """No connection could be made to any of the target's addresses."""
