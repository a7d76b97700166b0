"""Daemon settings: `hookrelay run` flags, each also read from `HOOKRELAY_<FLAG>` (a flag wins)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from relay import redact
from relay.errors import StartupError

ENV_PREFIX = "HOOKRELAY_"
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


@dataclass
class Settings:
    config: Path = Path("config")
    listen: str = "127.0.0.1:8787"
    unix_socket: Path | None = None
    ops_listen: str | None = None
    data_dir: Path = Path("data")
    log_level: str = "info"
    log_format: str = "text"
    read_only_config: bool = False
    ingest_token: str | None = None
    fsync: str = "batch"
    max_body_bytes: int = 1_048_576
    shutdown_grace: float = 10.0
    dead_letter_retention: float = 30 * 86400.0
    deny_private_targets: bool = False
    allow_target_cidr: list[str] = field(default_factory=list)
    config_rescan_interval: float = 30.0
    segment_bytes: int = 64 * 1024 * 1024
    compact_interval: float = 30.0
    max_pending: int = 1_000_000
    max_journal_bytes: int | None = None
    receive_tolerance: float = 300.0
    ops_webhook: str | None = None
    ops_webhook_secret: str | None = None
    store: str = "local"  # or a redis:// / rediss:// URL (SPEC §10)
    store_namespace: str = "hookrelay"
    claim_idle: float | None = None  # None: the longest tenant timeout + 30
    store_min_replicas: int = 0

    def __repr__(self) -> str:
        # Tokens and secrets must never reach a log line, even through a debug repr.
        hidden = ("ingest_token", "ops_webhook_secret")
        shown = {k: ("***" if k in hidden and v else v) for k, v in self.__dict__.items()}
        shown["store"] = redact.url(self.store)  # a Redis URL may carry a password
        return f"Settings({shown})"


def parse_duration(text: str) -> float:
    """`30d`, `12h`, `15m`, `90s`, `250ms` or plain seconds."""
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30d, 12h, 15m, 90s or seconds)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def read_secret_file(path: str, flag: str) -> str:
    """The secret in `path` (trailing newline stripped), for the `*-file` flags.

    A secret on the command line is visible in `ps` and kept in shell history; a file (a
    Kubernetes Secret volume, a `chmod 600` file) is not. Raises ValueError naming the flag.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(f"{flag}: cannot read {path}: {reason}") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise ValueError(f"{flag}: {path} is empty")
    return secret


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _env(name: str) -> str | None:
    return os.environ.get(ENV_PREFIX + name.upper().replace("-", "_"))


def _env_bool(name: str) -> bool:
    return (_env(name) or "").strip().lower() in ("1", "true", "yes", "on")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    d = Settings()
    p.add_argument("--config", default=_env("config") or str(d.config), help="tenant YAML directory or file")
    p.add_argument("--listen", default=_env("listen") or d.listen, help="HOST:PORT for the API")
    p.add_argument("--unix-socket", default=_env("unix_socket"), help="also serve the API on this socket")
    p.add_argument("--ops-listen", default=_env("ops_listen"), help="HOST:PORT serving only ops endpoints")
    p.add_argument("--data-dir", default=_env("data_dir") or str(d.data_dir), help="journal directory")
    p.add_argument(
        "--log-level", default=_env("log_level") or d.log_level, choices=["debug", "info", "warning", "error"]
    )
    p.add_argument("--log-format", default=_env("log_format") or d.log_format, choices=["text", "json"])
    p.add_argument("--read-only-config", action="store_true", default=_env_bool("read_only_config"))
    token = p.add_mutually_exclusive_group()
    token.add_argument("--ingest-token", default=_env("ingest_token"), help="Bearer token required by the API")
    token.add_argument(
        "--ingest-token-file",
        default=_env("ingest_token_file"),
        metavar="PATH",
        help="read the ingest token from this file (keeps it out of ps and shell history)",
    )
    p.add_argument("--fsync", default=_env("fsync") or d.fsync, choices=["always", "batch", "never"])
    p.add_argument("--max-body-bytes", default=_env("max_body_bytes") or str(d.max_body_bytes))
    p.add_argument("--shutdown-grace", default=_env("shutdown_grace") or str(d.shutdown_grace))
    p.add_argument("--dead-letter-retention", default=_env("dead_letter_retention") or "30d")
    p.add_argument("--deny-private-targets", action="store_true", default=_env_bool("deny_private_targets"))
    p.add_argument(
        "--allow-target-cidr",
        nargs="+",
        action="extend",
        default=None,
        metavar="CIDR",
        help="networks that may be contacted even if the egress guard would refuse them",
    )
    p.add_argument(
        "--config-rescan-interval",
        default=_env("config_rescan_interval") or str(d.config_rescan_interval),
        help="seconds between periodic config rescans (the backstop of the file watcher)",
    )
    p.add_argument(
        "--receive-tolerance",
        default=_env("receive_tolerance") or str(d.receive_tolerance),
        help="seconds a /receive timestamp may be away from now before it is refused as stale (extension)",
    )
    _add_journal_arguments(p, d)
    p.add_argument("--ops-webhook", default=_env("ops_webhook"), metavar="URL", help="POST operator events here")
    p.add_argument(
        "--ops-webhook-secret",
        default=_env("ops_webhook_secret"),
        metavar="S",
        help="HMAC-SHA256 secret that signs operator events (X-Webhook-Signature)",
    )
    _add_store_arguments(p, d)


def _add_store_arguments(p: argparse.ArgumentParser, d: Settings) -> None:
    p.add_argument(
        "--store",
        default=_env("store") or d.store,
        metavar="local|redis://...",
        help="where events live: local (the journal in --data-dir) or a shared Redis (redis:// or rediss://)",
    )
    p.add_argument(
        "--store-namespace",
        default=_env("store_namespace") or d.store_namespace,
        help="prefix of every Redis key: relays with the same store and namespace share one queue",
    )
    p.add_argument(
        "--claim-idle",
        default=_env("claim_idle"),
        metavar="SECONDS",
        help="a relay's lease on an event it delivers; after it, others take the event over "
        "(default: the longest tenant timeout + 30)",
    )
    p.add_argument(
        "--store-min-replicas",
        default=_env("store_min_replicas") or "0",
        metavar="N",
        help="answer 202 only once N Redis replicas confirmed the write (WAIT)",
    )


def _add_journal_arguments(p: argparse.ArgumentParser, d: Settings) -> None:
    p.add_argument(
        "--max-pending",
        default=_env("max_pending") or str(d.max_pending),
        help="pending events beyond which ingest answers 503 queue_full",
    )
    p.add_argument(
        "--max-journal-bytes",
        default=_env("max_journal_bytes"),
        help="journal size beyond which ingest answers 503 queue_full (default: none)",
    )
    p.add_argument(
        "--segment-bytes",
        default=_env("segment_bytes") or str(d.segment_bytes),
        help="journal segment size at which a new segment starts (extension)",
    )
    p.add_argument(
        "--compact-interval",
        default=_env("compact_interval") or str(d.compact_interval),
        help="seconds between journal compactions (extension)",
    )


def _ingest_token(ns: argparse.Namespace, problems: list[str]) -> str | None:
    """--ingest-token or --ingest-token-file (argparse refuses both); a flag wins over a variable."""
    token, path = ns.ingest_token or None, ns.ingest_token_file or None
    token_is_flag = token is not None and token != _env("ingest_token")
    path_is_flag = path is not None and path != _env("ingest_token_file")
    if token is not None and path is not None:
        if token_is_flag == path_is_flag:  # both from the environment
            problems.append("set either HOOKRELAY_INGEST_TOKEN or HOOKRELAY_INGEST_TOKEN_FILE, not both")
            return None
        if token_is_flag:
            return str(token)
    if path is None:
        return token
    try:
        return read_secret_file(path, "--ingest-token-file")
    except ValueError as exc:
        problems.append(str(exc))
        return None


def settings_from_args(ns: argparse.Namespace) -> Settings:
    """Turn parsed flags into Settings; every bad value is reported, one line each."""
    problems: list[str] = []

    def num(flag: str, value: str, conv: type[int] | type[float], lo: float) -> float:
        try:
            n = conv(value)
        except ValueError:
            problems.append(f"--{flag}: expected a number, got {value!r}")
            return lo
        if n < lo:
            problems.append(f"--{flag}: must be at least {lo}")
        return n

    cidrs = ns.allow_target_cidr
    if cidrs is None:
        cidrs = [c for c in re.split(r"[,\s]+", _env("allow_target_cidr") or "") if c]
    for c in cidrs:
        try:
            ipaddress.ip_network(c, strict=False)
        except ValueError:
            problems.append(f"--allow-target-cidr: not a network: {c!r}")
    try:
        retention = parse_duration(ns.dead_letter_retention)
    except ValueError as exc:
        problems.append(f"--dead-letter-retention: {exc}")
        retention = 0.0
    for flag in ("listen", "ops_listen"):
        value = getattr(ns, flag)
        if value:
            try:
                parse_hostport(value)
            except ValueError as exc:
                problems.append(f"--{flag.replace('_', '-')}: {exc}")
    ops_url, ops_secret = ns.ops_webhook or None, ns.ops_webhook_secret or None
    if (ops_url is None) != (ops_secret is None):
        problems.append("--ops-webhook and --ops-webhook-secret go together: give both or neither")
    elif ops_url is not None:
        parts = urllib.parse.urlsplit(ops_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append("--ops-webhook: must be an http:// or https:// URL with a host")
    store = ns.store.strip()
    if store != "local" and urllib.parse.urlsplit(store).scheme not in ("redis", "rediss", "unix"):
        problems.append(f"--store: expected local, redis://... or rediss://..., got {redact.url(store)!r}")
    claim_idle = num("claim-idle", ns.claim_idle, float, 0.1) if ns.claim_idle else None
    s = Settings(
        config=Path(ns.config),
        listen=ns.listen,
        unix_socket=Path(ns.unix_socket) if ns.unix_socket else None,
        ops_listen=ns.ops_listen or None,
        data_dir=Path(ns.data_dir),
        log_level=ns.log_level,
        log_format=ns.log_format,
        read_only_config=ns.read_only_config,
        ingest_token=_ingest_token(ns, problems),
        fsync=ns.fsync,
        max_body_bytes=int(num("max-body-bytes", ns.max_body_bytes, int, 1)),
        shutdown_grace=num("shutdown-grace", ns.shutdown_grace, float, 0),
        dead_letter_retention=retention,
        deny_private_targets=ns.deny_private_targets,
        allow_target_cidr=cidrs,
        config_rescan_interval=num("config-rescan-interval", ns.config_rescan_interval, float, 0.1),
        segment_bytes=int(num("segment-bytes", ns.segment_bytes, int, 4096)),
        compact_interval=num("compact-interval", ns.compact_interval, float, 0.1),
        max_pending=int(num("max-pending", ns.max_pending, int, 1)),
        max_journal_bytes=int(num("max-journal-bytes", ns.max_journal_bytes, int, 4096))
        if ns.max_journal_bytes
        else None,
        receive_tolerance=num("receive-tolerance", ns.receive_tolerance, float, 1),
        ops_webhook=ops_url,
        ops_webhook_secret=ops_secret,
        store=store,
        store_namespace=ns.store_namespace,
        claim_idle=claim_idle,
        store_min_replicas=int(num("store-min-replicas", ns.store_min_replicas, int, 0)),
    )
    if not s.config.exists():
        # The commonest first-run mistake is starting from another directory: say where the
        # default points and how to change it, rather than only "config: no such file".
        default = (
            "" if ns.config != str(Settings().config) else " (the default, ./config, relative to the working directory)"
        )
        problems.append(
            f"--config {ns.config}: no such file or directory{default}; pass --config PATH or set HOOKRELAY_CONFIG"
        )
    if not problems and not s.ingest_token and not is_loopback(parse_hostport(s.listen)[0]):
        problems.append(
            f"--listen {s.listen} is not a loopback address: set --ingest-token (or HOOKRELAY_INGEST_TOKEN)"
        )
    if problems:
        raise StartupError(problems)
    return s
