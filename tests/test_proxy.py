"""Per-tenant forward proxy (SPEC §13): CONNECT for https, credentials, `proxy: env` only when asked."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

import pytest

from relay.config import ConfigError, parse_tenant
from tests.certs import CA
from tests.proxy import Proxy
from tests.support import Daemon, Sink, write_tenant

PASSWORD = "pr0xy p@ss"
QUOTED = "pr0xy%20p%40ss"  # as it is written in the URL's userinfo


@pytest.fixture
def proxy() -> Any:
    p = Proxy("relay", PASSWORD).start()
    yield p
    p.stop()


@pytest.fixture
def env_proxy() -> Any:
    p = Proxy().start()  # no credentials: the one named by HTTPS_PROXY
    yield p
    p.stop()


@pytest.fixture
def https_sink(tmp_path: Path) -> Any:
    ca = CA()
    crt, key = ca.issue("sink", server_names=("127.0.0.1",)).write(tmp_path / "server", "server")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, key)
    (tmp_path / "ca.pem").write_bytes(ca.pem())
    s = Sink(ctx).start()
    yield s
    s.stop()


def test_deliveries_go_through_the_proxy(
    make_daemon: Any, proxy: Proxy, env_proxy: Proxy, sink: Sink, https_sink: Sink, tmp_path: Path
) -> None:
    conf = tmp_path / "config"
    with_creds = f"http://relay:{QUOTED}@127.0.0.1:{proxy.port}"
    tls = {"ca_file": str(tmp_path / "ca.pem")}
    write_tenant(conf, "tunnel", https_sink.url + "/t", tls=tls, proxy=with_creds)
    write_tenant(conf, "plain", sink.url + "/p", proxy=with_creds)
    wrong = f"http://relay:not-the-password@127.0.0.1:{proxy.port}"
    write_tenant(conf, "wrong", https_sink.url + "/w", tls=tls, proxy=wrong, retry_policy={"max_retries": 0})
    write_tenant(conf, "env", https_sink.url + "/e", tls=tls, proxy="env")
    write_tenant(conf, "direct", https_sink.url + "/d", tls=tls)  # no proxy key: never the env proxy
    env = {"HTTPS_PROXY": env_proxy.url, "HTTP_PROXY": env_proxy.url, "NO_PROXY": ""}
    d: Daemon = make_daemon(env=env).start()

    expected_auth = "Basic " + base64.b64encode(f"relay:{PASSWORD}".encode()).decode()
    for tenant, path in (("tunnel", "/t"), ("env", "/e"), ("direct", "/d")):
        eid = d.send(tenant)[1]["event_id"]
        d.wait_status(eid, "delivered")
        assert https_sink.wait_event(eid).path == path
    (connect,) = [c for c in proxy.seen() if c.method == "CONNECT"]
    assert connect.target == f"127.0.0.1:{https_sink.port}" and connect.proxy_authorization == expected_auth
    # proxy: env took HTTPS_PROXY; "direct" ignored it and went straight to the sink.
    (from_env,) = env_proxy.seen()
    assert from_env.method == "CONNECT" and from_env.target == connect.target

    eid = d.send("plain")[1]["event_id"]
    d.wait_status(eid, "delivered")
    (fwd,) = [c for c in proxy.seen() if c.method == "POST"]
    assert fwd.target == f"{sink.url}/p" and fwd.proxy_authorization == expected_auth

    eid = d.send("wrong")[1]["event_id"]
    view = d.wait_status(eid, "dead")
    assert "407" in view["attempts"][0]["error"]
    assert not https_sink.on("/w")
    assert [c.allowed for c in proxy.seen() if c.proxy_authorization != expected_auth] == [False]

    configs = {c["tenant_id"]: c for c in d.request("GET", "/api/v1/webhooks/configs")[1]["configs"]}
    assert configs["tunnel"]["proxy"] == f"http://relay:***@127.0.0.1:{proxy.port}"
    assert configs["env"]["proxy"] == "env" and configs["direct"]["proxy"] is None
    logs = d.logs()
    assert PASSWORD not in logs and QUOTED not in logs and "not-the-password" not in logs


@pytest.mark.parametrize(
    "value",
    ["socks5://127.0.0.1:1080", "https://p:3128", "http://p:3128/path", "http://", "http://p:99999", "ENV", ""],
)
def test_bad_proxy_is_a_config_error(value: str) -> None:
    data = {"tenant_id": "t", "base_url": "https://e.com/h", "secret_key": "s", "proxy": value}
    with pytest.raises(ConfigError) as err:
        parse_tenant(data, "t.yaml", {})
    assert err.value.problems == ["t.yaml: proxy: must be env or http://[user:password@]host:port"]
