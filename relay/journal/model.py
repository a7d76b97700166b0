"""Plain data the journal hands to the engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

FsyncMode = Literal["always", "batch", "never"]


@dataclass(slots=True)
class LiveEvent:
    """One event that is not settled yet, as rebuilt by recovery."""

    event_id: str
    tenant_id: str
    severity: int
    accepted_at: float
    attempts: list[bytes]
    next_due: float | None
    dead: bool
    dead_reason: str | None
    failed_at: float | None
    # A relay-generated id's 12 raw bytes, when the journal has them at hand: a restore that
    # keeps the event packed (delivery.scheduler.Spill) copies them instead of parsing the id.
    relay_id: bytes | None = None


@dataclass(slots=True)
class Recovered:
    """What `Journal.open()` found on disk."""

    # In acceptance order. Built one event at a time from the journal's packed index (and its
    # attempts from disk), so it must be read before the journal is written to.
    live: Sequence[LiveEvent]
    settled_count: int  # ids remembered as settled (the idempotency window)
    corrupt_records: int
    torn_tail_bytes: int
