"""Client commands of the CLI: `send`, `event get`, `dlq list|show|retry|delete|retry-all|purge`
and `endpoint enable|disable|status`, against a running daemon.

`relay.cli` calls `register(sub)`; every handler returns an exit code:
0 ok; 1 the API answered an error (`error: <code>: <message>` on stderr); 2 a usage error or the
daemon cannot be reached.

Where the daemon is: `--url URL` (default `$HOOKRELAY_URL`, else `http://127.0.0.1:8787`) or
`--unix-socket PATH`; the ingest token: `--token`, `--token-file` (default `$HOOKRELAY_INGEST_TOKEN`,
then `$HOOKRELAY_INGEST_TOKEN_FILE`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from relay.client import DEFAULT_URL, SEVERITIES, RelayClient, RelayError
from relay.delivery.ledger import parse_instant, pattern_problem
from relay.settings import parse_duration

__all__ = ["register"]

EXIT_OK, EXIT_API_ERROR, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A bad argument found after parsing (bad JSON, a header without `=`): exit 2."""


# ---- plumbing ------------------------------------------------------------------------------


def _add_connection_args(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--url",
        default=None,
        help=f"the daemon's base URL (default: $HOOKRELAY_URL or {DEFAULT_URL})",
    )
    where.add_argument("--unix-socket", default=None, metavar="PATH", help="the daemon's --unix-socket")
    token = p.add_mutually_exclusive_group()
    token.add_argument(
        "--token",
        default=None,
        help="ingest token, sent as Authorization: Bearer (default: $HOOKRELAY_INGEST_TOKEN)",
    )
    token.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help="read the ingest token from a file (default: $HOOKRELAY_INGEST_TOKEN_FILE)",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _token(ns: argparse.Namespace) -> str | None:
    """--token, --token-file, $HOOKRELAY_INGEST_TOKEN, $HOOKRELAY_INGEST_TOKEN_FILE: the first given."""
    from relay.settings import read_secret_file

    if ns.token is not None:
        return str(ns.token) or None
    path = ns.token_file
    if path is None:
        if env := os.environ.get("HOOKRELAY_INGEST_TOKEN"):
            return env
        path = os.environ.get("HOOKRELAY_INGEST_TOKEN_FILE") or None
    if path is None:
        return None
    try:
        return read_secret_file(path, "--token-file")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _client(ns: argparse.Namespace) -> RelayClient:
    token = _token(ns)
    if ns.unix_socket:
        return RelayClient(unix_socket=ns.unix_socket, token=token)
    url = ns.url or os.environ.get("HOOKRELAY_URL") or DEFAULT_URL
    try:
        return RelayClient(url, token=token)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def _run(ns: argparse.Namespace, body: Callable[[RelayClient], int]) -> int:
    """Call `body` with a client; turn errors into a message and an exit code."""
    try:
        client = _client(ns)
        return body(client)
    except UsageError as exc:
        print(f"hookrelay {ns.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RelayError as exc:
        if exc.status is None:  # no answer: daemon down, wrong URL/socket, or it timed out
            print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
            print(
                "hint: is hookrelay running? point at it with --url, --unix-socket or $HOOKRELAY_URL", file=sys.stderr
            )
            return EXIT_USAGE
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        if exc.details is not None and not ns.json:
            print(f"details: {json.dumps(exc.details)}", file=sys.stderr)
        return EXIT_API_ERROR


def _pairs(values: list[str], flag: str) -> dict[str, str] | None:
    if not values:
        return None
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _payload(text: str) -> Any:
    """`--payload`: JSON text; `@FILE` reads it from a file, `-` from stdin."""
    source = "--payload"
    if text == "-":
        text, source = sys.stdin.read(), "stdin"
    elif text.startswith("@"):
        try:
            text, source = Path(text[1:]).read_text(), text[1:]
        except OSError as exc:
            raise UsageError(f"cannot read payload file: {exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{source} is not valid JSON: {exc}") from None


# ---- send ----------------------------------------------------------------------------------


def _cmd_send(ns: argparse.Namespace) -> int:
    def body(client: RelayClient) -> int:
        payload = _payload(ns.payload)
        headers = _pairs(ns.header, "--header")
        context = _pairs(ns.context, "--context")
        answer = client.send_result(
            ns.tenant,
            ns.event_type,
            payload,
            target_url=ns.target_url,
            custom_headers=headers,
            severity=ns.severity,
            context=context,
            event_id=ns.event_id,
        )
        if ns.json:
            _print_json(answer)
        elif answer.get("duplicate"):
            print(f"duplicate {answer['event_id']} (already {answer.get('status')}; not sent again)")
        elif answer.get("status") == "filtered":
            print(f"filtered {answer['event_id']} (no enabled_events pattern of {ns.tenant} matches)")
        else:
            print(f"{answer.get('status', 'queued')} {answer['event_id']}")
        return EXIT_OK

    return _run(ns, body)


# ---- dlq -----------------------------------------------------------------------------------


def _row(item: dict[str, Any]) -> list[str]:
    event = item.get("event") if isinstance(item.get("event"), dict) else {}
    assert isinstance(event, dict)
    attempts = item.get("attempts")
    n = len(attempts) if isinstance(attempts, list) else attempts
    return [
        str(item.get("event_id") or event.get("id") or "?"),
        str(item.get("tenant_id") or event.get("tenant_id") or "?"),
        str(event.get("event_type") or "?"),
        str(n if n is not None else "?"),
        str(item.get("failed_at") or "?"),
        str(item.get("failure_reason") or ""),
    ]


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Aligned columns; the last one (a reason, an error) is left ragged."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for r in [header, *rows]:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, r[-1]]).rstrip())
    return "\n".join(lines)


DLQ_HEADER = ["EVENT ID", "TENANT", "TYPE", "ATTEMPTS", "FAILED AT", "REASON"]
ATTEMPT_HEADER = ["ROUND", "#", "AT", "STATUS", "MS", "ERROR"]


def _attempts_table(attempts: Any) -> str:
    if not isinstance(attempts, list) or not attempts:
        return "no attempts yet"
    rows = []
    for a in attempts:
        if not isinstance(a, dict):
            continue
        code = a.get("status_code")
        rows.append(
            [
                str(a.get("round", "?")),
                str(a.get("attempt", "?")),
                str(a.get("at", "?")),
                str(code) if code is not None else "-",
                f"{a['duration_ms']:g}" if isinstance(a.get("duration_ms"), int | float) else "?",
                str(a.get("error") or ""),
            ]
        )
    return _table(ATTEMPT_HEADER, rows)


def _cmd_event_get(ns: argparse.Namespace) -> int:
    def body(client: RelayClient) -> int:
        view = client.event(ns.event_id)
        if ns.json:
            _print_json(view)
            return EXIT_OK
        print(f"{view.get('event_id', ns.event_id)}  tenant {view.get('tenant_id')}  status {view.get('status')}")
        print(_attempts_table(view.get("attempts")))
        return EXIT_OK

    return _run(ns, body)


_AGO = re.compile(r"^\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*$")


def _when(text: str | None, flag: str) -> float | None:
    """`--since`/`--until`: RFC 3339, UNIX seconds, or a duration ago (`90s`, `15m`, `2h`, `7d`)."""
    if text is None:
        return None
    try:
        if _AGO.match(text):
            return time.time() - parse_duration(text)
        return parse_instant(text)
    except ValueError:
        raise UsageError(
            f"{flag}: expected RFC 3339 (2024-01-15T10:30:00Z) or a duration ago (2h), got {text!r}"
        ) from None


class _Filters(TypedDict):
    since: float | None
    until: float | None
    event_type: str | None


def _filters(ns: argparse.Namespace) -> _Filters:
    if ns.type_pattern is not None and (why := pattern_problem(ns.type_pattern)):
        raise UsageError(f"--type: {why}")
    return {"since": _when(ns.since, "--since"), "until": _when(ns.until, "--until"), "event_type": ns.type_pattern}


def _cmd_dlq_list(ns: argparse.Namespace) -> int:
    def body(client: RelayClient) -> int:
        items = client.dead_letters(ns.tenant, limit=ns.page_size, **_filters(ns))
        if ns.json:
            _print_json(items)
        elif not items:
            scope = f" for tenant {ns.tenant}" if ns.tenant else ""
            print(f"no dead letters{scope}")
        else:
            print(_table(DLQ_HEADER, [_row(i) for i in items]))
            print(f"{len(items)} dead letter(s)")
        return EXIT_OK

    return _run(ns, body)


def _cmd_dlq_show(ns: argparse.Namespace) -> int:
    def body(client: RelayClient) -> int:
        item = client.dead_letter(ns.event_id)
        if ns.json:
            _print_json(item)
            return EXIT_OK
        event = item.get("event") if isinstance(item.get("event"), dict) else {}
        assert isinstance(event, dict)
        print(f"event:    {item.get('event_id', ns.event_id)}")
        print(f"tenant:   {item.get('tenant_id')}")
        print(f"type:     {event.get('event_type', '?')}")
        print(f"failed:   {item.get('failed_at')}: {item.get('failure_reason')}")
        retry = "yes" if item.get("can_retry") else "no (its tenant is not configured)"
        print(f"can retry: {retry}")
        print(_attempts_table(item.get("attempts")))
        print("envelope:")
        print(json.dumps(event, indent=2))
        return EXIT_OK

    return _run(ns, body)


def _cmd_dlq_retry(ns: argparse.Namespace) -> int:
    def body(client: RelayClient) -> int:
        answer = client.retry(ns.event_id)
        if ns.json:
            _print_json(answer)
        else:
            print(f"requeued {answer.get('event_id', ns.event_id)}")
        return EXIT_OK

    return _run(ns, body)


def _cmd_dlq_delete(ns: argparse.Namespace) -> int:
    def body(client: RelayClient) -> int:
        client.delete_dead_letter(ns.event_id)
        if ns.json:
            _print_json({"purged": 1, "event_id": ns.event_id})
        else:
            print(f"deleted {ns.event_id}")
        return EXIT_OK

    return _run(ns, body)


def _scope(ns: argparse.Namespace) -> str | None:
    """The tenant to act on, or None for all; acting on all needs --all, said out loud."""
    if ns.tenant is None and not ns.all:
        raise UsageError("name the dead letters: --tenant T, or --all for every tenant's")
    return str(ns.tenant) if ns.tenant else None


def _dry_run(client: RelayClient, ns: argparse.Namespace, tenant: str | None, verb: str) -> int:
    items = client.dead_letters(tenant, **_filters(ns))
    if ns.json:
        _print_json({"dry_run": True, "matched": len(items), "event_ids": [i.get("event_id") for i in items]})
        return EXIT_OK
    if items:
        print(_table(DLQ_HEADER, [_row(i) for i in items]))
    scope = f" of tenant {tenant}" if tenant else ""
    print(f"would {verb} {len(items)} dead letter(s){scope} (dry run: nothing changed)")
    return EXIT_OK


def _cmd_dlq_retry_all(ns: argparse.Namespace) -> int:
    def body(client: RelayClient) -> int:
        tenant = _scope(ns)
        if ns.dry_run:
            return _dry_run(client, ns, tenant, "requeue")
        n = client.retry_matching(tenant, **_filters(ns))
        if ns.json:
            _print_json({"requeued": n})
        else:
            scope = f" of tenant {tenant}" if tenant else ""
            print(f"requeued {n} dead letter(s){scope}")
        return EXIT_OK

    return _run(ns, body)


def _cmd_dlq_purge(ns: argparse.Namespace) -> int:
    def body(client: RelayClient) -> int:
        tenant = _scope(ns)
        if ns.dry_run:
            return _dry_run(client, ns, tenant, "delete")
        if not ns.yes:
            n = len(client.dead_letters(tenant, **_filters(ns)))
            scope = f" of tenant {tenant}" if tenant else " (every tenant's)"
            raise UsageError(f"this deletes {n} dead letter(s){scope} for good: add --yes, or --dry-run to list them")
        n = client.purge_matching(tenant, **_filters(ns))
        if ns.json:
            _print_json({"purged": n})
        else:
            scope = f" of tenant {tenant}" if tenant else ""
            print(f"purged {n} dead letter(s){scope}")
        return EXIT_OK

    return _run(ns, body)


# ---- endpoint ------------------------------------------------------------------------------


def _cmd_endpoint(ns: argparse.Namespace) -> int:
    def body(client: RelayClient) -> int:
        if ns.endpoint_command == "status":
            m = client.tenant_metrics(ns.tenant)
        else:
            m = client.set_endpoint(ns.tenant, ns.endpoint_command == "enable")
        view = {k: m.get(k) for k in ("endpoint_state", "endpoint_state_since", "endpoint_state_reason")}
        if ns.json:
            _print_json({"tenant_id": ns.tenant, **view, **{k: m[k] for k in ("pending_events",) if k in m}})
            return EXIT_OK
        state, since, why = view["endpoint_state"], view["endpoint_state_since"], view["endpoint_state_reason"]
        print(f"{ns.tenant}: {state} since {since} ({why})")
        if "pending_events" in m:
            held = " (held)" if view["endpoint_state"] == "disabled" else ""
            print(f"pending events: {m['pending_events']}{held}; dead letters: {m.get('dead_letter_count')}")
        return EXIT_OK

    return _run(ns, body)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError("must be between 1 and 1000")
    return value


# ---- registration --------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `send` and `dlq` to the `hookrelay` parser's subcommands."""
    send = sub.add_parser(
        "send",
        help="publish one event to a running daemon",
        description="Publish one event. Prints `queued <event_id>` (or the JSON answer with --json).",
    )
    send.add_argument("--tenant", required=True, help="tenant_id")
    send.add_argument("--type", dest="event_type", required=True, metavar="EVENT_TYPE", help="event_type")
    send.add_argument("--payload", required=True, help="JSON payload; @FILE reads a file, - reads stdin")
    send.add_argument("--severity", choices=SEVERITIES, help="default: Medium")
    send.add_argument("--event-id", help="idempotency key (default: a generated evt_ id)")
    send.add_argument("--target-url", help="deliver to this URL instead of the tenant's base_url")
    send.add_argument("--header", action="append", default=[], metavar="K=V", help="custom header (repeat)")
    send.add_argument("--context", action="append", default=[], metavar="K=V", help="context entry (repeat)")
    _add_connection_args(send)
    send.set_defaults(func=_cmd_send)

    ev = sub.add_parser("event", help="look up an event of a running daemon")
    esub = ev.add_subparsers(dest="event_command", metavar="ACTION")
    eg = esub.add_parser("get", help="status and attempts of an event")
    eg.add_argument("event_id", metavar="EVENT_ID")
    _add_connection_args(eg)
    eg.set_defaults(func=_cmd_event_get)
    ev.set_defaults(func=_usage(ev))

    dlq = sub.add_parser("dlq", help="inspect and replay the dead-letter queue of a running daemon")
    dsub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION")
    dlq.set_defaults(func=_usage(dlq))

    ls = dsub.add_parser("list", help="list dead letters, oldest first")
    ls.add_argument("--tenant", help="only this tenant's")
    ls.add_argument(
        "--page-size", type=_positive, default=100, help="dead letters fetched per request (all are listed)"
    )
    _add_filter_args(ls)
    _add_connection_args(ls)
    ls.set_defaults(func=_cmd_dlq_list)

    sh = dsub.add_parser("show", help="one dead letter: reason, every attempt, the envelope")
    sh.add_argument("event_id", metavar="EVENT_ID")
    _add_connection_args(sh)
    sh.set_defaults(func=_cmd_dlq_show)

    rt = dsub.add_parser("retry", help="requeue one dead letter")
    rt.add_argument("event_id", metavar="EVENT_ID")
    _add_connection_args(rt)
    rt.set_defaults(func=_cmd_dlq_retry)

    dl = dsub.add_parser("delete", help="delete one dead letter")
    dl.add_argument("event_id", metavar="EVENT_ID")
    _add_connection_args(dl)
    dl.set_defaults(func=_cmd_dlq_delete)

    ra = dsub.add_parser("retry-all", help="requeue every dead letter of one tenant (--tenant) or all (--all)")
    _add_scope_args(ra)
    _add_connection_args(ra)
    ra.set_defaults(func=_cmd_dlq_retry_all)

    pg = dsub.add_parser("purge", help="delete every dead letter of one tenant (--tenant) or all (--all); needs --yes")
    _add_scope_args(pg)
    pg.add_argument("--yes", action="store_true", help="really delete (without it, purge only says what it would do)")
    _add_connection_args(pg)
    pg.set_defaults(func=_cmd_dlq_purge)

    ep = sub.add_parser("endpoint", help="see, disable or enable a tenant's endpoint on a running daemon")
    esub2 = ep.add_subparsers(dest="endpoint_command", metavar="ACTION")
    ep.set_defaults(func=_usage(ep))
    for action, text in (
        ("status", "the endpoint's state (enabled, failing, disabled), since when and why"),
        ("disable", "hold the tenant's deliveries (new events are kept, nothing is attempted)"),
        ("enable", "release held deliveries, oldest first"),
    ):
        a = esub2.add_parser(action, help=text)
        a.add_argument("tenant", metavar="TENANT")
        _add_connection_args(a)
        a.set_defaults(func=_cmd_endpoint)


def _add_scope_args(p: argparse.ArgumentParser) -> None:
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--tenant", help="only this tenant's")
    scope.add_argument("--all", action="store_true", help="every tenant's")
    p.add_argument("--dry-run", action="store_true", help="list what would be done, change nothing")
    _add_filter_args(p)


def _add_filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", metavar="D", help="failed at or after D: RFC 3339, or a duration ago (2h, 7d)")
    p.add_argument("--until", metavar="D", help="failed at or before D: RFC 3339, or a duration ago")
    p.add_argument("--type", dest="type_pattern", metavar="PATTERN", help="event type: exact, or 'order.*'")


def _usage(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """`hookrelay dlq` alone: print the actions (help) on stderr, exit 2."""

    def show(ns: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return EXIT_USAGE

    return show
