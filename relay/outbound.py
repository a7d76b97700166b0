"""One attempt with the tenant's outbound trust applied (SPEC §13): TLS context and SNI name,
and an OAuth2 client-credentials token.

The engine calls `deliver` instead of `dispatch.post`. Everything here is per request on the one
shared ClientSession: aiohttp keys its connection pool by (host, port, SSL context, proxy, proxy
credentials, SNI name), so each distinct TLS context gets connections of its own without a
session per tenant. The token request goes out on the same session, so the egress guard's
resolver checks the token endpoint's addresses like any receiver's.
"""

from __future__ import annotations

import functools
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

from relay.config import OAUTH2, AuthConfig, TenantConfig
from relay.dispatch import EgressPolicy, Outcome, post
from relay.oauth import Client, TokenCache, TokenError
from relay.proxy import ProxyRoute, route_for
from relay.tls import context_of

__all__ = ["TOKENS", "deliver"]

# One token cache for the process, like the connection pool: tokens outlive config reloads that
# do not change the tenant's credentials.
TOKENS = TokenCache()


@functools.lru_cache(maxsize=1024)
def _client(auth: AuthConfig) -> Client:
    assert auth.token_url is not None and auth.client_id is not None and auth.client_secret is not None
    return Client(auth.token_url, auth.client_id, auth.client_secret, auth.scope, auth.audience)


async def deliver(
    session: aiohttp.ClientSession,
    cfg: TenantConfig,
    url: str,
    body: bytes,
    headers: CIMultiDict[str],
    policy: EgressPolicy,
) -> Outcome:
    ctx = context_of(cfg)
    # secrets: what post() masks in a kept receiver answer (the tenant's credentials).
    options: dict[str, Any] = {"ssl_context": ctx, "secrets": cfg.redaction_values}
    # server_name names the tenant's endpoint: a target_url on another host keeps its own name.
    if cfg.tls is not None and cfg.tls.server_name and urlsplit(url).hostname == urlsplit(cfg.base_url).hostname:
        options["server_hostname"] = cfg.tls.server_name
    proxy = route_for(cfg.proxy, url)
    if proxy is not None:
        options.update(proxy.options(url, headers))
    auth = cfg.auth_config
    if auth is None or auth.auth_type != OAUTH2:
        return _scrub(await post(session, url, body, headers, cfg.timeout_seconds, policy, **options), proxy)

    start = time.perf_counter()
    client = _client(auth)
    token_options: dict[str, Any] = {"ssl": True if ctx is None else ctx}
    token_headers: dict[str, str] = {}
    token_proxy = route_for(cfg.proxy, client.token_url)
    if token_proxy is not None:
        token_options.update(token_proxy.options(client.token_url, token_headers))
    name = auth.header_name or "Authorization"
    refused = policy.refusal(urlsplit(client.token_url).hostname or "")
    if refused:  # an IP literal never reaches the resolver, so check it here as post() does
        return Outcome("connection_error", None, f"OAuth2 token URL refused: {refused}", 0.0)
    fetch = functools.partial(
        TOKENS.token, session, cfg.tenant_id, client, cfg.timeout_seconds, options=token_options, headers=token_headers
    )
    try:
        token = await fetch()
    except TokenError as exc:
        return _scrub(Outcome("connection_error", None, str(exc), time.perf_counter() - start), token_proxy)
    headers[name] = f"Bearer {token}"
    out = _scrub(await post(session, url, body, headers, cfg.timeout_seconds, policy, **options), proxy)
    if out.status != 401:
        return out
    # The receiver refused the token (revoked, or expired early): one fresh token, one more try,
    # all within this attempt.
    try:
        token = await fetch(refused=token)
    except TokenError as exc:
        out.error = f"HTTP 401, and no new token: {exc}"
        return _scrub(out, token_proxy)
    headers[name] = f"Bearer {token}"
    again = await post(session, url, body, headers, cfg.timeout_seconds, policy, **options)
    again.duration += out.duration
    return _scrub(again, proxy)


def _scrub(out: Outcome, proxy: ProxyRoute | None) -> Outcome:
    """Belt and braces: no error text leaves here with the proxy password in it."""
    if out.error and proxy is not None and proxy.password and proxy.password in out.error:
        out.error = out.error.replace(proxy.password, "***")
    return out
