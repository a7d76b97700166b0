"""relay.signing: the `sha256=<hex>` scheme, rotation, and the Standard Webhooks helper."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.signing import SignatureError, sign, standard_webhooks_key, standard_webhooks_sign, verify_signature

BODY = b'{"id":"evt_1","event_type":"user.created","payload":{"n":1}}'


def independent(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def test_round_trip() -> None:
    sig = sign(BODY, "s3cret")
    assert sig.startswith("sha256=")
    assert len(sig) == len("sha256=") + 64
    assert verify_signature(BODY, sig, "s3cret")


def test_agrees_with_hmac_hashlib() -> None:
    assert sign(BODY, "s3cret") == independent(BODY, "s3cret")
    # A known vector, computed once with `printf %s "$BODY" | openssl dgst -sha256 -hmac key`.
    expected = hmac.new(b"key", b"The quick brown fox jumps over the lazy dog", hashlib.sha256).hexdigest()
    assert expected == "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    assert sign(b"The quick brown fox jumps over the lazy dog", "key") == f"sha256={expected}"


def test_whsec_secret_uses_whole_string_as_key() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    assert sign(BODY, secret) == independent(BODY, secret)


def test_str_and_bytes_bodies() -> None:
    text = '{"name":"José","emoji":"🚀"}'
    assert sign(text, "k") == sign(text.encode("utf-8"), "k")
    assert verify_signature(text, sign(text.encode(), "k"), "k")
    assert verify_signature(text.encode(), sign(text, "k"), "k")


def test_wrong_secret_and_tampered_body() -> None:
    sig = sign(BODY, "right")
    assert not verify_signature(BODY, sig, "wrong")
    assert not verify_signature(BODY + b" ", sig, "right")
    assert not verify_signature(BODY.replace(b"1", b"2"), sig, "right")


@pytest.mark.parametrize("bad", ["", "sha256=", "sha256=deadbeef", "md5=abc", "garbage", ",,, ,", "SHA256=x"])
def test_malformed_signatures_are_false(bad: str) -> None:
    assert not verify_signature(BODY, bad, "k")


def test_case_of_hex_matters_not_silently_accepted_upper() -> None:
    # Senders emit lowercase hex; an uppercased signature is not what hookrelay sends.
    sig = sign(BODY, "k")
    assert not verify_signature(BODY, sig.upper(), "k")


@pytest.mark.parametrize("sep", [",", ", ", " ", "  ,\t"])
def test_rotation_several_signatures(sep: str) -> None:
    header = sep.join([sign(BODY, "new"), sign(BODY, "old")])
    assert verify_signature(BODY, header, "new")
    assert verify_signature(BODY, header, "old")
    assert not verify_signature(BODY, header, "other")


def test_rotation_match_in_any_position() -> None:
    sigs = [sign(BODY, f"k{i}") for i in range(5)]
    for i in range(5):
        assert verify_signature(BODY, ",".join(sigs), f"k{i}")
    assert verify_signature(BODY, f"  {sigs[2]}  ", "k2")


def test_standard_webhooks_sign_matches_definition() -> None:
    raw = bytes(range(24))
    secret = "whsec_" + base64.b64encode(raw).decode()
    assert standard_webhooks_key(secret) == raw
    mac = hmac.new(raw, b"msg_1.1700000000." + BODY, hashlib.sha256).digest()
    assert standard_webhooks_sign("msg_1", 1700000000, BODY, secret) == "v1," + base64.b64encode(mac).decode()


@pytest.mark.parametrize("secret", ["plain-secret", "whsec_***not base64***"])
def test_standard_webhooks_needs_whsec_base64(secret: str) -> None:
    with pytest.raises(SignatureError):
        standard_webhooks_sign("msg_1", 1, BODY, secret)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=2048), secret=st.text(min_size=1, max_size=64), other=st.text(max_size=64))
def test_property_round_trip_and_agreement(body: bytes, secret: str, other: str) -> None:
    sig = sign(body, secret)
    assert sig == independent(body, secret)
    assert verify_signature(body, sig, secret)
    if not _same_hmac_key(other.encode(), secret.encode()):
        assert not verify_signature(body, sig, other)


def _same_hmac_key(a: bytes, b: bytes) -> bool:
    """HMAC pads keys with zero bytes to the block size (and hashes longer ones first), so
    "" and "\\x00" are the same key: such a pair signs alike by definition (RFC 2104)."""

    def block(k: bytes) -> bytes:
        return (hashlib.sha256(k).digest() if len(k) > 64 else k).ljust(64, b"\0")

    return block(a) == block(b)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(min_size=1, max_size=512), flip=st.integers(min_value=0))
def test_property_any_changed_byte_fails(body: bytes, flip: int) -> None:
    sig = sign(body, "k")
    i = flip % len(body)
    changed = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]
    assert not verify_signature(changed, sig, "k")
