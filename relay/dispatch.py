"""One delivery attempt: headers, signature, auth, the egress guard, the POST, and its outcome."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import socket
import ssl
import time
import weakref
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict

from relay import __version__, http1, redact
from relay.config import TenantConfig
from relay.events import RESERVED_HEADERS, StoredEvent
from relay.signing import sign, standard_webhooks_ed25519_sign, standard_webhooks_sign

USER_AGENT = f"hookrelay/{__version__}"
MAX_BODY_READ = 64 * 1024  # read at most this much of a receiver's answer
KEEP_BODY = 1024  # and keep this much of it in the attempt record

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Cloud metadata services and link-local ranges: reachable from a pod, never a webhook target.
ALWAYS_DENIED: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",
        "fe80::/10",
        "fd00:ec2::254/128",
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "168.63.129.16/32",  # Azure WireServer (and its DNS and health probes)
        "0.0.0.0/8",
    )
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
PRIVATE: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
        "::/128",
    )
)


class TargetRefused(OSError):
    """The target resolves only to addresses the egress policy forbids."""


@dataclass(frozen=True)
class EgressPolicy:
    deny_private: bool = False
    allow: tuple[Network, ...] = ()

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - policies live as long as the process
    def refusal(self, address: str) -> str | None:
        """Why `address` may not be contacted, or None when it may."""
        try:
            given = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return None
        ip = embedded_ipv4(given)
        if any(given in net or ip in net for net in self.allow):
            return None
        if any(ip in net for net in ALWAYS_DENIED):
            return f"target address {ip} is link-local or a cloud metadata address (see --allow-target-cidr)"
        if self.deny_private and any(ip in net for net in PRIVATE):
            return f"target address {ip} is private or loopback and --deny-private-targets is set"
        return None


def embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IPv4 address an IPv6 address stands for, if it embeds one; else `ip` itself.

    A host that routes IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64
    (64:ff9b::a.b.c.d) or 6to4 (2002:aabb:ccdd::) addresses may reach the IPv4 address inside,
    so each is judged as that address: 64:ff9b::a9fe:a9fe is 169.254.169.254.
    """
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    packed = int(ip) & 0xFFFFFFFF
    if ip in NAT64:
        return ipaddress.IPv4Address(packed)
    # ::/96 holds :: and ::1 too, which are IPv6's own unspecified and loopback addresses.
    if ip in IPV4_COMPATIBLE and int(ip) > 1:
        return ipaddress.IPv4Address(packed)
    return ip


class GuardedResolver(AbstractResolver):
    """Checks every resolved address, so a DNS name cannot smuggle a request to a metadata service."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._inner = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if self._policy.refusal(r["host"]) is None]
        if not allowed:
            reason = self._policy.refusal(results[0]["host"]) if results else "no address"
            raise TargetRefused(f"{host}: {reason}")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


# The lean client (relay.http1) that goes with each delivery session; weak, so a session that is
# dropped without close_session() takes its pool with it.
_POOLS: weakref.WeakKeyDictionary[aiohttp.ClientSession, http1.Pool] = weakref.WeakKeyDictionary()


def lean_client_enabled() -> bool:
    return os.environ.get("HOOKRELAY_HTTP_CLIENT", "lean") != "aiohttp"


def make_session(policy: EgressPolicy) -> aiohttp.ClientSession:
    """The delivery session: aiohttp for proxied and token requests; with it, unless turned off,
    the lean keep-alive client that carries the direct POSTs (`post` picks)."""
    resolver = GuardedResolver(policy)
    connector = aiohttp.TCPConnector(
        limit=0,  # concurrency is bounded per tenant by max_in_flight instead
        limit_per_host=0,
        ttl_dns_cache=60,
        keepalive_timeout=30,
        resolver=resolver,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        raise_for_status=False,
    )
    if lean_client_enabled():
        _POOLS[session] = http1.Pool(resolver, MAX_BODY_READ)
    return session


async def close_session(session: aiohttp.ClientSession) -> None:
    pool = _POOLS.pop(session, None)
    if pool is not None:
        pool.close()
    await session.close()


@dataclass(slots=True)
class Outcome:
    kind: str  # success | http_error | timeout | connection_error | refused
    status: int | None
    error: str | None
    duration: float
    retry_after: float | None = None
    body: str | None = None

    @property
    def ok(self) -> bool:
        return self.kind == "success"

    @property
    def final(self) -> str | None:
        """A reason to stop retrying now, or None."""
        if self.status == 410:
            return "receiver answered 410 Gone: it asked for no more deliveries"
        if self.kind == "refused":
            return f"target refused by egress policy: {self.error}"
        return None


def _configured_headers(cfg: TenantConfig, custom: dict[str, str] | None) -> CIMultiDict[str]:
    """Defaults, then the tenant's headers, then the event's, then auth: on a clash the later wins."""
    h: CIMultiDict[str] = CIMultiDict()
    h["Content-Type"] = "application/json"
    h["User-Agent"] = USER_AGENT
    for name, value in cfg.default_headers.items():
        h[name] = value
    for name, value in (custom or {}).items():
        h[name] = value
    if cfg.auth_config is not None and (pair := cfg.auth_config.header()) is not None:
        h[pair[0]] = pair[1]  # OAuth2 has none here: relay.outbound adds its fetched token
    return h


# Per-config headers, built once per tenant config rather than once per attempt. Keyed by
# id() with the config kept alive beside them, so a reused id can never match a dead config.
_tenant_headers: dict[int, tuple[TenantConfig, CIMultiDict[str]]] = {}


def _tenant_headers_for(cfg: TenantConfig) -> CIMultiDict[str]:
    hit = _tenant_headers.get(id(cfg))
    if hit is None or hit[0] is not cfg:
        if len(_tenant_headers) > 4096:  # reloads leave old configs behind: drop them all
            _tenant_headers.clear()
        hit = _tenant_headers[id(cfg)] = (cfg, _configured_headers(cfg, None))
    return hit[1]


def build_headers(cfg: TenantConfig, ev: StoredEvent, event_id: str, now: int) -> CIMultiDict[str]:
    custom = ev.custom_headers
    h = _configured_headers(cfg, custom) if custom else _tenant_headers_for(cfg).copy()
    # Set last: nothing configured or sent by the app can override identity or signature.
    body = ev.envelope
    secrets_ = cfg.signing_secrets()
    h["Content-Type"] = "application/json"
    h["X-Webhook-Signature"] = ",".join(sign(body, s) for s in secrets_)
    h["X-Event-Type"] = ev.event_type
    h["X-Event-ID"] = event_id
    h["X-Tenant-ID"] = cfg.tenant_id
    h["X-Timestamp"] = str(now)
    schemes = cfg.signature_schemes
    hmac_sw = "standard-webhooks" in schemes
    ed_key = cfg.signing_key if "standard-webhooks-ed25519" in schemes else None
    if hmac_sw or ed_key is not None:
        h["webhook-id"] = event_id
        h["webhook-timestamp"] = str(now)
        sigs = [standard_webhooks_sign(event_id, now, body, s) for s in secrets_ if hmac_sw and s.startswith("whsec_")]
        if ed_key is not None:
            sigs.append(standard_webhooks_ed25519_sign(event_id, now, body, ed_key))
        # One header, space-separated entries: receivers pick the version they know (v1 or v1a).
        h["webhook-signature"] = " ".join(sigs)
    return h


def parse_retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)


def _answered(
    status: int,
    data: bytes,
    duration: float,
    retry_after: float | None,
    headers: CIMultiDict[str],
    secrets: tuple[str, ...],
) -> Outcome:
    if 200 <= status < 300:
        return Outcome("success", status, None, duration)
    # A receiver may echo the request (auth header included) in its error page: scrub the
    # whole answer read, then keep the first KEEP_BODY characters of what is left.
    sent = {k: v for k, v in headers.items() if k.lower() not in RESERVED_HEADERS}
    text = redact.scrub(data.decode("utf-8", "replace"), (*secrets, *redact.secret_values((), sent)))
    kept = text[:KEEP_BODY] if text else None
    return Outcome("http_error", status, f"HTTP {status}", duration, retry_after, kept)


async def _post_lean(
    pool: http1.Pool,
    url: str,
    body: bytes,
    headers: CIMultiDict[str],
    timeout: float,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
    secrets: tuple[str, ...],
    start: float,
) -> Outcome:
    """`post` on the lean client: the same outcomes, errors described the same way."""
    try:
        async with asyncio.timeout(timeout):
            ans = await pool.post(url, headers.items(), body, ssl_context=ssl_context, server_hostname=server_hostname)
    except TimeoutError:
        return Outcome("timeout", None, f"timed out after {timeout:g}s", time.perf_counter() - start)
    except TargetRefused as exc:
        return Outcome("refused", None, str(exc), time.perf_counter() - start)
    except http1.ConnectError as exc:
        return Outcome("connection_error", None, describe_error(exc), time.perf_counter() - start)
    except (OSError, ssl.SSLError) as exc:
        return Outcome("connection_error", None, describe_error(exc, url), time.perf_counter() - start)
    duration = time.perf_counter() - start
    retry_after = None
    if ans.status in (429, 503):
        retry_after = parse_retry_after(ans.retry_after, time.time())
    return _answered(ans.status, ans.body, duration, retry_after, headers, secrets)


def describe_error(exc: BaseException, url: str | None = None) -> str:
    # Exception texts quote the URL (aiohttp's InvalidURL, yarl): redact it before the text can
    # reach an attempt record, a dead-letter reason, the journal or a log line.
    text = str(exc) or type(exc).__name__
    if url is not None:
        text = f"{text}, url='{url}'"  # as aiohttp's own client errors name it
    text = redact.text(text)
    return text[:300]


@functools.lru_cache(maxsize=1024)
def _host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").strip("[]")


@functools.lru_cache(maxsize=64)
def _client_timeout(total: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total)


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: CIMultiDict[str],
    timeout: float,
    policy: EgressPolicy,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    proxy: str | None = None,
    proxy_headers: dict[str, str] | None = None,
    secrets: tuple[str, ...] = (),
) -> Outcome:
    """One POST. The keyword arguments carry the tenant's outbound trust (relay.outbound), and
    `secrets` (see `TenantConfig.redaction_values`) to mask in the answer that is kept."""
    start = time.perf_counter()
    # IP literals never reach the resolver, so check them here.
    refused = policy.refusal(_host_of(url))
    if refused:
        return Outcome("refused", None, refused, 0.0)
    pool = _POOLS.get(session) if proxy is None else None
    if pool is not None:
        return await _post_lean(pool, url, body, headers, timeout, ssl_context, server_hostname, secrets, start)
    status: int | None = None
    try:
        async with session.post(
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=_client_timeout(timeout),
            ssl=True if ssl_context is None else ssl_context,
            server_hostname=server_hostname,
            proxy=proxy,
            proxy_headers=proxy_headers,
        ) as resp:
            status = resp.status
            data = bytearray()
            while len(data) < MAX_BODY_READ:
                chunk = await resp.content.read(MAX_BODY_READ - len(data))
                if not chunk:
                    break
                data += chunk
            duration = time.perf_counter() - start
            retry_after = None
            if status in (429, 503):
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), time.time())
            return _answered(status, bytes(data), duration, retry_after, headers, secrets)
    except TimeoutError:
        return Outcome("timeout", status, f"timed out after {timeout:g}s", time.perf_counter() - start)
    except aiohttp.ClientConnectorError as exc:
        duration = time.perf_counter() - start
        if isinstance(exc.os_error, TargetRefused):
            return Outcome("refused", None, str(exc.os_error), duration)
        return Outcome("connection_error", None, describe_error(exc), duration)
    except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
        return Outcome("connection_error", status, describe_error(exc), time.perf_counter() - start)
