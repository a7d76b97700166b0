"""An in-memory `relay.delivery.store.Store` for unit tests of the engine (no disk)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class MemEvent:
    tenant_id: str
    blob: bytes
    attempts: list[bytes] = field(default_factory=list)
    dead: tuple[str, float] | None = None
    due: float | None = None


class MemoryStore:
    def __init__(self) -> None:
        self.events: dict[str, MemEvent] = {}
        self.settled: set[str] = set()
        self.fail_dead = False  # make `dead` fail, as a full disk would
        self.commits = 0

    @property
    def healthy(self) -> bool:
        return True

    @property
    def bytes_total(self) -> int:
        return sum(len(e.blob) for e in self.events.values())

    async def accept(self, events: Sequence[tuple[str, str, int, float, bytes]]) -> None:
        self.commits += 1
        for eid, tid, _sev, _at, blob in events:
            self.events[eid] = MemEvent(tid, blob)

    async def attempt(self, event_id: str, blob: bytes, next_due: float | None) -> None:
        ev = self.events[event_id]
        ev.attempts.append(blob)
        ev.due = next_due

    def delivered_nowait(self, event_id: str) -> None:
        self.events.pop(event_id, None)
        self.settled.add(event_id)

    async def dead(self, event_id: str, reason: str, failed_at: float) -> None:
        if self.fail_dead:
            raise OSError(28, "No space left on device")
        self.events[event_id].dead = (reason, failed_at)

    async def requeue_many(self, event_ids: Sequence[str]) -> None:
        self.commits += 1
        for eid in event_ids:
            self.events[eid].dead = None

    async def purge_many(self, event_ids: Sequence[str]) -> None:
        self.commits += 1
        for eid in event_ids:
            self.events.pop(eid, None)
            self.settled.add(eid)

    def read_blob(self, event_id: str) -> bytes:
        return self.events[event_id].blob

    def read_attempts(self, event_id: str) -> list[bytes]:
        return list(self.events[event_id].attempts)

    def was_settled(self, event_id: str) -> bool:
        return event_id in self.settled

    def is_live(self, event_id: str) -> bool:
        return event_id in self.events
