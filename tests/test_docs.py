"""The docs stand alone and are right: every snippet parses or validates, every reference resolves,
the configuration, CLI and metrics references match the code. Fast: one daemon, a few processes.
(Snippets that are run end to end, the quick start and the first-tenant walkthrough, are in
tests/test_docs_walkthrough.py.)"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import re
import subprocess
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from relay.cli import build_parser, retry_summary
from relay.config import RetryPolicy, TenantConfig
from relay.logs import JsonFormatter, TextFormatter
from tests.docs import (
    LANGUAGES,
    SNIPPET_DOCS,
    USER_DOCS,
    all_blocks,
    anchors,
    argv,
    blocks,
    code_spans,
    commands,
    read,
    repo_path,
    table_rows,
)
from tests.support import REPO, Daemon, Sink

# ---- every fenced block --------------------------------------------------------------------


def test_every_block_names_its_language() -> None:
    bad = [f"{b.where}: {b.lang or '(none)'}" for b in all_blocks() if b.lang not in LANGUAGES]
    assert not bad, f"fenced blocks need one of {sorted(LANGUAGES)}: {bad}"
    assert len(all_blocks("sh")) >= 10 and len(all_blocks("yaml")) >= 3 and len(all_blocks("python")) >= 2


def test_shell_blocks_are_valid_bash() -> None:
    for b in all_blocks("sh"):
        r = subprocess.run(["bash", "-n"], input=b.text, capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, f"{b.where}: {r.stderr}"


def _hookrelay_argv(command: str) -> list[str] | None:
    words = argv(command)
    if words and words[0] in ("hookrelay", ".venv/bin/hookrelay"):
        return words[1:]
    return None


def test_every_documented_hookrelay_command_parses() -> None:
    """Each `hookrelay ...` line of an sh block is accepted by the real argument parser."""
    seen = 0
    for b in all_blocks("sh"):
        for command in commands(b):
            for part in command.split("&&"):
                args = _hookrelay_argv(part.strip())
                if args is None:
                    continue
                seen += 1
                try:
                    ns = build_parser().parse_args(args)
                except SystemExit as exc:
                    assert exc.code == 0, f"{b.where}: `{part.strip()}` is refused by the CLI"
                    continue
                assert getattr(ns, "func", None) is not None, f"{b.where}: `{part.strip()}` names no command"
    assert seen >= 20


def test_example_scripts_in_shell_blocks_take_those_flags() -> None:
    helps: dict[str, str] = {}
    for b in all_blocks("sh"):
        for command in commands(b):
            words = argv(command)
            script = next((w for w in words if w.startswith("examples/") and w.endswith(".py")), None)
            if script is None:
                continue
            i = words.index(script)
            flags = [w.split("=")[0] for w in words[i + 1 :] if w.startswith("--")]
            if script not in helps:
                r = subprocess.run([sys.executable, str(REPO / script), "--help"], capture_output=True, text=True)
                helps[script] = r.stdout
            for flag in flags:
                assert flag in helps[script], f"{b.where}: {script} has no {flag}"
    assert len(helps) >= 2


# ---- YAML ------------------------------------------------------------------------------------


def _check_config(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOOKRELAY_", "ACME_", "EMPRESA_"))}
    return subprocess.run(
        [sys.executable, "-m", "relay", "check-config", *extra, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_tenant_yaml_snippets_pass_check_config(tmp_path: Path) -> None:
    tenants = 0
    for i, b in enumerate(all_blocks("yaml")):
        doc = yaml.safe_load(b.text)
        assert doc is not None, b.where
        if not (isinstance(doc, dict) and "tenant_id" in doc):
            continue
        tenants += 1
        f = tmp_path / str(i) / f"{doc['tenant_id']}.yaml"
        f.parent.mkdir()
        f.write_text(b.text)
        r = _check_config(f, "--allow-unset-env")
        assert r.returncode == 0, f"{b.where}: check-config says\n{r.stderr}"
        assert "OK, 1 tenant(s)" in r.stdout
    assert tenants >= 2


def test_sample_tenant_files_pass_check_config() -> None:
    r = _check_config(REPO / "config")
    assert r.returncode == 0, r.stderr
    r = _check_config(REPO / "config" / "example-remote.yaml.sample", "--allow-unset-env")
    assert r.returncode == 0, r.stderr


def test_the_pod_spec_snippet_is_yaml_with_real_flags() -> None:
    (b,) = [b for b in blocks("deploy/README.md") if b.lang == "yaml"]
    spec = yaml.safe_load(b.text)
    (sidecar,) = spec["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    ns = build_parser().parse_args(["run", *sidecar["args"]])
    assert ns.config == "/etc/hookrelay/tenants" and ns.read_only_config
    mounted = {v["name"] for v in sidecar["volumeMounts"]}
    assert mounted <= {v["name"] for v in spec["volumes"]}


# ---- Python ----------------------------------------------------------------------------------


def test_python_blocks_compile() -> None:
    for b in all_blocks("python"):
        compile(b.text, b.where, "exec")


def test_client_snippet_runs_against_a_daemon(tmp_path: Path) -> None:
    """examples/README's client snippet, pasted as it is (only the port differs), against the
    sample tenant empresa-123."""
    sink = Sink().start()
    try:
        sample = (REPO / "config" / "example-remote.yaml.sample").read_text()
        (tmp_path / "config").mkdir()
        url = f"{sink.url}/webhooks"
        (tmp_path / "config" / "empresa-123.yaml").write_text(
            sample.replace("https://api.empresa.com/webhooks", url).replace("rate_limit_per_second: null", "")
        )
        env = {"EMPRESA_123_SECRET": "s", "EMPRESA_123_TOKEN": "t"}
        with Daemon(tmp_path, env=env) as d:
            d.start()
            (b,) = [b for b in blocks("examples/README.md") if b.lang == "python" and "RelayClient" in b.text]
            code = b.text.replace("http://127.0.0.1:8787", d.url)
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
            assert r.returncode == 0, r.stderr
            first = r.stdout.splitlines()[0].split()
            assert first[0].startswith("evt_") and first[1] == "queued"
            assert "tenant_not_found 404" in r.stdout
            sink.wait_event(first[0])
            sink.wait_event("payment-9001")
    finally:
        sink.stop()


def test_standard_webhooks_snippet_verifies_a_delivery() -> None:
    from relay.signing import standard_webhooks_sign

    (b,) = [b for b in blocks("examples/README.md") if b.lang == "python" and "standardwebhooks" in b.text]
    secret = "whsec_" + base64.b64encode(b"a 24-byte key for a test").decode()
    raw_body = b'{"id":"evt_1","payload":{}}'
    now = int(time.time())
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(now),
        "webhook-signature": standard_webhooks_sign("evt_1", now, raw_body, secret),
    }
    scope: dict[str, Any] = {"secret": secret, "raw_body": raw_body, "request": types.SimpleNamespace(headers=headers)}
    exec(compile(b.text, b.where, "exec"), scope)
    assert scope["event"] == {"id": "evt_1", "payload": {}}


# ---- the docs stand alone ------------------------------------------------------------------

_LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_no_reference_to_files_outside_the_repository() -> None:
    for doc in USER_DOCS:
        text = read(doc)
        assert "SPEC" not in text, f"{doc} refers to SPEC, which readers do not have"
        for target in _LINK.findall(text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            file = repo_path(doc, path) if path else REPO / doc
            assert file.exists(), f"{doc}: link to {target}: no such file"
            assert file.resolve().is_relative_to(REPO), f"{doc}: link to {target} leaves the repository"
            if anchor and file.suffix == ".md":
                rel = file.resolve().relative_to(REPO).as_posix()
                assert anchor in anchors(rel), f"{doc}: link to {target}: no such heading"


def test_quick_start_comes_in_the_order_a_person_runs_it() -> None:
    text = read("README.md")
    run = text.index(".venv/bin/hookrelay run")
    send = text.index("curl -s localhost:8787/api/v1/webhooks/send")
    tests = text.index(".venv/bin/pytest")
    assert run < send < tests, "install, run, send first; the test suite belongs to Development"
    assert text.index("## Your first tenant") < text.index("## Command line")


# ---- configuration reference ---------------------------------------------------------------


def _default(f: msgspec.structs.FieldInfo) -> Any:
    if f.default is not msgspec.NODEFAULT:
        return f.default
    if f.default_factory is not msgspec.NODEFAULT:
        return f.default_factory()
    return msgspec.NODEFAULT


def _struct_of(tp: Any) -> type[msgspec.Struct] | None:
    """The Struct in a field's type (`RetryPolicy`, `TlsConfig | None`, ...), if any."""
    for t in (tp, *typing.get_args(tp)):
        if isinstance(t, type) and issubclass(t, msgspec.Struct):
            return t
    return None


def _reference_keys() -> dict[str, Any]:
    """Every tenant key path -> the code's default (NODEFAULT when required)."""
    out: dict[str, Any] = {}
    for f in msgspec.structs.fields(TenantConfig):
        sub = _struct_of(f.type)
        if sub is None:
            out[f.name] = _default(f)
            continue
        for g in msgspec.structs.fields(sub):
            out[f"{f.name}.{g.name}"] = _default(g)
    return out


def test_configuration_reference_lists_every_key_with_its_default() -> None:
    rows = {code_spans(r[0])[0]: r for r in table_rows("README.md", "Configuration reference")}
    for key, default in _reference_keys().items():
        assert key in rows, f"README configuration reference: add a row for `{key}`"
        cell = rows[key][1]
        if default is msgspec.NODEFAULT:
            assert cell.startswith("required"), f"{key}: default {cell!r}, but it is required"
        elif default is None:
            assert cell.startswith(("none", "see")), f"{key}: default {cell!r}, the code has none"
        elif isinstance(default, bool | int | float | str | tuple | dict):
            (shown,) = code_spans(cell)[:1]
            value = yaml.safe_load(shown)
            want = list(default) if isinstance(default, tuple) else default
            assert value == want, f"{key}: the README says {shown}, the code {default!r}"
    for key in ("secret_key_file", "signing_key_file"):  # read in place of the key of that name
        assert key in rows, f"README configuration reference: add a row for `{key}`"
    for key, row in rows.items():
        assert row[2], f"{key}: no meaning given"


def test_retry_window_examples_match_what_check_config_prints() -> None:
    rows = table_rows("README.md", "Retries and the retry window")
    assert len(rows) >= 3
    for policy_cell, _, window in rows:
        spans = code_spans(policy_cell)
        policy = RetryPolicy(**yaml.safe_load("{" + spans[0] + "}")) if spans else RetryPolicy()
        summary, _ = retry_summary(policy)
        assert summary.startswith(f"retry window {window}"), f"{policy_cell}: README {window!r}, CLI {summary!r}"
    text = read("README.md")
    assert "**the window is 31 s**" in text and retry_summary(RetryPolicy())[0].startswith("retry window 31 s")


# ---- CLI synopsis --------------------------------------------------------------------------


def _subparsers(p: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[f"{prefix}{name}"] = sub
                out.update(_subparsers(sub, f"{prefix}{name} "))
    return out


def test_synopsis_lists_every_command_and_flag() -> None:
    (synopsis,) = [b.text for b in blocks("README.md") if b.section == "Command line" and b.lang == "text"]
    flags_table = {code_spans(r[0])[0] for r in table_rows("README.md", "Command line") if code_spans(r[0])}
    for name, sub in _subparsers(build_parser()).items():
        if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
            continue  # a group (dlq, event, journal): its actions are checked one by one
        words = name.split()
        assert any(all(w in line for w in words) for line in synopsis.splitlines() if "hookrelay" in line), name
        for action in sub._actions:
            for flag in action.option_strings:
                if flag in ("-h", "--help"):
                    continue
                assert flag in synopsis, f"README synopsis: `hookrelay {name}` lacks {flag}"
                if name == "run":
                    assert flag in flags_table, f"README flags table: add a row for {flag}"


# ---- metrics reference ---------------------------------------------------------------------


def test_metrics_reference_matches_what_metrics_exports(make_daemon: Any, sink: Sink) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from tests.support import write_tenant

    d = make_daemon()
    write_tenant(d.config, "acme", sink.url + "/hook")
    # Series labelled by event type exist once the catalog has met an event: one deprecated
    # event accepted, one refused by its schema.
    catalog = {"event_types": [{"name": "old.type", "deprecated": True, "schema": {"type": "object"}}]}
    (d.config / "catalog.yaml").write_text(json.dumps(catalog))
    d.start()
    assert d.send("acme", "old.type", {"a": 1})[0] == 202
    assert d.send("acme", "old.type", [1])[0] == 422
    status, text = d.request("GET", "/metrics")
    assert status == 200
    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        exported[name] = labels
        assert not any(s.name.endswith("_created") for s in family.samples), f"{name} has a _created series"
    documented: dict[str, set[str]] = {}
    for row in table_rows("README.md", "Metrics reference"):
        (name,) = code_spans(row[0])
        documented[name] = set(code_spans(row[2]))
    assert set(documented) == set(exported), (
        f"README metrics reference: missing {sorted(set(exported) - set(documented))}, "
        f"not exported {sorted(set(documented) - set(exported))}"
    )
    for name, labels in exported.items():
        assert documented[name] == labels, f"{name}: README labels {documented[name]}, exported {labels}"


# ---- logs ------------------------------------------------------------------------------------


def test_log_level_names_are_the_documented_ones() -> None:
    text = read("README.md")
    assert "The level names are `DEBUG`, `INFO`, `WARNING` and\n`ERROR` in text" in text
    for level, name in ((logging.DEBUG, "DEBUG"), (logging.INFO, "INFO"), (logging.WARNING, "WARNING")):
        record = logging.LogRecord("relay", level, __file__, 1, "m", None, None)
        assert TextFormatter().format(record).split()[1] == name
        assert json.loads(JsonFormatter().format(record))["level"] == name.lower()
    record = logging.LogRecord("relay", logging.ERROR, __file__, 1, "m", None, None)
    assert TextFormatter().format(record).split()[1] == "ERROR"


# ---- operator figures ------------------------------------------------------------------------


def test_benchmarks_open_with_a_sizing_table_drawn_from_the_results() -> None:
    text = read("BENCHMARKS.md")
    first_heading = re.search(r"^## (.+)$", text, re.M)
    assert first_heading and first_heading.group(1) == "Sizing at a glance"
    assert text.index("## Sizing at a glance") < text.index("## Method")
    results = text[text.index("## Latest full run") :]
    rows = table_rows("BENCHMARKS.md", "Sizing at a glance")
    assert len(rows) >= 6
    for row in rows:
        for figure in re.findall(r"\d[\d,]*(?:\.\d+)? (?:events/s|ms|s|MB)\b", row[1]):
            number = figure.split()[0]
            assert number in results, f"BENCHMARKS sizing figure {figure} is not in the results below"


def test_deploy_readme_sizes_the_shipped_limit() -> None:
    text = read("deploy/README.md")
    assert "## Sizing" in text
    sizing = " ".join(text[text.index("## Sizing") : text.index("## Scaling")].split())
    limit = re.search(r"limits: \{cpu: (\w+), memory: (\w+)\}", text)
    assert limit is not None
    assert f"`{limit.group(2)}`" in sizing and f"`{limit.group(1)}`" in sizing
    assert "pending events *and* dead letters go with the pod" in " ".join(text.split())
    assert "every dead letter in it" in sizing and "emptyDir" in sizing


@pytest.mark.parametrize("doc", SNIPPET_DOCS)
def test_docs_exist(doc: str) -> None:
    assert read(doc).strip()


def test_async_is_importable_for_snippets() -> None:
    # The client snippet's AsyncRelayClient line names a real coroutine API.
    from relay.client import AsyncRelayClient

    assert asyncio.iscoroutinefunction(AsyncRelayClient.send)
