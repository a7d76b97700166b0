"""Command line: argparse in, exit codes out. The only module that turns errors into exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from relay import __version__
from relay.errors import StartupError

if TYPE_CHECKING:
    from relay.config import RetryPolicy

EXIT_OK, EXIT_FAIL, EXIT_STARTUP = 0, 1, 2


def _cmd_run(ns: argparse.Namespace) -> int:
    import uvloop

    from relay.daemon import run
    from relay.logs import setup_logging
    from relay.settings import settings_from_args

    try:
        settings = settings_from_args(ns)
    except StartupError as exc:
        for line in exc.problems:
            print(f"hookrelay: {line}", file=sys.stderr)
        return EXIT_STARTUP
    setup_logging(settings.log_level, settings.log_format)
    try:
        return int(uvloop.run(run(settings)))
    except StartupError as exc:
        for line in exc.problems:
            print(f"hookrelay: {line}", file=sys.stderr)
        return EXIT_STARTUP


# A receiver that is down for a deploy or a restart should not dead-letter everything: below this
# window check-config warns (SPEC's defaults give 31 s).
SHORT_RETRY_WINDOW = 300.0


def _seconds(value: float) -> str:
    """31 s, 5.5 min, 2 h, 3.1 d: a duration as a person reads it."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if value >= 2 * size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.3g} s"


def retry_summary(policy: RetryPolicy) -> tuple[str, float]:
    """(`retry window 31 s over 6 attempts (retries after 1, 2, 4, 8, 16 s ...)`, window seconds).

    The window is the sum of the un-jittered delays: the longest a failing event is retried
    before it is dead-lettered, not counting the attempts' own time (up to timeout_seconds each).
    """
    n = policy.max_retries
    window = policy.schedule_seconds()
    if n == 0:
        return "no retries: one attempt, then the dead-letter queue", 0.0
    shown = [policy.base_delay(i) for i in range(1, min(n, 8) + 1)]
    delays = ", ".join(f"{d:g}" for d in shown) + " s"
    if n > len(shown):
        delays += f", then {n - len(shown)} more of up to {policy.max_delay_seconds:g} s"
    jitter = ", each drawn from [d/2, d]" if policy.jitter else ""
    return f"retry window {_seconds(window)} over {n + 1} attempts (retries after {delays}{jitter})", window


def _cmd_check_config(ns: argparse.Namespace) -> int:
    from relay.config import ConfigError, load_path, warnings

    try:
        snap = load_path(Path(ns.path), allow_unset_env=ns.allow_unset_env)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        print(f"{ns.path}: INVALID ({len(exc.problems)} problem(s))", file=sys.stderr)
        return EXIT_FAIL
    for line in snap.notes:
        print(f"note: {line}")
    for tid in sorted(snap.tenants):
        policy = snap.tenants[tid].retry_policy
        summary, window = retry_summary(policy)
        print(f"{tid}: {summary}")
        if window < SHORT_RETRY_WINDOW:
            # Advice, not a weakness: --strict (which refuses insecure settings) does not fail on it.
            cap = policy.max_delay_seconds
            unused = policy.base_delay(policy.max_retries) < cap and policy.max_retries > 0
            print(
                f"warning: {tid}: the retry window ({_seconds(window)}) is under {_seconds(SHORT_RETRY_WINDOW)}: "
                "an endpoint down for longer (a deploy, a restart) gets its events dead-lettered; "
                "raise retry_policy.max_retries or initial_delay_seconds"
                + (f" (max_delay_seconds {cap:g} is never reached)" if unused else ""),
                file=sys.stderr,
            )
    weak = warnings(snap)
    for line in weak:
        print(f"{line}{' (refused by --strict)' if ns.strict else ' (warning)'}", file=sys.stderr)
    if ns.strict and weak:
        print(f"{ns.path}: INVALID with --strict ({len(weak)} problem(s))", file=sys.stderr)
        return EXIT_FAIL
    names = ", ".join(sorted(snap.tenants)) or "none"
    types_ = f", {len(snap.catalog.types)} event type(s)" if snap.catalog.types else ""
    print(f"{ns.path}: OK, {len(snap.tenants)} tenant(s): {names}{types_} (digest {snap.digest[:12]})")
    return EXIT_OK


def _read_input(path: str | None) -> bytes:
    if path is None or path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def _secret(ns: argparse.Namespace) -> str | None:
    """--secret, --secret-file, or $HOOKRELAY_SECRET / $HOOKRELAY_SECRET_FILE (a flag wins)."""
    from relay.settings import read_secret_file

    if ns.secret:
        return str(ns.secret)
    path = ns.secret_file or os.environ.get("HOOKRELAY_SECRET_FILE")
    if not ns.secret_file and os.environ.get("HOOKRELAY_SECRET"):
        return os.environ["HOOKRELAY_SECRET"]
    if path:
        try:
            return read_secret_file(path, "--secret-file")
        except ValueError as exc:
            print(f"hookrelay {ns.command}: {exc}", file=sys.stderr)
            return None
    print(
        f"hookrelay {ns.command}: give the secret with --secret-file PATH, $HOOKRELAY_SECRET or --secret S",
        file=sys.stderr,
    )
    return None


def _cmd_sign(ns: argparse.Namespace) -> int:
    from relay.signing import sign

    secret = _secret(ns)
    if secret is None:
        return EXIT_STARTUP
    print(sign(_read_input(ns.file), secret))
    return EXIT_OK


def _cmd_verify(ns: argparse.Namespace) -> int:
    from relay.signing import SignatureError, verify_signature, verify_standard_webhooks_ed25519

    if ns.public_key is None:
        secret = _secret(ns)
        if secret is None:
            return EXIT_STARTUP
        ok = verify_signature(_read_input(ns.file), ns.signature, secret)
    elif ns.id is None or ns.timestamp is None:
        print(
            "hookrelay verify: --public-key needs --id and --timestamp (webhook-id, webhook-timestamp)", file=sys.stderr
        )
        return EXIT_STARTUP
    else:
        try:
            ok = verify_standard_webhooks_ed25519(
                ns.id, ns.timestamp, _read_input(ns.file), ns.signature, ns.public_key
            )
        except SignatureError as exc:
            print(f"hookrelay verify: --public-key: {exc}", file=sys.stderr)
            return EXIT_STARTUP
    print("valid" if ok else "invalid", file=sys.stdout if ok else sys.stderr)
    return EXIT_OK if ok else EXIT_FAIL


def _cmd_journal_check(ns: argparse.Namespace) -> int:
    from relay.journal import check

    report = check(Path(ns.data_dir))
    print(report.format())
    return EXIT_OK if report.ok else EXIT_FAIL


def _add_secret_args(p: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """--secret or --secret-file (or, neither given, $HOOKRELAY_SECRET / $HOOKRELAY_SECRET_FILE)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--secret", metavar="S", help="the tenant's secret_key (visible in ps: prefer --secret-file)")
    g.add_argument("--secret-file", metavar="PATH", help="read the secret from a file, trailing newline stripped")
    return g


def build_parser() -> argparse.ArgumentParser:
    from relay.settings import add_run_arguments

    p = argparse.ArgumentParser(prog="hookrelay", description="Webhook relay daemon")
    p.add_argument("--version", action="version", version=f"hookrelay {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    add_run_arguments(run)
    run.set_defaults(func=_cmd_run)

    cc = sub.add_parser(
        "check-config",
        help="validate tenant YAML (exit 0 valid, 1 invalid)",
        description="Validate tenant YAML: every problem names the file and key path (exit 1). Prints each "
        "tenant's retry window and warns when it is under 5 minutes.",
    )
    cc.add_argument("--strict", action="store_true", help="also refuse insecure settings (tls.insecure_skip_verify)")
    cc.add_argument(
        "--allow-unset-env",
        action="store_true",
        help="an unset ${VAR} is a placeholder reported as a note, not an error (for CI without the secrets)",
    )
    cc.add_argument("path", metavar="PATH", help="a directory of *.yaml/*.yml, or one file")
    cc.set_defaults(func=_cmd_check_config)

    sg = sub.add_parser("sign", help="print sha256=<hex> of FILE (stdin if absent)")
    _add_secret_args(sg)
    sg.add_argument("file", nargs="?")
    sg.set_defaults(func=_cmd_sign)

    vf = sub.add_parser("verify", help="verify a signature (exit 0 valid, 1 invalid)")
    key = _add_secret_args(vf)
    key.add_argument("--public-key", help="whpk_<base64>: checks the v1a (Ed25519) entries of webhook-signature")
    vf.add_argument("--signature", required=True)
    vf.add_argument("--id", help="webhook-id header value (with --public-key)")
    vf.add_argument("--timestamp", help="webhook-timestamp header value (with --public-key)")
    vf.add_argument("file", nargs="?")
    vf.set_defaults(func=_cmd_verify)

    jr = sub.add_parser("journal", help="journal tools")
    jsub = jr.add_subparsers(dest="journal_command", metavar="ACTION", required=True)
    jc = jsub.add_parser("check", help="offline check: counts, pending, dead, corrupt (exit 1 on corruption)")
    jc.add_argument("--data-dir", default="data")
    jc.set_defaults(func=_cmd_journal_check)

    from relay.cli_client import register

    register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if getattr(ns, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_STARTUP
    code: int = ns.func(ns)
    return code
