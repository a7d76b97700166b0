"""Journal error types: one root, so the daemon can map them to HTTP codes and exit codes at the edge."""

from __future__ import annotations

from relay.errors import RelayError


class JournalError(RelayError):
    """Root of every error the journal raises."""


class JournalLocked(JournalError):
    """Another process holds `<data-dir>/LOCK`; two writers on one journal would corrupt it."""

    def __init__(self, path: str, pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "an unknown process"
        super().__init__(f"data dir {path} is locked by {who}")
        self.pid = pid


class JournalUnavailable(JournalError, OSError):
    """A write or fsync failed: nothing of the batch it belonged to is acknowledged."""


class UnknownEvent(JournalError, KeyError):
    """The event is not live in the journal (never accepted, or already settled).

    Also a `KeyError`, because that is the stdlib error a missing key raises.
    """

    def __str__(self) -> str:
        return f"unknown event {self.args[0]!r}" if self.args else "unknown event"
