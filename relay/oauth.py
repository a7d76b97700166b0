"""OAuth2 client credentials (RFC 6749 §4.4) for `auth_type: OAuth2ClientCredentials` (SPEC §13).

A token is fetched once per tenant and reused by every attempt until 30 s before its
`expires_in`. However many attempts need a token at once, one request goes to the token
endpoint (a lock per tenant); the attempts that waited for a request that failed share its
failure instead of queueing one request each. A 401 from the receiver makes `fresh()` fetch a
new token, unless another attempt already replaced the one that was refused.

Failure reasons never carry the client secret, the token, or the token endpoint's free text:
they name the endpoint's host, the HTTP status and the RFC 6749 §5.2 `error` code.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, urlsplit

import aiohttp
import msgspec

__all__ = ["TokenCache", "TokenError"]

EXPIRY_MARGIN = 30.0  # seconds before expires_in at which a token is no longer used
DEFAULT_LIFETIME = 3600.0  # a token without expires_in: reused until a 401, or this long
MAX_ANSWER = 64 * 1024
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class TokenError(Exception):
    """No token could be had; the message is safe to log and to store with the attempt."""


class _TokenAnswer(msgspec.Struct):
    access_token: str
    token_type: str = "Bearer"
    # RFC 6749 says a number; some identity providers send a string of digits ("3599").
    expires_in: float | str | None = None


@dataclass
class _Slot:
    token: str | None = None
    valid_until: float = 0.0  # time.monotonic()
    failed_at: float = -1.0
    failure: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True, slots=True)
class Client:
    """What a token request needs (from the tenant's auth_config)."""

    token_url: str
    client_id: str
    client_secret: str
    scope: str | None = None
    audience: str | None = None


class TokenCache:
    def __init__(self) -> None:
        self._slots: dict[tuple[str, Client], _Slot] = {}
        self.requests = 0  # token requests sent, for tests and debugging

    def _slot(self, tenant_id: str, client: Client) -> _Slot:
        key = (tenant_id, client)
        slot = self._slots.get(key)
        if slot is None:
            if len(self._slots) > 4096:  # changed credentials leave old slots behind
                self._slots = {k: s for k, s in self._slots.items() if s.lock.locked()}
            slot = self._slots[key] = _Slot()
        return slot

    async def token(
        self,
        session: aiohttp.ClientSession,
        tenant_id: str,
        client: Client,
        timeout: float,
        *,
        refused: str | None = None,
        options: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> str:
        """A usable token; `refused` is one the receiver just answered 401 to (never returned again).

        `options` are request options of the tenant's outbound trust (ssl, proxy, ...), `headers`
        extra request headers (a plain-http proxy's credentials).
        """
        slot = self._slot(tenant_id, client)
        asked = time.monotonic()
        if slot.token is not None and slot.token != refused and asked < slot.valid_until:
            return slot.token
        async with slot.lock:
            if slot.token is not None and slot.token != refused and time.monotonic() < slot.valid_until:
                return slot.token  # fetched while this attempt waited
            if slot.failed_at >= asked:
                raise TokenError(slot.failure)  # the request this attempt waited for failed
            try:
                token, lifetime = await self._fetch(session, client, timeout, options or {}, headers or {})
            except TokenError as exc:
                slot.failed_at, slot.failure = time.monotonic(), str(exc)
                raise
            slot.token = token
            slot.valid_until = time.monotonic() + lifetime
            return token

    async def _fetch(
        self,
        session: aiohttp.ClientSession,
        client: Client,
        timeout: float,
        options: dict[str, Any],
        headers: dict[str, str],
    ) -> tuple[str, float]:
        host = urlsplit(client.token_url).hostname or "?"
        form = {"grant_type": "client_credentials"}
        if client.scope:
            form["scope"] = client.scope
        if client.audience:
            form["audience"] = client.audience
        # RFC 6749 §2.3.1: HTTP Basic with the form-urlencoded id and secret, which every
        # authorization server must support.
        basic = f"{quote_plus(client.client_id)}:{quote_plus(client.client_secret)}".encode()
        auth = "Basic " + base64.b64encode(basic).decode("ascii")
        self.requests += 1
        try:
            async with session.post(
                client.token_url,
                data=form,
                headers={**headers, "Accept": "application/json", "Authorization": auth},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
                **options,
            ) as resp:
                body = await resp.content.read(MAX_ANSWER)
                status = resp.status
        except TimeoutError:
            raise TokenError(f"OAuth2 token request to {host} timed out after {timeout:g}s") from None
        except aiohttp.ClientConnectorError as exc:
            raise TokenError(f"OAuth2 token request to {host} failed: {_reason(exc.os_error)}") from None
        except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            raise TokenError(f"OAuth2 token request to {host} failed: {_reason(exc)}") from None
        if status != 200:
            code = _error_code(body)
            raise TokenError(f"OAuth2 token endpoint {host} answered HTTP {status}{f' ({code})' if code else ''}")
        try:
            answer = msgspec.json.decode(body, type=_TokenAnswer)
        except msgspec.DecodeError:
            raise TokenError(f"OAuth2 token endpoint {host} answered without a usable access_token") from None
        if not answer.access_token or any(c in answer.access_token for c in "\r\n\0"):
            raise TokenError(f"OAuth2 token endpoint {host} answered without a usable access_token")
        if answer.token_type.lower() != "bearer":
            raise TokenError(f"OAuth2 token endpoint {host} issued a token_type other than Bearer")
        try:
            expires_in = None if answer.expires_in is None else float(answer.expires_in)
        except ValueError:
            expires_in = None
        if expires_in is None or not math.isfinite(expires_in):
            return answer.access_token, DEFAULT_LIFETIME
        # A token with 30 s or less to live is used for the attempt that asked, then discarded.
        return answer.access_token, max(0.0, expires_in - EXPIRY_MARGIN)


def _error_code(body: bytes) -> str | None:
    """The RFC 6749 §5.2 `error` code of an error answer, if it looks like one (never free text)."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    code = data.get("error") if isinstance(data, dict) else None
    return code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else None


def _reason(exc: BaseException | None) -> str:
    text = (str(exc) or type(exc).__name__) if exc is not None else "connection failed"
    return text[:300]
