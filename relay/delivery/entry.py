"""One live event in RAM: no payload, just what scheduling and the API need."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Final

from relay.events import Attempt, number_rounds

# Attempts kept in RAM per event: the newest few, for /events/{id} of settled events and for
# cheap views. The whole history stays in the journal and is read back when asked for, so a
# retry storm with large error bodies costs no memory.
KEEP_ATTEMPTS: Final = 5

LIVE_STATES: Final = ("queued", "retrying")


class Entry:
    __slots__ = (
        "accepted_at",
        "attempts",
        "dead_reason",
        "event_id",
        "failed_at",
        "held",
        "in_ready",
        "next_due",
        "okey",
        "round_at",
        "seq",
        "severity",
        "state",
        "tenant_id",
        "tries",
    )

    def __init__(self, event_id: str, tenant_id: str, severity: int, accepted_at: float) -> None:
        self.event_id = event_id
        self.tenant_id = tenant_id
        self.severity = severity
        self.accepted_at = accepted_at
        # Most events never fail: share one empty tuple rather than a list per event (72 bytes).
        self.attempts: list[Attempt] | tuple[()] = ()
        self.next_due: float | None = None
        self.state = "queued"  # queued | delivering | retrying | dead | delivered | purged
        self.dead_reason: str | None = None
        self.failed_at: float | None = None
        self.seq = 0  # `delayed` heap items carrying another seq are stale
        self.in_ready = False  # sitting in one of its tenant's ready queues
        # Attempts in the current round: a dead letter replayed starts a fresh round (numbered
        # from 1 again) while the journal keeps the whole history.
        self.tries = 0
        self.round_at = accepted_at  # start of the current round, for expiry behind a breaker
        # `ordering: fifo`: the event's ordering key ("" = the tenant's one default key; None =
        # not read from the journal yet), and whether it waits behind an earlier event of its key.
        self.okey: str | None = None
        self.held = False

    @property
    def waiting(self) -> bool:
        """Pending and not being attempted (held behind its key or not)."""
        return self.state in LIVE_STATES

    @property
    def claimable(self) -> bool:
        return self.state in LIVE_STATES and not self.held

    def add_attempt(self, attempt: Attempt) -> None:
        if not self.attempts:
            self.attempts = [attempt]
            return
        assert isinstance(self.attempts, list)
        self.attempts.append(attempt)
        if len(self.attempts) > KEEP_ATTEMPTS:
            del self.attempts[0]

    def next_round(self, n: int) -> int:
        """The round of attempt `n` about to be made: after a replay, attempt 1 opens the next one.
        Derived from the newest attempt kept in RAM, which always carries its round."""
        if not self.attempts:
            return 1
        last = self.attempts[-1].round or 1
        return last + 1 if n == 1 else last

    def restore_attempts(self, attempts: list[Attempt]) -> None:
        number_rounds(attempts)  # the whole history, before all but the newest are dropped
        starts = [i for i, a in enumerate(attempts) if a.attempt == 1]
        self.tries = len(attempts) - starts[-1] if starts else len(attempts)
        if starts and starts[-1] > 0:  # replayed at least once: the round began at its first attempt
            with contextlib.suppress(ValueError):
                self.round_at = datetime.fromisoformat(attempts[starts[-1]].at).timestamp()
        self.attempts = attempts[-KEEP_ATTEMPTS:] if attempts else ()

    def back_in_line(self) -> None:
        """A claimed event that was not attempted (or whose verdict could not be recorded)."""
        self.state = "retrying" if self.tries else "queued"
