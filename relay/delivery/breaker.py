"""Circuit breaker: consecutive-failure ejection, a growing cool-down, one half-open probe.

Pure state driven by the caller's clock, so tests step it with a fake one. The probe is owned by
the attempt that took it; `release` is called for every attempt that ends without a verdict on
the endpoint's health (egress refusal, a request that could not be built, a removed tenant, a
bug), so the breaker can never stay half-open for good.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

_probe_ids = itertools.count(1)


@dataclass
class Breaker:
    failures: int = 0
    trips: int = 0
    open_until: float = 0.0
    probing: bool = False
    probe_id: int = 0  # the attempt that holds the probe, so a late release frees only its own

    def is_open(self, now: float) -> bool:
        return self.open_until > now or self.probing

    def wait(self, now: float) -> float | None:
        """None when an attempt may start; else how long until it may (0: until a probe ends)."""
        if self.probing:
            return 0.0
        if self.open_until > now:
            return self.open_until - now
        return None

    def begin(self, now: float) -> int:
        """Called when an attempt starts; a probe token (non-zero) when it is the half-open probe."""
        if self.open_until and self.open_until <= now:
            self.probing = True
            self.probe_id = next(_probe_ids)
            return self.probe_id
        return 0

    def release(self, token: int) -> None:
        """The attempt holding probe `token` ended (whatever its outcome): allow the next probe."""
        if token and token == self.probe_id:
            self.probing = False
            self.probe_id = 0

    def success(self) -> None:
        self.failures = self.trips = 0
        self.open_until = 0.0
        self.probing = False
        self.probe_id = 0

    def failure(self, now: float, threshold: int, base: float, cap: float, enabled: bool = True) -> float | None:
        """Count a failure; returns the cool-down when this failure opened the breaker."""
        self.failures += 1
        # Attempts that were already in flight when it opened must not trip it again.
        already_open = self.open_until > now and not self.probing
        if not enabled or already_open or not (self.probing or self.failures >= threshold):
            return None
        # Each trip doubles the cool-down, capped by the policy's longest delay.
        cool = min(max(base, 0.05) * (2.0**self.trips), cap)
        self.trips += 1
        self.open_until = now + cool
        self.probing = False
        self.probe_id = 0
        return cool
