"""Standard Webhooks Ed25519 (`v1a`) signatures (SPEC §13): config, delivery, public key, CLI, receiver."""

from __future__ import annotations

import base64
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from standardwebhooks.webhooks import Webhook

from relay.config import ConfigError, load_path, parse_tenant
from relay.signing import (
    ed25519_public_key,
    standard_webhooks_ed25519_sign,
    verify_standard_webhooks_ed25519,
)
from tests.standard_webhooks_ref import verify_v1a
from tests.support import REPO, Daemon, Sink, free_port, write_tenant
from tests.test_examples import get_json, process


def new_key() -> tuple[str, Ed25519PrivateKey]:
    seed = secrets.token_bytes(32)
    return "whsk_" + base64.b64encode(seed).decode(), Ed25519PrivateKey.from_private_bytes(seed)


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def cli(*args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args], input=stdin, capture_output=True, timeout=20, cwd=str(REPO)
    )


def test_sign_and_public_key_agree_with_cryptography() -> None:
    text, key = new_key()
    assert ed25519_public_key(text) == "whpk_" + base64.b64encode(raw_public(key)).decode()
    sig = standard_webhooks_ed25519_sign("msg_1", 1700000000, b'{"a":1}', text)
    version, _, value = sig.partition(",")
    assert version == "v1a"
    key.public_key().verify(base64.b64decode(value), b'msg_1.1700000000.{"a":1}')  # raises if wrong
    pub = ed25519_public_key(text)
    assert verify_standard_webhooks_ed25519("msg_1", 1700000000, b'{"a":1}', f"v1,abc {sig}", pub)
    assert not verify_standard_webhooks_ed25519("msg_1", 1700000001, b'{"a":1}', sig, pub)
    assert not verify_standard_webhooks_ed25519("msg_2", 1700000000, b'{"a":1}', sig, pub)
    assert not verify_standard_webhooks_ed25519("msg_1", 1700000000, b'{"a":2}', sig, pub)
    assert not verify_standard_webhooks_ed25519("msg_1", 1700000000, b'{"a":1}', sig.replace("v1a", "v1"), pub)
    # The 64-byte seed+public form is accepted when its halves belong together.
    full = "whsk_" + base64.b64encode(base64.b64decode(text[5:]) + raw_public(key)).decode()
    assert ed25519_public_key(full) == pub


def _problems(**extra: Any) -> list[str]:
    data = {"tenant_id": "t", "base_url": "https://example.com/h", "secret_key": "s", **extra}
    with pytest.raises(ConfigError) as err:
        parse_tenant(data, "t.yaml", {})
    return err.value.problems


def test_config_errors_name_the_key_and_never_the_key_material() -> None:
    text, _ = new_key()
    assert _problems(signature_schemes=["standard-webhooks-ed25519"]) == [
        "t.yaml: signing_key: standard-webhooks-ed25519 needs signing_key (or signing_key_file)"
    ]
    (p,) = _problems(signing_key="whsec_" + text[5:])
    assert p.startswith("t.yaml: signing_key: ") and "whsk_" in p and text[5:] not in p
    (p,) = _problems(signing_key="whsk_" + base64.b64encode(b"short").decode())
    assert p.startswith("t.yaml: signing_key: ") and "32-byte seed" in p
    (p,) = _problems(signing_key="whsk_not base64!")
    assert p == "t.yaml: signing_key: the part after whsk_ is not valid base64"
    _, other = new_key()
    mismatched = "whsk_" + base64.b64encode(base64.b64decode(text[5:]) + raw_public(other)).decode()
    (p,) = _problems(signing_key=mismatched)
    assert "does not match" in p
    (p,) = _problems(signature_schemes=["ed25519"])
    assert "standard-webhooks-ed25519" in p  # the choices are listed
    (p,) = _problems(signing_key=text, signing_key_file="/nonexistent")
    assert p == "t.yaml: signing_key: give either signing_key or signing_key_file, not both"


def test_signing_key_file_is_read_masked_and_in_the_digest(tmp_path: Path) -> None:
    text, _ = new_key()
    (tmp_path / "key").write_text(text + "\n")
    conf = tmp_path / "conf"
    write_tenant(conf, "ed", "https://example.com/h", signing_key_file="../key")
    snap = load_path(conf, {})
    cfg = snap.tenants["ed"]
    assert cfg.signing_key == text
    assert cfg.masked()["signing_key"] == "***"
    (tmp_path / "key").write_text(new_key()[0])
    assert load_path(conf, {}).digest != snap.digest  # a rotated key file is noticed by the rescan
    write_tenant(conf, "ed", "https://example.com/h", signing_key_file="../missing")
    with pytest.raises(ConfigError) as err:
        load_path(conf, {})
    (p,) = err.value.problems
    assert p.startswith(f"{conf / 'ed.yaml'}: signing_key_file: cannot read ")


def test_delivery_signed_v1a_verifies_everywhere(make_daemon: Any, sink: Sink, tmp_path: Path) -> None:
    text, key = new_key()
    whsec = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    conf = tmp_path / "config"
    schemes = ["hmac-sha256", "standard-webhooks", "standard-webhooks-ed25519"]
    write_tenant(conf, "both", sink.url + "/both", secret_key=whsec, signature_schemes=schemes, signing_key=text)
    write_tenant(
        conf, "ed", sink.url + "/ed", signature_schemes=["hmac-sha256", "standard-webhooks-ed25519"], signing_key=text
    )
    write_tenant(conf, "plain", sink.url + "/plain")
    port = free_port()
    receiver = [sys.executable, str(REPO / "examples" / "receiver_ed25519.py"), "--port", str(port)]
    write_tenant(
        conf,
        "rcv",
        f"http://127.0.0.1:{port}/hook",
        signature_schemes=["standard-webhooks-ed25519"],
        signing_key=text,
        retry_policy={"max_retries": 0},
    )
    _, forger_key = new_key()
    forger = new_key()[0]
    write_tenant(
        conf,
        "forger",
        f"http://127.0.0.1:{port}/hook",
        signature_schemes=["standard-webhooks-ed25519"],
        signing_key=forger,
        retry_policy={"max_retries": 0},
    )
    d: Daemon = make_daemon().start()

    code, body = d.request("GET", "/api/v1/webhooks/configs/both/public-key")
    assert code == 200
    public = body["public_key"]
    assert public == "whpk_" + base64.b64encode(raw_public(key)).decode()
    assert d.request("GET", "/api/v1/webhooks/configs/plain/public-key")[1]["error"]["code"] == "no_signing_key"
    assert d.request("GET", "/api/v1/webhooks/configs/nobody/public-key")[0] == 404
    configs = {c["tenant_id"]: c for c in d.request("GET", "/api/v1/webhooks/configs")[1]["configs"]}
    assert configs["both"]["signing_key"] == "***" and configs["plain"]["signing_key"] is None
    assert text not in d.logs()

    _, sent = d.send("both", payload={"name": "José"})
    got = sink.wait_event(sent["event_id"])
    h = {k.lower(): v for k, v in got.headers.items()}
    v1, v1a = h["webhook-signature"].split(" ")
    assert v1.startswith("v1,") and v1a.startswith("v1a,")
    signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + got.body
    Ed25519PublicKey.from_public_bytes(raw_public(key)).verify(base64.b64decode(v1a[4:]), signed)
    assert verify_v1a(got.body, got.headers, public)  # the independent implementation agrees
    assert not verify_v1a(got.body + b" ", got.headers, public)
    assert not verify_v1a(got.body, got.headers, "whpk_" + base64.b64encode(raw_public(forger_key)).decode())
    assert not verify_v1a(got.body, got.headers, public, now=time.time() + 600)
    assert Webhook(whsec).verify(got.body, got.headers)["id"] == sent["event_id"]  # v1 still verifies

    _, sent = d.send("ed")
    got = sink.wait_event(sent["event_id"])
    assert got.headers["webhook-signature"].startswith("v1a,") and " " not in got.headers["webhook-signature"]
    assert verify_v1a(got.body, got.headers, public)

    # hookrelay verify --public-key: exit 0 valid, 1 invalid, 2 a key that is not one.
    args = ["verify", "--public-key", public, "--signature", got.headers["webhook-signature"]]
    ids = ["--id", got.headers["webhook-id"], "--timestamp", got.headers["webhook-timestamp"]]
    assert cli(*args, *ids, stdin=got.body).returncode == 0
    assert cli(*args, *ids, stdin=got.body + b"x").returncode == 1
    assert cli(*args, "--id", "other", "--timestamp", got.headers["webhook-timestamp"], stdin=got.body).returncode == 1
    assert cli(*args, stdin=got.body).returncode == 2  # --id and --timestamp are needed
    assert cli("verify", "--public-key", "whpk_x", "--signature", "v1a,x", *ids, stdin=b"").returncode == 2

    # The example receiver, holding only the public key, accepts the tenant and refuses the forger.
    with process([*receiver, "--public-key", public], tmp_path / "rcv.log", f"http://127.0.0.1:{port}/stats"):
        good = d.send("rcv")[1]["event_id"]
        bad = d.send("forger")[1]["event_id"]
        d.wait_status(good, "delivered")
        d.wait_status(bad, "dead")  # 401 from the receiver, no retries configured
        stats = get_json(f"http://127.0.0.1:{port}/stats")
        assert (stats["accepted"], stats["rejected"]) == (1, 1)
        assert stats["events"][0]["id"] == good
        # A stale timestamp is refused even with a valid signature.
        ts = int(time.time()) - 3600
        body = b'{"id":"old"}'
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/hook",
            data=body,
            method="POST",
            headers={
                "webhook-id": "old",
                "webhook-timestamp": str(ts),
                "webhook-signature": standard_webhooks_ed25519_sign("old", ts, body, text),
            },
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 401
