#!/usr/bin/env python3
"""The complete hookrelay flow, against a running daemon.

    hookrelay run &                        # serves http://127.0.0.1:8787
    python examples/webhook_usage.py --url http://127.0.0.1:8787

1. configure a tenant through the API, pointing at the daemon's own `/api/v1/webhooks/receive`
   (which answers 200 only when the delivery's `X-Webhook-Signature` is valid for the tenant);
2. send an event built with `WebhookEvent(...).with_severity(...).with_context(...)`;
3. sign and verify a body locally with `relay.signing`, and have the daemon verify it too;
4. follow the event until it is delivered, and read the tenant's metrics;
5. send an event to a target that answers 404, watch it land in the dead-letter queue, list it,
   then purge it; finally remove the tenant (unless `--keep`).

Exit status 0 when every step did what it should; 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

try:
    from relay.client import RelayClient, RelayError, WebhookEvent
    from relay.signing import sign, verify_signature
except ImportError:  # running from a checkout without hookrelay installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from relay.client import RelayClient, RelayError, WebhookEvent
    from relay.signing import sign, verify_signature


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def say(text: str) -> None:
    print(f"   {text}", flush=True)


def wait_status(client: RelayClient, event_id: str, wanted: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            view = client.event(event_id)
        except RelayError as exc:
            if exc.code != "event_not_found":
                raise
        else:
            if view.get("status") in wanted:
                return view
        time.sleep(0.05)
    raise SystemExit(f"FAILED: event {event_id} not {'/'.join(sorted(wanted))} within {timeout}s: {view}")


def receive(url: str, token: str | None, tenant: str, body: bytes, signature: str) -> int:
    """POST a signed body to the daemon's /receive, as a webhook sender would; return the status."""
    headers = {"Content-Type": "application/json", "X-Tenant-ID": tenant, "X-Webhook-Signature": signature}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"{url}/api/v1/webhooks/receive", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def run(ns: argparse.Namespace) -> None:
    url = ns.url.rstrip("/")
    client = RelayClient(url, token=ns.token)
    tenant = ns.tenant
    secret = "demo-secret-" + secrets.token_hex(16)

    step(f"1. configure tenant {tenant!r} via POST /api/v1/webhooks/configure")
    config: dict[str, Any] = {
        "tenant_id": tenant,
        "base_url": f"{url}/api/v1/webhooks/receive",
        "secret_key": secret,
        "default_headers": {"X-API-Version": "v2"},
        "retry_policy": {"max_retries": 1, "initial_delay_seconds": 0.2, "max_delay_seconds": 1, "jitter": False},
        "timeout_seconds": 5,
        "enabled_events": ["user.*", "payment.completed", "order.*"],
    }
    if ns.token:  # the daemon's own /receive needs the ingest token too
        config["auth_config"] = {"auth_type": "Bearer", "token": ns.token}
    answer = client.configure(config)
    say(f"configured: {json.dumps(answer.get('config', answer))}")

    step("2. send an event built with WebhookEvent")
    event = (
        WebhookEvent(tenant, "user.created", {"user_id": 42, "email": "ana@example.com"})
        .with_severity("High")
        .with_context("source", "webhook_usage.py")
        .with_context("region", "eu-west-1")
    )
    event_id = client.send_event(event)
    say(f"queued {event_id}")
    filtered = client.send_result(tenant, "audit.log", {"ignored": True})
    say(f"an event type the tenant did not enable is {filtered['status']}: {filtered['event_id']}")
    if filtered["status"] != "filtered":
        raise SystemExit("FAILED: audit.log should have been filtered by enabled_events")

    step("3. signatures: sign and verify locally with relay.signing")
    body = json.dumps({"id": "evt_local", "event_type": "user.created", "payload": {"n": 1}}).encode()
    signature = sign(body, secret)
    say(f"X-Webhook-Signature: {signature}")
    good = verify_signature(body, signature, secret)
    tampered = verify_signature(body.replace(b'"n": 1', b'"n": 2'), signature, secret)
    wrong_key = verify_signature(body, signature, "not-the-secret")
    say(f"valid: {good}; tampered body: {tampered}; wrong secret: {wrong_key}")
    if not good or tampered or wrong_key:
        raise SystemExit("FAILED: local signature checks")
    status = receive(url, ns.token, tenant, body, signature)
    bad_status = receive(url, ns.token, tenant, body, sign(body, "not-the-secret"))
    say(f"the daemon's /receive answers {status} for the good signature, {bad_status} for a forged one")
    if status != 200 or bad_status != 401:
        raise SystemExit("FAILED: /receive should answer 200 then 401")

    step(f"4. follow {event_id} until it is delivered")
    view = wait_status(client, event_id, {"delivered"}, ns.timeout)
    for a in view["attempts"]:
        say(f"attempt {a['attempt']}: status {a['status_code']} in {a['duration_ms']} ms")
    say(f"status: {view['status']}")
    say(f"tenant metrics: {json.dumps(client.metrics(tenant))}")

    step("5. the dead-letter queue")
    failing = client.send(
        tenant,
        "order.failed",
        {"order_id": "A-1"},
        target_url=f"{url}/api/v1/webhooks/no-such-endpoint",  # answers 404: a failed attempt
    )
    say(f"sent {failing} to an endpoint that answers 404 (2 attempts, then dead-lettered)")
    wait_status(client, failing, {"dead"}, ns.timeout)
    items = client.dead_letters(tenant)
    for item in items:
        ev = item["event"]
        say(
            f"dead letter {ev['id']} ({ev['event_type']}): {len(item['attempts'])} attempt(s), "
            f"failed at {item['failed_at']}: {item['failure_reason']}"
        )
    if failing not in [i["event"]["id"] for i in items]:
        raise SystemExit(f"FAILED: {failing} is not in the dead-letter queue")
    say(f"purged {client.purge(tenant)} dead letter(s) of {tenant}")

    if not ns.keep:
        client.delete_config(tenant)
        say(f"removed tenant {tenant}")
    print("\nOK: configure, send, verify, deliver, dead-letter: all done", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description="The complete hookrelay flow against a running daemon.")
    p.add_argument("--url", default="http://127.0.0.1:8787", help="the daemon's base URL")
    p.add_argument("--token", default=None, help="the daemon's --ingest-token, if it has one")
    p.add_argument("--tenant", default="example-webhook-usage", help="tenant id to create (and remove)")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for each delivery")
    p.add_argument("--keep", action="store_true", help="keep the tenant at the end")
    ns = p.parse_args()
    try:
        run(ns)
    except RelayError as exc:
        print(f"FAILED: the API answered {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
