"""Per-tenant TLS (SPEC §13): private CA, mutual TLS, server_name, rotation, insecure_skip_verify."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from relay.config import ConfigError, load_path, warnings
from relay.tls import context_of
from tests.certs import CA
from tests.support import REPO, Daemon, Sink, write_tenant

FAIL_FAST = {"max_retries": 0}


class MtlsSink(Sink):
    """An HTTPS sink that demands a client certificate from `ca` and notes whose it was."""

    def __init__(self, ca: CA, server_dir: Path) -> None:
        crt, key = ca.issue("sink", server_names=("sink.test",)).write(server_dir, "server")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(crt, key)
        ctx.load_verify_locations(cadata=ca.pem().decode())
        ctx.verify_mode = ssl.CERT_REQUIRED
        super().__init__(ctx)
        self.peers: dict[str, str] = {}  # X-Event-ID -> client certificate's common name

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        cert = request.transport.get_extra_info("peercert")
        subject = dict(pair[0] for pair in cert["subject"])
        self.peers[request.headers.get("X-Event-ID", "")] = subject["commonName"]
        return await super()._handle(request)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    ca = CA()
    secrets = tmp_path / "secrets"  # outside the config dir, like a mounted Secret
    secrets.mkdir()
    (secrets / "ca.pem").write_bytes(ca.pem())
    ca.issue("client-1", client=True).write(secrets, "client")
    return {"ca": ca, "dir": secrets}


def tls_block(secrets: Path, **extra: Any) -> dict[str, Any]:
    return {
        "ca_file": str(secrets / "ca.pem"),
        "client_cert_file": str(secrets / "client.crt"),
        "client_key_file": str(secrets / "client.key"),
        **extra,
    }


def test_mutual_tls_delivery_refusal_and_rotation(make_daemon: Any, tmp_path: Path, pki: dict[str, Any]) -> None:
    secrets: Path = pki["dir"]
    sink = MtlsSink(pki["ca"], tmp_path / "server").start()
    try:
        conf = tmp_path / "config"
        write_tenant(conf, "mtls", sink.url + "/m", tls=tls_block(secrets, server_name="sink.test"))
        only_ca = {"ca_file": str(secrets / "ca.pem"), "server_name": "sink.test"}
        write_tenant(conf, "nocert", sink.url + "/n", tls=only_ca, retry_policy=FAIL_FAST)
        # Without server_name the certificate (issued to sink.test) does not match 127.0.0.1.
        write_tenant(conf, "noname", sink.url + "/x", tls=tls_block(secrets), retry_policy=FAIL_FAST)
        # No tls block: the system's trust store, which does not know the test CA.
        write_tenant(conf, "system", sink.url + "/s", retry_policy=FAIL_FAST)
        d: Daemon = make_daemon(args=["--config-rescan-interval", "0.3"]).start()

        first = d.send("mtls")[1]["event_id"]
        d.wait_status(first, "delivered")
        assert sink.peers[first] == "client-1"
        refused = {t: d.send(t)[1]["event_id"] for t in ("nocert", "noname", "system")}
        for eid in refused.values():
            d.wait_status(eid, "dead")
        assert {r.path for r in sink.received} == {"/m"}  # nothing else got through
        assert "certificate" in d.event(refused["noname"])["attempts"][0]["error"].lower()
        assert "certificate" in d.event(refused["system"])["attempts"][0]["error"].lower()

        # Rotation: the mounted files change, no signal, no restart: the rescan picks them up.
        seen = len(d.logs())
        pki["ca"].issue("client-2", client=True).write(secrets, "client")
        deadline = time.time() + 10
        while "Config reloaded (periodic rescan)" not in d.logs()[seen:]:
            assert time.time() < deadline, d.logs()
            time.sleep(0.05)
        second = d.send("mtls")[1]["event_id"]
        d.wait_status(second, "delivered")
        assert sink.peers[second] == "client-2"
    finally:
        sink.stop()


def _load_errors(conf: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_path(conf, {})
    return err.value.problems


def test_context_is_reused_until_the_files_change(tmp_path: Path, pki: dict[str, Any]) -> None:
    secrets: Path = pki["dir"]
    conf = tmp_path / "config"
    write_tenant(conf, "a", "https://example.com/h", tls=tls_block(secrets))
    write_tenant(conf, "b", "https://example.com/h", tls={"ca_file": "../secrets/ca.pem", "ca_only": True})
    one, two = load_path(conf, {}), load_path(conf, {})
    ctx = context_of(one.tenants["a"])
    assert ctx is not None and context_of(two.tenants["a"]) is ctx  # same pool of connections
    assert one.digest == two.digest
    only = context_of(one.tenants["b"])  # a relative path is relative to the YAML file
    assert only is not None and only.verify_mode == ssl.CERT_REQUIRED and only.check_hostname
    assert len(only.get_ca_certs()) == 1  # the test CA and nothing from the system store
    pki["ca"].issue("client-2", client=True).write(secrets, "client")
    three = load_path(conf, {})
    assert three.digest != one.digest and context_of(three.tenants["a"]) is not ctx


def test_tls_errors_name_the_key(tmp_path: Path, pki: dict[str, Any]) -> None:
    secrets: Path = pki["dir"]
    conf = tmp_path / "config"
    f = conf / "t.yaml"
    other = pki["ca"].issue("other", client=True)
    other.write(secrets, "other")
    (secrets / "junk.pem").write_text("not a certificate\n")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"ca_file": str(secrets / "missing.pem")}, f"tls.ca_file: cannot read {secrets / 'missing.pem'}: "),
        ({"ca_file": str(secrets / "junk.pem")}, "tls.ca_file: holds no PEM certificate that can be loaded"),
        ({"ca_only": True}, "tls.ca_only: needs ca_file"),
        ({"client_key_file": str(secrets / "client.key")}, "tls.client_key_file: needs client_cert_file"),
        (
            tls_block(secrets, client_key_file=str(secrets / "other.key")),
            "tls.client_key_file: does not match client_cert_file",
        ),
        ({"client_cert_file": str(secrets / "client.crt")}, "tls.client_cert_file: holds no usable certificate"),
        ({"server_name": "bad name"}, "tls.server_name: must be a host name"),
        ({"verify": False}, "tls.verify: unknown key"),
        ({"ca_only": "yes"}, "tls.ca_only: expected bool, got str"),
    ]
    for block, expected in cases:
        write_tenant(conf, "t", "https://example.com/h", tls=block)
        (problem,) = _load_errors(conf)
        assert problem.startswith(f"{f}: {expected}"), (block, problem)
    assert "PRIVATE KEY" not in "".join(p for b, _ in cases for p in _try(conf, b))


def _try(conf: Path, block: dict[str, Any]) -> list[str]:
    write_tenant(conf, "t", "https://example.com/h", tls=block)
    try:
        load_path(conf, {})
    except ConfigError as exc:
        return exc.problems
    return []


def test_insecure_skip_verify_warns_and_strict_refuses(tmp_path: Path) -> None:
    conf = tmp_path / "config"
    write_tenant(conf, "lax", "https://example.com/h", tls={"insecure_skip_verify": True})
    write_tenant(conf, "fine", "https://example.com/h")
    snap = load_path(conf, {})
    ctx = context_of(snap.tenants["lax"])
    assert ctx is not None and ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    (line,) = warnings(snap)
    assert line.startswith(f"{conf / 'lax.yaml'}: tls.insecure_skip_verify: ")

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "relay", "check-config", *args, str(conf)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=str(REPO))

    lax = check()
    assert lax.returncode == 0 and "tls.insecure_skip_verify" in lax.stderr and "(warning)" in lax.stderr
    strict = check("--strict")
    assert strict.returncode == 1 and "refused by --strict" in strict.stderr and "INVALID" in strict.stderr
    (conf / "lax.yaml").write_text(yaml.safe_dump({"tenant_id": "lax", "base_url": "https://e.com", "secret_key": "s"}))
    assert check("--strict").returncode == 0


def test_insecure_skip_verify_is_logged_at_every_load(make_daemon: Any, tmp_path: Path) -> None:
    d: Daemon = make_daemon()
    write_tenant(d.config, "lax", "https://127.0.0.1:9/h", tls={"insecure_skip_verify": True})
    d.start()
    assert d.logs().count("tls.insecure_skip_verify") == 1
    write_tenant(d.config, "other", "https://127.0.0.1:9/o")
    d.signal(1)  # SIGHUP: reload
    deadline = time.time() + 10
    while d.logs().count("tls.insecure_skip_verify") < 2:
        assert time.time() < deadline, d.logs()
        time.sleep(0.05)
