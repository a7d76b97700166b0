"""The connection to the shared Redis store and every call the relay makes to it (SPEC §10).

Each method is one round trip: a Lua script from scripts.py for every state change, a pipeline
of reads for the views. Any failure to get an answer (connection refused or reset, a timeout,
LOADING, READONLY after a failover, MISCONF, OOM, BUSY) raises `StoreDown`, a
`JournalUnavailable`, so the API answers 503 `journal_unavailable` exactly as it does when the
local disk fails; `healthy` turns False and `probe_loop` writes a probe key with backoff until
Redis takes writes again. The store URL's password never reaches a log line or an error: only
`redact.url(url)` is ever shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from relay import redact
from relay.journal import JournalUnavailable

from . import scripts

log = logging.getLogger("relay.store")
# redis-py logs at debug level on every new connection to a server without its newest features;
# our own log lines say what matters about the store.
logging.getLogger("redis").setLevel(logging.INFO)

SOCKET_TIMEOUT = 5.0  # a reply slower than this counts as Redis being unavailable
CONNECT_TIMEOUT = 2.0
PROBE_MIN, PROBE_MAX = 0.1, 2.0  # reconnect backoff (seconds)
WAIT_TIMEOUT_MS = 1000  # --store-min-replicas: how long WAIT may take before the 202 is refused

STATES = {"q": "queued", "r": "retrying", "d": "delivering", "x": "dead", "D": "delivered", "P": "purged"}


class StoreDown(JournalUnavailable):
    """Redis did not answer, or refused the write: nothing was acknowledged."""


@dataclass(frozen=True, slots=True)
class Claimed:
    event_id: str
    token: str
    tries: int  # attempts already made in this round
    blob: bytes  # the stored request
    probe: str  # "" | "B" (the breaker's half-open probe) | "E" (a disabled endpoint's probe)
    accepted_ms: int  # when Redis stored it (for the delivery latency histogram)


@dataclass(frozen=True, slots=True)
class TenantCount:
    waiting: int
    in_flight: int
    dead: int
    oldest_ms: int  # accepted time of the first waiting event, -1 when none
    circuit_open: bool
    endpoint_state: str


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisStore:
    def __init__(self, url: str, namespace: str, *, min_replicas: int = 0) -> None:
        self.url_shown = redact.url(url)
        self.prefix = "{" + namespace + "}"
        self.sched = self.prefix + ":sched"
        self.min_replicas = min_replicas
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            health_check_interval=30,
            retry_on_timeout=False,
        )
        # The relay's name in lease tokens: which relay holds an event is visible in Redis.
        self.relay_id = f"{socket.gethostname()}:{os.getpid()}"
        self._healthy = True
        self._down_since_logged = False
        c = self.client
        self._accept = c.register_script(scripts.ACCEPT)
        self._pick = c.register_script(scripts.PICK)
        self._claim = c.register_script(scripts.CLAIM)
        self._settle = c.register_script(scripts.SETTLE)
        self._replay = c.register_script(scripts.REPLAY)
        self._purge = c.register_script(scripts.PURGE)
        self._endpoint = c.register_script(scripts.ENDPOINT)
        self._counts = c.register_script(scripts.COUNTS)
        self._wake = c.register_script(scripts.WAKE)
        self._prune = c.register_script(scripts.PRUNE)

    # ---- health ------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def unavailable_reason(self) -> str:
        """What /readyz says while unhealthy."""
        return f"the Redis store {self.url_shown} does not answer or refuses writes; reconnecting"

    @property
    def bytes_total(self) -> int:
        return 0  # nothing on this relay's disk: --max-journal-bytes does not apply

    def _down(self, exc: BaseException) -> StoreDown:
        if self._healthy:
            log.error("Redis store %s unavailable: %s", self.url_shown, redact.text(str(exc)))
        self._healthy = False
        return StoreDown(f"Redis store unavailable: {redact.text(str(exc)) or type(exc).__name__}")

    async def _run(self, script: AsyncScript, args: list[Any]) -> Any:
        try:
            return await script(keys=[self.sched], args=[self.prefix, *args])
        except (RedisError, OSError) as exc:
            raise self._down(exc) from None

    async def probe(self) -> bool:
        """One write; True (and healthy again) when Redis took it."""
        try:
            await self.client.set(self.prefix + ":probe", self.relay_id, px=10_000)
        except (RedisError, OSError):
            return False
        if not self._healthy:
            log.info("Redis store %s answers again", self.url_shown)
        self._healthy = True
        return True

    async def probe_loop(self) -> None:
        """While unhealthy, try again with backoff; resumes by itself once Redis is back."""
        delay = PROBE_MIN
        while True:
            if self._healthy:
                delay = PROBE_MIN
                await asyncio.sleep(0.5)
                continue
            if not await self.probe():
                delay = min(delay * 2, PROBE_MAX)
            await asyncio.sleep(delay)

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()

    async def check_settings(self) -> list[str]:
        """Settings that can lose acknowledged events, read once at start (SPEC §10)."""
        problems: list[str] = []
        try:
            got: dict[str, str] = {}
            try:
                for name in ("appendonly", "appendfsync", "maxmemory-policy"):
                    reply = await self.client.config_get(name)
                    got.update({_s(k): _s(v) for k, v in reply.items()})
            except RedisError:
                # Managed Redis often refuses CONFIG; INFO says most of it.
                persistence = await self.client.info("persistence")
                memory = await self.client.info("memory")
                got["appendonly"] = "yes" if str(persistence.get("aof_enabled")) == "1" else "no"
                got["maxmemory-policy"] = str(memory.get("maxmemory_policy", ""))
                problems.append("CONFIG GET is not allowed: appendfsync could not be checked")
            if got.get("appendonly") != "yes":
                problems.append("appendonly is not yes: a Redis restart loses every event since the last RDB snapshot")
            elif got.get("appendfsync") == "no":
                problems.append("appendfsync is no: a power loss can lose acknowledged events (use everysec or always)")
            policy = got.get("maxmemory-policy")
            if policy and policy != "noeviction":
                problems.append(f"maxmemory-policy is {policy}: Redis may evict pending events (use noeviction)")
        except (RedisError, OSError) as exc:
            problems.append(f"settings not checked, Redis did not answer ({redact.text(str(exc))})")
        return problems

    # ---- events ------------------------------------------------------------------------------

    async def accept(self, tenant_id: str, events: list[tuple[str, str, bytes]]) -> list[str]:
        """Store (event_id, ordering key, stored request)s of one tenant; per event "" when stored
        now, else the state it already had. With --store-min-replicas, WAIT on the same connection
        (WAIT does not block inside a script)."""
        if not self._healthy:
            # Answer 503 at once while the probe loop reconnects, rather than make every request
            # wait out a connection timeout against a Redis that is known to be away.
            raise StoreDown("Redis store unavailable (reconnecting)")
        args: list[Any] = [self.prefix, tenant_id]
        for eid, okey, blob in events:
            args += [eid, okey, blob]
        try:
            if not self.min_replicas:
                reply = await self._accept(keys=[self.sched], args=args)
            else:
                pipe: Pipeline = self.client.pipeline(transaction=False)
                await self._accept(keys=[self.sched], args=args, client=pipe)
                pipe.execute_command("WAIT", self.min_replicas, WAIT_TIMEOUT_MS)
                reply, acked = await pipe.execute()
                if int(acked) < self.min_replicas:
                    # Stored on the primary, not yet on enough replicas: not acknowledged. A retry
                    # with the same event_id answers `duplicate`.
                    raise StoreDown(f"only {int(acked)} of {self.min_replicas} replicas confirmed the write")
        except (RedisError, OSError) as exc:
            raise self._down(exc) from None
        return [_s(v) for v in reply]

    async def pick(self, k: int, hold_ms: int) -> tuple[float, list[str]]:
        """Tenants whose turn it is, and seconds until the next one's (-1: none scheduled)."""
        reply = await self._run(self._pick, [k, hold_ms])
        first = float(reply[0])
        return (first / 1000 if first >= 0 else -1.0), [_s(t) for t in reply[1:]]

    async def claim(
        self,
        tenant_id: str,
        max_n: int,
        lease_ms: int,
        max_in_flight: int,
        rate: float,
        fifo: bool,
        probe_ms: int,
    ) -> tuple[int, list[Claimed]]:
        reply = await self._run(
            self._claim,
            [tenant_id, self.relay_id, max_n, lease_ms, max_in_flight, rate, 1 if fifo else 0, probe_ms],
        )
        out = []
        for i in range(2, len(reply), 6):
            eid, tok, tries, blob, probe, accepted = reply[i : i + 6]
            out.append(Claimed(_s(eid), _s(tok), int(tries), bytes(blob), _s(probe), int(accepted)))
        return int(reply[0]), out

    async def settle(self, tenant_id: str, event_id: str, token: str, args: list[Any]) -> tuple[bool, str, str]:
        """(False, ...) when the lease was taken over; else (True, endpoint change, its reason)."""
        (one,) = await self.settle_many([(tenant_id, event_id, token, args)])
        return one

    async def settle_many(self, items: list[tuple[str, str, str, list[Any]]]) -> list[tuple[bool, str, str]]:
        """Several verdicts in one script call (each still checked against its own lease)."""
        flat: list[Any] = []
        for tenant_id, event_id, token, args in items:
            flat += [tenant_id, event_id, token, *args]
        reply = await self._run(self._settle, flat)
        return [(_s(reply[i]) != "stale", _s(reply[i + 1]), _s(reply[i + 2])) for i in range(0, len(reply), 3)]

    async def replay(self, event_ids: list[str]) -> int:
        return int(await self._run(self._replay, list(event_ids))) if event_ids else 0

    async def purge(self, event_ids: list[str]) -> int:
        return int(await self._run(self._purge, list(event_ids))) if event_ids else 0

    async def endpoint(self, tenant_id: str, op: str) -> tuple[str, float, str, str, str]:
        """(state, since, reason, change or "", previous state) after `op` (enable|disable|show)."""
        r = await self._run(self._endpoint, [tenant_id, op])
        return _s(r[0]), float(_s(r[1])) / 1000, _s(r[2]), _s(r[3]), _s(r[4])

    async def prune_dead(self, retention: float, limit: int = 500) -> int:
        """Purge up to `limit` dead letters older than `retention` seconds; how many."""
        return int(await self._run(self._prune, [int(retention * 1000), limit]))

    async def wake(self, tenant_ids: list[str]) -> None:
        if tenant_ids:
            await self._run(self._wake, list(tenant_ids))

    async def counts(self) -> dict[str, TenantCount]:
        reply = await self._run(self._counts, [])
        return {
            _s(r[0]): TenantCount(int(r[1]), int(r[2]), int(r[3]), int(r[4]), bool(int(r[5])), _s(r[6])) for r in reply
        }

    # ---- views -------------------------------------------------------------------------------

    def event_key(self, event_id: str) -> str:
        return f"{self.prefix}:e:{event_id}"

    def tenant_key(self, tenant_id: str, name: str) -> str:
        return f"{self.prefix}:t:{tenant_id}:{name}"

    async def read(self, commands: list[tuple[str, ...]]) -> list[Any]:
        """Read-only commands in one pipeline."""
        try:
            pipe: Pipeline = self.client.pipeline(transaction=False)
            for cmd in commands:
                pipe.execute_command(*cmd)
            return list(await pipe.execute())
        except (RedisError, OSError) as exc:
            raise self._down(exc) from None
