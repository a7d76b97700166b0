"""Delivery: per-tenant scheduling, attempts, retries, circuit breaker, rate limit, dead letters.

engine.py       DeliveryEngine: tenant tasks, slots, outcomes, settling, management
scheduler.py    a tenant's ready queues, timer heap and claim rules (no I/O, fake-clock testable)
breaker.py      circuit breaker with an owned half-open probe
ratelimit.py    token bucket
attempt.py      one attempt as a value (never an exception) and the verdict after it
deadletters.py  dead letters in failed-at order, paged without sorting
entry.py        the per-event record kept in RAM
store.py        what the engine needs from durable storage
"""

from .engine import DeliveryEngine
from .entry import Entry

__all__ = ["DeliveryEngine", "Entry"]
