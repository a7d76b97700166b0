"""Durable on-disk journal: segmented append-only files, group commit, recovery, compaction.

A storage engine: it knows events only as ids, a tenant, a severity and opaque blobs; it knows
nothing of HTTP or config.

Layout of a data dir:

    LOCK                      flock'd by the running daemon, holds its pid
    journal/00000001.seg ...  segments: MAGIC then records (format in records.py); the highest
                              number is the head, the only one appended to
    journal/CHECKPOINT        settled ids (and when) that removed segments held
    corrupt/<seg>.<off>.bad   the rest of a segment from a corrupt record on, moved aside at start
    corrupt/<seg>.<off>.torn  a non-zero torn tail cut off at start (kept: never deleted silently)

Durability per `fsync` mode:

* ``batch`` (default): `accept()` and friends return after the fdatasync that covers their
  records; concurrent callers share one fdatasync.
* ``always``: one fdatasync per call, never shared: slower, no different guarantee.
* ``never``: calls return after write(); the records are in the kernel's page cache, so they
  survive the daemon being killed but not a power loss or kernel crash. The loss window is whatever
  the kernel has not written back yet (typically up to ~30 s on Linux, vm.dirty_expire_centisecs).
  close() and compaction still fsync.
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
