"""Per-tenant forward proxy (SPEC §13): `proxy: http://[user:password@]host:port`, or `env`.

aiohttp sends https through the proxy with CONNECT (TLS, and the tenant's `tls` settings, run
end to end inside the tunnel) and plain http in absolute form. Credentials never go to aiohttp
inside the proxy URL: they travel as a separate BasicAuth, so no aiohttp error message can
quote them. The environment's proxy variables (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY) are
read only for tenants that say `proxy: env`; the session itself never trusts the environment.
"""

from __future__ import annotations

import functools
import urllib.request
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

__all__ = ["PROBLEM", "check", "route_for"]

PROBLEM = "must be env or http://[user:password@]host:port"


def check(value: str) -> str | None:
    """Why `value` is not a usable `proxy`, or None. Never echoes it (it may hold a password)."""
    if value == "env":
        return None
    try:
        parts = urlsplit(value)
        _ = parts.port  # ValueError on a bad port
    except ValueError:
        return PROBLEM
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        return PROBLEM
    if any(c.isspace() or not c.isprintable() for c in value):
        return PROBLEM
    return None


@functools.lru_cache(maxsize=256)
def _split(url: str) -> tuple[str, aiohttp.BasicAuth | None]:
    """(the proxy URL without userinfo, its credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    auth = None
    if parts.username is not None:
        auth = aiohttp.BasicAuth(unquote(parts.username), unquote(parts.password or ""))
    return urlunsplit((parts.scheme or "http", netloc, "", "", "")), auth


@functools.cache
def _environment() -> dict[str, str]:
    # The environment does not change under a running daemon: read it once.
    return urllib.request.getproxies_environment()


def _from_environment(url: str) -> str | None:
    proxies = _environment()
    parts = urlsplit(url)
    # proxy_bypass_environment applies NO_PROXY; it is in CPython's urllib but not in typeshed.
    if urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):  # type: ignore[attr-defined]
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


def route_for(proxy: str | None, url: str) -> dict[str, Any]:
    """The request options that send `url` through the tenant's proxy ({} for none)."""
    if proxy is None:
        return {}
    chosen = _from_environment(url) if proxy == "env" else proxy
    if chosen is None:
        return {}
    plain, auth = _split(chosen)
    return {"proxy": plain, "proxy_auth": auth}
