"""Per-tenant TLS for outbound deliveries (SPEC §13): private CAs, client certificates, SNI.

The config loader builds one `ssl.SSLContext` per tenant `tls` block while it reads the files
(off the event loop, with every other file of a reload) and attaches it to the tenant's config
object, so it lives and dies with that snapshot: a reload that fails leaves the old context in
force, and a reload that succeeds swaps config and context together. Contexts are cached by the
block *and* the sha256 of the files' content: an unchanged tenant keeps its context (and with it
its pooled connections, which aiohttp keys by context), while a rotated certificate from a
mounted Secret gets a new context at the next reload or rescan, without a restart.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["TlsConfig", "TlsError", "attach", "context_of", "load"]


class TlsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ca_file: str | None = None  # PEM bundle trusted for this endpoint
    ca_only: bool = False  # trust ca_file alone, not the system's store as well
    client_cert_file: str | None = None  # PEM certificate (chain) for mutual TLS
    client_key_file: str | None = None  # its unencrypted PEM key (may be in client_cert_file)
    server_name: str | None = None  # SNI and the name the certificate is checked against
    insecure_skip_verify: bool = False  # no certificate checks at all: warned about at every load


class TlsError(Exception):
    """A `tls` block that cannot be used; `key` is the key inside the block it is about."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


FILE_KEYS = ("ca_file", "client_cert_file", "client_key_file")
_MAX_FILE = 1 << 20  # a CA bundle is ~200 KB; anything far larger is a mistake

_cache: dict[tuple[TlsConfig, str], ssl.SSLContext] = {}
_cache_lock = threading.Lock()  # loads run in worker threads


def _read(key: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE + 1)
    except (OSError, ValueError) as exc:  # ValueError: NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise TlsError(key, f"cannot read {path}: {reason}") from None
    if len(data) > _MAX_FILE:
        raise TlsError(key, f"{path} is larger than {_MAX_FILE} bytes")
    return data


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key's password.
    raise ValueError("encrypted key")


def _build(tls: TlsConfig, ca_pem: bytes | None) -> ssl.SSLContext:
    if tls.ca_only:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, checks host names, trusts nothing yet
    else:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_pem is not None:
        try:
            ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError):
            raise TlsError("ca_file", "holds no PEM certificate that can be loaded") from None
    if tls.client_cert_file is not None:
        try:
            ctx.load_cert_chain(tls.client_cert_file, tls.client_key_file, password=_no_password)
        except ValueError:
            raise TlsError("client_key_file", "the key is encrypted; give an unencrypted PEM key") from None
        except ssl.SSLError as exc:
            if "KEY_VALUES_MISMATCH" in str(exc):
                raise TlsError("client_key_file", "does not match client_cert_file") from None
            if tls.client_key_file is None:
                raise TlsError(
                    "client_cert_file", "holds no usable certificate and key (give client_key_file?)"
                ) from None
            raise TlsError("client_cert_file", "client certificate or key is not valid PEM") from None
        except OSError as exc:
            raise TlsError("client_cert_file", f"cannot load: {exc.strerror or type(exc).__name__}") from None
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def load(tls: TlsConfig, files: dict[str, bytes]) -> ssl.SSLContext:
    """The context for `tls` (paths already absolute); raises TlsError naming the bad key.

    Every file read is added to `files` (path -> content) for the config digest.
    """
    if tls.ca_only and tls.ca_file is None:
        raise TlsError("ca_only", "needs ca_file (the CA to trust instead of the system's)")
    if tls.client_key_file is not None and tls.client_cert_file is None:
        raise TlsError("client_key_file", "needs client_cert_file")
    if tls.server_name is not None and (
        not tls.server_name or len(tls.server_name) > 253 or any(c.isspace() or c in "/:@" for c in tls.server_name)
    ):
        raise TlsError("server_name", "must be a host name")
    digest = hashlib.sha256()
    contents: dict[str, bytes] = {}
    for key in FILE_KEYS:
        path = getattr(tls, key)
        if path is not None:
            contents[key] = data = _read(key, path)
            files[str(Path(path).absolute())] = data
            digest.update(key.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    cache_key = (tls, digest.hexdigest())
    with _cache_lock:
        ctx = _cache.get(cache_key)
    if ctx is None:
        ctx = _build(tls, contents.get("ca_file"))
        with _cache_lock:
            if len(_cache) > 256:  # reloads with rotated files leave old entries behind
                _cache.clear()
            _cache[cache_key] = ctx
    return ctx


# The context rides on the tenant config object itself (TenantConfig has a __dict__ for cached
# values; the context is not a field, so equality, hashing and masking ignore it).
_ATTR = "_tls_context"


def attach(cfg: Any, ctx: ssl.SSLContext) -> None:
    vars(cfg)[_ATTR] = ctx


def context_of(cfg: Any) -> ssl.SSLContext | None:
    ctx: ssl.SSLContext | None = vars(cfg).get(_ATTR)
    return ctx
