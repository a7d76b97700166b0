"""The OpenAPI 3.1 document of the HTTP API (served at /api/v1/openapi.json).

Kept true by tests: every registered route is documented here and every documented path answers.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import quote

from relay import __version__
from relay.catalog import Catalog, EventType

P = "/api/v1/webhooks"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_TENANT_Q = _query("tenant_id", {"type": "string"}, "only this tenant")
_INSTANT = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}]}
_LEDGER_Q = [
    _query("since", {"type": "string"}, "failed at or after: RFC 3339 or UNIX seconds"),
    _query("until", {"type": "string"}, "failed at or before: RFC 3339 or UNIX seconds"),
    _query("event_type", {"type": "string"}, "event type pattern: '*', 'prefix.*' or exact"),
]
_MATCHED = {"type": "object", "required": ["matched"], "properties": {"matched": {"type": "integer", "minimum": 0}}}

_ENDPOINT_PROPS: dict[str, Any] = {
    "endpoint_state": {"enum": ["enabled", "failing", "disabled"]},
    "endpoint_state_since": {"type": "string", "format": "date-time"},
    "endpoint_state_reason": {"type": "string"},
}

SCHEMAS: dict[str, Any] = {
    "LedgerFilter": {
        "type": "object",
        "additionalProperties": False,
        "description": "Which dead letters; every field optional (none: all of them)",
        "properties": {
            "tenant_id": {"type": ["string", "null"]},
            "since": {**_INSTANT, "description": "failed_at at or after: RFC 3339 or UNIX seconds"},
            "until": {**_INSTANT, "description": "failed_at at or before: RFC 3339 or UNIX seconds"},
            "event_type": {"type": ["string", "null"], "description": "'*', 'prefix.*' or an exact type"},
        },
    },
    "EndpointState": {
        "type": "object",
        "required": ["tenant_id", "endpoint_state", "endpoint_state_since", "endpoint_state_reason"],
        "properties": {"tenant_id": {"type": "string"}, **_ENDPOINT_PROPS},
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}},
            }
        },
    },
    "SendRequest": {
        "type": "object",
        "required": ["tenant_id", "event_type", "payload"],
        "additionalProperties": False,
        "properties": {
            "tenant_id": {"type": "string", "minLength": 1},
            "event_type": {"type": "string", "minLength": 1, "maxLength": 256},
            "payload": {"description": "any JSON value"},
            "target_url": {"type": "string", "format": "uri"},
            "custom_headers": _STR_MAP,
            "severity": {"enum": ["Low", "Medium", "High", "Critical"], "default": "Medium"},
            "context": _STR_MAP,
            "event_id": {"type": "string", "pattern": "^[A-Za-z0-9._:~-]{1,128}$"},
            "ordering_key": {
                "type": "string",
                "maxLength": 256,
                "description": "at most 256 bytes (UTF-8); orders events of one key on an `ordering: fifo` tenant",
            },
            "trace_context": {
                "description": "W3C trace context of this event; overrides the request's traceparent/tracestate "
                "headers. Read as {traceparent, tracestate}; any other value is ignored, never an error.",
            },
        },
    },
    "SendResult": {
        "type": "object",
        "required": ["event_id", "status"],
        "properties": {
            "event_id": {"type": "string"},
            "status": {"enum": ["queued", "filtered", "delivering", "retrying", "delivered", "dead", "purged"]},
            "duplicate": {"type": "boolean"},
        },
    },
    "BatchRequest": {
        "type": "object",
        "required": ["events"],
        "properties": {"events": {"type": "array", "maxItems": 1000, "items": _ref("SendRequest")}},
    },
    "Attempt": {
        "type": "object",
        "required": ["attempt", "round", "at", "status_code", "error", "duration_ms"],
        "properties": {
            "attempt": {"type": "integer", "minimum": 1, "description": "1, 2, ... within its round"},
            "round": {
                "type": "integer",
                "minimum": 1,
                "description": "1 for the first delivery run, +1 for each replay of the dead letter",
            },
            "at": {"type": "string", "format": "date-time"},
            "status_code": {"type": ["integer", "null"]},
            "error": {"type": ["string", "null"]},
            "duration_ms": {"type": "number"},
            "response_body": {"type": "string", "description": "first 1 KB of a non-2xx answer"},
        },
    },
    "Envelope": {
        "type": "object",
        "description": "The delivered body, exactly as signed",
        "required": ["id", "event_type", "tenant_id", "created_at", "severity", "context", "payload"],
        "properties": {
            "id": {"type": "string"},
            "event_type": {"type": "string"},
            "tenant_id": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "severity": {"type": "string"},
            "context": _STR_MAP,
            "payload": {},
        },
    },
    "TenantConfig": {
        "type": "object",
        "description": "A tenant, with the keys of the YAML files (SPEC §2). Secrets are masked as *** in answers.",
        "required": ["tenant_id", "base_url"],
        "properties": {
            "tenant_id": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
            "base_url": {"type": "string", "format": "uri"},
            "secret_key": {"type": "string"},
            "secret_key_file": {"type": "string"},
            "default_headers": _STR_MAP,
            "retry_policy": {
                "type": "object",
                "properties": {
                    "max_retries": {"type": "integer", "minimum": 0},
                    "initial_delay_seconds": {"type": "number", "minimum": 0},
                    "backoff_multiplier": {"type": "number", "minimum": 1},
                    "max_delay_seconds": {"type": "number", "minimum": 0},
                    "jitter": {"type": "boolean"},
                },
            },
            "timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
            "disable_after_seconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "failing this long disables the endpoint (default 432000)",
            },
            "probe_interval_seconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "a disabled endpoint is probed this often (default 300)",
            },
            "enabled_events": {"type": "array", "items": {"type": "string"}},
            "active": {"type": "boolean"},
            "auth_config": {
                "type": ["object", "null"],
                "properties": {
                    "auth_type": {"enum": ["Bearer", "ApiKey", "Basic", "OAuth2ClientCredentials"]},
                    "token": {"type": ["string", "null"]},
                    "header_name": {"type": ["string", "null"]},
                    "token_url": {"type": "string", "format": "uri", "description": "OAuth2ClientCredentials"},
                    "client_id": {"type": "string"},
                    "client_secret": {"type": "string", "description": "masked as *** in answers"},
                    "client_secret_file": {"type": "string"},
                    "scope": {"type": ["string", "null"]},
                    "audience": {"type": ["string", "null"]},
                },
            },
            "signature_schemes": {
                "type": "array",
                "items": {"enum": ["hmac-sha256", "standard-webhooks", "standard-webhooks-ed25519"]},
            },
            "signing_key": {"type": ["string", "null"], "description": "whsk_<base64 Ed25519 seed>"},
            "signing_key_file": {"type": "string"},
            "tls": {
                "type": ["object", "null"],
                "properties": {
                    "ca_file": {"type": ["string", "null"]},
                    "ca_only": {"type": "boolean"},
                    "client_cert_file": {"type": ["string", "null"]},
                    "client_key_file": {"type": ["string", "null"]},
                    "server_name": {"type": ["string", "null"]},
                    "insecure_skip_verify": {"type": "boolean"},
                },
            },
            "proxy": {
                "type": ["string", "null"],
                "description": "env, or http://[user:password@]host:port (password masked in answers)",
            },
            "max_in_flight": {"type": "integer", "minimum": 1},
            "rate_limit_per_second": {"type": ["number", "null"]},
            "circuit_breaker": {
                "type": "object",
                "properties": {"failure_threshold": {"type": "integer"}, "enabled": {"type": "boolean"}},
            },
            "previous_secret_keys": {"type": "array", "items": {"type": "string"}},
            "allowed_target_hosts": {
                "type": "array",
                "items": {"type": "string"},
                "description": "hosts a target_url may name besides the origin of base_url (*.example.com allowed)",
            },
            "require_known_event_types": {"type": "boolean"},
        },
    },
    "EventType": {
        "type": "object",
        "required": ["name", "description", "schema", "deprecated"],
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "schema": {"description": "JSON Schema (draft 2020-12) of the payload, or null"},
            "deprecated": {
                "description": "false, true, or the date it is deprecated as of",
                "type": ["boolean", "string"],
            },
        },
    },
    "TenantMetrics": {
        "type": "object",
        "required": [
            "total_events",
            "successful_events",
            "failed_events",
            "pending_retries",
            "dead_letter_count",
            "avg_response_time_ms",
            "last_updated",
        ],
        "properties": {
            "tenant_id": {"type": "string"},
            "total_events": {"type": "integer"},
            "successful_events": {"type": "integer"},
            "failed_events": {"type": "integer"},
            "pending_retries": {"type": "integer"},
            "pending_events": {"type": "integer"},
            "dead_letter_count": {"type": "integer"},
            "avg_response_time_ms": {"type": "number"},
            "circuit_open": {"type": "boolean"},
            **_ENDPOINT_PROPS,
            "last_updated": {"type": "string", "format": "date-time"},
        },
    },
    "DeadLetter": {
        "type": "object",
        "required": ["event", "attempts", "failed_at", "failure_reason", "can_retry"],
        "properties": {
            "event": _ref("Envelope"),
            "event_id": {"type": "string"},
            "tenant_id": {"type": "string"},
            "attempts": {"type": "array", "items": _ref("Attempt")},
            "failed_at": {"type": "string", "format": "date-time"},
            "failure_reason": {"type": "string"},
            "can_retry": {"type": "boolean"},
        },
    },
    "EventView": {
        "type": "object",
        "required": ["event_id", "tenant_id", "status", "attempts"],
        "properties": {
            "event_id": {"type": "string"},
            "tenant_id": {"type": "string"},
            "status": {"enum": ["queued", "delivering", "retrying", "delivered", "dead", "purged"]},
            "attempts": {"type": "array", "items": _ref("Attempt")},
        },
    },
    "Readiness": {
        "type": "object",
        "required": ["ready", "checks"],
        "properties": {
            "ready": {"type": "boolean"},
            "checks": {"type": "object"},
            "config_digest": {"type": "string"},
            "reason": {"type": "string"},
        },
    },
}

_BAD = {"400": _err("malformed JSON"), "413": _err("body too large"), "422": _err("invalid field")}


@functools.cache
def document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        f"{P}/send": {
            "post": {
                "summary": "Accept one event (journaled before the answer)",
                "operationId": "send",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SendRequest")}}},
                "responses": {
                    "202": _json(_ref("SendResult"), "journaled and queued"),
                    "200": _json(_ref("SendResult"), "filtered, or a duplicate event_id"),
                    "404": _err("unknown tenant"),
                    "409": _err("tenant inactive"),
                    "503": _err("journal unavailable"),
                    **_BAD,
                },
            }
        },
        f"{P}/send-batch": {
            "post": {
                "summary": "Accept up to 1000 events in one journal commit",
                "operationId": "sendBatch",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("BatchRequest")}}},
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"results": {"type": "array", "items": {"type": "object"}}}},
                        "per item, in order, what /send would answer",
                    ),
                    **_BAD,
                },
            }
        },
        f"{P}/event-types": {
            "get": {
                "summary": "The event catalog (event_types: in the config files), by name",
                "operationId": "listEventTypes",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["event_types"],
                            "properties": {"event_types": {"type": "array", "items": _ref("EventType")}},
                        },
                        "every catalog entry",
                    )
                },
            }
        },
        f"{P}/configs": {
            "get": {
                "summary": "All tenants, secrets masked",
                "operationId": "listConfigs",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "configs": {"type": "array", "items": _ref("TenantConfig")},
                                "config_digest": {"type": "string"},
                            },
                        },
                        "tenants",
                    )
                },
            }
        },
        P + "/configs/{tenant_id}/public-key": {
            "get": {
                "summary": "The public key that verifies the tenant's v1a (Ed25519) signatures",
                "operationId": "publicKey",
                "parameters": [_path_param("tenant_id")],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["public_key"],
                            "properties": {
                                "tenant_id": {"type": "string"},
                                "public_key": {"type": "string", "pattern": "^whpk_"},
                            },
                        },
                        "whpk_<base64 of the 32-byte Ed25519 public key>",
                    ),
                    "404": _err("unknown tenant, or no signing_key"),
                },
            }
        },
        f"{P}/configure": {
            "post": {
                "summary": "Create or replace a tenant (writes <config>/<tenant_id>.yaml)",
                "operationId": "configure",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("TenantConfig")}}},
                "responses": {
                    "200": _json({"type": "object"}, "replaced"),
                    "201": _json({"type": "object"}, "created"),
                    "409": _err(
                        "read-only config, tenant defined in another file, or <tenant_id>.yaml holds other tenants"
                    ),
                    **_BAD,
                },
            }
        },
        P + "/config/{tenant_id}": {
            "delete": {
                "summary": "Remove a tenant",
                "operationId": "deleteConfig",
                "parameters": [_path_param("tenant_id")],
                "responses": {
                    "204": {"description": "removed"},
                    "404": _err("unknown tenant"),
                    "409": _err("read-only"),
                },
            }
        },
        P + "/metrics/{tenant_id}": {
            "get": {
                "summary": "Per-tenant figures",
                "operationId": "tenantMetrics",
                "parameters": [_path_param("tenant_id")],
                "responses": {"200": _json(_ref("TenantMetrics"), "figures"), "404": _err("unknown tenant")},
            }
        },
        P + "/endpoints/{tenant_id}/enable": {
            "post": {
                "summary": "Enable the tenant's endpoint: held events drain, oldest first",
                "operationId": "enableEndpoint",
                "parameters": [_path_param("tenant_id")],
                "responses": {"202": _json(_ref("EndpointState"), "enabled"), "404": _err("unknown tenant")},
            }
        },
        P + "/endpoints/{tenant_id}/disable": {
            "post": {
                "summary": "Disable the tenant's endpoint: new events are held, nothing is attempted",
                "operationId": "disableEndpoint",
                "parameters": [_path_param("tenant_id")],
                "responses": {"202": _json(_ref("EndpointState"), "disabled"), "404": _err("unknown tenant")},
            }
        },
        f"{P}/dead-letter": {
            "get": {
                "summary": "Dead letters, oldest first",
                "operationId": "listDeadLetters",
                "parameters": [
                    _TENANT_Q,
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size (100)"),
                    _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
                    *_LEDGER_Q,
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "items": {"type": "array", "items": _ref("DeadLetter")},
                                "next_cursor": {"type": ["string", "null"]},
                            },
                        },
                        "a page",
                    ),
                    "422": _err("bad limit, cursor, since, until or event_type"),
                },
            },
            "delete": {
                "summary": "Purge dead letters (extension)",
                "operationId": "purgeDeadLetters",
                "parameters": [_TENANT_Q],
                "responses": {
                    "200": _json({"type": "object", "properties": {"purged": {"type": "integer"}}}, "purged")
                },
            },
        },
        f"{P}/dead-letter/retry": {
            "post": {
                "summary": "Requeue every dead letter (extension)",
                "operationId": "retryAllDeadLetters",
                "parameters": [_TENANT_Q],
                "responses": {
                    "202": _json({"type": "object", "properties": {"requeued": {"type": "integer"}}}, "requeued")
                },
            }
        },
        P + "/dead-letter/{event_id}": {
            "get": {
                "summary": "One dead letter (extension)",
                "operationId": "getDeadLetter",
                "parameters": [_path_param("event_id")],
                "responses": {"200": _json(_ref("DeadLetter"), "the dead letter"), "404": _err("not dead-lettered")},
            },
            "delete": {
                "summary": "Purge one dead letter (extension)",
                "operationId": "purgeDeadLetter",
                "parameters": [_path_param("event_id")],
                "responses": {"204": {"description": "purged"}, "404": _err("not dead-lettered")},
            },
        },
        P + "/retry/{event_id}": {
            "post": {
                "summary": "Requeue a dead letter",
                "operationId": "retry",
                "parameters": [_path_param("event_id")],
                "responses": {
                    "202": _json(_ref("SendResult"), "requeued"),
                    "404": _err("not dead-lettered"),
                    "409": _err("its tenant is not configured"),
                },
            }
        },
        f"{P}/retry-all": {
            "post": {
                "summary": "Requeue the dead letters the filters match (of configured tenants)",
                "operationId": "retryMatching",
                "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("LedgerFilter")}}},
                "responses": {"202": _json(_MATCHED, "how many were requeued"), **_BAD},
            }
        },
        f"{P}/purge-all": {
            "post": {
                "summary": "Delete the dead letters the filters match, for good",
                "operationId": "purgeMatching",
                "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("LedgerFilter")}}},
                "responses": {"200": _json(_MATCHED, "how many were deleted"), **_BAD},
            }
        },
        P + "/events/{event_id}": {
            "get": {
                "summary": "Status and attempts of an event",
                "operationId": "getEvent",
                "parameters": [_path_param("event_id")],
                "responses": {"200": _json(_ref("EventView"), "the event"), "404": _err("unknown event")},
            }
        },
        f"{P}/receive": {
            "post": {
                "summary": "Verify a signed callback (raw body, X-Webhook-Signature, X-Tenant-ID)",
                "operationId": "receive",
                "parameters": [
                    {"name": "X-Tenant-ID", "in": "header", "required": False, "schema": {"type": "string"}},
                    {"name": "X-Webhook-Signature", "in": "header", "required": False, "schema": {"type": "string"}},
                    {"name": "X-Timestamp", "in": "header", "required": False, "schema": {"type": "string"}},
                    {"name": "webhook-id", "in": "header", "required": False, "schema": {"type": "string"}},
                    {"name": "webhook-timestamp", "in": "header", "required": False, "schema": {"type": "string"}},
                    {"name": "webhook-signature", "in": "header", "required": False, "schema": {"type": "string"}},
                ],
                "requestBody": {"required": False, "content": {"application/octet-stream": {"schema": {}}}},
                "responses": {
                    "200": _json({"type": "object", "properties": {"valid": {"const": True}}}, "valid"),
                    "401": _json(
                        {"type": "object", "properties": {"valid": {"const": False}}},
                        "bad signature, or a timestamp more than --receive-tolerance (300 s) from now",
                    ),
                },
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": {"200": {"description": "text exposition", "content": {"text/plain": {"schema": {}}}}},
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "operationId": "healthz",
                "responses": {"200": _json({"type": "object"}, "alive")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: config loaded, journal writable, not shutting down",
                "operationId": "readyz",
                "responses": {
                    "200": _json(_ref("Readiness"), "ready"),
                    "503": _json(_ref("Readiness"), "not ready, with the reason"),
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hookrelay",
            "version": __version__,
            "description": "Webhook relay daemon API. With --ingest-token, every path except "
            "/metrics, /healthz and /readyz needs `Authorization: Bearer <token>`.",
        },
        "servers": [{"url": "http://127.0.0.1:8787"}],
        "paths": paths,
        "webhooks": {},  # the event catalog's types, filled in by document_for()
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"ingestToken": {"type": "http", "scheme": "bearer"}},
        },
    }


# ---- the event catalog as OpenAPI 3.1 webhooks --------------------------------------------

_DELIVERY_HEADERS = [
    {"name": "X-Webhook-Signature", "in": "header", "required": True, "schema": {"type": "string"}},
    {"name": "X-Event-ID", "in": "header", "required": True, "schema": {"type": "string"}},
    {"name": "X-Event-Type", "in": "header", "required": True, "schema": {"type": "string"}},
    {"name": "X-Tenant-ID", "in": "header", "required": True, "schema": {"type": "string"}},
    {"name": "X-Timestamp", "in": "header", "required": True, "schema": {"type": "string"}},
    {"name": "traceparent", "in": "header", "required": False, "schema": {"type": "string"}},
]


def _payload_schema(name: str, schema: Any) -> Any:
    if schema is None:
        return {"description": "any JSON value (no schema in the catalog)"}
    if isinstance(schema, dict) and "$id" not in schema:
        # Its own resource: a "#/$defs/..." inside it must not resolve against this document.
        return {"$id": f"urn:hookrelay:event-type:{quote(name, safe='.-_~')}", **schema}
    return schema


def _webhook(et: EventType) -> dict[str, Any]:
    envelope = {
        "type": "object",
        "required": ["id", "event_type", "tenant_id", "created_at", "severity", "context", "payload"],
        "properties": {
            "id": {"type": "string"},
            "event_type": {"const": et.name},
            "tenant_id": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "severity": {"enum": ["Low", "Medium", "High", "Critical"]},
            "context": _STR_MAP,
            "payload": _payload_schema(et.name, et.schema),
        },
    }
    op: dict[str, Any] = {
        "summary": et.description or et.name,
        "description": f"What a receiver gets for event type {et.name!r} (SPEC §4): the envelope, signed.",
        "parameters": _DELIVERY_HEADERS,
        "requestBody": {"required": True, "content": {"application/json": {"schema": envelope}}},
        "responses": {
            "2XX": {"description": "delivered"},
            "410": {"description": "gone: no more deliveries to this endpoint"},
            "default": {"description": "a failed attempt: retried per the tenant's policy"},
        },
    }
    if et.deprecated is not False:
        op["deprecated"] = True
    return {"post": op}


def document_for(catalog: Catalog) -> dict[str, Any]:
    """The document with the catalog as `webhooks`, one entry per event type."""
    return {**document(), "webhooks": {name: _webhook(catalog.types[name]) for name in sorted(catalog.types)}}
