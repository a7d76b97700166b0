"""Token bucket for a tenant's `rate_limit_per_second` (burst of one second's worth, at least 1)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    tokens: float = 0.0
    at: float = 0.0

    def take(self, rate: float, now: float) -> float:
        """Take one token: 0.0 when taken, else how long until one is there."""
        self.tokens = min(max(1.0, rate), self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens < 1.0:
            return (1.0 - self.tokens) / rate
        self.tokens -= 1.0
        return 0.0
