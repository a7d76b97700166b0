"""What the HTTP API asks of the delivery side, whichever store holds the events (SPEC §10).

Two implementations: `LocalBackend`, a thin adapter over the local `DeliveryEngine` and its
journal (everything in this process's RAM and data dir, answered synchronously underneath), and
`relay.store.redis_engine.RedisEngine`, where every answer comes from the shared Redis store.
The management calls are async because the shared store answers over the network; the ingest
calls (`lookup`, `accept`, `pending_count`, `journal`) keep the local engine's shape so the
local ingest path pays nothing for the indirection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from relay.config import Snapshot
from relay.delivery import DeliveryEngine, Entry
from relay.delivery.deadletters import Key
from relay.delivery.ledger import LedgerFilter
from relay.events import rfc3339

DeadItem = dict[str, Any]


class StoreHealth(Protocol):
    @property
    def healthy(self) -> bool: ...

    @property
    def bytes_total(self) -> int: ...


class Backend(Protocol):
    """The API's view of the engine and its store (mypy checks both implementations)."""

    @property
    def journal(self) -> StoreHealth: ...

    @property
    def pending_count(self) -> int: ...

    def lookup(self, event_id: str) -> str | None:
        """The status of a known event id for idempotency, when it can be told without I/O."""
        ...

    async def accept(self, items: list[tuple[str, str, int, bytes]]) -> list[str]:
        """Store (event_id, tenant_id, severity, blob) durably; the ids accepted (others are known)."""
        ...

    def knows_tenant(self, tenant_id: str) -> bool: ...

    async def event_status(self, event_id: str) -> dict[str, Any] | None: ...

    async def tenant_figures(self, tenant_id: str) -> dict[str, Any]: ...

    async def change_endpoint(self, tenant_id: str, enabled: bool) -> dict[str, Any]: ...

    async def dead_page(self, f: LedgerFilter, after: Key | None, limit: int) -> tuple[list[DeadItem], Key | None]:
        """Up to `limit` dead letters matching `f` after the cursor key, and the next cursor key."""
        ...

    async def dead_letter(self, event_id: str) -> DeadItem | None: ...

    async def dead_tenant(self, event_id: str) -> str | None:
        """The tenant of a dead letter, None when `event_id` is not one."""
        ...

    async def requeue(self, event_id: str) -> bool: ...

    async def requeue_matching(self, f: LedgerFilter) -> int:
        """Replay the dead letters `f` matches whose tenant is configured; how many."""
        ...

    async def purge(self, event_id: str) -> bool: ...

    async def purge_matching(self, f: LedgerFilter) -> int: ...


class LocalBackend:
    """The local store (SPEC §5): the engine's in-memory index and its journal."""

    def __init__(self, engine: DeliveryEngine, config: Callable[[], Snapshot]) -> None:
        self.engine = engine
        self._config = config

    @property
    def journal(self) -> StoreHealth:
        return self.engine.journal

    @property
    def pending_count(self) -> int:
        return self.engine.pending_count

    def lookup(self, event_id: str) -> str | None:
        return self.engine.lookup(event_id)

    async def accept(self, items: list[tuple[str, str, int, bytes]]) -> list[str]:
        return await self.engine.accept(items)

    def knows_tenant(self, tenant_id: str) -> bool:
        return tenant_id in self.engine.tenants

    async def event_status(self, event_id: str) -> dict[str, Any] | None:
        return self.engine.event_view(event_id)

    async def tenant_figures(self, tenant_id: str) -> dict[str, Any]:
        return self.engine.tenant_metrics(tenant_id)

    async def change_endpoint(self, tenant_id: str, enabled: bool) -> dict[str, Any]:
        return self.engine.set_endpoint(tenant_id, enabled)

    def _item(self, e: Entry) -> DeadItem:
        return {
            "event": self.engine.read_event(e.event_id),
            "event_id": e.event_id,
            "tenant_id": e.tenant_id,
            "attempts": self.engine.attempts_of(e),
            "failed_at": rfc3339(e.failed_at or 0.0),
            "failure_reason": e.dead_reason,
            "can_retry": e.tenant_id in self._config().tenants,
        }

    async def dead_page(self, f: LedgerFilter, after: Key | None, limit: int) -> tuple[list[DeadItem], Key | None]:
        items: list[DeadItem] = []
        last: Key = (0.0, "")
        for e in self.engine.ledger(f, after):
            if len(items) == limit:
                return items, last
            last = (e.failed_at or 0.0, e.event_id)
            items.append(self._item(e))
        return items, None

    async def dead_letter(self, event_id: str) -> DeadItem | None:
        e = self.engine.dead_entry(event_id)
        return None if e is None else self._item(e)

    async def dead_tenant(self, event_id: str) -> str | None:
        e = self.engine.dead_entry(event_id)
        return None if e is None else e.tenant_id

    async def requeue(self, event_id: str) -> bool:
        return await self.engine.requeue(event_id)

    async def requeue_matching(self, f: LedgerFilter) -> int:
        tenants = self._config().tenants
        return await self.engine.requeue_many([e.event_id for e in self.engine.ledger(f) if e.tenant_id in tenants])

    async def purge(self, event_id: str) -> bool:
        return await self.engine.purge(event_id)

    async def purge_matching(self, f: LedgerFilter) -> int:
        return await self.engine.purge_many([e.event_id for e in self.engine.ledger(f)])


def raw_event(envelope: bytes) -> msgspec.Raw:
    """A stored envelope as it goes into an API answer (already JSON)."""
    return msgspec.Raw(envelope)
