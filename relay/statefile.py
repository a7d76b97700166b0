"""A small JSON document in the data dir, rewritten whole (atomically) whenever it changes.

For state that changes rarely and is tiny (one row per tenant: endpoint states; a handful of
operator notifications waiting to go out). Writes run in a thread and coalesce: a burst of
changes costs one or two writes, and the event loop never waits for the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relay.fsutil import write_atomic

log = logging.getLogger("relay.state")

RETRY_WRITE = 1.0  # a failed write (disk full) is tried again after this long


class StateFile:
    def __init__(self, path: Path | None, dump: Callable[[], Any]) -> None:
        self.path = path  # None: kept in memory only (unit tests)
        self._dump = dump
        self._dirty = False
        self._task: asyncio.Task[None] | None = None

    def load(self) -> Any:
        """The document, or None when there is none (or it cannot be read: logged, start fresh)."""
        if self.path is None or not self.path.exists():
            return None
        try:
            return json.loads(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            log.error("%s: unreadable (%s); starting without it", self.path, exc)
            return None

    def changed(self) -> None:
        if self.path is None:
            return
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._writer(), name=f"state:{self.path.name}")

    async def _writer(self) -> None:
        assert self.path is not None
        while self._dirty:
            self._dirty = False
            data = json.dumps(self._dump(), sort_keys=True).encode()
            try:
                await asyncio.to_thread(write_atomic, self.path, data)
            except OSError as exc:
                log.error("could not write %s (%s); will try again", self.path, exc)
                self._dirty = True
                await asyncio.sleep(RETRY_WRITE)

    async def close(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for the last write."""
        if self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
        if self._task is not None and not self._task.done():
            self._task.cancel()
