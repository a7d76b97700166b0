"""The lean delivery client (relay/http1.py) against a scripted HTTP server on 127.0.0.1.

The server is a plain asyncio stream server, so each test controls the bytes on the wire: framing
(chunked, read-until-close), keep-alive and its failures, interim answers, oversized bodies and
garbage. End-to-end delivery through the daemon is covered by the e2e suites, which all run on
this client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from multidict import CIMultiDict

from relay import dispatch, http1

Script = Callable[[int, int, bytes], bytes | None]  # (connection no, request no on it, request) -> reply


@dataclass
class Wire:
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


@pytest.fixture
async def wire() -> AsyncIterator[Callable[[Script], asyncio.Future[Wire]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> Wire:
        w = Wire()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            w.connections += 1
            conn_no = w.connections
            n = 0
            try:
                while (req := await _read_request(reader)) is not None:
                    w.requests.append(req)
                    n += 1
                    reply = script(conn_no, n, req)
                    if reply is None:  # hang up without an answer
                        break
                    if reply == HANG:  # keep the line open, answer nothing, until the client goes
                        await reader.read()
                        break
                    writer.write(reply)
                    await writer.drain()
                    low = reply.lower()
                    framed = b"content-length" in low or b"chunked" in low
                    if b"connection: close" in low or not framed:
                        break
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        w.port = server.sockets[0].getsockname()[1]
        return w

    yield start  # type: ignore[misc]
    for s in servers:
        s.close()


def pool() -> http1.Pool:
    return http1.Pool(dispatch.GuardedResolver(dispatch.EgressPolicy()), 64 * 1024)


HANG = b"hang"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
HEADERS = [("Content-Type", "application/json"), ("X-Event-ID", "evt_1")]


async def test_keep_alive_reuses_one_connection_and_writes_the_request_head(wire) -> None:
    w = await wire(lambda c, n, r: OK)
    p = pool()
    for _ in range(3):
        ans = await p.post(f"http://127.0.0.1:{w.port}/hook/a?x=1", [*HEADERS, ("X-Note", "5 €")], b'{"a":1}')
        assert (ans.status, ans.body) == (200, b"ok")
    assert w.connections == 1
    head = w.requests[0].decode("utf-8")
    assert head.startswith("POST /hook/a?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{w.port}\r\n" in head and "X-Event-ID: evt_1\r\n" in head
    assert "X-Note: 5 €\r\n" in w.requests[0].decode("utf-8")  # UTF-8, as aiohttp writes it
    assert "Content-Length: 7\r\n" in head and head.endswith('\r\n\r\n{"a":1}')
    p.close()


async def test_chunked_and_close_framed_answers(wire) -> None:
    chunked = b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfail\r\n3\r\ned!\r\n0\r\n\r\n"
    close_framed = b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\n\r\nno length here"
    w = await wire(lambda c, n, r: chunked if c == 1 else close_framed)
    p = pool()
    a = await p.post(f"http://127.0.0.1:{w.port}/", HEADERS, b"{}")
    assert (a.status, a.body) == (500, b"failed!")
    b = await p.post(f"http://127.0.0.1:{w.port}/", HEADERS, b"{}")  # same connection: chunked keeps it
    assert w.connections == 1
    w2 = await wire(lambda c, n, r: close_framed)
    b = await p.post(f"http://127.0.0.1:{w2.port}/", HEADERS, b"{}")
    assert (b.status, b.retry_after, b.body) == (503, "7", b"no length here")
    p.close()


async def test_connection_close_is_honoured(wire) -> None:
    w = await wire(lambda c, n, r: b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
    p = pool()
    for _ in range(2):
        assert (await p.post(f"http://127.0.0.1:{w.port}/", HEADERS, b"{}")).status == 204
    assert w.connections == 2
    p.close()


async def test_a_kept_connection_the_receiver_dropped_is_replaced_once(wire) -> None:
    # Connection 1 answers its first request, then hangs up on the second without a byte: the
    # request goes out again on a fresh connection, and is answered there.
    w = await wire(lambda c, n, r: None if (c, n) == (1, 2) else OK)
    p = pool()
    assert (await p.post(f"http://127.0.0.1:{w.port}/", HEADERS, b"{}")).status == 200
    assert (await p.post(f"http://127.0.0.1:{w.port}/", HEADERS, b"{}")).status == 200
    assert w.connections == 2 and len(w.requests) == 3
    p.close()


async def test_a_fresh_connection_dropped_without_an_answer_is_an_error(wire) -> None:
    w = await wire(lambda c, n, r: None)
    p = pool()
    with pytest.raises(http1.ServerDisconnected):
        await p.post(f"http://127.0.0.1:{w.port}/", HEADERS, b"{}")
    assert len(w.requests) == 1  # no second try on a connection that was new
    p.close()


async def test_interim_answer_then_the_real_one(wire) -> None:
    w = await wire(lambda c, n, r: b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    p = pool()
    ans = await p.post(f"http://127.0.0.1:{w.port}/", HEADERS, b"{}")
    assert (ans.status, ans.body) == (200, b"ok")
    p.close()


async def test_a_huge_answer_is_read_up_to_the_limit_and_the_connection_dropped(wire) -> None:
    big = b"x" * 200_000
    w = await wire(lambda c, n, r: b"HTTP/1.1 400 Bad\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big))
    p = http1.Pool(dispatch.GuardedResolver(dispatch.EgressPolicy()), 1000)
    ans = await p.post(f"http://127.0.0.1:{w.port}/", HEADERS, b"{}")
    assert ans.status == 400 and ans.body == b"x" * 1000
    await p.post(f"http://127.0.0.1:{w.port}/", HEADERS, b"{}")
    assert w.connections == 2  # not reused: the rest of the body was never read
    p.close()


async def test_header_injection_is_refused_before_anything_is_sent(wire) -> None:
    w = await wire(lambda c, n, r: OK)
    p = pool()
    with pytest.raises(ValueError, match="CR"):
        await p.post(f"http://127.0.0.1:{w.port}/", [("X-A", "b\r\nX-Injected: 1")], b"{}")
    assert w.connections == 0
    p.close()


async def test_outcomes_through_dispatch_post(wire) -> None:
    """The engine's view: the same Outcome kinds and texts as with aiohttp's client."""
    garbage = await wire(lambda c, n, r: b"SPDY/9 what\r\n\r\n")
    silent = await wire(lambda c, n, r: None)
    limited = await wire(lambda c, n, r: b"HTTP/1.1 429 Slow\r\nRetry-After: 9\r\nContent-Length: 0\r\n\r\n")
    redirect = await wire(lambda c, n, r: b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n")
    hang = await wire(lambda c, n, r: HANG)
    session = dispatch.make_session(dispatch.EgressPolicy())
    try:
        h: CIMultiDict[str] = CIMultiDict(HEADERS)
        policy = dispatch.EgressPolicy()
        out = await dispatch.post(session, f"http://127.0.0.1:{garbage.port}/?token=abc", b"{}", h, 5, policy)
        assert out.kind == "connection_error" and "invalid HTTP answer" in (out.error or "")
        assert "token=***" in (out.error or "") and "abc" not in (out.error or "")
        out = await dispatch.post(session, f"http://127.0.0.1:{silent.port}/", b"{}", h, 5, policy)
        assert out.kind == "connection_error" and "disconnected" in (out.error or "")
        out = await dispatch.post(session, f"http://127.0.0.1:{limited.port}/", b"{}", h, 5, policy)
        assert (out.kind, out.status, out.retry_after) == ("http_error", 429, 9.0)
        out = await dispatch.post(session, f"http://127.0.0.1:{redirect.port}/", b"{}", h, 5, policy)
        assert (out.kind, out.status) == ("http_error", 302) and len(redirect.requests) == 1
        out = await dispatch.post(session, f"http://127.0.0.1:{hang.port}/", b"{}", h, 0.3, policy)
        assert out.kind == "timeout" and out.error == "timed out after 0.3s"
        out = await dispatch.post(session, "http://127.0.0.1:1/", b"{}", h, 5, policy)
        assert out.kind == "connection_error" and "Cannot connect to host 127.0.0.1:1" in (out.error or "")
        deny = dispatch.EgressPolicy(deny_private=True)
        guarded = dispatch.make_session(deny)
        try:
            out = await dispatch.post(guarded, f"http://localhost:{limited.port}/", b"{}", h, 5, deny)
            assert out.kind == "refused" and "private or loopback" in (out.error or "")
        finally:
            await dispatch.close_session(guarded)
        assert len(limited.requests) == 1  # the refused one never reached it
    finally:
        await dispatch.close_session(session)


def test_target_of_encodes_like_aiohttp() -> None:
    t = http1.target_of("https://bücher.example/a b?q=ä")
    assert t.host == "xn--bcher-kva.example" and t.port == 443 and t.tls
    assert t.host_header == "xn--bcher-kva.example" and t.path == "/a%20b?q=%C3%A4"
    v6 = http1.target_of("http://[::1]:8080")
    assert (v6.host, v6.host_header, v6.path) == ("::1", "[::1]:8080", "/")
