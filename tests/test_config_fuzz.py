"""Whatever the input, the config loader answers with a TenantConfig/Snapshot or a ConfigError."""

import contextlib
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.config import ConfigError, TenantConfig, load_path, parse_tenant

KEYS = [
    "tenant_id",
    "base_url",
    "secret_key",
    "secret_key_file",
    "default_headers",
    "retry_policy",
    "timeout_seconds",
    "enabled_events",
    "active",
    "auth_config",
    "signature_schemes",
    "max_in_flight",
    "rate_limit_per_second",
    "circuit_breaker",
    "previous_secret_keys",
    "max_retries",
    "initial_delay_seconds",
    "backoff_multiplier",
    "max_delay_seconds",
    "jitter",
    "auth_type",
    "token",
    "header_name",
    "failure_threshold",
    "enabled",
    "tenants",
]

texts = st.one_of(
    st.sampled_from(
        [
            "acme",
            "https://example.com/x",
            "http://[::1",
            "whsec_",
            "whsec_AAAA",
            "${HOME}",
            "${UNSET_VAR}",
            "$${x}",
            "${",
            "user.*",
            "*",
            "Bearer",
            "Basic",
            "ApiKey",
            "u:p",
            "hmac-sha256",
            "standard-webhooks",
            "a\r\nb",
            "",
        ]
    ),
    st.text(max_size=20),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers()), children, max_size=5),
    ),
    max_leaves=20,
)
tenant_like = st.fixed_dictionaries(
    {},
    optional={k: values for k in KEYS[:15]},
)
ENV = {"HOME": "/home/x"}
# Aliases expanding to 9**6 nodes: must be refused quickly, not walked.
BILLION_LAUGHS = "a: &a [1,1,1,1,1,1,1,1,1]\n" + "".join(
    f"{x}: &{x} [{', '.join(['*' + p] * 9)}]\n" for p, x in zip("abcde", "bcdef", strict=True)
)


def check(data: Any) -> None:
    try:
        result = parse_tenant(data, "fuzz", ENV)
    except ConfigError as exc:
        assert exc.problems and all(line.startswith("fuzz") and "\n" not in line for line in exc.problems)
    else:
        assert isinstance(result, TenantConfig)
        result.masked()
        result.accepts("user.created")
        result.retry_policy.schedule_seconds()
        result.retry_policy.delay(result.retry_policy.max_retries + 1)
        if result.auth_config is not None:
            result.auth_config.header()


@settings(max_examples=300, deadline=None)
@given(values)
def test_parse_tenant_random_structures(data: Any) -> None:
    check(data)


@settings(max_examples=300, deadline=None)
@given(tenant_like)
def test_parse_tenant_tenant_like_mappings(data: dict[str, Any]) -> None:
    check(data)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.builds(lambda d: yaml.safe_dump(d), values),
        st.builds(lambda d: yaml.safe_dump({"tenants": [d, d]}), tenant_like),
        st.builds(lambda d: yaml.safe_dump(d), tenant_like),
        st.sampled_from(
            [
                "a: &a [*a]",
                "tenants: &t [*t]",
                "tenant_id: &x\n  a: *x",
                "x: 2024-13-45",
                "x: !!binary '###'",
                "x: !!python/object:os.system {}",
                "? [a]\n: 1",
                "a: 1\n---\nb: 2",
                "\ufeffa: 1",
                "[" * 2000,
                BILLION_LAUGHS,
            ]
        ),
    ),
)
def test_load_path_random_files(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.yaml"
        try:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        except UnicodeEncodeError:
            return
        try:
            snap = load_path(path, ENV)
        except ConfigError as exc:
            assert exc.problems and all("\n" not in line for line in exc.problems)
        else:
            for tenant in snap.tenants.values():
                tenant.masked()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_load_path_random_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "t.yaml").write_bytes(data)
        with contextlib.suppress(ConfigError):
            load_path(Path(tmp), ENV)
