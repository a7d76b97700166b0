"""Tenant configuration: YAML files -> validated, immutable `TenantConfig` objects (SPEC §2).

Loading is all-or-nothing and reports every problem it finds, one line each, in the form
`<file>: <key.path>: <message>`, so an operator can fix a whole ConfigMap in one pass.

Pipeline for one tenant mapping:

1. `${VAR}` in any string value is replaced from the environment. `$${` is an escaped, literal
   `${` (so a secret that really contains `${` is written `$${`). Replacement is a single pass:
   text coming *from* a variable is never expanded again. A `${` that is not a well-formed
   reference is an error rather than a silent literal, because a typo there usually means a
   secret would be sent as the text "${EMPRESA_SECRET".
2. `secret_key_file` is read (trailing newline stripped) and stands in for `secret_key`.
   A relative path is taken relative to the directory of the YAML file that names it.
3. Every top-level key is converted on its own with msgspec (strict: `"5"` is not an int, `1` is
   not a bool), so one bad key does not hide the problems of the others.
4. Semantic checks that types cannot express (URL shape, ranges, header syntax, ...).

No message ever contains a secret, a token or a header value: they say what is wrong and where.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import ipaddress
import math
import os
import random
import re
import stat
import types
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from relay import catalog, redact
from relay.errors import ConfigError as ConfigError  # re-exported: callers import it from here
from relay.events import is_reserved_header
from relay.proxy import check as check_proxy
from relay.signing import SignatureError, ed25519_public_key, standard_webhooks_key
from relay.tls import FILE_KEYS as TLS_FILE_KEYS
from relay.tls import TlsConfig, TlsError, attach
from relay.tls import load as load_tls
from relay.urls import host_problem, userinfo_clash

__all__ = [
    "UNSET_HINT",
    "AuthConfig",
    "CircuitBreakerConfig",
    "ConfigError",
    "RetryPolicy",
    "Snapshot",
    "TenantConfig",
    "load_path",
    "other_tenants_in",
    "parse_tenant",
    "tenant_file_text",
    "warnings",
]

try:
    _BaseLoader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # PyYAML built without libyaml
    _BaseLoader = yaml.SafeLoader

MASK = redact.MASK

_TENANT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# RFC 9110 token characters: anything else in a header name is rejected by HTTP stacks.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# hookrelay reads its environment once, at start: a tenant file with a new ${VAR} loads only after
# the variable is set *and* the daemon restarted, which the error should say.
UNSET_HINT = " (hookrelay reads variables at start-up: a new one needs a restart)"
# allowed_target_hosts entries: a DNS name, optionally "*." + a name with a dot (IP literals are
# checked with ipaddress instead).
_ALLOWED_HOST = re.compile(
    r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)+"
    r"|[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
)
_VAR_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")
MAX_SECRET_FILE = 64 * 1024  # a secret file larger than this is refused, not read
# Bounds on the raw YAML walk: YAML aliases can build cycles or exponentially large trees
# ("billion laughs"); a real tenant mapping is three levels deep and a few dozen nodes.
_MAX_DEPTH = 32
_MAX_NODES = 100_000


OAUTH2 = "OAuth2ClientCredentials"
_OAUTH_ONLY = ("token_url", "client_id", "client_secret", "scope", "audience")


class AuthConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    auth_type: Literal["Bearer", "ApiKey", "Basic", "OAuth2ClientCredentials"]
    token: str | None = None  # required for Bearer, ApiKey and Basic
    header_name: str | None = None
    # OAuth2 client credentials (SPEC §13): the token is fetched from token_url (relay.oauth).
    token_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    scope: str | None = None
    audience: str | None = None

    def header_field(self) -> str:
        """The name of the header this auth sets (OAuth2's included)."""
        pair = self.header()
        return pair[0] if pair is not None else (self.header_name or "Authorization")

    def header(self) -> tuple[str, str] | None:
        """The (name, value) pair sent with every delivery attempt; None for OAuth2, whose token
        is fetched at delivery time."""
        token = self.token or ""
        if self.auth_type == "Bearer":
            return (self.header_name or "Authorization", f"Bearer {token}")
        if self.auth_type == "ApiKey":
            return (self.header_name or "X-API-Key", token)
        if self.auth_type == OAUTH2:
            return None
        # Basic always goes in Authorization: other header names would not be understood as Basic auth.
        return ("Authorization", "Basic " + base64.b64encode(token.encode()).decode("ascii"))


class RetryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_retries: int = 5
    initial_delay_seconds: float = 1.0
    backoff_multiplier: float = 2.0
    max_delay_seconds: float = 300.0
    jitter: bool = True

    def base_delay(self, n: int) -> float:
        """Un-jittered delay before retry `n` (1-based): min(initial * multiplier^(n-1), max_delay)."""
        initial, cap = self.initial_delay_seconds, self.max_delay_seconds
        if initial <= 0 or n <= 1:
            return min(max(initial, 0.0), cap)
        try:
            grown = initial * self.backoff_multiplier ** (n - 1)
        except OverflowError:  # float ** huge int raises instead of giving inf
            return cap
        return min(grown, cap)

    def delay(self, n: int, rand: Callable[[], float] = random.random) -> float:
        """Delay before retry `n`; with jitter drawn uniformly from [d/2, d]."""
        d = self.base_delay(n)
        if not self.jitter:
            return d
        half = d / 2
        return half + half * min(max(rand(), 0.0), 1.0)

    def schedule_seconds(self) -> float:
        """Sum of the base delays of all retries: how long a failing event keeps being retried."""
        if self.max_retries <= 0 or self.initial_delay_seconds <= 0 or self.max_delay_seconds <= 0:
            return 0.0
        total = 0.0
        n = 1
        # Sum term by term only until the delays stop growing (cap reached, or multiplier 1); the
        # rest are all equal. max_retries may be huge, so never loop over it: geometric growth
        # reaches any cap quickly, and the iteration bound covers a multiplier of ~1.
        while n <= self.max_retries and n <= 10_000:
            d = self.base_delay(n)
            if d >= self.max_delay_seconds or (n > 1 and self.backoff_multiplier == 1.0):
                break
            total += d
            n += 1
        remaining = self.max_retries - n + 1
        if remaining > 0:
            try:
                total += float(remaining) * self.base_delay(n)
            except OverflowError:
                return math.inf
        return total


class CircuitBreakerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    failure_threshold: int = 5
    enabled: bool = True


SignatureScheme = Literal["hmac-sha256", "standard-webhooks", "standard-webhooks-ed25519"]


# dict=True gives instances a __dict__ so the event matcher can be cached (functools.cached_property
# writes straight into it, which frozen=True allows); it is not a field, so equality, hashing and
# msgspec encoding ignore it.
class TenantConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, dict=True):
    tenant_id: str
    base_url: str
    secret_key: str
    default_headers: dict[str, str] = {}
    retry_policy: RetryPolicy = RetryPolicy()
    timeout_seconds: float = 30.0
    enabled_events: tuple[str, ...] = ("*",)
    active: bool = True
    auth_config: AuthConfig | None = None
    signature_schemes: tuple[SignatureScheme, ...] = ("hmac-sha256",)
    max_in_flight: int = 64
    rate_limit_per_second: float | None = None
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    previous_secret_keys: tuple[str, ...] = ()
    # Ed25519 signing key (`whsk_<base64 seed>`) for the standard-webhooks-ed25519 scheme (SPEC §13).
    signing_key: str | None = None
    tls: TlsConfig | None = None  # private CA, client certificate, SNI (SPEC §13)
    proxy: str | None = None  # http://[user:password@]host:port, or "env" (SPEC §13)
    # Endpoint lifecycle (SPEC §11): disabled after failing this long; probed this often then.
    disable_after_seconds: float = 432_000.0
    probe_interval_seconds: float = 300.0
    allowed_target_hosts: tuple[str, ...] = ()
    # Delivery policy (SPEC §12): per-key FIFO, and answers that end an event at once.
    ordering: Literal["none", "fifo"] = "none"
    final_statuses: tuple[int, ...] = (410,)
    require_known_event_types: bool = False  # refuse (422) event types not in the catalog

    @functools.cached_property
    def _matcher(self) -> tuple[bool, frozenset[str], tuple[str, ...]]:
        match_all = "*" in self.enabled_events
        exact = frozenset(p for p in self.enabled_events if not p.endswith(".*"))
        # "user.*" keeps its dot: it must not match "username.changed".
        prefixes = tuple(p[:-1] for p in self.enabled_events if p.endswith(".*"))
        return match_all, exact, prefixes

    def accepts(self, event_type: str) -> bool:
        """Whether `event_type` matches one of `enabled_events` (`*`, `prefix.*`, or exact)."""
        match_all, exact, prefixes = self._matcher
        return match_all or event_type in exact or (bool(prefixes) and event_type.startswith(prefixes))

    def signing_secrets(self) -> tuple[str, ...]:
        """Every secret that signs a delivery: the current one first, then those being rotated out."""
        return (self.secret_key, *self.previous_secret_keys)

    @functools.cached_property
    def redaction_values(self) -> tuple[str, ...]:
        """Every credential of this tenant as text, for `redact.scrub` of what receivers answer."""
        values = [*self.signing_secrets()]
        if self.signing_key is not None:
            values.append(self.signing_key)
        headers = dict(self.default_headers)
        if (auth := self.auth_config) is not None:
            if auth.token is not None:
                values.append(auth.token)
                values.append(auth.token.partition(":")[2])  # a Basic password on its own
            if auth.client_secret is not None:
                values.append(auth.client_secret)
            if (pair := auth.header()) is not None:
                headers[pair[0]] = pair[1]
        if self.proxy is not None and (password := urllib.parse.urlsplit(self.proxy).password):
            values.append(urllib.parse.unquote(password))
        # A fetched OAuth2 token is not known here: post() also masks the auth headers it sends.
        return redact.secret_values(values, headers)

    def target_allowed(self, url: str) -> bool:
        """Whether a per-event `target_url` may receive this tenant's signature, auth and headers.

        Only the origin (scheme, host, port) of `base_url`, or a host in `allowed_target_hosts`
        (exact, or `*.example.com` for any name below example.com) qualifies (SPEC §3).
        """
        try:
            target, base = urllib.parse.urlsplit(url), urllib.parse.urlsplit(self.base_url)
            if _origin(target) == _origin(base):
                return True
        except ValueError:
            return False
        host = (target.hostname or "").lower()
        for allowed in self.allowed_target_hosts:
            allowed = allowed.lower()
            if allowed.startswith("*."):
                if host.endswith(allowed[1:]) and len(host) > len(allowed) - 1:
                    return True
            elif host == allowed.strip("[]"):
                return True
        return False

    def masked(self) -> dict[str, Any]:
        """The whole config as JSON-able data, with secrets, tokens and header values as `***`."""
        data: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(self))
        data["secret_key"] = MASK
        data["previous_secret_keys"] = [MASK for _ in self.previous_secret_keys]
        if self.signing_key is not None:
            data["signing_key"] = MASK
        data["base_url"] = redact.url(self.base_url)
        data["default_headers"] = redact.headers(self.default_headers)
        if self.proxy is not None:
            data["proxy"] = redact.url(self.proxy)
        if (auth := data.get("auth_config")) is not None:
            if auth["token"] is not None or auth["auth_type"] != OAUTH2:
                auth["token"] = MASK
            if auth["client_secret"] is not None:
                auth["client_secret"] = MASK
            if auth["token_url"] is not None:
                auth["token_url"] = redact.url(auth["token_url"])
            for key in _OAUTH_ONLY:  # keep the answer of the other auth types as it always was
                if auth[key] is None:
                    del auth[key]
        return data


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, str, int | None]:
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)


@dataclass(frozen=True)
class Snapshot:
    """One consistent reading of the config path."""

    tenants: Mapping[str, TenantConfig]
    sources: Mapping[str, Path]
    # sha256 over (name, content) of every file read, secret files included, so a periodic rescan
    # notices a rotated Secret as well as an edited YAML file.
    digest: str
    # With `allow_unset_env`: one line per unset ${VAR} (and per check it kept from being made).
    notes: tuple[str, ...] = ()
    catalog: catalog.Catalog = catalog.EMPTY  # event types (SPEC §14), from every file's event_types:


# ---------------------------------------------------------------------------------------------
# Problem messages


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def _key_str(key: object) -> str:
    # Key paths go on one line of output: anything odd is shown as a Python literal.
    if isinstance(key, str) and key and key.isprintable() and len(key) <= 80:
        return key
    text = repr(key)
    return text if len(text) <= 80 else text[:77] + "..."


def _join(path: str, key: object) -> str:
    return f"{path}.{_key_str(key)}" if path else _key_str(key)


_MSGSPEC_AT = re.compile(r"^(?P<msg>.*?)(?: - at (?:`key` in )?`\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MSGSPEC_EXPECTED = re.compile(r"^Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`$")
_MSGSPEC_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>[^`]*)`$")
_MSGSPEC_MISSING = re.compile(r"^Object missing required field `(?P<key>[^`]*)`$")
_WORDS = {"object": "mapping", "array": "list", "null": "null"}
_CHOICES = {
    "auth_type": "Bearer, ApiKey, Basic, OAuth2ClientCredentials",
    "signature_schemes": "hmac-sha256, standard-webhooks, standard-webhooks-ed25519",
}


def _msgspec_problem(field: str, exc: msgspec.ValidationError) -> tuple[str, str]:
    """(key path, message) from a msgspec error on the value of top-level key `field`.

    msgspec says "Expected `int`, got `str` - at `$.max_retries`"; we say
    "retry_policy.max_retries: expected int, got str". Values are never echoed (enum errors
    would, so they are reworded).
    """
    m = _MSGSPEC_AT.match(str(exc))
    assert m is not None  # the pattern matches any string
    msg, sub = m["msg"], (m["path"] or "")
    path = (field + sub).replace("[...]", "")
    if "`key` in" in str(exc):
        return path, "keys must be strings"
    if e := _MSGSPEC_EXPECTED.match(msg):
        words = [_WORDS.get(w.strip(), w.strip()) for w in e["want"].split("|")]
        return path, f"expected {' or '.join(words)}, got {_WORDS.get(e['got'], e['got'])}"
    if e := _MSGSPEC_UNKNOWN.match(msg):
        return _join(path, e["key"]), "unknown key"
    if e := _MSGSPEC_MISSING.match(msg):
        return _join(path, e["key"]), "required key missing"
    if msg.startswith("Invalid enum value"):
        last = re.sub(r"\[\d+\]$", "", path).rsplit(".", 1)[-1]
        choices = _CHOICES.get(last)
        return path, f"invalid value (expected one of: {choices})" if choices else "invalid value"
    return path, msg[:1].lower() + msg[1:]


# ---------------------------------------------------------------------------------------------
# Raw YAML -> tenant


class _Problems:
    """Collects `<source>: <prefix.path>: <message>` lines.

    `unset` is None when an unset `${VAR}` is an error (the daemon). A set (check-config
    --allow-unset-env) means unset variables are placeholders: their key paths are collected there,
    and a problem found at one of those paths goes to `notes` instead of `lines`, since it is about
    the placeholder, not the value the real environment will give.
    """

    def __init__(self, source: str, prefix: str = "", unset: set[str] | None = None) -> None:
        self.source = source
        self.prefix = prefix
        self.lines: list[str] = []
        self.notes: list[str] = []
        self.unset = unset

    def _line(self, path: str, message: str) -> str:
        if self.prefix:
            path = f"{self.prefix}.{path}" if path else self.prefix
        return f"{self.source}: {path}: {message}" if path else f"{self.source}: {message}"

    def add(self, path: str, message: str) -> None:
        if self.unset and any(path == u or path.startswith((u + ".", u + "[")) for u in self.unset):
            self.notes.append(self._line(path, f"not checked, it uses an unset variable ({message})"))
            return
        self.lines.append(self._line(path, message))

    def note(self, path: str, message: str) -> None:
        self.notes.append(self._line(path, message))


class _Budget:
    def __init__(self) -> None:
        self.nodes = 0


def _interpolate_str(text: str, env: Mapping[str, str], path: str, problems: _Problems) -> str:
    if "$" not in text:
        return text
    out: list[str] = []
    pos = 0
    for m in _VAR_REF.finditer(text):
        out.append(text[pos : m.start()])
        pos = m.end()
        token = m.group(0)
        if token == "$${":
            out.append("${")
        elif m.group(1) is None:
            problems.add(path, "malformed ${...} reference (use ${NAME}, or $${ for a literal ${)")
            out.append(token)
        elif (value := env.get(m.group(1))) is None:
            if problems.unset is not None:
                problems.unset.add(path)
                problems.note(path, f"environment variable {m.group(1)} is not set (placeholder used)")
            else:
                problems.add(
                    path,
                    f"environment variable {m.group(1)} is not set{UNSET_HINT}",
                )
            out.append(token)  # keeps later checks (e.g. "must not be empty") from piling on
        else:
            out.append(value)
    out.append(text[pos:])
    return "".join(out)


def _interpolate(
    value: Any, env: Mapping[str, str], path: str, problems: _Problems, budget: _Budget, depth: int = 0
) -> Any:
    """A copy of `value` with `${VAR}` replaced in every string value (keys are left alone)."""
    budget.nodes += 1
    if depth > _MAX_DEPTH or budget.nodes > _MAX_NODES:
        raise _TooLarge(path)
    if isinstance(value, str):
        return _interpolate_str(value, env, path, problems)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, _join(path, k), problems, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, f"{path}[{i}]", problems, budget, depth + 1) for i, v in enumerate(value)]
    return value


class _TooLarge(Exception):
    def __init__(self, path: str) -> None:
        self.path = path


def _read_secret_file(
    raw: object, base_dir: Path | None, problems: _Problems, files: dict[str, bytes], key: str = "secret_key_file"
) -> str | None:
    if not isinstance(raw, str):
        problems.add(key, f"expected str, got {_type_name(raw)}")
        return None
    if not raw:
        problems.add(key, "must not be empty")
        return None
    path = Path(raw)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    content = _read_secret_bytes(path)
    if content is None:
        # One message whatever went wrong: it must not tell which paths exist or what they hold.
        problems.add(
            key,
            f"cannot read {_key_str(str(path))} (it must be a readable regular file of at most "
            f"{MAX_SECRET_FILE // 1024} KiB)",
        )
        return None
    files[str(path.absolute())] = content
    try:
        secret = content.decode("utf-8")
    except UnicodeDecodeError:
        problems.add(key, f"{_key_str(str(path))} is not valid UTF-8")
        return None
    secret = secret.rstrip("\r\n")
    if not secret:
        problems.add(key, f"{_key_str(str(path))} is empty")
        return None
    return secret


def _read_secret_bytes(path: Path) -> bytes | None:
    """The content of a small regular file, or None. Never blocks on a FIFO or reads a device.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; the fstat
    then refuses anything that is not a regular file (FIFO, /dev/zero, a directory), and the read
    stops one byte past the limit, so a huge file costs at most 64 KiB of memory.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError):  # ValueError: an embedded NUL in the path
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_SECRET_FILE:
            chunk = os.read(fd, MAX_SECRET_FILE + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks) if size <= MAX_SECRET_FILE else None
    except OSError:
        return None
    finally:
        os.close(fd)


_FIELDS = {f.name: f for f in msgspec.structs.fields(TenantConfig)}
_REQUIRED = ("tenant_id", "base_url", "secret_key")


def _parse_tenant(
    data: Any,
    problems: _Problems,
    env: Mapping[str, str],
    base_dir: Path | None,
    files: dict[str, bytes],
    prefix: str = "",
    literal: bool = False,
) -> TenantConfig | None:
    """Validate one tenant mapping; problems go to `problems` with key paths under `prefix`."""
    sub = _Problems(problems.source, prefix, None if problems.unset is None else set())
    try:
        if literal:
            _check_literal(data, "", sub, _Budget())
            if sub.lines:
                problems.lines.extend(sub.lines)
                return None
        result = _parse_tenant_inner(data, sub, env, base_dir, files, literal)
    except _TooLarge as exc:
        # Name only the top-level key: the full path of a recursive alias is 32 levels long.
        sub.add(
            re.split(r"[.\[]", exc.path, maxsplit=1)[0],
            "nested too deeply or too large (recursive YAML alias?)",
        )
        result = None
    except RecursionError:
        sub.add("", "nested too deeply")
        result = None
    problems.lines.extend(sub.lines)
    problems.notes.extend(sub.notes)
    return result if not sub.lines else None


def _check_literal(value: Any, path: str, problems: _Problems, budget: _Budget, depth: int = 0) -> None:
    """API bodies are literal (SPEC §3): no `${VAR}` to expand, no `*_file` to read.

    Expanding the daemon's environment, or reading its files, on behalf of whoever can call the
    API would hand them every secret the process holds; files from Git keep both features.
    """
    budget.nodes += 1
    if depth > _MAX_DEPTH or budget.nodes > _MAX_NODES:
        raise _TooLarge(path)
    if isinstance(value, str):
        if "${" in value:
            problems.add(path, "${...} is not expanded in API requests; send the literal value")
    elif isinstance(value, dict):
        for k, v in value.items():
            sub = _join(path, k)
            if isinstance(k, str) and "${" in k:
                problems.add(sub, "${...} is not allowed in API requests")
            elif isinstance(k, str) and k.endswith("_file"):
                problems.add(sub, "not accepted from the API (the daemon's files are not readable through it)")
                continue
            _check_literal(v, sub, problems, budget, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_literal(v, f"{path}[{i}]", problems, budget, depth + 1)


def _parse_tenant_inner(
    data: Any,
    problems: _Problems,
    env: Mapping[str, str],
    base_dir: Path | None,
    files: dict[str, bytes],
    literal: bool = False,
) -> TenantConfig | None:
    if not isinstance(data, dict):
        problems.add("", f"expected a mapping (one tenant), got {_type_name(data)}")
        return None
    if not literal:
        data = _interpolate(data, env, "", problems, _Budget())
    _normalise_auth_type(data)

    if "secret_key" in data and "secret_key_file" in data:
        problems.add("secret_key", "give either secret_key or secret_key_file, not both")
        data.pop("secret_key_file")
    elif "secret_key_file" in data:
        secret = _read_secret_file(data.pop("secret_key_file"), base_dir, problems, files)
        if secret is not None:
            data["secret_key"] = secret
    elif "secret_key" not in data:
        problems.add("secret_key", "required key missing (or give secret_key_file)")
    if "signing_key" in data and "signing_key_file" in data:
        problems.add("signing_key", "give either signing_key or signing_key_file, not both")
        data.pop("signing_key_file")
    elif "signing_key_file" in data:
        key = _read_secret_file(data.pop("signing_key_file"), base_dir, problems, files, "signing_key_file")
        if key is not None:
            data["signing_key"] = key

    if isinstance(auth_raw := data.get("auth_config"), dict) and "client_secret_file" in auth_raw:
        if "client_secret" in auth_raw:
            problems.add("auth_config.client_secret", "give either client_secret or client_secret_file, not both")
            auth_raw.pop("client_secret_file")
        else:
            key = "auth_config.client_secret_file"
            secret = _read_secret_file(auth_raw.pop("client_secret_file"), base_dir, problems, files, key)
            # An unreadable file is reported once, not again as a missing client_secret.
            auth_raw["client_secret"] = secret if secret is not None else "(unread)"

    if isinstance(tls_raw := data.get("tls"), dict) and base_dir is not None:
        # Like secret_key_file: a relative path is relative to the YAML file that names it.
        for k in TLS_FILE_KEYS:
            if isinstance(v := tls_raw.get(k), str) and v and not Path(v).is_absolute():
                tls_raw[k] = str(base_dir / v)

    typed: dict[str, Any] = {}
    for key, value in data.items():
        field = _FIELDS.get(key) if isinstance(key, str) else None
        if field is None:
            problems.add(_key_str(key), "unknown key")
            continue
        if key == "default_headers" and isinstance(value, dict):
            # Checked here rather than by msgspec, which reports a bad value as `$[...]`
            # without saying which header.
            for name, hv in value.items():
                if not isinstance(name, str):
                    problems.add(f"default_headers.{_key_str(name)}", "header names must be strings")
                elif not isinstance(hv, str):
                    problems.add(_join("default_headers", name), f"expected str, got {_type_name(hv)}")
                else:
                    _check_header(problems, _join("default_headers", name), name, hv)
                    if is_reserved_header(name):
                        problems.add(
                            _join("default_headers", name),
                            "this header is set by hookrelay on every delivery and cannot be configured",
                        )
        try:
            typed[key] = msgspec.convert(value, field.type, strict=True)
        except msgspec.ValidationError as exc:
            if key != "default_headers" or not isinstance(value, dict):
                problems.add(*_msgspec_problem(key, exc))
    for key in _REQUIRED:
        if key not in data and key != "secret_key":
            problems.add(key, "required key missing")

    _check(typed, problems)
    ctx = None
    if (tls := typed.get("tls")) is not None:
        try:
            ctx = load_tls(tls, files)
        except TlsError as exc:
            problems.add(f"tls.{exc.key}", str(exc))
    if problems.lines:
        return None
    tenant = msgspec.convert(data, TenantConfig, strict=True)
    if ctx is not None:
        attach(tenant, ctx)
    return tenant


_AUTH_TYPES = {name.lower(): name for name in ("Bearer", "ApiKey", "Basic", "OAuth2ClientCredentials")}


def _normalise_auth_type(data: dict[Any, Any]) -> None:
    """`auth_type: bearer` means Bearer: HTTP auth schemes are case-insensitive (RFC 9110 §11.1),
    and refusing a spelling of a name that is not ambiguous only costs a failed deploy."""
    auth = data.get("auth_config")
    if isinstance(auth, dict) and isinstance(kind := auth.get("auth_type"), str):
        auth["auth_type"] = _AUTH_TYPES.get(kind.lower(), kind)


def _finite(problems: _Problems, path: str, value: float | None, low: float, strict: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value):
        problems.add(path, "must be a finite number")
    elif (value <= low) if strict else (value < low):
        problems.add(path, f"must be {'>' if strict else '>='} {low:g}")


def _check_header(problems: _Problems, path: str, name: str, value: str | None) -> None:
    if not _HEADER_NAME.fullmatch(name):
        problems.add(path, "invalid header name (letters, digits and !#$%&'*+-.^_`|~ only)")
    if value is not None and ("\r" in value or "\n" in value or "\0" in value):
        problems.add(path, "header value must not contain CR, LF or NUL")


def _check_url(url: str) -> str | None:
    """Why `url` is not a usable delivery URL, or None. Never echoes the URL (it may hold a token)."""
    if not url or any(c.isspace() or not c.isprintable() for c in url):
        return "must be an http(s) URL without spaces or control characters"
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "must name a host"
    return host_problem(parts.hostname)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_whsec(problems: _Problems, path: str, secret: str) -> None:
    try:
        key = standard_webhooks_key(secret)
    except (SignatureError, binascii.Error):
        problems.add(path, "standard-webhooks needs a secret of the form whsec_<base64>")
        return
    if not key:
        problems.add(path, "standard-webhooks needs a non-empty key after whsec_")


def _check(t: dict[str, Any], problems: _Problems) -> None:
    """Semantic checks on the fields that converted cleanly."""
    if (tid := t.get("tenant_id")) is not None:
        if not _TENANT_ID.fullmatch(tid):
            problems.add("tenant_id", "must be 1-64 characters from A-Z a-z 0-9 . _ -")
        elif tid.startswith("."):
            # The API stores a tenant as <tenant_id>.yaml, and files starting with "." are skipped.
            problems.add("tenant_id", "must not start with '.'")
    if (url := t.get("base_url")) is not None and (why := _check_url(url)):
        problems.add("base_url", why)
    if t.get("secret_key") == "":
        problems.add("secret_key", "must not be empty")
    for i, old in enumerate(t.get("previous_secret_keys", ())):
        if not old:
            problems.add(f"previous_secret_keys[{i}]", "must not be empty")

    if (rp := t.get("retry_policy")) is not None:
        if rp.max_retries < 0:
            problems.add("retry_policy.max_retries", "must be >= 0")
        _finite(problems, "retry_policy.initial_delay_seconds", rp.initial_delay_seconds, 0)
        _finite(problems, "retry_policy.backoff_multiplier", rp.backoff_multiplier, 1)
        _finite(problems, "retry_policy.max_delay_seconds", rp.max_delay_seconds, 0)
    _finite(problems, "timeout_seconds", t.get("timeout_seconds"), 0, strict=True)
    _finite(problems, "rate_limit_per_second", t.get("rate_limit_per_second"), 0, strict=True)
    _finite(problems, "disable_after_seconds", t.get("disable_after_seconds"), 0, strict=True)
    _finite(problems, "probe_interval_seconds", t.get("probe_interval_seconds"), 0, strict=True)
    if (mif := t.get("max_in_flight")) is not None and mif < 1:
        problems.add("max_in_flight", "must be >= 1")
    if (cb := t.get("circuit_breaker")) is not None and cb.failure_threshold < 1:
        problems.add("circuit_breaker.failure_threshold", "must be >= 1")
    for i, status in enumerate(t.get("final_statuses", ())):
        if not 100 <= status <= 599:
            problems.add(f"final_statuses[{i}]", f"{status} is not an HTTP status (100-599)")

    for i, host in enumerate(t.get("allowed_target_hosts", ())):
        if not (_ALLOWED_HOST.fullmatch(host.lower()) or _is_ip(host.strip("[]"))):
            problems.add(
                f"allowed_target_hosts[{i}]",
                "must be a host name (or *.example.com for the names below example.com), without scheme or port",
            )

    for i, pattern in enumerate(t.get("enabled_events", ())):
        if not pattern or pattern == ".*":
            problems.add(f"enabled_events[{i}]", "must be '*', 'prefix.*' or an event type")

    if (auth := t.get("auth_config")) is not None:
        _check_auth(problems, auth)
    if (proxy := t.get("proxy")) is not None and (why := check_proxy(proxy)):
        problems.add("proxy", why)
    names = [*t.get("default_headers", {}), *([auth.header_field()] if auth is not None else [])]
    if isinstance(url, str) and (why := userinfo_clash(url, names)):
        problems.add("auth_config" if auth is not None else "default_headers", f"base_url: {why}")

    schemes = t.get("signature_schemes")
    if schemes is not None and not schemes:
        problems.add("signature_schemes", "must list at least one scheme")
    if schemes and "standard-webhooks" in schemes:
        if isinstance(t.get("secret_key"), str):
            _check_whsec(problems, "secret_key", t["secret_key"])
        for i, old in enumerate(t.get("previous_secret_keys", ())):
            if old:
                _check_whsec(problems, f"previous_secret_keys[{i}]", old)
    if isinstance(t.get("signing_key"), str):
        try:
            ed25519_public_key(t["signing_key"])
        except (SignatureError, ValueError) as exc:
            problems.add("signing_key", str(exc))
    elif schemes and "standard-webhooks-ed25519" in schemes and "signing_key" not in t:
        problems.add("signing_key", "standard-webhooks-ed25519 needs signing_key (or signing_key_file)")


def _check_auth(problems: _Problems, auth: AuthConfig) -> None:
    if auth.auth_type == OAUTH2:
        for key in ("token_url", "client_id", "client_secret"):
            value = getattr(auth, key)
            if value is None:
                problems.add(f"auth_config.{key}", f"required for {OAUTH2}")
            elif not value:
                problems.add(f"auth_config.{key}", "must not be empty")
        if auth.token_url and (why := _check_url(auth.token_url)):
            problems.add("auth_config.token_url", why)
        if auth.token is not None:
            problems.add("auth_config.token", f"not used with {OAUTH2} (the token is fetched from token_url)")
        if auth.header_name is not None:
            _check_header(problems, "auth_config.header_name", auth.header_name, None)
        return
    for key in _OAUTH_ONLY:
        if getattr(auth, key) is not None:
            problems.add(f"auth_config.{key}", f"only for {OAUTH2}")
    if auth.token is None:
        problems.add("auth_config.token", f"required for {auth.auth_type}")
        return
    if not auth.token:
        problems.add("auth_config.token", "must not be empty")
    elif auth.auth_type == "Basic" and ":" not in auth.token:
        problems.add("auth_config.token", "Basic auth needs a token of the form user:password")
    pair = auth.header()
    assert pair is not None  # not OAuth2
    _check_header(problems, "auth_config.header_name", pair[0], None)
    if "\r" in pair[1] or "\n" in pair[1] or "\0" in pair[1]:
        problems.add("auth_config.token", "must not contain CR, LF or NUL")


def parse_tenant(
    data: Any, source: str, env: Mapping[str, str] | None = None, *, literal: bool = False
) -> TenantConfig:
    """Validate one tenant mapping; problems are prefixed by `source`.

    `literal=True` is for API request bodies: `${...}` and `*_file` keys are refused rather than
    expanded or read (see `_check_literal`). Otherwise a relative `secret_key_file` is taken
    relative to the working directory.
    """
    problems = _Problems(source)
    tenant = _parse_tenant(data, problems, os.environ if env is None else env, None, {}, literal=literal)
    if tenant is None:
        raise ConfigError(problems.lines or [f"{source}: invalid tenant"])
    return tenant


# ---------------------------------------------------------------------------------------------
# Files


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe loader that rejects duplicate keys: PyYAML would silently keep the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable: the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {_key_str(key)}",
                    key_node.start_mark,
                )
        result: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return result


def _load_yaml(text: str, name: str) -> tuple[Any, str | None]:
    """(document, None) or (None, problem line)."""
    try:
        return yaml.load(text, Loader=_Loader), None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = exc.problem or exc.context or "invalid YAML"
        return None, f"{name}: {where}YAML error: {what}{_flow_hint(text, mark)}"
    except yaml.YAMLError as exc:
        return None, f"{name}: YAML error: {type(exc).__name__}"
    except RecursionError:
        return None, f"{name}: YAML error: nested too deeply"
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a timestamp like 2024-13-45
        return None, f"{name}: YAML error: invalid value ({str(exc)[:100]})"


def _flow_hint(text: str, mark: Any) -> str:
    """A hint for the commonest YAML mistake in a tenant file: `{token: ${VAR}}`. Inside a flow
    collection (`{...}` or `[...]`) the braces of `${VAR}` are YAML syntax, not text."""
    if mark is None:
        return ""
    lines = text.splitlines()
    line = lines[mark.line] if 0 <= mark.line < len(lines) else ""
    if "${" in line and ("{" in line.split("${", 1)[0] or "[" in line.split("${", 1)[0]):
        return ' (a ${VAR} inside {...} or [...] must be quoted, "${VAR}", or use block style)'
    return ""


def _tenants_in(doc: Any, problems: _Problems) -> Iterator[tuple[str, Any]]:
    """(key-path prefix, tenant mapping) for each tenant in one file's document."""
    if doc is None:
        return  # an empty file holds no tenants
    if isinstance(doc, dict) and ("tenants" in doc or "event_types" in doc):
        for key in doc:
            if key not in ("tenants", "event_types"):
                problems.add(_key_str(key), "unknown key (a file with tenants: or event_types: holds nothing else)")
        items = doc.get("tenants")
        if items is None:
            return
        if not isinstance(items, list):
            problems.add("tenants", f"expected list, got {_type_name(items)}")
            return
        for i, item in enumerate(items):
            yield f"tenants[{i}]", item
    else:
        yield "", doc


def _config_files(path: Path) -> list[Path]:
    """The YAML files of a config directory, sorted by name.

    Names starting with "." are skipped: a Kubernetes ConfigMap volume keeps its real files under
    `..data/` and `..<timestamp>/`, and the visible names are symlinks into `..data/`.
    """
    files = []
    for entry in os.scandir(path):
        if entry.name.startswith(".") or not entry.name.endswith((".yaml", ".yml")):
            continue
        if entry.is_dir():  # follows symlinks
            continue
        files.append(path / entry.name)
    return sorted(files)


def load_path(path: Path, env: Mapping[str, str] | None = None, *, allow_unset_env: bool = False) -> Snapshot:
    """Read a config directory (its `*.yaml`/`*.yml`, not recursive) or one file.

    Raises ConfigError listing every problem in every file; an empty directory is a valid,
    empty configuration. `allow_unset_env` (check-config only, never the daemon): an unset
    `${VAR}` is a placeholder reported in `Snapshot.notes`, not an error.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    path = Path(path)
    lines: list[str] = []
    if path.is_dir():
        try:
            files = _config_files(path)
        except OSError as exc:
            raise ConfigError([f"{path}: cannot list directory: {exc.strerror}"]) from None
        root = path
    elif path.exists():
        files, root = [path], path.parent
    else:
        raise ConfigError([f"{path}: no such file or directory"])

    contents: dict[str, bytes] = {}
    tenants: dict[str, TenantConfig] = {}
    sources: dict[str, Path] = {}
    where: dict[str, str] = {}  # tenant_id -> file name, for duplicate messages
    notes: list[str] = []
    event_types: list[catalog.Compiled] = []
    type_where: dict[str, str] = {}  # event type name -> file name
    for file in files:
        name = str(file)
        try:
            # resolve(): a ConfigMap's visible names are symlinks into ..data/, which is itself
            # swapped atomically; reading through the resolved path sees one consistent version.
            raw = file.resolve().read_bytes()
        except OSError as exc:
            lines.append(f"{name}: cannot read: {exc.strerror or type(exc).__name__}")
            continue
        contents[file.relative_to(root).as_posix() if file.is_relative_to(root) else name] = raw
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            lines.append(f"{name}: not valid UTF-8")
            continue
        doc, problem = _load_yaml(text, name)
        if problem is not None:
            lines.append(problem)
            continue
        problems = _Problems(name, unset=set() if allow_unset_env else None)
        for prefix, item in _tenants_in(doc, problems):
            tenant = _parse_tenant(item, problems, environ, file.parent, contents, prefix)
            if tenant is None:
                continue
            if (other := where.get(tenant.tenant_id)) is not None:
                problems.add(
                    f"{prefix}.tenant_id" if prefix else "tenant_id",
                    f"duplicate tenant id {tenant.tenant_id!r} (also defined in {other})",
                )
                continue
            where[tenant.tenant_id] = name
            tenants[tenant.tenant_id] = tenant
            sources[tenant.tenant_id] = file
        if isinstance(doc, dict) and "event_types" in doc:
            for entry in catalog.parse_event_types(doc["event_types"], problems.add, _msgspec_problem):
                i, et, _ = entry
                if (other := type_where.get(et.name)) is not None:
                    problems.add(f"event_types[{i}].name", f"duplicate event type {et.name!r} (also in {other})")
                    continue
                type_where[et.name] = name
                event_types.append(entry)
        lines.extend(problems.lines)
        notes.extend(problems.notes)

    if lines:
        raise ConfigError(lines)
    digest = hashlib.sha256()
    for key in sorted(contents):
        body = contents[key]
        digest.update(key.encode("utf-8", "surrogateescape") + b"\0")
        digest.update(len(body).to_bytes(8, "big") + body)
    return Snapshot(
        tenants=types.MappingProxyType(tenants),
        sources=types.MappingProxyType(sources),
        digest=digest.hexdigest(),
        notes=tuple(notes),
        catalog=catalog.build(event_types),
    )


def warnings(snap: Snapshot) -> list[str]:
    """Settings that work but weaken security, one `<file>: <key>: <why>` line each.

    Logged at every load; `check-config --strict` treats them as errors.
    """
    lines = []
    for tid in sorted(snap.tenants):
        t = snap.tenants[tid]
        if t.tls is not None and t.tls.insecure_skip_verify:
            source = snap.sources.get(tid, tid)
            lines.append(
                f"{source}: tls.insecure_skip_verify: certificate checks are OFF for tenant {tid}:"
                " anyone on the path can read and alter its deliveries"
            )
    return lines


def other_tenants_in(content: bytes, tenant_id: str) -> set[str]:
    """Tenant ids other than `tenant_id` that the YAML `content` names, or {"?"} if unreadable.

    Used before the API replaces `<tenant_id>.yaml`: a file that cannot be understood is treated
    as holding someone else, so it is never overwritten blindly.
    """
    try:
        doc, problem = _load_yaml(content.decode("utf-8-sig"), "file")
    except UnicodeDecodeError:
        return {"?"}
    if problem is not None:
        return {"?"}
    found: set[str] = set()
    for _, item in _tenants_in(doc, _Problems("file")):
        tid = item.get("tenant_id") if isinstance(item, dict) else None
        if tid != tenant_id:
            found.add(str(tid) if isinstance(tid, str) else "?")
    if isinstance(doc, dict) and "tenants" in doc and len(doc) > 1:
        found.add("?")
    return found


def tenant_file_text(data: Mapping[str, Any]) -> str:
    """YAML for a tenant mapping received by the API, written verbatim to `<tenant_id>.yaml`.

    Strings are written as received. A body validated with `parse_tenant(literal=True)` holds no
    `${` and no `*_file` key, so loading the file gives exactly the tenant that was validated:
    nothing in it is expanded or read later, on reload or restart.
    """
    body = yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True, default_flow_style=False)
    return "# written by hookrelay POST /api/v1/webhooks/configure\n" + body
