"""The README's quick start and "Your first tenant", run as a newcomer would run them.

The commands are taken from the README's shell blocks and run as they are written, from a
directory laid out like a clone (`.venv`, `config/`, `examples/`), with two differences a reader
would not notice: the ports (8787 and 9000 become free ones, through `HOOKRELAY_LISTEN`,
`HOOKRELAY_URL` and the receiver's `--port`) and `evt_...`, which becomes the id the last `send`
printed. What a reader is told to do by hand (Ctrl-C, "start the receiver again") the test does.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docs import Block, argv, blocks, commands
from tests.support import REPO, free_port


class Shell:
    """Runs README commands in `cwd` with an environment, like a terminal would."""

    def __init__(self, cwd: Path, env: dict[str, str], ports: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env
        self.ports = ports  # documented port -> the free one used instead
        self.event_id = ""
        self.background: list[subprocess.Popen[bytes]] = []

    def terminal(self) -> Shell:
        """Another shell in the same directory: its own environment, the same clean-up."""
        other = Shell(self.cwd, dict(self.env), self.ports)
        other.background = self.background
        return other

    def text(self, command: str) -> str:
        for documented, real in self.ports.items():
            command = command.replace(documented, real)
        return command.replace("evt_...", self.event_id)

    def export(self, command: str) -> None:
        for word in argv(command)[1:]:
            name, _, value = word.partition("=")
            self.env[name] = value

    def run(self, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            ["bash", "-c", self.text(command)],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if m := re.match(r"(?:queued|filtered) (\S+)", r.stdout):
            self.event_id = m.group(1)
        return r

    def start(self, command: str, log: Path) -> subprocess.Popen[bytes]:
        out = log.open("ab")
        proc = subprocess.Popen(
            ["bash", "-c", "exec " + self.text(command)],
            cwd=self.cwd,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.background.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.background:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # Ctrl-C
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def until(check: Any, what: str, timeout: float = 20) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[Shell]:
    """A directory laid out like the repository after the quick start's install."""
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "examples").symlink_to(REPO / "examples")
    shutil.copytree(REPO / "config", tmp_path / "config")
    api, receiver = str(free_port()), str(free_port())
    for f in (tmp_path / "config").iterdir():
        f.write_text(f.read_text().replace("8787", api))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOOKRELAY_", "ACME_"))}
    env.update({"HOOKRELAY_LISTEN": f"127.0.0.1:{api}", "HOOKRELAY_URL": f"http://127.0.0.1:{api}"})
    env["PYTHONUNBUFFERED"] = "1"
    shell = Shell(tmp_path, env, {"8787": api, "9000": receiver})
    yield shell
    shell.stop_all()


def section(name: str) -> list[Block]:
    found = [b for b in blocks("README.md") if b.section == name]
    assert found, f"README has no section {name!r}"
    return found


def test_quick_start(clone: Shell) -> None:
    install, send = section("Quick start")
    assert commands(install)[0].startswith("python3 -m venv .venv")  # (the test runs from its own venv)
    run = commands(install)[1]
    assert run == ".venv/bin/hookrelay run"
    clone.start(run, clone.cwd / "daemon.log")
    wait_http(f"http://127.0.0.1:{clone.ports['8787']}/readyz")

    post, lookup = commands(send)
    r = clone.run(post)
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(r'\{"event_id":"(evt_\w+)","status":"queued"\}\s*', r.stdout)
    assert m, r.stdout
    clone.event_id = m.group(1)
    # local-demo delivers to the daemon's own /receive, which answers 200 only for a good signature
    until(lambda: '"status":"delivered"' in clone.run(lookup).stdout, "the quick-start event is delivered")
    assert '"status_code":200' in clone.run(lookup).stdout


def test_your_first_tenant(clone: Shell) -> None:
    receiver_block, tenant_yaml, restart, deliver, fail, dead, replay = section("Your first tenant")
    logs = clone.cwd
    receiver_log = logs / "receiver.log"

    # 1. the receiver, in a shell of its own
    first_shell = clone.terminal()
    export, receiver = commands(receiver_block)
    first_shell.export(export)
    receiver_proc = first_shell.start(receiver, receiver_log)
    wait_http(f"http://127.0.0.1:{clone.ports['9000']}/stats")

    # 2. the tenant file
    (clone.cwd / "config" / "acme.yaml").write_text(clone.text(tenant_yaml.text))

    # 3. check it (without the variables: the error the README quotes), then with them, then run
    export, check, run = commands(restart)
    r = clone.run(check)
    assert r.returncode == 1 and "environment variable ACME_SECRET is not set" in r.stderr
    clone.export(export)
    r = clone.run(check)
    assert r.returncode == 0, r.stderr
    assert "acme: retry window 7 s over 4 attempts (retries after 1, 2, 4 s" in r.stdout
    assert "warning: acme: the retry window (7 s) is under 5 min" in r.stderr
    clone.start(run, logs / "daemon.log")
    wait_http(f"http://127.0.0.1:{clone.ports['8787']}/readyz")

    # 4. deliver
    send, get = commands(deliver)
    r = clone.run(send)
    assert r.returncode == 0 and r.stdout.startswith("queued evt_"), r.stderr
    first = clone.event_id
    until(lambda: f"accepted {first}" in receiver_log.read_text(), "the receiver verified and accepted it")
    r = clone.run(get)
    assert r.stdout.splitlines()[0].split() == [first, "tenant", "acme", "status", "delivered"]
    assert r.stdout.splitlines()[1].split()[:4] == ["ROUND", "#", "AT", "STATUS"]
    assert r.stdout.splitlines()[2].split()[:4:3] == ["1", "200"]  # round 1, attempt 1: HTTP 200

    # 5. fail: Ctrl-C the receiver, send, watch it retry, then dead-letter
    receiver_proc.send_signal(signal.SIGINT)
    receiver_proc.wait(10)
    send, get = commands(fail)
    r = clone.run(send)
    assert r.returncode == 0, r.stderr
    second = clone.event_id
    assert second != first
    until(lambda: "status retrying" in clone.run(get).stdout, "the event is retrying", timeout=10)
    list_dead, show = commands(dead)
    until(lambda: second in clone.run(list_dead).stdout, "the event is a dead letter", timeout=20)
    r = clone.run(show)
    assert r.returncode == 0, r.stderr
    assert "max retries exceeded: 4 attempts, last error:" in r.stdout
    assert '"event_type": "order.paid"' in r.stdout

    # 6. replay: the receiver again, then retry
    first_shell.start(receiver, receiver_log)
    wait_http(f"http://127.0.0.1:{clone.ports['9000']}/stats")
    retry, get = commands(replay)
    r = clone.run(retry)
    assert r.returncode == 0 and r.stdout.strip() == f"requeued {second}", r.stderr
    until(lambda: "status delivered" in clone.run(get).stdout, "the replayed event is delivered")
    assert f"accepted {second}" in receiver_log.read_text()
    rows = [line.split() for line in clone.run(get).stdout.splitlines()[2:]]
    # the 4 failed attempts of round 1 stay on record; the replay is round 2, attempt 1: 200
    assert [r[:2] for r in rows] == [["1", "1"], ["1", "2"], ["1", "3"], ["1", "4"], ["2", "1"]]
    assert rows[-1][3] == "200"
