"""Wiring and lifecycle of `hookrelay run`.

Start-up: config, journal (lock + recovery), engine, listeners; any failure is a StartupError
(exit 2). Shutdown (SIGTERM/SIGINT): signal handlers only set an event; then /readyz turns 503,
listeners stop accepting, in-flight attempts get up to --shutdown-grace seconds, the journal is
flushed and closed. A second SIGINT skips the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import ipaddress
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from relay import __version__, redact, tracing
from relay.api import CLIENT_TIMEOUT, AppState, make_app, make_ops_app
from relay.backend import Backend, LocalBackend
from relay.config import ConfigError
from relay.delivery import DeliveryEngine
from relay.dispatch import EgressPolicy
from relay.errors import StartupError
from relay.journal import Journal, JournalLocked
from relay.metrics import Metrics
from relay.opshook import OpsNotifier
from relay.reload import ConfigManager
from relay.settings import Settings, parse_hostport

if TYPE_CHECKING:
    from relay.store.redis_engine import RedisEngine

log = logging.getLogger("relay.daemon")

PROBE_INTERVAL = 1.0
HTTP_DRAIN_TIMEOUT = 2.0
SPAN_FLUSH_TIMEOUT = 3.0  # for ingest requests already being journaled when shutdown starts


def _check_unix_socket(path: Path) -> None:
    """Replace a stale socket file; refuse one a live process is serving."""
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_socket():
        raise StartupError([f"--unix-socket {path}: exists and is not a socket"])
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody answers: left over from a crash
        return
    finally:
        probe.close()
    raise StartupError([f"--unix-socket {path}: another process is serving on this socket"])


async def _start_tcp(runner: web.AppRunner, flag: str, value: str) -> None:
    host, port = parse_hostport(value)
    try:
        await web.TCPSite(runner, host, port, shutdown_timeout=HTTP_DRAIN_TIMEOUT).start()
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise StartupError([f"{flag} {value}: cannot listen: {reason}"]) from None


async def _flush_spans() -> None:
    """Hand the spans still queued to the OTLP endpoint, waiting a bounded time for it."""
    if tracing.exporter is None:
        return
    try:
        async with asyncio.timeout(SPAN_FLUSH_TIMEOUT):
            await asyncio.to_thread(tracing.shutdown)
    except TimeoutError:
        log.warning("OpenTelemetry: the span exporter did not flush within %ss", SPAN_FLUSH_TIMEOUT)


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.metrics = Metrics()
        self.stop_event = asyncio.Event()
        self.force_event = asyncio.Event()
        self._sigint_count = 0
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._reloads: set[asyncio.Task[Any]] = set()
        self.ops: OpsNotifier | None = None
        self.shared: RedisEngine | None = None  # --store redis://...

    async def start(self) -> None:
        s = self.s
        self.config = ConfigManager(
            s.config, self.metrics, read_only=s.read_only_config, rescan_interval=s.config_rescan_interval
        )
        try:
            self.config.load_initial()
        except ConfigError as exc:
            raise StartupError(exc.problems) from None
        if s.store != "local":
            await self._start_shared()
            return
        self.journal = Journal(
            s.data_dir,
            fsync=s.fsync,  # type: ignore[arg-type]
            dead_letter_retention=s.dead_letter_retention,
            segment_max_bytes=s.segment_bytes,
            on_fsync=self.metrics.fsync.observe,
            on_corrupt=self.metrics.corrupt.inc,
        )
        try:
            recovered = await asyncio.to_thread(self.journal.open)
        except JournalLocked as exc:
            raise StartupError([f"--data-dir {s.data_dir}: {exc}"]) from None
        except OSError as exc:
            raise StartupError([f"--data-dir {s.data_dir}: not usable: {exc.strerror or exc}"]) from None
        if s.ops_webhook and s.ops_webhook_secret:
            self.ops = OpsNotifier(s.ops_webhook, s.ops_webhook_secret, state_dir=s.data_dir)
            if recovered.corrupt_records:
                data = {"corrupt_records": recovered.corrupt_records, "torn_tail_bytes": recovered.torn_tail_bytes}
                self.ops.notify("journal.corruption", None, data)
        if recovered.live or recovered.corrupt_records or recovered.torn_tail_bytes:
            log.info(
                "Journal recovered: %d live events, %d corrupt records moved aside, %d torn bytes cut",
                len(recovered.live),
                recovered.corrupt_records,
                recovered.torn_tail_bytes,
            )
        egress = EgressPolicy(
            deny_private=s.deny_private_targets,
            allow=tuple(ipaddress.ip_network(c, strict=False) for c in s.allow_target_cidr),
        )
        self.engine = DeliveryEngine(
            self.journal,
            lambda: self.config.snapshot,
            self.metrics,
            egress=egress,
            state_dir=s.data_dir,
            ops=self.ops.notify if self.ops else None,
        )
        self.engine.restore(recovered)
        self.metrics.store_up.set_function(lambda: 1.0 if self.journal.healthy else 0.0)
        # Everything loaded so far lives as long as the process: keep the collector from
        # rescanning it, and collect the young generation less often (ingest allocates a few
        # objects an event that are nearly all short-lived or long-lived, not in between).
        gc.freeze()
        gc.set_threshold(10_000, 20, 20)
        self.config.on_change = self.engine.apply_config
        self.state = self._app_state(LocalBackend(self.engine, lambda: self.config.snapshot))
        try:
            await self._listen()
        except BaseException:
            await self._close_listeners()
            await self.journal.close()
            raise
        if self.ops is not None:
            await self.ops.start()
        await self.engine.start()
        self.config.start()
        self._tasks = [
            asyncio.create_task(self._compact_loop(), name="journal-compact"),
            asyncio.create_task(self._probe_loop(), name="journal-probe"),
        ]
        log.info(
            "hookrelay %s listening on %s%s%s, %d tenants, data dir %s (fsync %s)",
            __version__,
            s.listen,
            f" and unix:{s.unix_socket}" if s.unix_socket else "",
            f", ops on {s.ops_listen}" if s.ops_listen else "",
            len(self.config.snapshot.tenants),
            s.data_dir,
            s.fsync,
        )

    async def _start_shared(self) -> None:
        """`--store redis://...` (SPEC §10): no journal and no data-dir lock; events, leases and
        every shared figure live in Redis, so this relay can go (or its data dir) at any time."""
        try:
            from relay.store.redis import RedisStore
            from relay.store.redis_engine import RedisEngine
        except ImportError as exc:
            raise StartupError(
                [f"--store {redact.url(self.s.store)}: needs the redis package (pip install 'hookrelay[redis]'): {exc}"]
            ) from None

        s = self.s
        store = RedisStore(s.store, s.store_namespace, min_replicas=s.store_min_replicas)
        if s.ops_webhook and s.ops_webhook_secret:
            self.ops = OpsNotifier(s.ops_webhook, s.ops_webhook_secret, state_dir=s.data_dir)
        egress = EgressPolicy(
            deny_private=s.deny_private_targets,
            allow=tuple(ipaddress.ip_network(c, strict=False) for c in s.allow_target_cidr),
        )
        engine = RedisEngine(
            store,
            lambda: self.config.snapshot,
            self.metrics,
            claim_idle=s.claim_idle,
            dead_letter_retention=s.dead_letter_retention,
            egress=egress,
            ops=self.ops.notify if self.ops else None,
        )
        self.shared = engine
        if not await store.probe():
            log.error("Redis store %s does not answer yet: ingest answers 503 until it does", store.url_shown)
        self.metrics.store_up.set_function(lambda: 1.0 if store.healthy else 0.0)
        self.config.on_change = engine.apply_config
        self.state = self._app_state(engine)
        try:
            await self._listen()
        except BaseException:
            await self._close_listeners()
            await store.close()
            raise
        if self.ops is not None:
            await self.ops.start()
        await engine.start()
        engine.apply_config(self.config.snapshot)
        self.config.start()
        log.info(
            "hookrelay %s listening on %s%s%s, %d tenants, shared store %s (namespace %s, leases %gs)",
            __version__,
            s.listen,
            f" and unix:{s.unix_socket}" if s.unix_socket else "",
            f", ops on {s.ops_listen}" if s.ops_listen else "",
            len(self.config.snapshot.tenants),
            store.url_shown,
            s.store_namespace,
            engine.lease_seconds(),
        )

    async def _shutdown_shared(self) -> None:
        assert self.shared is not None
        started = time.monotonic()
        log.info("Shutting down: draining for up to %ss", self.s.shutdown_grace)
        self.state.shutting_down = True
        await self.config.stop()
        _, cut = await asyncio.gather(self._close_listeners(), self.shared.stop(self.s.shutdown_grace))
        if self.ops is not None:
            await self.ops.stop()
        await _flush_spans()
        if self.s.unix_socket is not None:
            with contextlib.suppress(OSError):
                self.s.unix_socket.unlink()
        log.info("Stopped in %.2fs; %d attempts were cut short and handed back", time.monotonic() - started, cut)

    def _app_state(self, engine: Backend) -> AppState:
        s = self.s
        return AppState(
            engine=engine,
            config=self.config,
            metrics=self.metrics,
            max_body_bytes=s.max_body_bytes,
            max_pending=s.max_pending,
            max_journal_bytes=s.max_journal_bytes,
            ingest_token=s.ingest_token,
            receive_tolerance=s.receive_tolerance,
        )

    async def _listen(self) -> None:
        s = self.s
        tracing.setup(os.environ)  # before make_app: the exporter adds the ingest-span middleware
        # Ops first: once the API answers /readyz, the ops listener is already bound too.
        if s.ops_listen:
            ops = web.AppRunner(
                make_ops_app(self.state), access_log=None, shutdown_timeout=1.0, keepalive_timeout=CLIENT_TIMEOUT
            )
            await ops.setup()
            self._runners.append(ops)
            await _start_tcp(ops, "--ops-listen", s.ops_listen)
        runner = web.AppRunner(
            make_app(self.state),
            access_log=None,
            shutdown_timeout=HTTP_DRAIN_TIMEOUT,
            keepalive_timeout=CLIENT_TIMEOUT,
            # After an early answer (413, 408) read what the client still sends for at most this
            # long, so it sees the answer, then close: a stalled client must not hold the socket.
            lingering_time=2.0,
        )
        await runner.setup()
        self._runners.append(runner)
        await _start_tcp(runner, "--listen", s.listen)
        if s.unix_socket is not None:
            _check_unix_socket(s.unix_socket)
            try:
                await web.UnixSite(runner, str(s.unix_socket), shutdown_timeout=HTTP_DRAIN_TIMEOUT).start()
            except OSError as exc:
                raise StartupError([f"--unix-socket {s.unix_socket}: cannot listen: {exc.strerror}"]) from None
            os.chmod(s.unix_socket, 0o660)

    async def _close_listeners(self) -> None:
        await asyncio.gather(*(r.cleanup() for r in self._runners), return_exceptions=True)

    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _on_sigint(self) -> None:
        self._sigint_count += 1
        self.stop_event.set()
        if self._sigint_count > 1:
            self.force_event.set()

    def _on_sighup(self) -> None:
        task = asyncio.create_task(self.config.reload("SIGHUP", force=True))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)  # a SIGHUP leaves nothing behind

    async def _compact_loop(self) -> None:
        while True:
            await asyncio.sleep(self.s.compact_interval)
            try:
                # Shielded: shutdown cancels this loop, but a compaction whose file work runs in a
                # thread must finish (journal.close() waits for it) rather than be abandoned.
                await asyncio.shield(self.journal.compact())
                self.engine.prune_dead()
            except Exception:
                log.exception("Journal compaction failed; will try again")

    async def _probe_loop(self) -> None:
        # After a write error, keep probing so /readyz and ingest recover as soon as the disk does.
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            if not self.journal.healthy:
                with contextlib.suppress(Exception):
                    if await self.journal.probe():
                        log.info("Journal writable again")

    async def shutdown(self) -> None:
        if self.shared is not None:
            await self._shutdown_shared()
            return
        started = time.monotonic()
        log.info("Shutting down: draining for up to %ss", self.s.shutdown_grace)
        self.state.shutting_down = True
        for t in self._tasks:
            t.cancel()
        await self.config.stop()
        # Listeners stop accepting at once; ingest requests already in progress may finish.
        _, cancelled = await asyncio.gather(self._close_listeners(), self.engine.stop(self.s.shutdown_grace))
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.ops is not None:
            await self.ops.stop()
        await self.journal.close()
        await _flush_spans()
        if self.s.unix_socket is not None:
            with contextlib.suppress(OSError):
                self.s.unix_socket.unlink()
        log.info(
            "Stopped in %.2fs; %d attempts were cut short and stay pending",
            time.monotonic() - started,
            cancelled,
        )


async def run(settings: Settings) -> int:
    d = Daemon(settings)
    await d.start()
    d.install_signals()
    await d.stop_event.wait()
    shutdown = asyncio.create_task(d.shutdown())
    force = asyncio.create_task(d.force_event.wait())
    done, _ = await asyncio.wait({shutdown, force}, return_when=asyncio.FIRST_COMPLETED)
    if shutdown in done:
        force.cancel()
        shutdown.result()
        return 0
    log.warning("Second interrupt: exiting without waiting for in-flight attempts")
    shutdown.cancel()
    with contextlib.suppress(BaseException):
        await shutdown
    if d.shared is None:
        with contextlib.suppress(Exception):
            await d.journal.close()
    return 130
