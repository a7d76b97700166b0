"""The head segment and the one write path every record takes.

`SegmentWriter.commit` runs in the writer thread (or inline with fsync=never) and is never run
twice at once; the asyncio side (journal.py) owns batching. A failed commit leaves the files as
they were before it: segments it created are unlinked and the head is truncated back, so a partial
record can never sit in the middle of a file where replay would take it for corruption.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from relay.fsutil import fsync_dir

from .records import MAGIC
from .segments import seg_name

WriteFn = Callable[[int, bytes], int]
FsyncFn = Callable[[int], None]


@dataclass(slots=True)
class Commit:
    positions: list[tuple[int, int]]  # (segment, offset) of each record, in order
    sizes: dict[int, int]  # new size of each segment written to
    fsync_seconds: list[float] = field(default_factory=list)


class SegmentWriter:
    def __init__(
        self,
        jdir: Path,
        head: int,
        size: int,
        max_bytes: int,
        write: WriteFn,
        fsync: FsyncFn,
        roll_sync: bool = True,
    ) -> None:
        self.jdir = jdir
        self.head = head
        self.size = size
        self.max_bytes = max_bytes
        self._write = write
        self._fsync = fsync
        # O_APPEND: after a rollback ftruncate, the next write lands at the new end by itself.
        self._fd = os.open(jdir / seg_name(head), os.O_WRONLY | os.O_APPEND)
        self._dirty = False  # the last rollback truncate failed; retry it before writing
        # A roll always makes the old head durable first (unless fsync=never), even in a batch
        # that needs no fsync itself: a crash must never keep a later record and lose an earlier.
        self._roll_sync = roll_sync
        # After a failed write or fsync the head's state on disk is unknown (the kernel may have
        # dropped its dirty pages): the next commit starts a new segment instead of reusing it.
        self._abandon = False

    def _write_all(self, fd: int, data: bytes) -> None:
        while data:
            n = self._write(fd, data)
            if n <= 0:
                raise OSError(5, "short write")
            data = data[n:]

    def _sync(self, fd: int, out: list[float]) -> None:
        t0 = time.perf_counter()
        self._fsync(fd)
        out.append(time.perf_counter() - t0)

    def _roll(self, chunk: list[bytes], size: int, res: Commit, created: list[tuple[int, int]]) -> None:
        """Write `chunk` to the head, make it durable, and open the next segment as the head."""
        self._write_all(self._fd, b"".join(chunk))
        if self._roll_sync:
            self._sync(self._fd, res.fsync_seconds)
        res.sizes[self.head] = size
        self.head += 1
        path = self.jdir / seg_name(self.head)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        created.append((self.head, self._fd))
        fsync_dir(self.jdir)

    def commit(self, bufs: list[bytes], sync: bool) -> Commit:
        start_head, start_size, start_fd = self.head, self.size, self._fd
        res = Commit([], {})
        created: list[tuple[int, int]] = []  # (segment, fd) opened by this commit
        try:
            if self._dirty:
                os.ftruncate(start_fd, start_size)
                self._dirty = False
            chunk: list[bytes] = []
            size = self.size
            if self._abandon and size > len(MAGIC) and bufs:
                self._roll(chunk, size, res, created)
                chunk, size = [MAGIC], len(MAGIC)
            for b in bufs:
                if size + len(b) > self.max_bytes and size > len(MAGIC):
                    self._roll(chunk, size, res, created)
                    chunk, size = [MAGIC], len(MAGIC)
                res.positions.append((self.head, size))
                chunk.append(b)
                size += len(b)
            if chunk:
                self._write_all(self._fd, b"".join(chunk))
            if sync:
                self._sync(self._fd, res.fsync_seconds)
            res.sizes[self.head] = size
            self.size = size
        except OSError:
            self._rollback(start_head, start_size, start_fd, created)
            self._abandon = True
            raise
        self._abandon = False
        if created:
            os.close(start_fd)
            for _, fd in created[:-1]:
                os.close(fd)
        return res

    def _rollback(self, head: int, size: int, fd: int, created: list[tuple[int, int]]) -> None:
        for seg, cfd in created:
            os.close(cfd)
            # Harmless if it stays: it holds no acknowledged record, and the next roll
            # recreates it with O_TRUNC.
            with contextlib.suppress(OSError):
                os.unlink(self.jdir / seg_name(seg))
        if created:
            with contextlib.suppress(OSError):
                fsync_dir(self.jdir)
        self.head, self.size, self._fd = head, size, fd
        try:
            os.ftruncate(fd, size)
        except OSError:
            self._dirty = True

    def probe(self) -> None:
        """A tiny write + fsync on the journal's disk, through the same seams as records."""
        if self._dirty:
            os.ftruncate(self._fd, self.size)
            self._dirty = False
        path = self.jdir / "PROBE"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self._write_all(fd, b"\0" * 4096)
            self._fsync(fd)
        finally:
            os.close(fd)
            os.unlink(path)
        self._fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)
