"""One attempt with the tenant's outbound trust applied (SPEC §13): TLS context and SNI name.

The engine calls `deliver` instead of `dispatch.post`. Everything here is per request on the one
shared ClientSession: aiohttp keys its connection pool by (host, port, SSL context, proxy, proxy
credentials, SNI name), so each distinct TLS context gets connections of its own without a
session per tenant.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

from relay.config import TenantConfig
from relay.dispatch import EgressPolicy, Outcome, post
from relay.tls import context_of

__all__ = ["deliver"]


async def deliver(
    session: aiohttp.ClientSession,
    cfg: TenantConfig,
    url: str,
    body: bytes,
    headers: CIMultiDict[str],
    policy: EgressPolicy,
) -> Outcome:
    server_name = None
    # server_name names the tenant's endpoint: a target_url on another host keeps its own name.
    if cfg.tls is not None and cfg.tls.server_name and urlsplit(url).hostname == urlsplit(cfg.base_url).hostname:
        server_name = cfg.tls.server_name
    return await post(
        session,
        url,
        body,
        headers,
        cfg.timeout_seconds,
        policy,
        ssl_context=context_of(cfg),
        server_hostname=server_name,
    )
