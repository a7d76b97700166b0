"""The event catalog (SPEC §14): loading, schema checks at ingest, listing, OpenAPI webhooks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate as validate_openapi

from relay.catalog import pointer
from relay.config import ConfigError, load_path
from tests.support import REPO, Sink, write_tenant

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["order_id", "customer", "items"],
    "properties": {
        "order_id": {"type": "string", "pattern": "^ord_"},
        "total": {"type": "number", "minimum": 0},
        "customer": {"$ref": "#/$defs/customer"},
        "items": {"type": "array", "items": {"type": "object", "required": ["sku"], "properties": {"sku": {}}}},
        "a/b~c": {"type": "integer"},  # a key that needs RFC 6901 escaping in the pointer
    },
    "$defs": {"customer": {"type": "object", "required": ["email"], "properties": {"email": {"type": "string"}}}},
}

CATALOG = {
    "event_types": [
        {"name": "order.paid", "description": "An order was paid", "schema": ORDER_SCHEMA},
        {"name": "user.created", "description": "No schema: any payload"},
        {"name": "legacy.ping", "description": "Use health.ping", "deprecated": True},
        {"name": "legacy.dated", "deprecated": "2025-06-30T00:00:00Z", "schema": {"type": "object"}},
    ]
}

GOOD_ORDER = {"order_id": "ord_1", "total": 9.5, "customer": {"email": "a@example.com"}, "items": [{"sku": "x"}]}


def _write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_pointer_escapes_per_rfc_6901() -> None:
    assert pointer([]) == ""
    assert pointer(["items", 0, "sku"]) == "/items/0/sku"
    assert pointer(["a/b~c"]) == "/a~1b~0c"


def test_catalog_loads_beside_tenants_and_reports_bad_schemas_by_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    write_tenant(cfg, "t1", "http://127.0.0.1:1/")
    _write(cfg / "catalog.yaml", CATALOG)
    snap = load_path(cfg)
    assert sorted(snap.catalog.types) == ["legacy.dated", "legacy.ping", "order.paid", "user.created"]
    assert set(snap.catalog.validators) == {"order.paid", "legacy.dated"}
    assert snap.catalog.deprecations == {"legacy.ping": "@0", "legacy.dated": "@1751241600"}

    _write(
        cfg / "more.yaml",
        {
            "tenants": [{"tenant_id": "t2", "base_url": "http://127.0.0.1:1/", "secret_key": "s"}],
            "event_types": [
                {"name": "order.paid"},  # duplicate of catalog.yaml's
                {"name": "bad.type", "schema": {"type": "strng"}},
                {"name": "bad.ref", "schema": {"$ref": "https://schemas.example.com/x.json"}},
                {"name": "bad.key", "owner": "me"},
                {"name": "bad.*"},
            ],
        },
    )
    with pytest.raises(ConfigError) as info:
        load_path(cfg)
    text = "\n".join(info.value.problems)
    more = str(cfg / "more.yaml")
    assert f"{more}: event_types[0].name: duplicate event type 'order.paid'" in text
    assert f"{more}: event_types[1].schema: not a valid JSON Schema: /type:" in text
    assert f"{more}: event_types[2].schema: not a valid JSON Schema:" in text and "self-contained" in text
    assert f"{more}: event_types[3].owner: unknown key" in text
    assert f"{more}: event_types[4].name:" in text
    assert len(info.value.problems) == 5

    (cfg / "more.yaml").unlink()
    _write(cfg / "stray.yaml", {"event_types": [], "tenant_id": "x"})
    with pytest.raises(ConfigError) as info:
        load_path(cfg)
    assert info.value.problems == [
        f"{cfg / 'stray.yaml'}: tenant_id: unknown key (a file with tenants: or event_types: holds nothing else)"
    ]


def test_check_config_validates_the_schemas(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    write_tenant(cfg, "t1", "http://127.0.0.1:1/")
    _write(cfg / "catalog.yaml", CATALOG)
    run = [sys.executable, "-m", "relay", "check-config", str(cfg)]
    ok = subprocess.run(run, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert ok.returncode == 0 and "4 event type(s)" in ok.stdout, ok.stderr
    _write(cfg / "catalog.yaml", {"event_types": [{"name": "x", "schema": {"type": "object", "minProperties": -1}}]})
    bad = subprocess.run(run, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert bad.returncode == 1
    assert f"{cfg / 'catalog.yaml'}: event_types[0].schema: not a valid JSON Schema: /minProperties:" in bad.stderr


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_ingest_checks_payloads_against_the_catalog(make_daemon: Any, sink: Sink) -> None:
    d = make_daemon()
    write_tenant(d.config, "shop", sink.url + "/s")
    write_tenant(d.config, "strict", sink.url + "/x", require_known_event_types=True)
    _write(d.config / "catalog.yaml", CATALOG)
    d.start()

    # A valid payload is accepted and delivered byte for byte as sent.
    raw = b'{"tenant_id":"shop","event_type":"order.paid","payload":{"order_id":"ord_1","customer":{"email":"a@b"},"items":[{"sku":"x","n":1.50}]}}'  # noqa: E501
    code, body = d.request("POST", "/api/v1/webhooks/send", raw=raw)
    assert code == 202, body
    got = sink.wait_event(body["event_id"])
    assert b'"payload":{"order_id":"ord_1","customer":{"email":"a@b"},"items":[{"sku":"x","n":1.50}]}' in got.body

    cases = [
        ({**GOOD_ORDER, "items": [{"qty": 1}]}, "/items/0", "/properties/items/items/required"),
        ({**GOOD_ORDER, "customer": {"email": 5}}, "/customer/email", "/$defs/customer/properties/email/type"),
        ({**GOOD_ORDER, "a/b~c": "x"}, "/a~1b~0c", "/properties/a~1b~0c/type"),
        ([1, 2], "", "/type"),
    ]
    for payload, where, schema_where in cases:
        code, body = d.send("shop", "order.paid", payload)
        assert code == 422, body
        err = body["error"]
        assert err["code"] == "schema_violation"
        assert err["details"]["pointer"] == where and err["details"]["field"] == "payload"
        assert err["details"]["schema_pointer"].endswith(schema_where), err
        assert err["message"].startswith(f"payload{where}: ")

    # A type without a schema, or not in the catalog, is not checked...
    assert d.send("shop", "user.created", [1, "any"])[0] == 202
    assert d.send("shop", "not.in.catalog", {"x": 1})[0] == 202
    # ...unless the tenant accepts only known types.
    code, body = d.send("strict", "not.in.catalog", {"x": 1})
    assert code == 422 and body["error"]["code"] == "unknown_event_type"
    assert body["error"]["details"]["field"] == "event_type"
    assert d.send("strict", "user.created", {"x": 1})[0] == 202

    # Deprecated types are accepted, answered with an RFC 9745 Deprecation header, and counted
    # (asked directly: d.request does not return headers).
    for name, header in (("legacy.ping", "@0"), ("legacy.dated", "@1751241600")):
        body_bytes = json.dumps({"tenant_id": "shop", "event_type": name, "payload": {}}).encode()
        r = urllib.request.Request(d.url + "/api/v1/webhooks/send", data=body_bytes, method="POST")
        r.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(r, timeout=10) as resp:
            assert resp.status == 202 and resp.headers["Deprecation"] == header

    # In a batch each item gets its own verdict; the failing one names its index and pointer.
    items = [
        {"tenant_id": "shop", "event_type": "order.paid", "payload": GOOD_ORDER},
        {"tenant_id": "shop", "event_type": "order.paid", "payload": {**GOOD_ORDER, "total": -1}},
        {"tenant_id": "shop", "event_type": "legacy.ping", "payload": {}},
    ]
    code, body = d.request("POST", "/api/v1/webhooks/send-batch", {"events": items})
    assert code == 200
    ok, bad, dep = body["results"]
    assert ok["status"] == "queued" and "deprecated" not in ok
    assert bad["error"]["code"] == "schema_violation" and bad["status_code"] == 422
    assert bad["error"]["details"]["field"] == "events[1].payload" and bad["error"]["details"]["pointer"] == "/total"
    assert dep["status"] == "queued" and dep["deprecated"] is True

    _, metrics = d.request("GET", "/metrics")
    assert _metric(metrics, "hookrelay_deprecated_events_total", tenant="shop", event_type="legacy.ping") == 2
    assert _metric(metrics, "hookrelay_deprecated_events_total", tenant="shop", event_type="legacy.dated") == 1
    assert _metric(metrics, "hookrelay_schema_violations_total", tenant="shop", event_type="order.paid") == 5
    assert "not.in.catalog" not in metrics  # producer-chosen names never become labels

    code, listing = d.request("GET", "/api/v1/webhooks/event-types")
    assert code == 200
    assert [t["name"] for t in listing["event_types"]] == ["legacy.dated", "legacy.ping", "order.paid", "user.created"]
    paid = listing["event_types"][2]
    assert paid == {
        "name": "order.paid",
        "description": "An order was paid",
        "schema": ORDER_SCHEMA,
        "deprecated": False,
    }

    # The OpenAPI document is valid 3.1 and carries the catalog as webhooks.
    code, doc = d.request("GET", "/api/v1/openapi.json")
    assert code == 200
    validate_openapi(doc)
    assert sorted(doc["webhooks"]) == ["legacy.dated", "legacy.ping", "order.paid", "user.created"]
    op = doc["webhooks"]["order.paid"]["post"]
    envelope = op["requestBody"]["content"]["application/json"]["schema"]
    assert envelope["properties"]["event_type"] == {"const": "order.paid"}
    assert envelope["properties"]["payload"]["$defs"] == ORDER_SCHEMA["$defs"]
    assert envelope["properties"]["payload"]["$id"].startswith("urn:hookrelay:event-type:")
    assert doc["webhooks"]["legacy.ping"]["post"]["deprecated"] is True
    assert "deprecated" not in op

    # The catalog reloads with the config: drop the schema, and the same payload passes.
    _write(d.config / "catalog.yaml", {"event_types": [{"name": "order.paid"}]})
    d.signal(signal.SIGHUP)
    deadline = time.time() + 10
    while time.time() < deadline and d.send("shop", "order.paid", [1, 2])[0] != 202:
        time.sleep(0.1)
    assert d.send("shop", "order.paid", [1, 2])[0] == 202
    assert [t["name"] for t in d.request("GET", "/api/v1/webhooks/event-types")[1]["event_types"]] == ["order.paid"]
    assert d.stop() == 0
