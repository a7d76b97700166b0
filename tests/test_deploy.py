"""Static checks of the deployment artefacts: Dockerfile, deploy/k8s, Grafana, Prometheus rules.

`queried_metric_names()` lists every metric the dashboard and the alert rules
query. Today it is compared with KNOWN_METRICS (SPEC §6 plus the documented
extras); a live test can compare it with a real scrape instead, through
`metric_names_from_exposition(text)`, which names series the same way.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "hookrelay.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
DOCKERFILE = ROOT / "Dockerfile"
WORKLOADS = [K8S / "deployment.yaml", K8S / "statefulset" / "statefulset.yaml", K8S / "redis" / "deployment.yaml"]

# Series names as queried: counters with `_total`, histograms without
# `_bucket`/`_sum`/`_count`.
KNOWN_METRICS: frozenset[str] = frozenset(
    {
        # SPEC §6
        "hookrelay_events_received_total",
        "hookrelay_events_filtered_total",
        "hookrelay_delivery_attempts_total",
        "hookrelay_events_delivered_total",
        "hookrelay_events_dead_lettered_total",
        "hookrelay_delivery_duration_seconds",
        "hookrelay_pending_events",
        "hookrelay_dead_letter_events",
        "hookrelay_journal_bytes",
        "hookrelay_journal_fsync_seconds",
        "hookrelay_journal_corrupt_records_total",
        "hookrelay_config_reloads_total",
        "hookrelay_config_last_reload_success",
        "hookrelay_tenants",
        # SPEC §10
        "hookrelay_store_up",
        "hookrelay_events_claimed_total",
        # extras
        "hookrelay_delivery_latency_seconds",
        "hookrelay_oldest_pending_age_seconds",
        "hookrelay_circuit_open",
        "hookrelay_config_info",
        "hookrelay_endpoint_state",
    }
)

METRIC_RE = re.compile(r"hookrelay_[a-z_]+")
HISTOGRAM_SUFFIX_RE = re.compile(r"_(bucket|sum|count)$")


# ---------------------------------------------------------------- queries --


def _dashboard_queries(dashboard: dict[str, Any]) -> Iterator[str]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))  # collapsed rows nest panels

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            yield target.get("expr", "")
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            yield query.get("query", "") if isinstance(query, dict) else str(query or "")
            yield var.get("definition", "")


def _rule_queries(rules: dict[str, Any]) -> Iterator[str]:
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield rule["expr"]


def query_strings() -> list[str]:
    """Every PromQL expression of the Grafana dashboard and the Prometheus rules."""
    dashboard = json.loads(DASHBOARD.read_text())
    rules = yaml.safe_load(ALERTS.read_text())
    return [q for q in [*_dashboard_queries(dashboard), *_rule_queries(rules)] if q]


def queried_metric_names() -> set[str]:
    """Metric names the dashboard and alert rules query (histogram suffixes stripped)."""
    names: set[str] = set()
    for query in query_strings():
        for name in METRIC_RE.findall(query):
            names.add(HISTOGRAM_SUFFIX_RE.sub("", name))
    return names


def metric_names_from_exposition(text: str) -> set[str]:
    """Names a /metrics scrape offers, spelled as `queried_metric_names()` spells them."""
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.type in ("histogram", "summary", "gaugehistogram"):
            names.add(family.name)
            continue
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                names.add(sample.name)
    return names


def test_queries_found() -> None:
    names = queried_metric_names()
    assert len(query_strings()) >= 20
    # the dashboard and the rules between them use most of the metrics
    assert len(names) >= 15, names


def test_every_queried_metric_exists() -> None:
    unknown = queried_metric_names() - KNOWN_METRICS
    assert not unknown, f"dashboard/alerts query metrics hookrelay does not export: {sorted(unknown)}"


def test_exposition_names_match_query_spelling() -> None:
    text = (
        "# TYPE hookrelay_events_received counter\n"
        'hookrelay_events_received_total{tenant="a"} 3.0\n'
        'hookrelay_events_received_created{tenant="a"} 1.7e9\n'
        "# TYPE hookrelay_journal_fsync_seconds histogram\n"
        'hookrelay_journal_fsync_seconds_bucket{le="+Inf"} 1.0\n'
        "hookrelay_journal_fsync_seconds_sum 0.01\n"
        "hookrelay_journal_fsync_seconds_count 1.0\n"
        "# TYPE hookrelay_tenants gauge\n"
        "hookrelay_tenants 2.0\n"
    )
    assert metric_names_from_exposition(text) == {
        "hookrelay_events_received_total",
        "hookrelay_journal_fsync_seconds",
        "hookrelay_tenants",
    }


# -------------------------------------------------------------- dashboard --


def test_dashboard_shape() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert 36 <= dash["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    tenant = variables["tenant"]
    assert tenant["definition"] == "label_values(hookrelay_events_received_total, tenant)"
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
    exprs = "\n".join(t["expr"] for p in panels for t in p["targets"])
    for needed in (
        "hookrelay_delivery_duration_seconds_bucket",
        "hookrelay_delivery_latency_seconds_bucket",
        "hookrelay_journal_fsync_seconds_bucket",
        'outcome="success"',
        "hookrelay_oldest_pending_age_seconds",
        "hookrelay_circuit_open",
        "hookrelay_config_last_reload_success",
        "hookrelay_endpoint_state",
    ):
        assert needed in exprs, needed
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}," in exprs


# ----------------------------------------------------------------- alerts --


def test_alert_rules() -> None:
    rules = {r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    assert set(rules) >= {
        "HookrelayDeadLettersRising",
        "HookrelayOldestPendingTooOld",
        "HookrelayConfigReloadFailing",
        "HookrelayJournalFsyncSlow",
        "HookrelayJournalCorruption",
        "HookrelayCircuitOpen",
        "HookrelayEndpointDisabled",
        "HookrelayEndpointFailing",
        "HookrelayStoreDown",
    }
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    assert "hookrelay_events_dead_lettered_total" in rules["HookrelayDeadLettersRising"]["expr"]
    assert "hookrelay_store_up" in rules["HookrelayStoreDown"]["expr"] and "== 0" in rules["HookrelayStoreDown"]["expr"]
    oldest = rules["HookrelayOldestPendingTooOld"]
    assert "hookrelay_oldest_pending_age_seconds" in oldest["expr"] and "> 600" in oldest["expr"]
    assert oldest["for"] == "5m"
    reload_rule = rules["HookrelayConfigReloadFailing"]
    assert "hookrelay_config_last_reload_success" in reload_rule["expr"] and "== 0" in reload_rule["expr"]
    assert reload_rule["for"] == "5m"
    fsync = rules["HookrelayJournalFsyncSlow"]["expr"]
    assert "histogram_quantile(0.99" in fsync and "hookrelay_journal_fsync_seconds_bucket" in fsync
    assert "> 0.1" in fsync
    disabled, failing = rules["HookrelayEndpointDisabled"], rules["HookrelayEndpointFailing"]
    assert 'hookrelay_endpoint_state{state="disabled"}' in disabled["expr"] and "== 1" in disabled["expr"]
    assert 'hookrelay_endpoint_state{state="failing"}' in failing["expr"] and failing["for"] == "1h"


# ------------------------------------------------------------- kubernetes --


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all_k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in sorted(K8S.rglob("*.yaml")) for d in _docs(p)]


def _one(kind: str) -> dict[str, Any]:
    """The one `kind` every variant shares (common/; the redis variant adds its own Secret and
    its dev Redis a NetworkPolicy of its own)."""
    found = [d for p, d in _all_k8s_docs() if d["kind"] == kind and p.parent.name == "common"]
    assert len(found) == 1, f"{kind}: {len(found)} found"
    return found[0]


def _walk_keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from _walk_keys(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk_keys(v)


def _pod(workload: Path) -> dict[str, Any]:
    (doc,) = _docs(workload)
    assert doc["kind"] in ("Deployment", "StatefulSet")
    return doc["spec"]["template"]


def _sidecar(pod_spec: dict[str, Any]) -> dict[str, Any]:
    (c,) = [c for c in pod_spec.get("initContainers", []) if c["name"] == "hookrelay"]
    return c


def _flag(args: list[str], flag: str) -> str | None:
    for i, a in enumerate(args):
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
        if a == flag and i + 1 < len(args):
            return args[i + 1]
    return None


def test_no_subpath_anywhere() -> None:
    for path, doc in _all_k8s_docs():
        assert "subPath" not in set(_walk_keys(doc)), path
        assert "subPathExpr" not in set(_walk_keys(doc)), path


def test_kustomizations_reference_existing_files() -> None:
    kustomizations = sorted(K8S.rglob("kustomization.yaml"))
    assert {k.parent for k in kustomizations} >= {K8S, K8S / "statefulset"}
    listed: set[Path] = set()
    for k in kustomizations:
        for r in yaml.safe_load(k.read_text())["resources"]:
            target = (k.parent / r).resolve()
            assert target.exists(), f"{k}: {r}"
            listed.add(target)
    for path, _ in _all_k8s_docs():
        if path.name != "kustomization.yaml":
            assert path.resolve() in listed, f"{path} is not in any kustomization"


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda p: p.stem)
def test_native_sidecar(workload: Path) -> None:
    spec = _pod(workload)["spec"]
    sidecar = _sidecar(spec)
    assert sidecar["restartPolicy"] == "Always"
    assert spec["terminationGracePeriodSeconds"] == 30
    grace = _flag(sidecar["args"], "--shutdown-grace")
    assert grace is not None and float(grace) == 10
    assert _flag(sidecar["args"], "--listen") == "127.0.0.1:8787"
    assert _flag(sidecar["args"], "--ops-listen") == "0.0.0.0:9787"
    assert _flag(sidecar["args"], "--config") == "/etc/hookrelay/tenants"
    assert _flag(sidecar["args"], "--data-dir") == "/var/lib/hookrelay"
    sock = _flag(sidecar["args"], "--unix-socket")
    assert sock is not None and sock.startswith("/var/run/hookrelay/")
    (app,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in app["env"]}
    assert env["HOOKRELAY_URL"] == "http://127.0.0.1:8787"
    # the socket's directory is one emptyDir shared by app and sidecar
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {c["name"]: {m["mountPath"]: m["name"] for m in c["volumeMounts"]} for c in (sidecar, app)}
    shared = mounts["hookrelay"]["/var/run/hookrelay"]
    assert mounts["app"]["/var/run/hookrelay"] == shared
    assert "emptyDir" in volumes[shared]


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda p: p.stem)
def test_probes(workload: Path) -> None:
    sidecar = _sidecar(_pod(workload)["spec"])
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports["ops"] == 9787
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["startupProbe"]["httpGet"]["path"] in ("/readyz", "/healthz")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert sidecar[probe]["httpGet"]["port"] in ("ops", 9787), probe


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda p: p.stem)
def test_security_and_resources(workload: Path) -> None:
    spec = _pod(workload)["spec"]
    sidecar = _sidecar(spec)
    sc = sidecar["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    seccomp = sc.get("seccompProfile") or spec["securityContext"]["seccompProfile"]
    assert seccomp["type"] == "RuntimeDefault"
    for c in [*spec["containers"], sidecar]:
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (c["name"], kind)


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda p: p.stem)
def test_volumes(workload: Path) -> None:
    (doc,) = _docs(workload)
    spec = doc["spec"]["template"]["spec"]
    sidecar = _sidecar(spec)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    tenants = mounts["/etc/hookrelay/tenants"]
    assert tenants.get("readOnly") is True
    cm = volumes[tenants["name"]]["configMap"]
    assert cm["name"] == _one("ConfigMap")["metadata"]["name"]
    assert "items" not in cm, "mount the whole ConfigMap: every tenant file, and updates"
    journal = mounts["/var/lib/hookrelay"]["name"]
    if doc["kind"] == "Deployment":
        assert "emptyDir" in volumes[journal]
    else:
        assert journal not in volumes
        claims = {c["metadata"]["name"] for c in doc["spec"]["volumeClaimTemplates"]}
        assert journal in claims


def _tenant_files() -> dict[str, str]:
    cm = _one("ConfigMap")
    return {k: v for k, v in cm["data"].items() if k.endswith((".yaml", ".yml"))}


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda p: p.stem)
def test_secrets_wired(workload: Path) -> None:
    """Every ${VAR} is in the sidecar's env, every secret_key_file is mounted, from the Secret."""
    spec = _pod(workload)["spec"]
    sidecar = _sidecar(spec)
    secret = _one("Secret")
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    env = {e["name"]: e for e in sidecar.get("env", [])}
    tenants = _tenant_files()
    assert tenants
    variables = {v for text in tenants.values() for v in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)}
    assert variables, "the example should show ${VAR} interpolation"
    for var in variables:
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret_keys, var
    mounted: set[str] = set()
    volumes = {v["name"]: v for v in spec["volumes"]}
    for m in sidecar["volumeMounts"]:
        sv = volumes.get(m["name"], {}).get("secret")
        if sv:
            assert sv["secretName"] == secret["metadata"]["name"]
            for item in sv["items"]:
                assert item["key"] in secret_keys
                mounted.add(f"{m['mountPath']}/{item['path']}")
    for name, text in tenants.items():
        path = yaml.safe_load(text).get("secret_key_file")
        if path:
            assert path in mounted, f"{name}: {path} is not mounted from the Secret"


def test_tenant_files_shape() -> None:
    for name, text in _tenant_files().items():
        tenant = yaml.safe_load(text)
        assert name == f"{tenant['tenant_id']}.yaml"
        assert tenant["base_url"].startswith("https://")
        assert ("secret_key" in tenant) != ("secret_key_file" in tenant), name
        if "secret_key" in tenant:
            literal = tenant["secret_key"]
            assert re.fullmatch(r"\$\{[A-Z0-9_]+\}", literal), "no literal secrets in a ConfigMap"


def test_podmonitor_matches_pods() -> None:
    pm = _one("PodMonitor")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "ops" and endpoint["path"] == "/metrics"
    selector = pm["spec"]["selector"]["matchLabels"]
    for workload in WORKLOADS:
        labels = _pod(workload)["metadata"]["labels"]
        assert selector.items() <= labels.items(), workload


def test_networkpolicy_admits_only_prometheus_to_the_ops_port() -> None:
    """The ops port listens on 0.0.0.0: the shipped policy covers every sidecar pod and
    lets only the Prometheus pods reach 9787; the ingest port (loopback) is never opened."""
    np = _one("NetworkPolicy")
    selector = np["spec"]["podSelector"]["matchLabels"]
    for workload in WORKLOADS:
        assert selector.items() <= _pod(workload)["metadata"]["labels"].items(), workload
    assert "Ingress" in np["spec"]["policyTypes"]
    rules = np["spec"]["ingress"]
    ops_rules = [r for r in rules if any(p["port"] in (9787, "ops") for p in r["ports"])]
    assert len(ops_rules) == 1
    (peer,) = ops_rules[0]["from"]
    assert peer["podSelector"]["matchLabels"] and peer["namespaceSelector"]["matchLabels"]
    assert not any(p["port"] in (8787, "api") for r in rules for p in r["ports"])
    for r in rules:
        if r not in ops_rules:
            assert all(p["port"] not in (9787, "ops") for p in r["ports"])


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda p: p.stem)
def test_signing_secrets_are_files(workload: Path) -> None:
    """secret_key_file wherever the schema has a file form: no tenant's secret_key is a ${VAR}."""
    for name, text in _tenant_files().items():
        assert "secret_key_file" in yaml.safe_load(text), name
    sidecar = _sidecar(_pod(workload)["spec"])
    env = {e["name"] for e in sidecar.get("env", [])}
    assert all("SECRET" not in name for name in env), env


# ------------------------------------------------------------- Dockerfile --


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile() -> None:
    ins = _dockerfile_instructions()
    args = dict(a.split("=", 1) for op, a in ins if op == "ARG" and "=" in a)

    def resolve(arg: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], arg).split()[0]

    froms = [resolve(a) for op, a in ins if op == "FROM"]
    assert len(froms) >= 2, "multi-stage build"
    for image in froms:
        assert re.fullmatch(r"python:3\.12\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
    users = [a for op, a in ins if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert users[-1].split(":")[0] == "10001"
    entrypoints = [a for op, a in ins if op == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["hookrelay", "run"]
    assert any(op == "VOLUME" and "/var/lib/hookrelay" in a for op, a in ins)
    health = " ".join(a for op, a in ins if op == "HEALTHCHECK")
    assert "urllib" in health and "http://127.0.0.1:9787/healthz" in health
    env = " ".join(a for op, a in ins if op == "ENV")
    env_vars = dict(kv.split("=", 1) for kv in shlex.split(env) if "=" in kv)
    assert env_vars["HOOKRELAY_DATA_DIR"] == "/var/lib/hookrelay"
    assert env_vars["HOOKRELAY_CONFIG"] == "/etc/hookrelay/tenants"
    assert env_vars["HOOKRELAY_OPS_LISTEN"] == "0.0.0.0:9787"
    # the final stage copies the venv and installs nothing with a compiler
    final = ins[max(i for i, (op, _) in enumerate(ins) if op == "FROM") :]
    assert any(op == "COPY" and "--from=builder" in a for op, a in final)
    assert not any(op == "RUN" and re.search(r"\b(pip|apt-get|gcc)\b", a) for op, a in final)


def test_dockerignore_keeps_junk_out() -> None:
    lines = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert "*" in lines or {".venv", ".git"} <= lines


def test_redis_variant_points_the_sidecar_at_a_redis_store() -> None:
    sidecar = _sidecar(_pod(K8S / "redis" / "deployment.yaml")["spec"])
    env = {e["name"]: e for e in sidecar["env"]}
    ref = env["HOOKRELAY_STORE"]["valueFrom"]["secretKeyRef"]
    (secret,) = _docs(K8S / "redis" / "store-secret.yaml")
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert secret["stringData"][ref["key"]].startswith("redis://")
    assert any(a.startswith("--store-namespace=") for a in sidecar["args"])
    # The dev Redis is labelled dev-only and runs with the settings that make a 202 durable.
    docs = _docs(K8S / "redis" / "dev-redis" / "redis.yaml")
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    assert sts["metadata"]["labels"]["app.kubernetes.io/part-of"] == "dev-only"
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    pairs = dict(zip(args[0::2], args[1::2], strict=False))
    assert pairs["--appendonly"] == "yes" and pairs["--appendfsync"] == "always"
    assert pairs["--maxmemory-policy"] == "noeviction"
