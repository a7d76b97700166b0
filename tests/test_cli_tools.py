"""The client-side CLI end to end: `send`, `sign`, `verify`, `dlq ...` as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.signing import sign
from tests.support import REPO, Daemon, Received, Reply, Sink, free_port, write_tenant


def hookrelay(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKRELAY_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "relay", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        cwd=str(REPO),
        env=full_env,
    )
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def _responder(n: int, r: Received) -> Reply:
    return Reply(status=500) if r.path.startswith("/fail") else Reply()


@pytest.fixture(scope="module")
def cli_sink() -> Iterator[Sink]:
    s = Sink()
    s.responder = _responder
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def daemon(cli_sink: Sink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("cli")
    write_tenant(tmp / "config", "acme", cli_sink.url + "/acme")
    write_tenant(tmp / "config", "broken", cli_sink.url + "/fail/broken", retry_policy={"max_retries": 0})
    write_tenant(tmp / "config", "broken2", cli_sink.url + "/fail/broken2", retry_policy={"max_retries": 0})
    d = Daemon(tmp, args=["--unix-socket", str(tmp / "r.sock")])
    d.start()
    yield d
    d.__exit__(None, None, None)


def make_dead(d: Daemon, tenant: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        status, body = d.send(tenant, "user.created", {"i": i})
        assert status == 202, body
        ids.append(body["event_id"])
    for eid in ids:
        d.wait_status(eid, "dead")
    return ids


# ---- send ----------------------------------------------------------------------------------


def test_send_text(daemon: Daemon, cli_sink: Sink) -> None:
    r = hookrelay(
        "send",
        "--url",
        daemon.url,
        "--tenant",
        "acme",
        "--type",
        "user.created",
        "--payload",
        '{"user_id": 42}',
        "--severity",
        "High",
        "--header",
        "X-Trace=abc=def",
        "--context",
        "source=cli",
    )
    assert r.returncode == 0, r.stderr
    word, eid = r.stdout.split()
    assert word == "queued"
    assert eid.startswith("evt_")
    got = cli_sink.wait_event(eid)
    body = got.json()
    assert body["payload"] == {"user_id": 42}
    assert body["severity"] == "High"
    assert body["context"] == {"source": "cli"}
    assert got.headers["X-Trace"] == "abc=def"


def test_send_json_over_socket_with_event_id_and_env(daemon: Daemon, cli_sink: Sink) -> None:
    args = ["send", "--unix-socket", str(daemon.tmp / "r.sock"), "--json", "--tenant", "acme", "--type", "a.b"]
    r = hookrelay(*args, "--payload", "[1, 2]", "--event-id", "cli-evt-1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"event_id": "cli-evt-1", "status": "queued"}
    assert cli_sink.wait_event("cli-evt-1").json()["payload"] == [1, 2]
    # the same id again: a duplicate, still exit 0
    r = hookrelay(*args, "--payload", "[1, 2]", "--event-id", "cli-evt-1")
    assert r.returncode == 0
    assert json.loads(r.stdout)["duplicate"] is True
    # the URL from HOOKRELAY_URL, the payload from stdin
    r = hookrelay(
        "send", "--tenant", "acme", "--type", "a.b", "--payload", "-", stdin=b'{"from": "stdin"}',
        env={"HOOKRELAY_URL": daemon.url},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert cli_sink.wait_event(r.stdout.split()[1]).json()["payload"] == {"from": "stdin"}


def test_send_unknown_tenant_exits_1(daemon: Daemon) -> None:
    r = hookrelay("send", "--url", daemon.url, "--tenant", "ghost", "--type", "x", "--payload", "{}")
    assert r.returncode == 1
    assert r.stderr.startswith("error: tenant_not_found: ")
    assert r.stdout == ""
    r = hookrelay("send", "--url", daemon.url, "--tenant", "acme", "--type", "x", "--payload", "{}", "--json",
                  "--header", "Content-Type=text/plain")  # fmt: skip
    assert r.returncode == 1
    assert "error: invalid_field: " in r.stderr


def test_send_usage_errors_exit_2(daemon: Daemon) -> None:
    base = ["send", "--url", daemon.url, "--tenant", "acme", "--type", "x"]
    r = hookrelay(*base, "--payload", "{not json")
    assert r.returncode == 2
    assert "not valid JSON" in r.stderr
    r = hookrelay(*base, "--payload", "{}", "--header", "NoEquals")
    assert r.returncode == 2
    assert "KEY=VALUE" in r.stderr
    r = hookrelay("send", "--tenant", "acme")  # missing --type/--payload: argparse
    assert r.returncode == 2
    r = hookrelay(*base, "--payload", "{}", "--unix-socket", "/tmp/x.sock")  # --url and --unix-socket
    assert r.returncode == 2


def test_unreachable_daemon_exits_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    r = hookrelay("send", "--url", url, "--tenant", "acme", "--type", "x", "--payload", "{}")
    assert r.returncode == 2
    assert "connection_error" in r.stderr
    assert url in r.stderr
    r = hookrelay("dlq", "list", "--url", url)
    assert r.returncode == 2
    r = hookrelay("dlq", "purge", "--all", "--yes", "--unix-socket", "/nonexistent/hookrelay.sock")
    assert r.returncode == 2
    assert "/nonexistent/hookrelay.sock" in r.stderr
    assert time.monotonic() - t0 < 15


def test_token_from_flag_and_env(cli_sink: Sink, tmp_path: Path) -> None:
    write_tenant(tmp_path / "config", "acme", cli_sink.url + "/acme")
    with Daemon(tmp_path, args=["--ingest-token", "tok"]) as d:
        d.start()
        base = ["send", "--url", d.url, "--tenant", "acme", "--type", "x", "--payload", "{}"]
        r = hookrelay(*base)
        assert r.returncode == 1
        assert r.stderr.startswith("error: unauthorized: ")
        assert hookrelay(*base, "--token", "tok").returncode == 0
        r = hookrelay(*base, env={"HOOKRELAY_INGEST_TOKEN": "tok"})
        assert r.returncode == 0, r.stderr
        assert hookrelay("dlq", "list", "--url", d.url, env={"HOOKRELAY_INGEST_TOKEN": "tok"}).returncode == 0


# ---- sign / verify -------------------------------------------------------------------------


def test_sign_stdin_and_file(tmp_path: Path) -> None:
    body = b'{"id":"evt_1","payload":{"a":1}}'
    r = hookrelay("sign", "--secret", "k", stdin=body)
    assert r.returncode == 0
    assert r.stdout.strip() == sign(body, "k")
    f = tmp_path / "body.json"
    f.write_bytes(body)
    r = hookrelay("sign", "--secret", "k", str(f))
    assert r.returncode == 0
    assert r.stdout.strip() == sign(body, "k")


def test_verify_exit_codes(tmp_path: Path) -> None:
    body = b'{"id":"evt_1"}'
    good = sign(body, "k")
    f = tmp_path / "body.json"
    f.write_bytes(body)
    assert hookrelay("verify", "--secret", "k", "--signature", good, stdin=body).returncode == 0
    assert hookrelay("verify", "--secret", "k", "--signature", good, str(f)).returncode == 0
    rotated = f"{sign(body, 'old')},{good}"
    assert hookrelay("verify", "--secret", "k", "--signature", rotated, str(f)).returncode == 0
    bad = hookrelay("verify", "--secret", "other", "--signature", good, str(f))
    assert bad.returncode == 1
    assert "invalid" in bad.stderr
    assert hookrelay("verify", "--secret", "k", "--signature", good, stdin=body + b"x").returncode == 1


# ---- dlq -----------------------------------------------------------------------------------


def test_dlq_list_retry_retry_all_purge(daemon: Daemon, cli_sink: Sink) -> None:
    ids = make_dead(daemon, "broken", 2)
    other = make_dead(daemon, "broken2", 1)
    url = ["--url", daemon.url]

    r = hookrelay("dlq", "list", "--tenant", "broken", *url)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["EVENT", "ID", "TENANT", "TYPE"]
    for eid in ids:
        row = next(line for line in lines if line.startswith(eid))
        cells = row.split()
        assert cells[1:4] == ["broken", "user.created", "1"]
        assert "500" in row  # the reason names the last answer
    assert other[0] not in r.stdout
    assert "2 dead letter(s)" in r.stdout

    r = hookrelay("dlq", "list", "--json", "--page-size", "1", *url)
    assert r.returncode == 0, r.stderr
    items: list[dict[str, Any]] = json.loads(r.stdout)
    assert {i["event"]["id"] for i in items} == {*ids, *other}
    assert all(i["failure_reason"] and i["failed_at"] for i in items)

    r = hookrelay("dlq", "retry", ids[0], *url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"requeued {ids[0]}"
    daemon.wait_status(ids[0], "dead")
    r = hookrelay("dlq", "retry", "evt_not_dead", *url)
    assert r.returncode == 1
    assert r.stderr.startswith("error: not_dead_lettered: ")

    r = hookrelay("dlq", "retry-all", "--tenant", "broken", "--json", *url)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"requeued": 2}
    for eid in ids:
        daemon.wait_status(eid, "dead")

    r = hookrelay("dlq", "purge", "--tenant", "broken", "--yes", *url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "purged 2 dead letter(s) of tenant broken"
    r = hookrelay("dlq", "list", "--tenant", "broken", *url)
    assert r.stdout.strip() == "no dead letters for tenant broken"
    r = hookrelay("dlq", "purge", "--all", "--yes", "--json", "--unix-socket", str(daemon.tmp / "r.sock"))
    assert json.loads(r.stdout) == {"purged": 1}  # broken2's
    r = hookrelay("dlq", "list", "--json", *url)
    assert json.loads(r.stdout) == []


def test_dlq_show_delete_and_event_get(daemon: Daemon, cli_sink: Sink) -> None:
    (eid,) = make_dead(daemon, "broken", 1)
    url = ["--url", daemon.url]

    r = hookrelay("dlq", "show", eid, *url)
    assert r.returncode == 0, r.stderr
    assert f"event:    {eid}" in r.stdout
    assert "tenant:   broken" in r.stdout and "type:     user.created" in r.stdout
    assert "can retry: yes" in r.stdout
    header, row = next(
        (lines[i], lines[i + 1])
        for lines in [r.stdout.splitlines()]
        for i, line in enumerate(lines)
        if line.startswith("ROUND")
    )
    assert header.split()[:4] == ["ROUND", "#", "AT", "STATUS"]
    assert row.split()[:2] == ["1", "1"] and row.split()[3] == "500"  # round 1, attempt 1 got a 500
    assert '"event_type": "user.created"' in r.stdout  # the envelope
    item = json.loads(hookrelay("dlq", "show", eid, "--json", *url).stdout)
    assert item["event"]["id"] == eid and item["failure_reason"]

    r = hookrelay("event", "get", eid, *url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split() == [eid, "tenant", "broken", "status", "dead"]
    view = json.loads(hookrelay("event", "get", eid, "--json", *url).stdout)
    assert view["status"] == "dead" and len(view["attempts"]) == 1

    r = hookrelay("dlq", "delete", eid, *url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"deleted {eid}"
    r = hookrelay("dlq", "show", eid, *url)
    assert r.returncode == 1 and "not_dead_lettered" in r.stderr
    assert hookrelay("dlq", "delete", eid, *url).returncode == 1
    r = hookrelay("event", "get", "evt_never_seen", *url)
    assert r.returncode == 1 and r.stderr.startswith("error: event_not_found: ")


def test_retry_of_a_delivered_event_says_delivered(daemon: Daemon, cli_sink: Sink) -> None:
    status, body = daemon.send("acme", "user.created", {})
    assert status == 202
    daemon.wait_status(body["event_id"], "delivered")
    r = hookrelay("dlq", "retry", body["event_id"], "--url", daemon.url)
    assert r.returncode == 1
    assert "is delivered, not in the dead-letter queue" in r.stderr
    assert '"status": "delivered"' in r.stderr  # details


def test_bulk_dlq_actions_need_a_scope_and_purge_needs_yes(daemon: Daemon, cli_sink: Sink) -> None:
    ids = make_dead(daemon, "broken2", 2)
    url = ["--url", daemon.url]
    for action in ("retry-all", "purge"):
        r = hookrelay("dlq", action, *url)
        assert r.returncode == 2
        assert "--tenant T, or --all" in r.stderr
    r = hookrelay("dlq", "purge", "--tenant", "broken2", *url)
    assert r.returncode == 2
    assert "this deletes 2 dead letter(s) of tenant broken2 for good: add --yes" in r.stderr

    r = hookrelay("dlq", "purge", "--all", "--dry-run", *url)
    assert r.returncode == 0, r.stderr
    assert all(eid in r.stdout for eid in ids)
    assert "would delete" in r.stdout and "dry run: nothing changed" in r.stdout
    r = hookrelay("dlq", "retry-all", "--tenant", "broken2", "--dry-run", "--json", *url)
    assert json.loads(r.stdout)["matched"] == 2
    for eid in ids:  # the dry runs changed nothing
        assert daemon.request("GET", f"/api/v1/webhooks/events/{eid}")[1]["status"] == "dead"
    assert hookrelay("dlq", "purge", "--tenant", "broken2", "--yes", *url).returncode == 0


def test_help_lists_client_commands() -> None:
    r = hookrelay("--help")
    assert r.returncode == 0
    for cmd in ("send", "sign", "verify", "dlq", "event", "check-config"):
        assert cmd in r.stdout
    r = hookrelay("dlq", "--help")
    for action in ("list", "show", "retry", "delete", "retry-all", "purge"):
        assert action in r.stdout
    r = hookrelay("dlq")  # alone: the actions, not just "required: ACTION"
    assert r.returncode == 2
    for action in ("list", "show", "retry", "delete", "retry-all", "purge"):
        assert f"    {action}" in r.stderr


def test_secret_and_token_files(cli_sink: Sink, tmp_path: Path) -> None:
    body = b'{"id":"evt_1"}'
    secret_file = tmp_path / "secret"
    secret_file.write_text("k\n")  # the trailing newline of `echo k > file` is not part of it
    r = hookrelay("sign", "--secret-file", str(secret_file), stdin=body)
    assert r.returncode == 0 and r.stdout.strip() == sign(body, "k")
    r = hookrelay("sign", stdin=body, env={"HOOKRELAY_SECRET": "k"})
    assert r.stdout.strip() == sign(body, "k")
    r = hookrelay("sign", stdin=body, env={"HOOKRELAY_SECRET_FILE": str(secret_file)})
    assert r.stdout.strip() == sign(body, "k")
    args = ("verify", "--secret-file", str(secret_file), "--signature", sign(body, "k"))
    assert hookrelay(*args, stdin=body).returncode == 0
    r = hookrelay("sign", stdin=body)
    assert r.returncode == 2 and "--secret-file" in r.stderr
    r = hookrelay("sign", "--secret-file", str(tmp_path / "missing"), stdin=body)
    assert r.returncode == 2 and "--secret-file: cannot read" in r.stderr

    token_file = tmp_path / "token"
    token_file.write_text("t0k3n-from-file\n")
    write_tenant(tmp_path / "config", "acme", cli_sink.url + "/acme")
    with Daemon(tmp_path, args=["--ingest-token-file", str(token_file)]) as d:
        d.start()
        base = ["send", "--url", d.url, "--tenant", "acme", "--type", "x", "--payload", "{}"]
        assert hookrelay(*base).returncode == 1  # the daemon did read the token: no token is 401
        r = hookrelay(*base, "--token-file", str(token_file))
        assert r.returncode == 0, r.stderr
        r = hookrelay(*base, env={"HOOKRELAY_INGEST_TOKEN_FILE": str(token_file)})
        assert r.returncode == 0, r.stderr
        assert "t0k3n-from-file" not in d.logs()


def test_run_names_config_flag_when_default_is_missing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "relay", "run"],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=20,
        env={k: v for k, v in os.environ.items() if not k.startswith("HOOKRELAY_")},
    )
    assert proc.returncode == 2
    assert "--config config: no such file or directory (the default, ./config" in proc.stderr
    assert "HOOKRELAY_CONFIG" in proc.stderr


# ---- check-config --------------------------------------------------------------------------


def test_check_config_prints_retry_windows_and_warns_under_five_minutes(tmp_path: Path) -> None:
    write_tenant(tmp_path / "c", "defaults", "https://example.com/hook")
    write_tenant(
        tmp_path / "c",
        "patient",
        "https://example.com/hook",
        retry_policy={"max_retries": 12, "initial_delay_seconds": 5, "max_delay_seconds": 600},
    )
    r = hookrelay("check-config", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    assert "defaults: retry window 31 s over 6 attempts (retries after 1, 2, 4, 8, 16 s" in r.stdout
    # 5+10+...+320 = 635, then 600 x 5 = 3000: 3635 s
    assert (
        "patient: retry window 60.6 min over 13 attempts "
        "(retries after 5, 10, 20, 40, 80, 160, 320, 600 s, then 4 more of up to 600 s, each drawn from [d/2, d])"
    ) in r.stdout
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: defaults: the retry window (31 s) is under 5 min")
    assert "max_delay_seconds 300 is never reached" in warnings[0]
    # advice, not a weakness: --strict (insecure settings) does not refuse it
    assert hookrelay("check-config", "--strict", str(tmp_path / "c")).returncode == 0


def test_check_config_allow_unset_env(tmp_path: Path) -> None:
    f = tmp_path / "acme.yaml"
    f.write_text(
        "tenant_id: acme\nbase_url: https://example.com/hook\nsecret_key: ${ACME_SECRET}\n"
        "retry_policy: {max_retries: 20, max_delay_seconds: 3600}\n"
    )
    r = hookrelay("check-config", str(f))
    assert r.returncode == 1
    assert "environment variable ACME_SECRET is not set (hookrelay reads variables at start-up" in r.stderr
    r = hookrelay("check-config", "--allow-unset-env", str(f))
    assert r.returncode == 0, r.stderr
    assert f"note: {f}: secret_key: environment variable ACME_SECRET is not set (placeholder used)" in r.stdout
    assert r.stderr == ""  # a long enough window: no warning
    r = hookrelay("check-config", "--allow-unset-env", str(f), env={"ACME_SECRET": "s"})
    assert "note:" not in r.stdout
