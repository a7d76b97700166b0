"""OAuth2 client credentials (SPEC §13) against a real token endpoint and receiver on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from relay.config import ConfigError, parse_tenant
from tests.support import Daemon, Received, Reply, Sink, write_tenant

SECRET = "s3cret/with+odd chars"


class TokenEndpoint:
    """RFC 6749 §4.4 on a Sink: checks the client's Basic credentials, issues random tokens."""

    def __init__(self, sink: Sink, clients: dict[str, tuple[str, float]]) -> None:
        self.clients = clients  # client_id -> (secret, expires_in)
        self.issued: list[tuple[str, str]] = []  # (client_id, token)
        self.valid: set[str] = set()
        self.lock = threading.Lock()
        sink.responder = self.answer

    def answer(self, n: int, r: Received) -> Reply:
        kind, _, cred = r.headers.get("Authorization", "").partition(" ")
        user, _, password = base64.b64decode(cred).decode().partition(":") if kind == "Basic" else ("", "", "")
        client_id, secret = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)
        form = urllib.parse.parse_qs(r.body.decode())
        if client_id not in self.clients or self.clients[client_id][0] != secret:
            body = {"error": "invalid_client", "error_description": f"bad secret {secret}"}
            return Reply(401, {"Content-Type": "application/json"}, body=json.dumps(body).encode())
        if form.get("grant_type") != ["client_credentials"]:
            return Reply(400, body=b'{"error": "unsupported_grant_type"}')
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.issued.append((client_id, token))
            self.valid.add(token)
        answer = {"access_token": token, "token_type": "Bearer", "expires_in": self.clients[client_id][1]}
        return Reply(200, {"Content-Type": "application/json"}, body=json.dumps(answer).encode())

    def tokens_of(self, client_id: str) -> list[str]:
        with self.lock:
            return [t for c, t in self.issued if c == client_id]


@pytest.fixture
def idp() -> Any:
    s = Sink().start()
    yield s
    s.stop()


def oauth(idp: Sink, client_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "auth_type": "OAuth2ClientCredentials",
        "token_url": idp.url + "/oauth/token",
        "client_id": client_id,
        **extra,
    }


def test_one_token_for_many_deliveries_and_a_refresh_after_401(
    make_daemon: Any, sink: Sink, idp: Sink, tmp_path: Path
) -> None:
    ep = TokenEndpoint(idp, {"relay client": (SECRET, 3600), "short": ("short-secret", 31)})
    sink.responder = lambda n, r: Reply(200 if r.headers.get("Authorization", "")[7:] in ep.valid else 401)
    (tmp_path / "oauth-secret").write_text(SECRET + "\n")
    conf = tmp_path / "config"
    auth = oauth(idp, "relay client", client_secret_file="../oauth-secret", scope="webhooks:write", audience="acme")
    write_tenant(conf, "oa", sink.url + "/hook", auth_config=auth, max_in_flight=64)
    bad = oauth(idp, "relay client", client_secret="wrong-secret-value")
    write_tenant(conf, "bad", sink.url + "/bad", auth_config=bad, retry_policy={"max_retries": 0})
    write_tenant(conf, "short", sink.url + "/short", auth_config=oauth(idp, "short", client_secret="short-secret"))
    metadata = {**oauth(idp, "x", client_secret="y"), "token_url": "http://169.254.169.254/latest/token"}
    write_tenant(conf, "meta", sink.url + "/meta", auth_config=metadata, retry_policy={"max_retries": 0})
    d: Daemon = make_daemon().start()

    events = [{"tenant_id": "oa", "event_type": "user.created", "payload": {"i": i}} for i in range(200)]
    code, body = d.request("POST", "/api/v1/webhooks/send-batch", {"events": events})
    assert code == 200 and all(r["status"] == "queued" for r in body["results"])
    got = sink.wait_for(200, "/hook", timeout=60)
    (token,) = ep.tokens_of("relay client")  # one token request for 200 deliveries, 64 at a time
    assert {r.headers["Authorization"] for r in got} == {f"Bearer {token}"}
    (req,) = idp.on("/oauth/token")
    form = urllib.parse.parse_qs(req.body.decode())
    assert form == {"grant_type": ["client_credentials"], "scope": ["webhooks:write"], "audience": ["acme"]}
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"

    # The receiver stops accepting the token: one 401, one refresh, and the same attempt succeeds.
    ep.valid.clear()
    eid = d.send("oa")[1]["event_id"]
    view = d.wait_status(eid, "delivered")
    assert len(view["attempts"]) == 1 and view["attempts"][0]["status_code"] == 200
    first, second = ep.tokens_of("relay client")
    assert first == token
    mine = [r.headers["Authorization"] for r in sink.on("/hook") if r.headers.get("X-Event-ID") == eid]
    assert mine == [f"Bearer {first}", f"Bearer {second}"]

    # A failing token endpoint is a failed attempt with a reason that names it, never the secret.
    eid = d.send("bad")[1]["event_id"]
    view = d.wait_status(eid, "dead")
    error = view["attempts"][0]["error"]
    assert error == "OAuth2 token endpoint 127.0.0.1 answered HTTP 401 (invalid_client)"
    assert view["attempts"][0]["status_code"] is None and not sink.on("/bad")
    # The token URL goes through the egress guard like any receiver.
    view = d.wait_status(d.send("meta")[1]["event_id"], "dead")
    assert view["attempts"][0]["error"].startswith("OAuth2 token URL refused: target address 169.254.169.254")
    assert not sink.on("/meta")

    # expires_in 31: usable for 1 s (30 s margin), so a second event a bit later needs a new token.
    a = d.send("short")[1]["event_id"]
    d.wait_status(a, "delivered")
    time.sleep(1.3)
    b = d.send("short")[1]["event_id"]
    d.wait_status(b, "delivered")
    assert len(ep.tokens_of("short")) == 2

    configs = {c["tenant_id"]: c for c in d.request("GET", "/api/v1/webhooks/configs")[1]["configs"]}
    assert configs["oa"]["auth_config"]["client_secret"] == "***"
    assert configs["bad"]["auth_config"]["client_secret"] == "***"
    assert configs["oa"]["auth_config"]["client_id"] == "relay client"
    logs = d.logs()
    for secret in (SECRET, "wrong-secret-value", "short-secret", *(t for _, t in ep.issued)):
        assert secret not in logs


def _problems(auth: dict[str, Any]) -> list[str]:
    data = {"tenant_id": "t", "base_url": "https://example.com/h", "secret_key": "s", "auth_config": auth}
    with pytest.raises(ConfigError) as err:
        parse_tenant(data, "t.yaml", {})
    return err.value.problems


def test_oauth_config_errors_name_the_key(tmp_path: Path) -> None:
    base = {"auth_type": "OAuth2ClientCredentials", "token_url": "https://idp/token", "client_id": "c"}
    assert _problems(base) == ["t.yaml: auth_config.client_secret: required for OAuth2ClientCredentials"]
    assert _problems({**base, "client_secret": "x", "token_url": "ftp://idp"}) == [
        "t.yaml: auth_config.token_url: must be an http:// or https:// URL"
    ]
    no_id = {k: v for k, v in base.items() if k != "client_id"}
    assert _problems({**no_id, "client_secret": "x"}) == [
        "t.yaml: auth_config.client_id: required for OAuth2ClientCredentials"
    ]
    assert _problems({**base, "client_secret": "x", "client_secret_file": "/nope"}) == [
        "t.yaml: auth_config.client_secret: give either client_secret or client_secret_file, not both"
    ]
    (p,) = _problems({**base, "client_secret_file": str(tmp_path / "missing")})
    assert p.startswith("t.yaml: auth_config.client_secret_file: cannot read ")
    assert _problems({"auth_type": "Bearer"}) == ["t.yaml: auth_config.token: required for Bearer"]
    assert _problems({"auth_type": "Bearer", "token": "x", "client_id": "c"}) == [
        "t.yaml: auth_config.client_id: only for OAuth2ClientCredentials"
    ]
    (p,) = _problems({"auth_type": "OAuth"})
    assert "OAuth2ClientCredentials" in p  # the choices are listed


# ---- the token cache on its own, against a real aiohttp token endpoint ----------------------


async def test_token_cache_single_flight_shared_failure_and_answers(aiohttp_server: Any) -> None:
    from aiohttp import ClientSession, web

    from relay.oauth import Client, TokenCache, TokenError

    answers: list[tuple[int, Any]] = []
    hits = 0

    async def token(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        await asyncio.sleep(0.05)  # long enough for every caller to be waiting on the first request
        status, body = answers.pop(0)
        text = body if isinstance(body, str) else json.dumps(body)
        return web.Response(status=status, text=text, content_type="application/json")

    app = web.Application()
    app.router.add_post("/token", token)
    server = await aiohttp_server(app)
    client = Client(str(server.make_url("/token")), "id", "sekret")
    cache = TokenCache()
    async with ClientSession() as session:

        async def many(n: int = 20) -> list[Any]:
            calls = [cache.token(session, "t", client, 5.0) for _ in range(n)]
            return await asyncio.gather(*calls, return_exceptions=True)

        answers.append((500, {"error": "server_error", "error_description": "sekret leaked here"}))
        failed = await many()
        assert hits == 1  # 20 attempts, one request, one shared failure
        assert {str(e) for e in failed} == {"OAuth2 token endpoint 127.0.0.1 answered HTTP 500 (server_error)"}
        assert all(isinstance(e, TokenError) for e in failed)

        answers.append((200, {"access_token": "A", "token_type": "bearer", "expires_in": "3600"}))
        assert await many() == ["A"] * 20 and hits == 2  # a string expires_in is understood
        assert await cache.token(session, "t", client, 5.0) == "A" and hits == 2
        answers.append((200, {"access_token": "B", "expires_in": 3600}))
        assert await cache.token(session, "t", client, 5.0, refused="A") == "B" and hits == 3
        assert await cache.token(session, "t", client, 5.0, refused="A") == "B" and hits == 3  # already replaced

        for status, body, why in [
            (200, "not json", "without a usable access_token"),
            (200, {"access_token": "", "expires_in": 60}, "without a usable access_token"),
            (200, {"access_token": "C", "token_type": "mac"}, "token_type other than Bearer"),
            (403, "<html>denied</html>", "answered HTTP 403"),
        ]:
            answers.append((status, body))
            with pytest.raises(TokenError) as err:
                await cache.token(session, "other", client, 5.0)
            assert why in str(err.value) and "sekret" not in str(err.value)
