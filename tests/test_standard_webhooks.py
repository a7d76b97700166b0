"""`signature_schemes: [hmac-sha256, standard-webhooks]` and key rotation, on real deliveries."""

from __future__ import annotations

import base64
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from relay.client import RelayClient
from relay.signing import sign, verify_signature
from tests.support import Daemon, Sink, write_tenant


def whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def test_standard_webhooks_library_verifies_real_delivery(make_daemon: Any, sink: Sink, tmp_path: Path) -> None:
    secret, other = whsec(), whsec()
    write_tenant(
        tmp_path / "config",
        "sw",
        sink.url + "/sw",
        secret_key=secret,
        signature_schemes=["hmac-sha256", "standard-webhooks"],
    )
    write_tenant(tmp_path / "config", "plain", sink.url + "/plain", secret_key=whsec())
    d: Daemon = make_daemon().start()
    c = RelayClient(d.url)
    eid = c.send("sw", "user.created", {"user_id": 1, "name": "José"}, event_id="msg_sw_1")
    got = sink.wait_event(eid)
    h = lower(got.headers)

    assert h["webhook-id"] == eid
    ts = int(h["webhook-timestamp"])
    assert abs(ts - time.time()) < 60
    assert h["webhook-signature"].startswith("v1,")

    # The reference library accepts it (it lower-cases header names itself; pass them as received too).
    payload = Webhook(secret).verify(got.body, got.headers)
    assert payload["id"] == eid
    assert payload["payload"] == {"user_id": 1, "name": "José"}
    assert Webhook(secret).verify(got.body.decode(), h)["tenant_id"] == "sw"
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(got.body, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(got.body + b" ", got.headers)

    # X-Webhook-Signature still uses the whole `whsec_...` string as the HMAC key.
    assert got.headers["X-Webhook-Signature"] == sign(got.body, secret)
    assert verify_signature(got.body, got.headers["X-Webhook-Signature"], secret)

    # Without the scheme: no webhook-* headers.
    eid2 = c.send("plain", "user.created", {})
    plain = lower(sink.wait_event(eid2).headers)
    assert "webhook-signature" not in plain
    assert "webhook-id" not in plain


def test_rotation_either_key_verifies(make_daemon: Any, sink: Sink, tmp_path: Path) -> None:
    old, new = "old-secret-" + secrets.token_hex(8), "new-secret-" + secrets.token_hex(8)
    write_tenant(tmp_path / "config", "rot", sink.url + "/rot", secret_key=new, previous_secret_keys=[old])
    d: Daemon = make_daemon().start()
    eid = RelayClient(d.url).send("rot", "user.created", {"n": 1})
    got = sink.wait_event(eid)
    header = got.headers["X-Webhook-Signature"]
    parts = [p.strip() for p in header.split(",")]
    assert sorted(parts) == sorted([sign(got.body, new), sign(got.body, old)])
    assert parts[0] == sign(got.body, new)  # the current key first
    assert verify_signature(got.body, header, new)  # a receiver already on the new key
    assert verify_signature(got.body, header, old)  # a receiver still on the old key
    assert not verify_signature(got.body, header, "neither")
    # the daemon's own /receive accepts either key, too
    for key in (new, old):
        status, answer = d.request(
            "POST",
            "/api/v1/webhooks/receive",
            raw=got.body,
            headers={"X-Tenant-ID": "rot", "X-Webhook-Signature": sign(got.body, key)},
        )
        assert (status, answer) == (200, {"valid": True})


def test_rotation_with_standard_webhooks(make_daemon: Any, sink: Sink, tmp_path: Path) -> None:
    old, new = whsec(), whsec()
    write_tenant(
        tmp_path / "config",
        "rotsw",
        sink.url + "/rotsw",
        secret_key=new,
        previous_secret_keys=[old],
        signature_schemes=["hmac-sha256", "standard-webhooks"],
    )
    d: Daemon = make_daemon().start()
    eid = RelayClient(d.url).send("rotsw", "user.created", {"n": 2})
    got = sink.wait_event(eid)
    assert len(lower(got.headers)["webhook-signature"].split(" ")) == 2
    for key in (new, old):
        assert Webhook(key).verify(got.body, got.headers)["id"] == eid
        assert verify_signature(got.body, got.headers["X-Webhook-Signature"], key)
    with pytest.raises(WebhookVerificationError):
        Webhook(whsec()).verify(got.body, got.headers)
