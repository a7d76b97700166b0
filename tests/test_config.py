import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.config import (
    UNSET_HINT,
    AuthConfig,
    CircuitBreakerConfig,
    ConfigError,
    RetryPolicy,
    TenantConfig,
    load_path,
    parse_tenant,
    tenant_file_text,
)

REPO = Path(__file__).parent.parent
SECRET = "s3cr3t-VALUE-do-not-leak"
TOKEN = "tok-VALUE-do-not-leak"


def minimal(**extra: Any) -> dict[str, Any]:
    return {"tenant_id": "acme", "base_url": "https://example.com/hook", "secret_key": SECRET, **extra}


def problems_of(data: Any, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_tenant(data, "request body", env or {})
    return info.value.problems


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load_errors(path: Path, env: dict[str, str] | None = None, *, allow_unset_env: bool = False) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_path(path, env or {}, allow_unset_env=allow_unset_env)
    return info.value.problems


# --- defaults and every key -----------------------------------------------------------------


def test_defaults() -> None:
    t = parse_tenant(minimal(), "x", {})
    assert t.tenant_id == "acme"
    assert t.base_url == "https://example.com/hook"
    assert t.secret_key == SECRET
    assert t.default_headers == {}
    assert t.retry_policy == RetryPolicy(
        max_retries=5, initial_delay_seconds=1.0, backoff_multiplier=2.0, max_delay_seconds=300.0, jitter=True
    )
    assert t.timeout_seconds == 30.0
    assert t.enabled_events == ("*",)
    assert t.active is True
    assert t.auth_config is None
    assert t.signature_schemes == ("hmac-sha256",)
    assert t.max_in_flight == 64
    assert t.rate_limit_per_second is None
    assert t.circuit_breaker == CircuitBreakerConfig(failure_threshold=5, enabled=True)
    assert t.previous_secret_keys == ()
    assert t.signing_secrets() == (SECRET,)


def test_every_key() -> None:
    t = parse_tenant(
        minimal(
            default_headers={"X-API-Version": "v2"},
            retry_policy={
                "max_retries": 2,
                "initial_delay_seconds": 0.25,
                "backoff_multiplier": 3,
                "max_delay_seconds": 10,
                "jitter": False,
            },
            timeout_seconds=2.5,
            enabled_events=["user.*", "payment.completed"],
            active=False,
            auth_config={"auth_type": "ApiKey", "token": TOKEN, "header_name": "X-Key"},
            signature_schemes=["hmac-sha256", "standard-webhooks"],
            secret_key="whsec_" + base64.b64encode(b"k" * 24).decode(),
            max_in_flight=3,
            rate_limit_per_second=0.5,
            circuit_breaker={"failure_threshold": 2, "enabled": False},
            previous_secret_keys=["whsec_" + base64.b64encode(b"old").decode()],
        ),
        "x",
        {},
    )
    assert t.default_headers == {"X-API-Version": "v2"}
    assert t.retry_policy == RetryPolicy(2, 0.25, 3.0, 10.0, False)
    assert t.timeout_seconds == 2.5
    assert t.enabled_events == ("user.*", "payment.completed")
    assert t.active is False
    assert t.auth_config == AuthConfig("ApiKey", TOKEN, "X-Key")
    assert t.signature_schemes == ("hmac-sha256", "standard-webhooks")
    assert t.max_in_flight == 3
    assert t.rate_limit_per_second == 0.5
    assert t.circuit_breaker == CircuitBreakerConfig(2, False)
    assert len(t.signing_secrets()) == 2 and t.signing_secrets()[0] == t.secret_key


def test_partial_retry_policy_takes_defaults() -> None:
    t = parse_tenant(minimal(retry_policy={"max_retries": 1}), "x", {})
    assert t.retry_policy == RetryPolicy(max_retries=1)


def test_fractional_seconds_everywhere() -> None:
    t = parse_tenant(
        minimal(
            timeout_seconds=0.2,
            retry_policy={"initial_delay_seconds": 0.1, "max_delay_seconds": 0.3, "backoff_multiplier": 1.5},
            rate_limit_per_second=2.5,
        ),
        "x",
        {},
    )
    assert t.timeout_seconds == 0.2
    assert t.retry_policy.initial_delay_seconds == 0.1
    assert t.retry_policy.max_delay_seconds == 0.3
    assert t.retry_policy.base_delay(2) == pytest.approx(0.15)


# --- interpolation and secret files ---------------------------------------------------------


def test_env_interpolation_everywhere() -> None:
    env = {"SECRET": SECRET, "TOKEN": TOKEN, "HOST": "api.example.com", "VER": "v3"}
    t = parse_tenant(
        minimal(
            base_url="https://${HOST}/hooks",
            secret_key="${SECRET}",
            default_headers={"X-API-Version": "${VER}"},
            auth_config={"auth_type": "Bearer", "token": "${TOKEN}"},
            enabled_events=["a.${VER}"],
        ),
        "x",
        env,
    )
    assert t.base_url == "https://api.example.com/hooks"
    assert t.secret_key == SECRET
    assert t.default_headers == {"X-API-Version": "v3"}
    assert t.auth_config is not None and t.auth_config.token == TOKEN
    assert t.enabled_events == ("a.v3",)


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKRELAY_TEST_SECRET", SECRET)
    assert parse_tenant(minimal(secret_key="${HOOKRELAY_TEST_SECRET}"), "x").secret_key == SECRET


def test_escaped_dollar_brace_and_single_pass() -> None:
    t = parse_tenant(minimal(secret_key="a$${NOT_A_VAR}b${X}"), "x", {"X": "${Y}"})
    # $${ is a literal ${; a variable's own text is not expanded again.
    assert t.secret_key == "a${NOT_A_VAR}b${Y}"
    assert parse_tenant(minimal(secret_key="cost: $5"), "x", {}).secret_key == "cost: $5"


def test_unset_variable_names_file_key_and_var() -> None:
    assert problems_of(minimal(default_headers={"X-A": "${MISSING_VAR}"})) == [
        "request body: default_headers.X-A: environment variable MISSING_VAR is not set" + UNSET_HINT
    ]


def test_allow_unset_env_uses_placeholders_and_reports_notes(tmp_path: Path) -> None:
    f = write(
        tmp_path / "acme.yaml",
        "tenant_id: acme\nbase_url: ${ACME_URL}\nsecret_key: ${ACME_SECRET}\n"
        "signature_schemes: [hmac-sha256, standard-webhooks]\n"
        'auth_config: {auth_type: Basic, token: "${ACME_BASIC}"}\n',
    )
    with pytest.raises(ConfigError):  # the daemon's reading: unset is an error
        load_path(f, {})
    snap = load_path(f, {}, allow_unset_env=True)
    assert set(snap.tenants) == {"acme"}
    notes = "\n".join(snap.notes)
    for var, key in (("ACME_URL", "base_url"), ("ACME_SECRET", "secret_key"), ("ACME_BASIC", "auth_config.token")):
        assert f"{f}: {key}: environment variable {var} is not set (placeholder used)" in notes
    # checks of a placeholder (URL shape, whsec_ form, user:password) are notes, not problems
    assert f"{f}: base_url: not checked, it uses an unset variable" in notes
    assert f"{f}: secret_key: not checked, it uses an unset variable" in notes
    # a real problem next to a placeholder is still a problem
    write(tmp_path / "acme.yaml", "tenant_id: acme\nbase_url: ftp://x\nsecret_key: ${ACME_SECRET}\n")
    (p,) = load_errors(f, allow_unset_env=True)
    assert p == f"{f}: base_url: must be an http:// or https:// URL"


def test_auth_type_is_case_insensitive() -> None:
    for spelling in ("bearer", "BEARER", "Bearer"):
        t = parse_tenant(minimal(auth_config={"auth_type": spelling, "token": "t"}), "x", {})
        assert t.auth_config is not None and t.auth_config.header() == ("Authorization", "Bearer t")
    assert parse_tenant(minimal(auth_config={"auth_type": "apikey", "token": "t"}), "x", {}).auth_config == AuthConfig(
        "ApiKey", "t"
    )
    (p,) = problems_of(minimal(auth_config={"auth_type": "Digest", "token": "t"}))
    assert p.startswith("request body: auth_config.auth_type: invalid value (expected one of: Bearer, ApiKey, Basic")


def test_malformed_reference() -> None:
    (p,) = problems_of(minimal(secret_key="abc${oops"))
    assert p.startswith("request body: secret_key: malformed ${...} reference")


def test_secret_key_file(tmp_path: Path) -> None:
    write(tmp_path / "secrets" / "acme", SECRET + "\n")
    data = {k: v for k, v in minimal().items() if k != "secret_key"}
    t = parse_tenant({**data, "secret_key_file": str(tmp_path / "secrets" / "acme")}, "x", {})
    assert t.secret_key == SECRET
    # Relative to the YAML file's directory, with ${VAR} expanded in the path.
    write(tmp_path / "conf" / "acme.yaml", yaml.safe_dump({**data, "secret_key_file": "../secrets/${NAME}"}))
    snap = load_path(tmp_path / "conf", {"NAME": "acme"})
    assert snap.tenants["acme"].secret_key == SECRET


def test_secret_key_file_unreadable(tmp_path: Path) -> None:
    data = {k: v for k, v in minimal().items() if k != "secret_key"}
    f = write(tmp_path / "acme.yaml", yaml.safe_dump({**data, "secret_key_file": str(tmp_path / "nope")}))
    (p,) = load_errors(f)
    assert p.startswith(f"{f}: secret_key_file: cannot read {tmp_path / 'nope'}")


def test_secret_key_file_changes_digest(tmp_path: Path) -> None:
    secret = write(tmp_path / "secret", "one\n")
    data = {k: v for k, v in minimal().items() if k != "secret_key"}
    write(tmp_path / "conf" / "acme.yaml", yaml.safe_dump({**data, "secret_key_file": str(secret)}))
    first = load_path(tmp_path / "conf", {})
    secret.write_text("two\n")
    second = load_path(tmp_path / "conf", {})
    assert first.digest != second.digest
    assert second.tenants["acme"].secret_key == "two"


def test_secret_key_xor_secret_key_file() -> None:
    assert problems_of(minimal(secret_key_file="/x")) == [
        "request body: secret_key: give either secret_key or secret_key_file, not both"
    ]
    data = {k: v for k, v in minimal().items() if k != "secret_key"}
    assert problems_of(data) == ["request body: secret_key: required key missing (or give secret_key_file)"]


# --- patterns, auth, retry ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "event", "expected"),
    [
        (["*"], "anything.at.all", True),
        (["user.*"], "user.created", True),
        (["user.*"], "user.a.b", True),
        (["user.*"], "username.changed", False),
        (["user.*"], "user", False),
        (["payment.completed"], "payment.completed", True),
        (["payment.completed"], "payment.completed.x", False),
        (["payment.completed"], "payment.failed", False),
        (["user.*", "order.*", "x"], "order.shipped", True),
        (["user.*", "order.*", "x"], "x", True),
        (["user.*", "order.*", "x"], "y", False),
        ([], "user.created", False),
    ],
)
def test_patterns(patterns: list[str], event: str, expected: bool) -> None:
    assert parse_tenant(minimal(enabled_events=patterns), "x", {}).accepts(event) is expected


def test_auth_headers() -> None:
    assert AuthConfig("Bearer", "t").header() == ("Authorization", "Bearer t")
    assert AuthConfig("Bearer", "t", "X-Auth").header() == ("X-Auth", "Bearer t")
    assert AuthConfig("ApiKey", "t").header() == ("X-API-Key", "t")
    assert AuthConfig("ApiKey", "t", "X-Token").header() == ("X-Token", "t")
    expected = "Basic " + base64.b64encode(b"user:pa:ss").decode()
    assert AuthConfig("Basic", "user:pa:ss").header() == ("Authorization", expected)


def test_basic_token_needs_colon() -> None:
    assert problems_of(minimal(auth_config={"auth_type": "Basic", "token": "nocolon"})) == [
        "request body: auth_config.token: Basic auth needs a token of the form user:password"
    ]


def test_base_delay_and_schedule() -> None:
    rp = RetryPolicy(max_retries=5, initial_delay_seconds=1, backoff_multiplier=2, max_delay_seconds=5)
    assert [rp.base_delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert rp.schedule_seconds() == 17
    assert RetryPolicy().schedule_seconds() == sum(RetryPolicy().base_delay(n) for n in range(1, 6))
    assert RetryPolicy(max_retries=0).schedule_seconds() == 0
    flat = RetryPolicy(max_retries=4, initial_delay_seconds=0.5, backoff_multiplier=1)
    assert flat.schedule_seconds() == 2.0
    # No overflow or runaway loop for huge values.
    huge = RetryPolicy(max_retries=10**30, backoff_multiplier=10.0)
    assert huge.base_delay(10**9) == 300.0
    assert huge.schedule_seconds() > 10**30


def test_delay_jitter_bounds() -> None:
    rp = RetryPolicy(initial_delay_seconds=2, backoff_multiplier=2, max_delay_seconds=100)
    for n in range(1, 10):
        d = rp.base_delay(n)
        assert rp.delay(n, lambda: 0.0) == d / 2
        assert rp.delay(n, lambda: 0.999999) <= d
        for _ in range(50):
            assert d / 2 <= rp.delay(n) <= d
    no_jitter = RetryPolicy(jitter=False)
    assert no_jitter.delay(3, lambda: 0.0) == 4.0


# --- error messages -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"retry_policy": {"max_retries": "3"}}, "retry_policy.max_retries: expected int, got str"),
        ({"retry_policy": {"surprise": 1}}, "retry_policy.surprise: unknown key"),
        ({"surprise": 1}, "surprise: unknown key"),
        ({"enabled_events": ["a", 2]}, "enabled_events[1]: expected str, got int"),
        ({"enabled_events": "a"}, "enabled_events: expected list, got str"),
        ({"active": "yes"}, "active: expected bool, got str"),
        ({"active": 1}, "active: expected bool, got int"),
        ({"timeout_seconds": True}, "timeout_seconds: expected float, got bool"),
        ({"timeout_seconds": 0}, "timeout_seconds: must be > 0"),
        ({"timeout_seconds": float("inf")}, "timeout_seconds: must be a finite number"),
        ({"max_in_flight": 0}, "max_in_flight: must be >= 1"),
        ({"rate_limit_per_second": 0}, "rate_limit_per_second: must be > 0"),
        ({"rate_limit_per_second": "x"}, "rate_limit_per_second: expected float or null, got str"),
        ({"circuit_breaker": {"failure_threshold": 0}}, "circuit_breaker.failure_threshold: must be >= 1"),
        ({"retry_policy": {"max_retries": -1}}, "retry_policy.max_retries: must be >= 0"),
        ({"retry_policy": {"backoff_multiplier": 0.5}}, "retry_policy.backoff_multiplier: must be >= 1"),
        ({"retry_policy": {"initial_delay_seconds": -1}}, "retry_policy.initial_delay_seconds: must be >= 0"),
        ({"retry_policy": [1]}, "retry_policy: expected mapping, got list"),
        ({"default_headers": {"X-A": 1}}, "default_headers.X-A: expected str, got int"),
        ({"default_headers": {"X-A": "a\r\nInjected: 1"}}, "default_headers.X-A: header value must not"),
        ({"default_headers": {"Bad Name": "v"}}, "default_headers.Bad Name: invalid header name"),
        ({"auth_config": {"auth_type": "Magic", "token": "t"}}, "auth_config.auth_type: invalid value"),
        ({"auth_config": {"token": "t"}}, "auth_config.auth_type: required key missing"),
        (
            {"auth_config": {"auth_type": "Bearer", "token": "t", "header_name": "A B"}},
            "auth_config.header_name",
        ),
        ({"signature_schemes": ["rsa"]}, "signature_schemes[0]: invalid value (expected one of"),
        ({"signature_schemes": []}, "signature_schemes: must list at least one scheme"),
        ({"signature_schemes": ["standard-webhooks"]}, "secret_key: standard-webhooks needs a secret"),
        ({"tenant_id": "has space"}, "tenant_id: must be 1-64 characters"),
        ({"tenant_id": "x" * 65}, "tenant_id: must be 1-64 characters"),
        ({"tenant_id": ""}, "tenant_id: must be 1-64 characters"),
        ({"tenant_id": 7}, "tenant_id: expected str, got int"),
        ({"base_url": "ftp://example.com"}, "base_url: must be an http:// or https:// URL"),
        ({"base_url": "https://"}, "base_url: must name a host"),
        ({"base_url": "example.com/hook"}, "base_url: must be an http:// or https:// URL"),
        ({"base_url": "http://x:99999/"}, "base_url: is not a valid URL"),
        ({"base_url": "http://x/a b"}, "base_url: must be an http(s) URL without spaces"),
        ({"secret_key": ""}, "secret_key: must not be empty"),
        ({"secret_key": 12345}, "secret_key: expected str, got int"),
        ({"previous_secret_keys": [""]}, "previous_secret_keys[0]: must not be empty"),
    ],
)
def test_error_messages(extra: dict[str, Any], expected: str) -> None:
    problems = problems_of(minimal(**extra))
    assert len(problems) == 1, problems
    assert problems[0].startswith("request body: " + expected), problems


def test_missing_required_keys() -> None:
    assert problems_of({"secret_key": SECRET}) == [
        "request body: tenant_id: required key missing",
        "request body: base_url: required key missing",
    ]
    assert problems_of([1, 2]) == ["request body: expected a mapping (one tenant), got list"]


def test_all_problems_collected() -> None:
    problems = problems_of(
        minimal(tenant_id="bad id", base_url="ftp://x", active=1, retry_policy={"max_retries": "1"}, x=1)
    )
    assert len(problems) == 5


def test_standard_webhooks_secret_rules() -> None:
    ok = "whsec_" + base64.b64encode(b"0123456789abcdef").decode()
    parse_tenant(minimal(secret_key=ok, signature_schemes=["standard-webhooks"]), "x", {})
    for bad in ["whsec_", "whsec_!!!notbase64", SECRET]:
        (p,) = problems_of(minimal(secret_key=bad, signature_schemes=["standard-webhooks"]))
        assert "secret_key: standard-webhooks" in p
    (p,) = problems_of(minimal(secret_key=ok, signature_schemes=["standard-webhooks"], previous_secret_keys=["plain"]))
    assert p.startswith("request body: previous_secret_keys[0]: standard-webhooks")


def test_no_secret_in_any_error(tmp_path: Path) -> None:
    cases: list[dict[str, Any]] = [
        minimal(secret_key=SECRET, signature_schemes=["standard-webhooks"]),
        minimal(secret_key=SECRET + "${X"),
        minimal(secret_key=[SECRET]),
        minimal(secret_key={"v": SECRET}),
        minimal(auth_config={"auth_type": "Basic", "token": TOKEN}),
        minimal(auth_config={"auth_type": "Bearer", "token": TOKEN + "\n"}),
        minimal(auth_config={"auth_type": SECRET, "token": TOKEN}),
        minimal(auth_config={"auth_type": "Bearer", "token": [TOKEN]}),
        minimal(default_headers={"Authorization": TOKEN + "\r\n"}),
        minimal(previous_secret_keys=[SECRET, 5]),
        minimal(base_url=f"https://user:{SECRET}@/x"),
        minimal(base_url=f"ftp://h/?token={TOKEN}"),
        minimal(secret_key=SECRET, secret_key_file="/x"),
    ]
    for data in cases:
        text = "\n".join(problems_of(data))
        assert SECRET not in text and TOKEN not in text, text
    # Same through files, including YAML syntax errors around a secret.
    write(tmp_path / "a.yaml", f"tenant_id: a\nbase_url: ftp://x\nsecret_key: {SECRET}\nactive: 1\n")
    write(tmp_path / "b.yaml", f"tenant_id: b\nsecret_key: {SECRET}\n  bad: indent: [\n")
    text = "\n".join(load_errors(tmp_path))
    assert SECRET not in text, text


def test_masked() -> None:
    t = parse_tenant(
        minimal(
            base_url="https://user:pw@example.com/x",
            default_headers={
                "X-API-Version": "v2",
                "Proxy-Authorization": "x",
                "X-Api-Key": "x",
                "x-auth-token": "x",
                "Cookie": "x",
                "X-Client-Secret": "x",
            },
            # Credentials in the URL cannot go with an Authorization header: ApiKey uses its own.
            auth_config={"auth_type": "ApiKey", "token": TOKEN},
            previous_secret_keys=["old1", "old2"],
        ),
        "x",
        {},
    )
    m = t.masked()
    assert json.loads(json.dumps(m)) == m
    text = json.dumps(m)
    assert SECRET not in text and TOKEN not in text and "old1" not in text and ":pw@" not in text
    assert m["secret_key"] == "***"
    assert m["previous_secret_keys"] == ["***", "***"]
    assert m["auth_config"] == {"auth_type": "ApiKey", "token": "***", "header_name": None}
    assert m["default_headers"]["X-API-Version"] == "v2"
    assert all(v == "***" for k, v in m["default_headers"].items() if k != "X-API-Version")
    assert m["base_url"] == "https://user:***@example.com/x"
    assert m["retry_policy"]["max_retries"] == 5
    assert m["enabled_events"] == ["*"]
    assert set(m) == set(TenantConfig.__struct_fields__)


# --- files ----------------------------------------------------------------------------------


def test_multi_tenant_file_and_key_paths(tmp_path: Path) -> None:
    f = write(
        tmp_path / "many.yml",
        yaml.safe_dump(
            {
                "tenants": [
                    minimal(tenant_id="a"),
                    minimal(tenant_id="b", enabled_events=["x.*"]),
                    minimal(tenant_id="c", base_url="nope"),
                ]
            }
        ),
    )
    assert load_errors(tmp_path) == [f"{f}: tenants[2].base_url: must be an http:// or https:// URL"]
    write(f, yaml.safe_dump({"tenants": [minimal(tenant_id="a"), minimal(tenant_id="b")]}))
    snap = load_path(tmp_path, {})
    assert list(snap.tenants) == ["a", "b"]
    assert snap.sources == {"a": f, "b": f}


def test_tenants_file_rejects_other_keys(tmp_path: Path) -> None:
    f = write(tmp_path / "x.yaml", yaml.safe_dump({"tenants": [], "tenant_id": "a"}))
    (p,) = load_errors(f)
    assert p.startswith(f"{f}: tenant_id: unknown key")
    write(f, "tenants: 5\n")
    assert load_errors(f) == [f"{f}: tenants: expected list, got int"]


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", yaml.safe_dump(minimal()))
    b = write(tmp_path / "b.yaml", yaml.safe_dump({"tenants": [minimal(tenant_id="z"), minimal()]}))
    assert load_errors(tmp_path) == [f"{b}: tenants[1].tenant_id: duplicate tenant id 'acme' (also defined in {a})"]


def test_errors_from_all_files_collected(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", yaml.safe_dump(minimal(active="no")))
    b = write(tmp_path / "b.yaml", yaml.safe_dump(minimal(tenant_id="b", timeout_seconds=-1)))
    c = write(tmp_path / "c.yaml", "tenant_id: [unclosed\n")
    problems = load_errors(tmp_path)
    assert problems[0] == f"{a}: active: expected bool, got str"
    assert problems[1] == f"{b}: timeout_seconds: must be > 0"
    assert problems[2].startswith(f"{c}: line 2, column 1: YAML error:")
    assert len(problems) == 3


def test_yaml_error_names_line(tmp_path: Path) -> None:
    f = write(tmp_path / "x.yaml", "tenant_id: a\nbase_url: http://x\n  bad: [1\n")
    (p,) = load_errors(f)
    assert p.startswith(f"{f}: line 3,")
    assert "must be quoted" not in p


def test_yaml_error_for_var_in_flow_mapping_suggests_quoting(tmp_path: Path) -> None:
    f = write(tmp_path / "x.yaml", "tenant_id: a\nauth_config: {auth_type: Bearer, token: ${TOKEN}}\n")
    (p,) = load_errors(f)
    assert p.startswith(f"{f}: line 2,")
    assert p.endswith('(a ${VAR} inside {...} or [...] must be quoted, "${VAR}", or use block style)')
    write(tmp_path / "x.yaml", 'tenant_id: a\nauth_config: {auth_type: Bearer, token: "${TOKEN}"}\n')
    assert "YAML error" not in "\n".join(load_errors(f, env={"TOKEN": "t"}))


def test_yaml_duplicate_key_is_error(tmp_path: Path) -> None:
    f = write(tmp_path / "x.yaml", "tenant_id: a\ntenant_id: b\n")
    (p,) = load_errors(f)
    assert p.startswith(f"{f}: line 2,") and "duplicate key tenant_id" in p


def test_yaml_bool_must_be_real(tmp_path: Path) -> None:
    f = write(tmp_path / "x.yaml", yaml.safe_dump(minimal()) + "active: 'true'\n")
    assert load_errors(f) == [f"{f}: active: expected bool, got str"]


def test_empty_dir_and_empty_file(tmp_path: Path) -> None:
    snap = load_path(tmp_path, {})
    assert dict(snap.tenants) == {} and dict(snap.sources) == {}
    write(tmp_path / "empty.yaml", "")
    write(tmp_path / "comment.yaml", "# nothing yet\n")
    assert dict(load_path(tmp_path, {}).tenants) == {}


def test_missing_path() -> None:
    with pytest.raises(ConfigError) as info:
        load_path(Path("/nonexistent/hookrelay-config"))
    assert info.value.problems == ["/nonexistent/hookrelay-config: no such file or directory"]


def test_single_file_and_non_yaml_skipped(tmp_path: Path) -> None:
    f = write(tmp_path / "one.conf", yaml.safe_dump(minimal()))
    assert load_path(f, {}).sources == {"acme": f}
    write(tmp_path / "notes.txt", "garbage: [")
    write(tmp_path / "x.yaml.sample", "garbage: [")
    write(tmp_path / "sub" / "nested.yaml", "garbage: [")
    assert dict(load_path(tmp_path, {}).tenants) == {}


def test_digest(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", yaml.safe_dump(minimal()))
    d1 = load_path(tmp_path, {}).digest
    assert d1 == load_path(tmp_path, {}).digest and len(d1) == 64
    write(tmp_path / "a.yaml", yaml.safe_dump(minimal(active=False)))
    assert load_path(tmp_path, {}).digest != d1


def test_kubernetes_configmap_layout(tmp_path: Path) -> None:
    # What the kubelet builds: real files in a timestamped dir, ..data -> it, name -> ..data/name.
    cm = tmp_path / "cm"
    ts = cm / "..2024_01_01_00_00_00.000000001"
    write(ts / "acme.yaml", yaml.safe_dump(minimal()))
    write(ts / "other.yml", yaml.safe_dump(minimal(tenant_id="other")))
    os.symlink(ts.name, cm / "..data")
    os.symlink("..data/acme.yaml", cm / "acme.yaml")
    os.symlink("..data/other.yml", cm / "other.yml")
    write(cm / ".hidden.yaml", "garbage: [")
    snap = load_path(cm, {})
    assert sorted(snap.tenants) == ["acme", "other"]
    assert snap.sources["acme"] == cm / "acme.yaml"

    # Atomic swap: new timestamped dir, ..data re-pointed; visible names unchanged.
    ts2 = cm / "..2024_01_02_00_00_00.000000002"
    write(ts2 / "acme.yaml", yaml.safe_dump(minimal(active=False)))
    write(ts2 / "other.yml", yaml.safe_dump(minimal(tenant_id="other")))
    os.symlink(ts2.name, cm / "..data_tmp")
    os.replace(cm / "..data_tmp", cm / "..data")
    snap2 = load_path(cm, {})
    assert snap2.tenants["acme"].active is False
    assert snap2.digest != snap.digest


def test_dangling_symlink_is_error(tmp_path: Path) -> None:
    os.symlink("..data/gone.yaml", tmp_path / "gone.yaml")
    (p,) = load_errors(tmp_path)
    assert p.startswith(f"{tmp_path / 'gone.yaml'}: cannot read")


def test_tenant_file_text_round_trip(tmp_path: Path) -> None:
    data = minimal(
        secret_key="${SECRET}",
        default_headers={"X-A": "yes"},
        retry_policy={"max_retries": 2, "initial_delay_seconds": 0.5},
        enabled_events=["user.*"],
        active=False,
        auth_config={"auth_type": "Basic", "token": "u:p"},
    )
    text = tenant_file_text(data)
    assert text.startswith("# written by hookrelay POST /api/v1/webhooks/configure\n")
    write(tmp_path / "acme.yaml", text)
    loaded = load_path(tmp_path, {"SECRET": SECRET}).tenants["acme"]
    assert loaded == parse_tenant(data, "request body", {"SECRET": SECRET})
    assert loaded.default_headers == {"X-A": "yes"} and loaded.active is False


def test_sample_config_dir_loads() -> None:
    snap = load_path(REPO / "config", {})
    assert list(snap.tenants) == ["local-demo"]
    t = snap.tenants["local-demo"]
    assert t.base_url == "http://127.0.0.1:8787/api/v1/webhooks/receive"
    assert t.accepts("anything")
    assert t.retry_policy.max_retries == 3 and t.retry_policy.initial_delay_seconds == 0.5


def test_sample_remote_example_is_valid() -> None:
    data = yaml.safe_load((REPO / "config" / "example-remote.yaml.sample").read_text())
    env = {"EMPRESA_123_SECRET": SECRET, "EMPRESA_123_TOKEN": TOKEN}
    t = parse_tenant(data, "example", env)
    assert t.tenant_id == "empresa-123" and t.secret_key == SECRET
    assert t.auth_config is not None and t.auth_config.header() == ("Authorization", f"Bearer {TOKEN}")
    assert set(data) | {"secret_key_file"} >= set(TenantConfig.__struct_fields__)
    with pytest.raises(ConfigError) as info:
        parse_tenant(data, "example", {})
    assert info.value.problems == [
        "example: secret_key: environment variable EMPRESA_123_SECRET is not set" + UNSET_HINT,
        "example: auth_config.token: environment variable EMPRESA_123_TOKEN is not set" + UNSET_HINT,
    ]


def test_config_error_str() -> None:
    e = ConfigError(["a: b: c", "d: e: f"])
    assert str(e) == "a: b: c\nd: e: f"
    assert e.problems == ["a: b: c", "d: e: f"]
