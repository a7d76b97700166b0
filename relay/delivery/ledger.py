"""The undelivered ledger (SPEC §11): which dead letters a listing, a retry-all or a purge-all
means: a tenant, a window on `failed_at` (`since` and `until`, both inclusive) and an event type
pattern (§2: `*`, `prefix.*`, or exact)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class LedgerFilter:
    tenant_id: str | None = None
    since: float | None = None
    until: float | None = None
    event_type: str | None = None

    def matches_type(self, event_type: str) -> bool:
        return self.event_type is None or type_matches(self.event_type, event_type)


def type_matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])  # "user.*" keeps its dot
    return event_type == pattern


def pattern_problem(pattern: str) -> str | None:
    if not pattern or pattern == ".*":
        return "must be '*', 'prefix.*' or an event type"
    return None


def parse_instant(value: str | float) -> float:
    """RFC 3339 (`2024-01-15T10:30:00Z`) or UNIX seconds; ValueError otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        t = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            t = float(text)
        except ValueError:
            dt = datetime.fromisoformat(text)
            if dt.tzinfo is None:
                raise ValueError("an RFC 3339 time needs a zone (Z or +hh:mm)") from None
            t = dt.timestamp()
    else:
        raise ValueError("expected RFC 3339 or UNIX seconds")
    if not math.isfinite(t):
        raise ValueError("must be finite")
    return t
