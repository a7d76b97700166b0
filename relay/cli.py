"""Command line: argparse in, exit codes out. The only module that turns errors into exit codes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from relay import __version__
from relay.errors import StartupError

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


def _cmd_check_config(ns: argparse.Namespace) -> int:
    from relay.config import ConfigError, load_path, warnings

    try:
        snap = load_path(Path(ns.path))
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        print(f"{ns.path}: INVALID ({len(exc.problems)} problem(s))", file=sys.stderr)
        return EXIT_FAIL
    weak = warnings(snap)
    for line in weak:
        print(f"{line}{' (refused by --strict)' if ns.strict else ' (warning)'}", file=sys.stderr)
    if ns.strict and weak:
        print(f"{ns.path}: INVALID with --strict ({len(weak)} problem(s))", file=sys.stderr)
        return EXIT_FAIL
    names = ", ".join(sorted(snap.tenants)) or "none"
    print(f"{ns.path}: OK, {len(snap.tenants)} tenant(s): {names} (digest {snap.digest[:12]})")
    return EXIT_OK


def _read_input(path: str | None) -> bytes:
    if path is None or path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def _cmd_sign(ns: argparse.Namespace) -> int:
    from relay.signing import sign

    print(sign(_read_input(ns.file), ns.secret))
    return EXIT_OK


def _cmd_verify(ns: argparse.Namespace) -> int:
    from relay.signing import SignatureError, verify_signature, verify_standard_webhooks_ed25519

    if ns.public_key is None:
        ok = verify_signature(_read_input(ns.file), ns.signature, ns.secret)
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


def build_parser() -> argparse.ArgumentParser:
    from relay.settings import add_run_arguments

    p = argparse.ArgumentParser(prog="hookrelay", description="Webhook relay daemon")
    p.add_argument("--version", action="version", version=f"hookrelay {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    add_run_arguments(run)
    run.set_defaults(func=_cmd_run)

    cc = sub.add_parser("check-config", help="validate tenant YAML (exit 0 valid, 1 invalid)")
    cc.add_argument("--strict", action="store_true", help="also refuse insecure settings (tls.insecure_skip_verify)")
    cc.add_argument("path")
    cc.set_defaults(func=_cmd_check_config)

    sg = sub.add_parser("sign", help="print sha256=<hex> of FILE (stdin if absent)")
    sg.add_argument("--secret", required=True)
    sg.add_argument("file", nargs="?")
    sg.set_defaults(func=_cmd_sign)

    vf = sub.add_parser("verify", help="verify a signature (exit 0 valid, 1 invalid)")
    key = vf.add_mutually_exclusive_group(required=True)
    key.add_argument("--secret", help="HMAC secret: checks X-Webhook-Signature (sha256=<hex>)")
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
