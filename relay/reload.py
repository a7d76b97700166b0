"""The live config: load, hot reload (watch + SIGHUP + periodic rescan), and API writes.

A reload is all-or-nothing: the whole config path is read and validated into a new snapshot,
which replaces the running one in a single assignment. On any error the last good snapshot
stays. The watcher treats every file event as "rescan" and never filters by file name, because
a Kubernetes ConfigMap update only swaps the `..data` symlink: the visible names get no event.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relay.config import (
    ConfigError,
    Snapshot,
    TenantConfig,
    load_path,
    other_tenants_in,
    parse_tenant,
    tenant_file_text,
    warnings,
)
from relay.errors import (
    ConfigReadOnly,
    ConfigRejected,
    ConfigWriteError,
    ConfigWriteFailed,
    TenantConflict,
    TenantNotFound,
)
from relay.fsutil import fsync_dir, write_fsync
from relay.metrics import Metrics

log = logging.getLogger("relay.config")


class ConfigManager:
    def __init__(
        self,
        path: Path,
        metrics: Metrics,
        *,
        read_only: bool = False,
        rescan_interval: float = 30.0,
        debounce_ms: int = 200,
    ) -> None:
        self.path = path
        self.metrics = metrics
        self.read_only = read_only
        self.rescan_interval = rescan_interval
        self.debounce_ms = debounce_ms
        self.snapshot: Snapshot = Snapshot({}, {}, "")
        self.on_change: Callable[[Snapshot], None] | None = None
        self._lock = asyncio.Lock()
        self._last_failure: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    @property
    def digest(self) -> str:
        return self.snapshot.digest

    def load_initial(self) -> Snapshot:
        """Load at start-up; a ConfigError here stops the daemon."""
        self._install(load_path(self.path))
        return self.snapshot

    def _install(self, snap: Snapshot) -> None:
        self.snapshot = snap
        for line in warnings(snap):  # at every load, so an insecure setting is never forgotten
            log.warning("Config: %s", line)
        self.metrics.set_config(snap.digest, len(snap.tenants))
        self.metrics.last_reload_ok.set(1)
        self._last_failure = None

    async def reload(self, reason: str, *, force: bool = False) -> bool:
        """Re-read everything; apply only if it changed. True when the config in force is the new one."""
        async with self._lock:
            try:
                snap = await asyncio.to_thread(load_path, self.path)
            except ConfigError as exc:
                text = str(exc)
                # A periodic rescan of the same broken files is not a new failure.
                if force or text != self._last_failure:
                    self._last_failure = text
                    self.metrics.reloads.labels(result="failure").inc()
                    self.metrics.last_reload_ok.set(0)
                    for line in exc.problems:
                        log.error("Config reload failed (%s), keeping the last good config: %s", reason, line)
                return False
            if snap.tenants == self.snapshot.tenants and snap.digest == self.snapshot.digest and not force:
                if self._last_failure is not None:  # broken files were reverted to the running config
                    self._install(snap)
                return True
            old = self.snapshot
            self._install(snap)
            self.metrics.reloads.labels(result="success").inc()
            added = sorted(set(snap.tenants) - set(old.tenants))
            removed = sorted(set(old.tenants) - set(snap.tenants))
            log.info(
                "Config reloaded (%s): %d tenants, digest %s, added %s, removed %s",
                reason,
                len(snap.tenants),
                snap.digest[:12],
                added or "none",
                removed or "none",
            )
            if self.on_change is not None:
                self.on_change(snap)
            return True

    # ---- watching ----------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._watch(), name="config-watch"),
            asyncio.create_task(self._rescan(), name="config-rescan"),
        ]

    async def stop(self) -> None:
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _watch(self) -> None:
        from watchfiles import awatch

        # Watch the directory (the parent of a single file): watchers lose a file that is replaced.
        target = self.path if self.path.is_dir() else self.path.parent
        while not self._stop.is_set():
            try:
                async for _changes in awatch(
                    target, watch_filter=None, debounce=self.debounce_ms, step=50, stop_event=self._stop
                ):
                    await self.reload("file change")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # e.g. the directory vanished for a moment; the rescan still covers us.
                log.warning("Config watcher stopped (%s); restarting in 1s", exc)
                await asyncio.sleep(1.0)

    async def _rescan(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(self.rescan_interval)
            try:
                await self.reload("periodic rescan")
            except Exception:
                log.exception("Config rescan failed")

    # ---- API writes --------------------------------------------------------------------

    def check_writable(self) -> None:
        """409 unless the API may change tenants; called before a request body is even read."""
        self._writable_dir()

    def _writable_dir(self) -> Path:
        if self.read_only:
            raise ConfigReadOnly("config is read-only (--read-only-config); change it in Git")
        if not self.path.is_dir():
            raise ConfigReadOnly("config is a single file; the API can only write to a directory")
        return self.path

    async def write_tenant(self, data: Any) -> tuple[TenantConfig, bool]:
        """Validate, write `<config>/<tenant_id>.yaml` atomically (mode 0600), apply. (config, created)."""
        directory = self._writable_dir()
        cfg = parse_tenant(data, "request body", literal=True)
        target = directory / f"{cfg.tenant_id}.yaml"
        self._check_owner(cfg.tenant_id, target)
        created = cfg.tenant_id not in self.snapshot.tenants
        previous = await asyncio.to_thread(_read_if_exists, target)
        _check_sole_tenant(cfg.tenant_id, target, previous, self.snapshot)
        await asyncio.to_thread(_atomic_write, target, tenant_file_text(data).encode())
        if not await self.reload("API configure", force=True):
            # The new file broke the set as a whole (e.g. a clash): put things back as they were.
            await asyncio.to_thread(_restore, target, previous)
            await self.reload("API configure rollback", force=True)
            raise ConfigRejected(f"{cfg.tenant_id}: the config set would be invalid; see the log")
        log.info("Configured tenant %s via API", cfg.tenant_id, extra={"tenant": cfg.tenant_id})
        return self.snapshot.tenants[cfg.tenant_id], created

    async def delete_tenant(self, tenant_id: str) -> None:
        if tenant_id not in self.snapshot.tenants:
            raise TenantNotFound(f"unknown tenant {tenant_id!r}")
        directory = self._writable_dir()
        target = directory / f"{tenant_id}.yaml"
        self._check_owner(tenant_id, target)
        try:
            await asyncio.to_thread(_unlink, target)
        except OSError as exc:
            raise _write_error(exc) from None
        await self.reload("API delete", force=True)
        log.info("Removed tenant %s via API", tenant_id, extra={"tenant": tenant_id})

    def _check_owner(self, tenant_id: str, target: Path) -> None:
        source = self.snapshot.sources.get(tenant_id)
        if source is not None and Path(source).resolve() != target.resolve():
            raise TenantConflict(f"tenant {tenant_id!r} is defined in {Path(source).name}; edit that file instead")


class FileHoldsOtherTenants(TenantConflict):
    """`<tenant_id>.yaml` holds other tenants too: the API will not replace it."""

    code = "file_holds_other_tenants"


def _read_if_exists(target: Path) -> bytes | None:
    try:
        return target.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _write_error(exc) from None


def _check_sole_tenant(tenant_id: str, target: Path, content: bytes | None, snap: Snapshot) -> None:
    """409 when `<tenant_id>.yaml` holds any tenant but this one: replacing it would drop them.

    Checked against the running config and against the file as it is on disk now (it may have
    been edited since the last reload, or hold tenants that did not load).
    """
    others = sorted(t for t, src in snap.sources.items() if t != tenant_id and Path(src).resolve() == target.resolve())
    if content is not None and not others:
        others = sorted(other_tenants_in(content, tenant_id))
    named = [t for t in others if t != "?"]
    if named:
        what = f"also defines {', '.join(repr(t) for t in named[:5])}"
    elif others:
        what = f"does not hold tenant {tenant_id!r} alone"
    else:
        return
    raise FileHoldsOtherTenants(f"{target.name} {what}; edit that file instead")


def _write_error(exc: OSError) -> ConfigWriteError:
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ConfigReadOnly(f"config directory is not writable ({exc.strerror})")
    return ConfigWriteFailed(f"could not write the config file ({exc.strerror})")


def _atomic_write(target: Path, data: bytes) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _write_error(exc) from None
    try:
        os.fchmod(fd, 0o600)
        write_fsync(fd, data)  # a single os.write may be short
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _write_error(exc) from None


def _unlink(target: Path) -> None:
    target.unlink()
    fsync_dir(target.parent)


def _restore(target: Path, previous: bytes | None) -> None:
    if previous is None:
        target.unlink(missing_ok=True)
    else:
        _atomic_write(target, previous)
