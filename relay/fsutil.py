"""Durable file writes, shared by the journal and the config writer."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make creations, renames and unlinks in `path` durable; without it a crash can undo them."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_fsync(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd` (os.write may write less than asked), fsync, close."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(target: Path, data: bytes) -> None:
    """Replace `target` with `data` so that a crash leaves either the old or the new content."""
    tmp = target.with_name(f".{target.name}.tmp")
    write_fsync(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), data)
    os.replace(tmp, target)
    fsync_dir(target.parent)
