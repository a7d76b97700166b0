"""URL checks shared by config validation and ingest: what the HTTP client would refuse later.

Anything caught here is an error with a named key up front instead of an event that can never
be sent (SPEC §5: an event that can never be attempted is dead-lettered, never retried for ever).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit


def host_problem(host: str) -> str | None:
    """Why `host` cannot be looked up (IDNA rules: labels of 1 to 63 characters), or None."""
    if ":" in host:  # an IPv6 literal
        return None
    try:
        host.encode("idna")
    except UnicodeError:
        return "host is not a valid DNS name (each label must be 1 to 63 characters)"
    return None


def userinfo_clash(url: str, header_names: Iterable[str]) -> str | None:
    """The HTTP client refuses credentials in the URL together with an Authorization header."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.username is None and parts.password is None:
        return None
    if any(name.lower() == "authorization" for name in header_names):
        return "credentials in the URL (user:password@) cannot be combined with an Authorization header"
    return None
