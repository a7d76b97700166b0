"""Operator events (SPEC §11): signed POSTs to `--ops-webhook` when an endpoint changes state,
when events are dead-lettered, and when the journal found corruption.

Body `{"type", "tenant_id", "at", "data"}`, signed like a delivery (`X-Webhook-Signature:
sha256=<hex HMAC-SHA256(--ops-webhook-secret, body)>`, plus `X-Event-ID`, `X-Event-Type`,
`X-Timestamp`). They wait in a small outbox, `<data dir>/ops-outbox.json`, rewritten atomically
on every change, so a restart does not forget them; they are retried with backoff like events
(1 s doubling to 5 min, for up to `MAX_TRIES` attempts) and then dropped with an error in the log.

They never block delivery: their own task and HTTP session, and `notify` only appends to a list.
Their own failures never generate more operator events: nothing here reports back.
`dead_letter.added` goes out at most once a minute per tenant, carrying the count since the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from relay import __version__
from relay.events import rfc3339
from relay.signing import sign
from relay.statefile import StateFile

log = logging.getLogger("relay.ops")

OUTBOX_FILE = "ops-outbox.json"
DEAD_LETTER_EVERY = 60.0  # seconds between two dead_letter.added of one tenant
MAX_OUTBOX = 10_000  # beyond this the oldest waiting notification is dropped (and logged)
MAX_TRIES = 20  # about an hour and a half of backoff
FIRST_DELAY, MAX_DELAY = 1.0, 300.0
TIMEOUT = 10.0
_ids = itertools.count(1)


@dataclass
class OpsEvent:
    id: str
    type: str
    tenant_id: str | None
    at: float
    data: dict[str, Any]
    tries: int = 0
    due: float = 0.0

    def body(self) -> bytes:
        doc = {"type": self.type, "tenant_id": self.tenant_id, "at": rfc3339(self.at), "data": self.data}
        return json.dumps(doc, separators=(",", ":")).encode()


@dataclass
class DeadLetterThrottle:
    """At most one `dead_letter.added` per tenant per `every` seconds, with the count since the
    last one. Pure: the caller's clock, so it is tested with a fake one."""

    every: float = DEAD_LETTER_EVERY
    counts: dict[str, int] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)

    def add(self, tenant_id: str, now: float) -> int | None:
        """Count one; returns the count to send now, or None when it waits for the window."""
        self.counts[tenant_id] = self.counts.get(tenant_id, 0) + 1
        if now - self.last.get(tenant_id, -math.inf) >= self.every:
            return self._take(tenant_id, now)
        return None

    def due(self, now: float) -> list[tuple[str, int]]:
        """Tenants whose window has passed with dead letters still uncounted."""
        ready = [t for t in self.counts if now - self.last.get(t, -math.inf) >= self.every]
        return [(t, self._take(t, now)) for t in ready]

    def next_due(self, now: float) -> float | None:
        if not self.counts:
            return None
        return max(0.0, min(self.last.get(t, -math.inf) + self.every for t in self.counts) - now)

    def _take(self, tenant_id: str, now: float) -> int:
        self.last[tenant_id] = now
        return self.counts.pop(tenant_id)


class OpsNotifier:
    def __init__(
        self,
        url: str,
        secret: str,
        *,
        state_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        dead_letter_every: float = DEAD_LETTER_EVERY,
    ) -> None:
        self.url = url
        self._secret = secret
        self._clock = clock
        self.outbox: list[OpsEvent] = []
        self.throttle = DeadLetterThrottle(dead_letter_every)
        self._file = StateFile(state_dir / OUTBOX_FILE if state_dir else None, self._dump)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._load()

    def __repr__(self) -> str:  # the secret never reaches a log line
        return f"OpsNotifier(url={self.url!r})"

    # ---- what the daemon and the engine call -----------------------------------------------

    def notify(self, kind: str, tenant_id: str | None, data: dict[str, Any]) -> None:
        """Queue one operator event; never blocks, never raises for a full outbox."""
        now = self._clock()
        if kind == "dead_letter.added" and tenant_id is not None:
            n = self.throttle.add(tenant_id, now)
            if n is not None:
                self._queue("dead_letter.added", tenant_id, {"count": n}, now)
            self._wake.set()  # the run loop times the next window
            return
        self._queue(kind, tenant_id, data, now)

    def _queue(self, kind: str, tenant_id: str | None, data: dict[str, Any], now: float) -> None:
        eid = f"ops_{int(now * 1000):x}{secrets.token_hex(4)}{next(_ids)}"
        self.outbox.append(OpsEvent(eid, kind, tenant_id, now, data, due=now))
        if len(self.outbox) > MAX_OUTBOX:
            lost = self.outbox.pop(0)
            log.error("operator event outbox full: dropped %s %s of %s", lost.type, lost.id, rfc3339(lost.at))
        self._file.changed()
        self._wake.set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
        self._task = asyncio.create_task(self._run(), name="ops-webhook")

    async def stop(self, grace: float = 2.0) -> None:
        """Flush the dead-letter counts into the outbox, give sending a moment, keep the rest."""
        now = self._clock()
        for tid, n in self.throttle.due(now + self.throttle.every):
            self._queue("dead_letter.added", tid, {"count": n}, now)
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    while any(e.due <= self._clock() for e in self.outbox):
                        await asyncio.sleep(0.05)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()
        await self._file.close()

    # ---- sending ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            now = self._clock()
            for tid, n in self.throttle.due(now):
                self._queue("dead_letter.added", tid, {"count": n}, now)
            self._wake.clear()
            for ev in [e for e in self.outbox if e.due <= now]:
                await self._send(ev)
            now = self._clock()
            waits = [max(0.0, e.due - now) for e in self.outbox]
            if (t := self.throttle.next_due(now)) is not None:
                waits.append(t)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(waits) if waits else None):
                    await self._wake.wait()

    async def _send(self, ev: OpsEvent) -> None:
        assert self._session is not None
        body = ev.body()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"hookrelay/{__version__}",
            "X-Webhook-Signature": sign(body, self._secret),
            "X-Event-ID": ev.id,
            "X-Event-Type": ev.type,
            "X-Timestamp": str(int(time.time())),
        }
        error: str
        try:
            async with self._session.post(self.url, data=body, headers=headers, allow_redirects=False) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    self._done(ev)
                    return
                error = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = type(exc).__name__
        ev.tries += 1
        if ev.tries >= MAX_TRIES:
            log.error("operator event %s (%s) dropped after %d attempts: %s", ev.id, ev.type, ev.tries, error)
            self._done(ev)
            return
        ev.due = self._clock() + min(FIRST_DELAY * 2 ** (ev.tries - 1), MAX_DELAY)
        log.warning("operator event %s (%s) not delivered (%s); retry %d", ev.id, ev.type, error, ev.tries)
        self._file.changed()

    def _done(self, ev: OpsEvent) -> None:
        with contextlib.suppress(ValueError):
            self.outbox.remove(ev)
        self._file.changed()

    # ---- outbox file -----------------------------------------------------------------------

    def _dump(self) -> dict[str, Any]:
        return {"version": 1, "events": [asdict(e) for e in self.outbox]}

    def _load(self) -> None:
        doc = self._file.load()
        rows = doc.get("events") if isinstance(doc, dict) else None
        if not isinstance(rows, list):
            return
        for row in rows:
            try:
                self.outbox.append(OpsEvent(**row))
            except TypeError:
                log.error("%s: an unreadable entry was skipped", OUTBOX_FILE)
