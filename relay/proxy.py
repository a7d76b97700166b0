"""Per-tenant forward proxy (SPEC §13): `proxy: http://[user:password@]host:port`, or `env`.

aiohttp sends https through the proxy with CONNECT (TLS, and the tenant's `tls` settings, run
end to end inside the tunnel) and plain http in absolute form. Credentials never go to aiohttp
inside the proxy URL: they travel as a ready Proxy-Authorization header, so no aiohttp error
message can quote them. The environment's proxy variables (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY) are
read only for tenants that say `proxy: env`; the session itself never trusts the environment.
"""

from __future__ import annotations

import base64
import functools
import urllib.request
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["PROBLEM", "ProxyRoute", "check", "route_for"]

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


@dataclass(frozen=True, slots=True)
class ProxyRoute:
    url: str  # the proxy, without userinfo
    authorization: str | None  # the Proxy-Authorization value ("Basic ...")
    password: str | None  # kept to scrub from error text

    def options(self, target: str, headers: MutableMapping[str, str]) -> dict[str, Any]:
        """Request options sending `target` through this proxy.

        For https the credentials go on the CONNECT request only. For plain http the request
        itself goes to the proxy, so they go in its headers (the proxy consumes them: the header
        is hop-by-hop), which is what aiohttp's own proxy_auth did.
        """
        if self.authorization is None:
            return {"proxy": self.url}
        if urlsplit(target).scheme == "https":
            return {"proxy": self.url, "proxy_headers": {"Proxy-Authorization": self.authorization}}
        headers["Proxy-Authorization"] = self.authorization
        return {"proxy": self.url}


@functools.lru_cache(maxsize=256)
def _route(url: str) -> ProxyRoute:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    plain = urlunsplit((parts.scheme or "http", netloc, "", "", ""))
    if parts.username is None:
        return ProxyRoute(plain, None, None)
    user, password = unquote(parts.username), unquote(parts.password or "")
    basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return ProxyRoute(plain, f"Basic {basic}", password or None)


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


def route_for(proxy: str | None, url: str) -> ProxyRoute | None:
    """The proxy that `url` goes through for a tenant's `proxy` setting (None: directly)."""
    if proxy is None:
        return None
    chosen = _from_environment(url) if proxy == "env" else proxy
    return None if chosen is None else _route(chosen)
