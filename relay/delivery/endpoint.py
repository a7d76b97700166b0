"""Endpoint lifecycle (SPEC §11): enabled -> failing -> disabled, and back.

Pure state driven by the caller's clock, like the breaker: the engine reports outcomes and
operator actions, and each call returns the `Change` to announce (log, operator webhook, state
file), or None when the state stayed the same.

- `failing`: the breaker opened and nothing was delivered since.
- `disabled`: failing continuously for `disable_after_seconds` (counted from the first failed
  attempt after the last success), a `410 Gone`, or an operator. Only an endpoint disabled for
  failing is probed (every `probe_interval_seconds`); 410 and operator stay off until enabled by
  the API or by a new `base_url`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from relay import redact

State = Literal["enabled", "failing", "disabled"]
Cause = Literal["", "failing", "gone", "operator"]
STATES: Final = ("enabled", "failing", "disabled")


@dataclass(frozen=True, slots=True)
class Change:
    state: State
    reason: str
    at: float
    previous: State


@dataclass
class Endpoint:
    state: State = "enabled"
    since: float = 0.0
    reason: str = "configured"
    cause: Cause = ""  # why it is disabled: decides whether it is probed
    failing_since: float | None = None  # first failed attempt after the last success
    base_url: str | None = None  # the URL this state is about; a new one enables
    probe_at: float = 0.0  # disabled for failing: when the next probe may start
    probing: bool = False  # a probe attempt is in flight

    @property
    def disabled(self) -> bool:
        return self.state == "disabled"

    @property
    def probes(self) -> bool:
        """Disabled for failing: held events are tried one at a time, now and then."""
        return self.state == "disabled" and self.cause == "failing"

    def _to(self, state: State, reason: str, now: float, cause: Cause = "") -> Change:
        previous = self.state
        self.state, self.reason, self.since, self.cause = state, reason, now, cause
        self.probing = False
        return Change(state, reason, now, previous)

    # ---- outcomes --------------------------------------------------------------------------

    def succeeded(self, now: float) -> Change | None:
        self.failing_since = None
        if self.state == "enabled":
            return None
        reason = "probe delivered" if self.state == "disabled" else "delivered"
        return self._to("enabled", reason, now)

    def failed(self, now: float, breaker_opened: bool, disable_after: float) -> Change | None:
        """A failed attempt (no answer, or a non-2xx that is not 410)."""
        if self.failing_since is None:
            self.failing_since = now
        if self.state == "disabled":
            return None
        change = self.check_expired(now, disable_after)
        if change is None and breaker_opened and self.state == "enabled":
            change = self._to("failing", "circuit breaker opened", now)
        return change

    def check_expired(self, now: float, disable_after: float) -> Change | None:
        """Disable once failing continuously for `disable_after` seconds."""
        if self.state == "disabled" or self.failing_since is None:
            return None
        if now - self.failing_since < disable_after:
            return None
        return self._to("disabled", f"failing continuously for {disable_after:g}s", now, "failing")

    def gone(self, now: float) -> Change | None:
        if self.state == "disabled" and self.cause == "gone":
            return None
        return self._to("disabled", "endpoint answered 410 Gone", now, "gone")

    # ---- probes ----------------------------------------------------------------------------

    def probe_due(self, now: float) -> float | None:
        """0 when a probe may start now; else seconds until one may (None: never by itself)."""
        if not self.probes or self.probing:
            return None
        return max(0.0, self.probe_at - now)

    def begin_probe(self, now: float, interval: float) -> None:
        self.probing = True
        self.probe_at = now + interval

    def end_probe(self) -> None:
        self.probing = False

    # ---- operators and config --------------------------------------------------------------

    def disable(self, now: float) -> Change | None:
        if self.state == "disabled" and self.cause == "operator":
            return None
        return self._to("disabled", "disabled by operator", now, "operator")

    def enable(self, now: float, reason: str = "enabled by operator") -> Change | None:
        self.failing_since = None
        if self.state == "enabled":
            return None
        return self._to("enabled", reason, now)

    def url_is(self, base_url: str, now: float) -> Change | None:
        """The config says the endpoint is `base_url`; a different one than before enables it."""
        old, self.base_url = self.base_url, base_url
        # The state file keeps the URL redacted (no password or query value on disk), so a URL
        # loaded from it is compared in that form: only a change a redacted URL shows enables.
        if old is None or old == base_url or old == redact.url(base_url):
            return None
        return self.enable(now, "base_url changed")

    def after_restart(self, now: float) -> None:
        """Loaded from the state file: the first probe may go out at once."""
        self.probing = False
        self.probe_at = now

    # ---- persistence -----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "since": self.since,
            "reason": self.reason,
            "cause": self.cause,
            "failing_since": self.failing_since,
            "base_url": None if self.base_url is None else redact.url(self.base_url),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Endpoint:
        state = data.get("state")
        cause = data.get("cause", "")
        failing = data.get("failing_since")
        return cls(
            state=state if state in STATES else "enabled",
            since=float(data.get("since") or 0.0),
            reason=str(data.get("reason") or ""),
            cause=cause if cause in ("", "failing", "gone", "operator") else "",
            failing_since=float(failing) if isinstance(failing, int | float) else None,
            base_url=data.get("base_url") if isinstance(data.get("base_url"), str) else None,
        )
