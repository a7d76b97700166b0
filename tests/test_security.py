"""Issue 13: each way a caller could read secrets or borrow a tenant's credentials, tried against
a running daemon, and shown to get nothing (SECURITY.md, "Tested defences").

Secrets planted here are distinctive strings; the tests grep every answer, the daemon's log and
every file of the data dir for them.
"""

from __future__ import annotations

import base64
import json
import os
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.signing import sign, standard_webhooks_ed25519_sign, standard_webhooks_sign
from tests.support import Daemon, Reply, Sink, raw_http, write_tenant

SEND = "/api/v1/webhooks/send"
CONFIGURE = "/api/v1/webhooks/configure"
FAST = {"max_retries": 1, "initial_delay_seconds": 0.05, "jitter": False}


def wait_until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if got := pred():
            return got
        time.sleep(0.03)
    raise AssertionError(f"not within {timeout}s: {what}")


def everything_said(d: Daemon, event_ids: list[str]) -> str:
    """Every API answer that could carry a secret, concatenated."""
    parts = [d.request("GET", "/api/v1/webhooks/configs")[1], d.request("GET", "/api/v1/webhooks/dead-letter")[1]]
    parts += [d.event(eid) for eid in event_ids]
    parts.append(d.request("GET", "/metrics")[1])
    return json.dumps(parts)


def data_dir_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file())


# ---- 1. configure bodies are literal: no environment, no files --------------------------------

ENV = {"ACME_SECRET": "envsecret-acme-7f3a", "OTHER_TENANT_SECRET": "envsecret-other-9c2b"}


def test_configure_cannot_read_the_environment_or_files(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon(env=ENV)
    # Files from Git still expand ${VAR}: the legitimate use the API must not reach.
    write_tenant(d.config, "acme", sink.url, secret_key="${ACME_SECRET}")
    d.start()
    attack = {
        "tenant_id": "evil",
        "base_url": "http://h/${ACME_SECRET}",
        "secret_key": "s3cret-evil",
        "default_headers": {"X-Leak": "${OTHER_TENANT_SECRET}"},
    }
    code, body = d.request("POST", CONFIGURE, attack)
    assert code == 422 and body["error"]["code"] == "invalid_config", body
    problems = body["error"]["details"]["problems"]
    assert any(": base_url: " in p for p in problems) and any("default_headers.X-Leak" in p for p in problems)
    # An escaped $${ is refused too: nothing in an API body is ever interpolated, now or on reload.
    code, body2 = d.request("POST", CONFIGURE, {**attack, "base_url": "http://h/", "secret_key": "$${ACME_SECRET}"})
    assert code == 422 and "secret_key" in body2["error"]["message"]

    # No oracle: a set and an unset name get the same answer.
    answers = []
    for name in ("ACME_SECRET", "NOPE_NOT_SET"):
        code, b = d.request("POST", CONFIGURE, {**attack, "base_url": "http://h/", "secret_key": f"${{{name}}}"})
        answers.append((code, b["error"]["message"].replace(name, "NAME")))
    assert answers[0] == answers[1] and "not set" not in answers[0][1]

    # secret_key_file (and every *_file key) is refused before anything is read.
    for path in ("/etc/passwd", "/no/such/file", str(d.config / "acme.yaml")):
        code, b = d.request("POST", CONFIGURE, {"tenant_id": "evil", "base_url": "http://h/", "secret_key_file": path})
        assert code == 422 and b["error"]["details"]["problems"] == [
            "request body: secret_key_file: not accepted from the API (the daemon's files are not readable through it)"
        ], b
    code, b = d.request(
        "POST",
        CONFIGURE,
        {**attack, "base_url": "http://h/", "default_headers": {}, "auth_config": {"token_file": "x"}},
    )
    assert code == 422 and "auth_config.token_file" in b["error"]["message"]

    said = everything_said(d, []) + d.logs()
    assert all(v not in said for v in ENV.values())
    assert not (d.config / "evil.yaml").exists()
    assert "root:" not in said


def test_read_only_config_is_checked_before_the_body(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon(args=["--read-only-config"])
    write_tenant(d.config, "acme", sink.url)
    d.start()
    for raw in (b"\xff\xfe not even JSON", json.dumps({"tenant_id": "x", "secret_key_file": "/dev/zero"}).encode()):
        code, body = d.request("POST", CONFIGURE, raw=raw)
        assert code == 409 and body["error"]["code"] == "config_read_only", body


# ---- 2. target_url cannot borrow the tenant's credentials -------------------------------------


def test_target_url_cannot_borrow_credentials(make_daemon: Any, sink: Sink) -> None:
    attacker = Sink().start()
    try:
        d = make_daemon()
        auth = {"auth_type": "Bearer", "token": "bearer-tok-5e1d"}
        write_tenant(d.config, "acme", sink.url + "/hooks", auth_config=auth, default_headers={"X-Auth": "xauth-77aa"})
        write_tenant(
            d.config,
            "partner",
            sink.url + "/p",
            auth_config=auth,
            allowed_target_hosts=["localhost"],
            retry_policy={"max_retries": 3, "initial_delay_seconds": 1.0, "jitter": False},
        )
        d.start()
        for target in (
            attacker.url + "/steal",
            f"https://127.0.0.1:{sink.port}/hooks",
            f"http://localhost:{sink.port}/",
        ):
            code, body = d.send("acme", target_url=target)
            assert code == 422 and body["error"]["code"] == "target_not_allowed", (target, body)
            assert body["error"]["details"] == {"field": "target_url"} and target not in json.dumps(body)
        code, body = d.request(
            "POST",
            "/api/v1/webhooks/send-batch",
            {"events": [{"tenant_id": "acme", "event_type": "a", "payload": 1, "target_url": attacker.url}]},
        )
        assert body["results"][0]["error"]["code"] == "target_not_allowed"

        # Same origin, another path: allowed, with the credentials.
        code, body = d.send("acme", target_url=sink.url + "/other?x=1")
        assert code == 202
        got = sink.wait_event(body["event_id"])
        assert got.path == "/other" and got.headers["Authorization"] == "Bearer bearer-tok-5e1d"

        # A host in allowed_target_hosts: allowed. Then the host is removed from the config while
        # the event waits for its retry: the retry is never sent, the event is dead-lettered.
        attacker.responder = lambda n, r: Reply(503)
        code, body = d.send("partner", target_url=f"http://localhost:{attacker.port}/partner")
        assert code == 202
        first = attacker.wait_event(body["event_id"])
        assert first.headers["Authorization"] == "Bearer bearer-tok-5e1d"
        write_tenant(d.config, "partner", sink.url + "/p", auth_config=auth)
        view = d.wait_status(body["event_id"], "dead", timeout=10)
        # The refusal is recorded as an attempt that sent nothing (like an egress refusal).
        assert [a["status_code"] for a in view["attempts"]] == [503, None]
        assert "not allowed" in view["attempts"][1]["error"]
        dead = d.request("GET", "/api/v1/webhooks/dead-letter?tenant_id=partner")[1]["items"]
        assert "not allowed" in dead[0]["failure_reason"]
        time.sleep(0.3)
        assert [r.path for r in attacker.received] == ["/partner"]
    finally:
        attacker.stop()


# ---- 3. secret files from Git: off the loop, regular, small -----------------------------------


def test_secret_files_cannot_hang_or_exhaust_the_daemon(make_daemon: Any, sink: Sink, tmp_path: Path) -> None:
    d = make_daemon()
    write_tenant(d.config, "acme", sink.url)
    d.start()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    for n, path in enumerate((fifo, Path("/dev/zero"), big, tmp_path)):
        bad = {"tenant_id": "bad", "base_url": sink.url, "secret_key_file": str(path)}
        (d.config / "bad.yaml").write_text(yaml.safe_dump(bad))
        expected = f"bad.yaml: secret_key_file: cannot read {path} (it must be a readable regular file"
        wait_until(lambda e=expected: d.logs().count(e) >= 1, 10, f"reload error for {path}")  # type: ignore[misc]
        start = time.monotonic()
        assert d.request("GET", "/healthz", timeout=2)[0] == 200
        assert time.monotonic() - start < 1.0
        assert d.request("GET", "/api/v1/webhooks/configs")[1]["configs"][0]["tenant_id"] == "acme", n
    (d.config / "bad.yaml").unlink()
    # The reload lock is free: an API write goes through at once.
    code, body = d.request(
        "POST", CONFIGURE, {"tenant_id": "ok", "base_url": sink.url, "secret_key": "k" * 8}, timeout=5
    )
    assert code == 201, body
    assert d.proc is not None and d.proc.poll() is None


# ---- 4. redaction: URLs in errors, headers in /configs, echoes in answers ----------------------


class GarbageServer(socketserver.ThreadingTCPServer):
    """Answers every request with a malformed status line: aiohttp's error then quotes the URL."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.recv(65536)
                self.request.sendall(b"HTTP/1.1 abc\r\n\r\n")

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def garbage() -> Iterator[GarbageServer]:
    s = GarbageServer()
    yield s
    s.shutdown()
    s.server_close()


def test_no_secret_in_any_answer_log_or_journal(make_daemon: Any, sink: Sink, garbage: GarbageServer) -> None:
    planted = {
        "url_password": "urlpass-1b9e",
        "query": "querysecret-4c0f",
        "secret": "signsecret-88d2",
        "bearer": "bearertok-31aa",
        "x_auth": "xauthval-0c7e",
        "authentication": "authnval-5f5f",
        "basic_pw": "basicpass-e4e4",
        "echo_header": "echohdr-9d9d",
    }
    basic_b64 = base64.b64encode(f"user:{planted['basic_pw']}".encode()).decode()
    d = make_daemon()
    write_tenant(
        d.config,
        "leaky",
        f"http://user:{planted['url_password']}@127.0.0.1:{garbage.port}/x?api_key={planted['query']}",
        secret_key=planted["secret"],
        # ApiKey: a URL password together with an Authorization header is refused by aiohttp.
        auth_config={"auth_type": "ApiKey", "token": planted["bearer"]},
        default_headers={
            "X-Auth": planted["x_auth"],
            "Authentication": planted["authentication"],
            "X-API-Version": "v2",
        },
        retry_policy=FAST,
    )
    # A receiver that echoes the request headers in its error page.
    sink.responder = lambda n, r: Reply(500, body=json.dumps(r.headers).encode())
    write_tenant(
        d.config,
        "echo",
        sink.url + "/echo",
        auth_config={"auth_type": "Basic", "token": f"user:{planted['basic_pw']}"},
        default_headers={"X-Echo": planted["echo_header"]},
        retry_policy=FAST,
    )
    d.start()
    ids = [d.send("leaky")[1]["event_id"], d.send("echo")[1]["event_id"]]
    views = [d.wait_status(eid, "dead", timeout=10) for eid in ids]

    # The attacks did happen: the error quoted the URL, and the receiver echoed the credentials.
    leaky_error = views[0]["attempts"][0]["error"]
    assert "api_key=***" in leaky_error and f"127.0.0.1:{garbage.port}" in leaky_error, leaky_error
    echoed = json.loads(views[1]["attempts"][0]["response_body"])
    assert echoed["Authorization"] == "***" and echoed["X-Echo"] == "***"
    assert sink.on("/echo")[0].headers["Authorization"] == f"Basic {basic_b64}"
    configs = {c["tenant_id"]: c for c in d.request("GET", "/api/v1/webhooks/configs")[1]["configs"]}
    assert configs["leaky"]["default_headers"] == {"X-Auth": "***", "Authentication": "***", "X-API-Version": "v2"}
    assert configs["leaky"]["base_url"] == f"http://user:***@127.0.0.1:{garbage.port}/x?api_key=***"

    d.stop()
    said = everything_said_after_stop = d.logs()
    d2 = Daemon(d.tmp, config=d.config, data_dir=d.data_dir).start()  # answers after a restart too
    try:
        said = everything_said_after_stop + everything_said(d2, ids) + d2.logs()
    finally:
        d2.stop()
    journal = data_dir_bytes(d.data_dir)
    assert journal, "the data dir holds the journal"
    for name, value in {**planted, "basic_b64": basic_b64}.items():
        assert value not in said, f"{name} leaked in an answer or a log line"
        assert value.encode() not in journal, f"{name} leaked into the data dir"


# ---- 5. configure never replaces a file that holds other tenants -------------------------------


def test_configure_refuses_to_replace_a_shared_file(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    team = d.config / "team.yaml"
    tenants = [{"tenant_id": t, "base_url": sink.url, "secret_key": f"{t}-secret"} for t in ("t1", "t2")]
    team.write_text(yaml.safe_dump({"tenants": tenants}))
    (d.config / "solo.yaml").write_text(yaml.safe_dump({"tenant_id": "other", "base_url": sink.url, "secret_key": "k"}))
    d.start()
    before = team.read_bytes()
    for tid, names in (("team", "'t1', 't2'"), ("solo", "'other'")):
        code, body = d.request("POST", CONFIGURE, {"tenant_id": tid, "base_url": sink.url, "secret_key": "k"})
        assert code == 409 and body["error"]["code"] == "file_holds_other_tenants", body
        assert names in body["error"]["message"]
    assert team.read_bytes() == before
    configured = {c["tenant_id"] for c in d.request("GET", "/api/v1/webhooks/configs")[1]["configs"]}
    assert configured == {"t1", "t2", "other"}
    eid = d.send("t1")[1]["event_id"]
    d.wait_status(eid, "delivered")


# ---- 6. authentication never fails with a 500; 7. /receive checks freshness ------------------


def test_malformed_requests_never_reach_a_500(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon(args=["--ingest-token", "ingest-tok-a1a1", "--receive-tolerance", "30"])
    write_tenant(d.config, "acme", sink.url)
    d.start()
    tok = b"Authorization: Bearer ingest-tok-a1a1\r\n"
    requests = [
        b"GET /api/v1/webhooks/configs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Connection: close\r\n\r\n",
        b"GET /api/v1/webhooks/configs HTTP/1.1\r\nHost: x\r\nAuthorization: \x80\x81\x82\r\nConnection: close\r\n\r\n",
        b"GET /api/v1/webhooks/events/%ff%fe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /api/v1/webhooks/events/%ff%fe HTTP/1.1\r\nHost: x\r\n" + tok + b"Connection: close\r\n\r\n",
        b"POST /api/v1/webhooks/receive HTTP/1.1\r\nHost: x\r\n" + tok + b"X-Tenant-ID: \xff\r\n"
        b"X-Webhook-Signature: \xfe\r\nX-Timestamp: \xfd\r\nwebhook-signature: \xfc\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\n{}",
    ]
    statuses = []
    for raw in requests:
        answer = raw_http(d.port, raw)
        statuses.append(int(answer.split(b" ", 2)[1]))
        assert b"Traceback" not in answer
    assert statuses == [401, 401, 401, 404, 401], statuses
    assert "Traceback" not in d.logs() and "internal_error" not in d.logs()


def test_receive_checks_timestamps_and_standard_webhooks(make_daemon: Any, sink: Sink) -> None:
    whsec = "whsec_" + base64.b64encode(b"k" * 24).decode()
    d = make_daemon(args=["--receive-tolerance", "30"])
    write_tenant(d.config, "hm", sink.url, secret_key="hm-secret")
    write_tenant(d.config, "sw", sink.url, secret_key=whsec, signature_schemes=["hmac-sha256", "standard-webhooks"])
    whsk = "whsk_" + base64.b64encode(b"e" * 32).decode()
    write_tenant(d.config, "ed", sink.url, signing_key=whsk, signature_schemes=["standard-webhooks-ed25519"])
    d.start()
    body = b'{"id":"evt_1","payload":{}}'
    now = int(time.time())

    def receive(tenant: str, **headers: str) -> int:
        h = {"X-Tenant-ID": tenant, "Content-Type": "application/json", **headers}
        return d.request("POST", "/api/v1/webhooks/receive", raw=body, headers=h)[0]

    good = sign(body, "hm-secret")
    assert receive("hm", **{"X-Webhook-Signature": good, "X-Timestamp": str(now)}) == 200
    assert receive("hm", **{"X-Webhook-Signature": good, "X-Timestamp": str(now - 10)}) == 200
    assert receive("hm", **{"X-Webhook-Signature": good}) == 200  # no timestamp to judge
    for stale in ("1", str(now - 60), str(now + 60), "soon", ""):
        assert receive("hm", **{"X-Webhook-Signature": good, "X-Timestamp": stale}) == 401, stale
    assert receive("hm", **{"X-Webhook-Signature": sign(body, "other"), "X-Timestamp": str(now)}) == 401

    def sw(msg_id: str, ts: int, signed_ts: int | None = None) -> dict[str, str]:
        sig = standard_webhooks_sign(msg_id, ts if signed_ts is None else signed_ts, body, whsec)
        return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}

    assert receive("sw", **sw("evt_1", now)) == 200
    assert receive("sw", **sw("evt_1", now - 60)) == 401  # signed, but stale
    assert receive("sw", **sw("evt_1", now, signed_ts=now - 60)) == 401  # timestamp rewritten
    assert receive("sw", **{**sw("evt_1", now), "webhook-id": "evt_2"}) == 401  # id rewritten
    # Both schemes present: both must hold, so a valid HMAC cannot carry a forged SW header.
    assert receive("sw", **{**sw("evt_1", now), "X-Webhook-Signature": sign(body, whsec)}) == 200
    bad_sw = {**sw("evt_1", now - 60), "X-Webhook-Signature": sign(body, whsec)}
    assert receive("sw", **bad_sw) == 401
    assert receive("hm", **sw("evt_1", now)) == 401  # not a whsec_ tenant

    def ed(msg_id: str, ts: int) -> dict[str, str]:
        sig = standard_webhooks_ed25519_sign(msg_id, ts, body, whsk)
        return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}

    assert receive("ed", **ed("evt_1", now)) == 200  # v1a (Ed25519) verified with the tenant's key
    assert receive("ed", **ed("evt_1", now - 60)) == 401
    assert receive("ed", **{**ed("evt_1", now), "webhook-id": "evt_2"}) == 401


# ---- 8. reserved headers; 9. strict JSON ------------------------------------------------------


def test_reserved_default_headers_and_strict_json(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    write_tenant(d.config, "acme", sink.url)
    d.start()
    for name in ("Content-Length", "Host", "Transfer-Encoding", "Connection", "X-Webhook-Signature", "webhook-id"):
        code, body = d.request(
            "POST",
            CONFIGURE,
            {"tenant_id": "h", "base_url": sink.url, "secret_key": "k", "default_headers": {name: "2"}},
        )
        assert code == 422 and f"default_headers.{name}" in body["error"]["message"], body

    send = b'{"tenant_id":"acme","event_type":"a","payload":%s}'
    cases = {
        send % b'{"name":"\xff\xfe"}': "not valid UTF-8",
        send % b'{"a":1,"a":2}': "duplicate key 'a'",
        b'{"tenant_id":"acme","tenant_id":"other","event_type":"a","payload":1}': "duplicate key 'tenant_id'",
        send % b'[{"deep":{"k":1,"k":1}}]': "duplicate key 'k'",
    }
    for raw, message in cases.items():
        code, body = d.request("POST", SEND, raw=raw)
        assert code == 400 and body["error"]["code"] == "bad_json" and message in body["error"]["message"], body
    batch = b'{"events":[' + send % b'{"x":1,"x":2}' + b"]}"
    code, body = d.request("POST", "/api/v1/webhooks/send-batch", raw=batch)
    assert code == 400 and "duplicate key 'x'" in body["error"]["message"]
    code, body = d.request(
        "POST", CONFIGURE, raw=b'{"tenant_id":"a","tenant_id":"b","base_url":"http://h/","secret_key":"k"}'
    )
    assert code == 400 and "duplicate key" in body["error"]["message"]
    assert sink.received == []


# ---- the pieces, in-process -------------------------------------------------------------------


def test_redact_urls_headers_and_echoes() -> None:
    from relay import redact

    assert redact.url("https://u:p@h.example:8443/a/b?api_key=k1&x=2&flag#frag") == (
        "https://u:***@h.example:8443/a/b?api_key=***&x=***&flag#***"
    )
    assert redact.url("https://tok@h/") == "https://***@h/"
    assert redact.url("http://h/plain") == "http://h/plain"
    assert (
        redact.text("400, message='x', url='http://h:1/x?token=t0k'")
        == "400, message='x', url='http://h:1/x?token=***'"
    )
    assert redact.text("Cannot connect to http://a:b@[::1/ now") == "Cannot connect to http://a:***@[::1/ now"
    shown = redact.headers({"Content-Type": "a", "X-Auth": "s", "Authentication": "s", "x-api-version": "v2"})
    assert shown == {"Content-Type": "a", "X-Auth": "***", "Authentication": "***", "x-api-version": "v2"}
    values = redact.secret_values(["sk_1234", "ab"], {"Authorization": "Bearer tok_5678", "Accept": "text/html"})
    assert values == ("Bearer tok_5678", "tok_5678", "sk_1234")  # too-short and harmless values left out
    assert redact.scrub("auth=Bearer tok_5678 alone=tok_5678 key=sk_1234 ab text/html", values) == (
        "auth=*** alone=*** key=*** ab text/html"
    )


def test_egress_unwraps_ipv4_embedded_in_ipv6() -> None:
    from relay.dispatch import EgressPolicy

    policy = EgressPolicy()
    for address in (
        "168.63.129.16",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
        "::a9fe:a9fe",
        "::169.254.169.254",
        "64:ff9b::100.100.100.200",
    ):
        assert policy.refusal(address) is not None, address
    assert policy.refusal("::1") is None and policy.refusal("::") is None  # IPv6's own, not 0.0.0.x
    assert policy.refusal("2001:db8::a9fe:a9fe") is None
    private = EgressPolicy(deny_private=True)
    assert private.refusal("64:ff9b::a00:1") is not None  # NAT64 of 10.0.0.1
    assert private.refusal("2002:7f00:1::") is not None  # 6to4 of 127.0.0.1
    import ipaddress

    allowed = EgressPolicy(allow=(ipaddress.ip_network("169.254.0.0/16"),))
    assert allowed.refusal("64:ff9b::a9fe:a9fe") is None


def test_secret_file_reader_refuses_special_and_large_files(tmp_path: Path) -> None:
    from relay.config import MAX_SECRET_FILE, _read_secret_bytes

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    start = time.monotonic()
    assert _read_secret_bytes(fifo) is None  # returns at once: no writer is waited for
    assert time.monotonic() - start < 1.0
    assert _read_secret_bytes(Path("/dev/zero")) is None
    assert _read_secret_bytes(tmp_path) is None
    exact = tmp_path / "exact"
    exact.write_bytes(b"s" * MAX_SECRET_FILE)
    assert _read_secret_bytes(exact) == b"s" * MAX_SECRET_FILE
    exact.write_bytes(b"s" * (MAX_SECRET_FILE + 1))
    assert _read_secret_bytes(exact) is None


def test_yaml_default_headers_and_allowed_hosts_are_checked(tmp_path: Path) -> None:
    from relay.config import ConfigError, load_path, parse_tenant

    base = {"tenant_id": "a", "base_url": "https://api.example.com/hooks", "secret_key": "k"}
    f = tmp_path / "a.yaml"
    f.write_text(yaml.safe_dump({**base, "default_headers": {"Transfer-Encoding": "chunked", "X-Ok": "1"}}))
    with pytest.raises(ConfigError) as info:
        load_path(tmp_path)
    assert info.value.problems == [
        f"{f}: default_headers.Transfer-Encoding: "
        "this header is set by hookrelay on every delivery and cannot be configured"
    ]
    f.write_text(yaml.safe_dump({**base, "allowed_target_hosts": ["https://x.example.com", "*.com", "ok.example.com"]}))
    with pytest.raises(ConfigError) as info:
        load_path(tmp_path)
    assert [p.split(": ")[1] for p in info.value.problems] == ["allowed_target_hosts[0]", "allowed_target_hosts[1]"]

    t = parse_tenant({**base, "allowed_target_hosts": ["*.partner.example", "hooks.other.example"]}, "x", {})
    allowed = [
        "https://api.example.com/other?q=1",
        "https://API.example.com:443/x",
        "http://a.partner.example:8080/x",
        "https://b.c.partner.example/",
        "https://hooks.other.example/x",
    ]
    refused = [
        "http://api.example.com/hooks",
        "https://api.example.com:8443/hooks",
        "https://partner.example/",
        "https://evilpartner.example/",
        "https://api.example.com.evil.example/",
        "https://other.example/",
    ]
    assert [u for u in allowed if not t.target_allowed(u)] == []
    assert [u for u in refused if t.target_allowed(u)] == []
