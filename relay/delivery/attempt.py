"""One attempt as a value: build the request, send it, and decide what happens next.

Nothing here raises for a bad event: anything that stops a request from being built or sent is
an `Outcome` of kind "error" with the reason, retried per the policy and then dead-lettered,
never an exception that would put the event back in line for ever.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from relay import tracing
from relay.config import TenantConfig
from relay.dispatch import EgressPolicy, Outcome, build_headers, describe_error
from relay.events import Attempt, StoredEvent, rfc3339
from relay.outbound import deliver

log = logging.getLogger("relay.delivery")

# What each outcome counts as in hookrelay_delivery_attempts_total{outcome} (SPEC §6 values).
METRIC_OUTCOME = {
    "success": "success",
    "http_error": "http_error",
    "timeout": "timeout",
    "connection_error": "connection_error",
    "refused": "connection_error",  # our egress policy: no connection was made
    "error": "connection_error",  # the request could not be built: nothing was sent
}


_NOT_ALLOWED = (
    "target_url is not allowed by the tenant's current config (not base_url's origin or allowed_target_hosts)"
)


async def send(
    session: aiohttp.ClientSession,
    cfg: TenantConfig,
    stored: StoredEvent,
    event_id: str,
    egress: EgressPolicy,
    attempt: int = 0,
) -> Outcome:
    if stored.target_url is not None and not cfg.target_allowed(stored.target_url):
        # Accepted under an older config: the tenant's signature, auth and headers go only to its
        # own origin and allowed_target_hosts (SPEC §3), so this event is refused, never sent.
        return Outcome("refused", None, _NOT_ALLOWED, 0.0)
    span: tracing.AttemptSpan | None = None
    try:
        headers = build_headers(cfg, stored, event_id, int(time.time()))
        # The event's trace context (SPEC §14), set last; with OTel export, the attempt's span.
        span = tracing.on_attempt(
            headers, stored.traceparent, stored.tracestate, cfg.tenant_id, stored.event_type, event_id, attempt
        )
        url = stored.target_url or cfg.base_url
        out = await deliver(session, cfg, url, stored.envelope, headers, egress)
    except Exception as exc:  # an unusable event is an outcome, never a crash loop
        reason = f"request could not be built: {describe_error(exc)}"
        log.debug("event %s: %s", event_id, reason)
        out = Outcome("error", None, reason, 0.0)
    if span is not None:
        span.end(out.status, out.kind, out.error)
    return out


def record(out: Outcome, n: int, started: float, round_no: int = 0) -> Attempt:
    """The attempt as it is journaled and shown (`attempts[]`), from its outcome."""
    return Attempt(
        attempt=n,
        at=rfc3339(started),
        status_code=out.status,
        error=out.error,
        duration_ms=round(out.duration * 1000, 3),
        response_body=out.body,
        round=round_no,
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str  # delivered | retry | dead
    delay: float = 0.0  # retry: seconds until the next attempt
    reason: str | None = None  # dead: why


def decide(out: Outcome, tries: int, cfg: TenantConfig, rand: Callable[[], float] = random.random) -> Verdict:
    """What follows attempt number `tries` (of this round) with outcome `out`."""
    if out.ok:
        return Verdict("delivered")
    policy = cfg.retry_policy
    if out.final is not None:
        return Verdict("dead", reason=out.final)
    if out.status is not None and out.status in cfg.final_statuses:
        reason = f"receiver answered {out.status}, a final status for this tenant (final_statuses)"
        return Verdict("dead", reason=reason)
    if tries > policy.max_retries:
        return Verdict("dead", reason=f"max retries exceeded: {tries} attempts, last error: {out.error}")
    delay = policy.delay(tries, rand)
    if out.retry_after is not None:
        delay = max(delay, min(out.retry_after, policy.max_delay_seconds))
    return Verdict("retry", delay=delay)
