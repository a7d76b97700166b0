"""Durable on-disk journal: segmented append-only files, group commit, recovery, compaction.

A storage engine: it knows events only as ids, a tenant, a severity and opaque blobs.
"""

from .check import CheckReport, check
from .errors import JournalError, JournalLocked, JournalUnavailable, UnknownEvent
from .journal import Journal
from .model import FsyncMode, LiveEvent, Recovered

__all__ = [
    "CheckReport",
    "FsyncMode",
    "Journal",
    "JournalError",
    "JournalLocked",
    "JournalUnavailable",
    "LiveEvent",
    "Recovered",
    "UnknownEvent",
    "check",
]
