"""Redaction in one place: what hookrelay shows of URLs, headers and receivers' answers.

Everything that leaves the daemon as text (log lines, API answers, attempt records, dead-letter
reasons, the journal) and may hold a credential goes through here:

- `url` / `text`: the password of userinfo (`user:***@`; a lone `token@` becomes `***@`) and
  query values (`?api_key=***`) are masked in a URL, or in every URL found inside free text such
  as an exception message;
- `headers`: every header value is `***` unless its name is on a short allow-list of names that
  never carry a credential (`Content-Type`, `Accept`, `User-Agent`, `X-API-Version`, ...). An
  allow-list, not a deny-list: a regex over names misses `X-Auth` or `Authentication`;
- `scrub`: known secret values (tenant secrets, tokens, auth header values) replaced by `***`
  in text a third party wrote, such as a receiver's error body that echoes request headers.

Other modules (outbound proxies, OAuth2 client secrets) reuse these functions rather than
growing their own masking.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping

__all__ = ["HARMLESS_HEADERS", "MASK", "headers", "scrub", "secret_values", "text", "url"]

MASK = "***"

# Header names whose values are shown as they are: standard content negotiation and versioning.
HARMLESS_HEADERS = frozenset(
    h.lower()
    for h in (
        "Accept",
        "Accept-Charset",
        "Accept-Encoding",
        "Accept-Language",
        "Cache-Control",
        "Content-Encoding",
        "Content-Language",
        "Content-Type",
        "User-Agent",
        "X-API-Version",
        "X-Api-Version",
        "API-Version",
        "X-Request-Source",
    )
)

# A URL inside free text: a scheme, "://", then everything up to whitespace or a quote/bracket
# that ends it in messages such as "Cannot connect to 'http://u:p@h/x' [Errno 111]".
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
# Shortest secret value worth scrubbing: replacing every "a" in a body would say nothing.
_MIN_SECRET = 4


def url(value: str) -> str:
    """`value` with userinfo and query values masked; a string that is not a URL is returned as is."""
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        return _mask_userinfo_raw(value)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        # user:password keeps the user name (it helps to debug); a lone user name is often itself
        # the credential (https://<token>@host), so it is masked.
        netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    query = parts.query
    if query:
        query = "&".join(_mask_pair(p) for p in query.split("&"))
    fragment = MASK if parts.fragment else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _mask_pair(pair: str) -> str:
    name, eq, _ = pair.partition("=")
    return f"{name}={MASK}" if eq else name


def _mask_userinfo_raw(value: str) -> str:
    # urlsplit refused it (e.g. a bad IPv6 literal): still hide anything between // and @.
    value = re.sub(r"//([^/?#\s:@]*):[^/?#\s@]*@", rf"//\1:{MASK}@", value)
    return re.sub(r"//[^/?#\s:@]+@", f"//{MASK}@", value)


def text(message: str) -> str:
    """Free text with every URL in it passed through `url`."""
    if "://" not in message:
        return message
    return _URL_IN_TEXT.sub(lambda m: url(m.group(0)), message)


def headers(values: Mapping[str, str]) -> dict[str, str]:
    """Header values masked unless the name is on the allow-list of harmless names."""
    return {k: (v if k.lower() in HARMLESS_HEADERS else MASK) for k, v in values.items()}


def secret_values(
    secrets: Iterable[str] = (),
    header_values: Mapping[str, str] | None = None,
) -> tuple[str, ...]:
    """The strings `scrub` must hide: `secrets`, plus every non-harmless header value.

    An `Authorization: Bearer abc` value also yields `abc`, and a `Basic` value its base64 part,
    so an echo of either form is caught; longest first, so a value is never half-replaced by a
    shorter one it contains.
    """
    found: set[str] = {s for s in secrets if len(s) >= _MIN_SECRET}
    for name, value in (header_values or {}).items():
        if name.lower() in HARMLESS_HEADERS:
            continue
        for part in (value, *value.split(None, 1)[1:]):
            if len(part) >= _MIN_SECRET:
                found.add(part)
    return tuple(sorted(found, key=len, reverse=True))


def scrub(body: str | None, values: Iterable[str]) -> str | None:
    """`body` with each of `values` (see `secret_values`) replaced by `***`, and URLs redacted."""
    if not body:
        return body
    for value in sorted(set(values), key=len, reverse=True):  # never half-replace a longer one
        if value in body:
            body = body.replace(value, MASK)
    return text(body)
