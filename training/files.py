"""Crash-safe file writes: readers see the old file or the new one, never a torn one."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def write_new(path: str | Path, data: bytes) -> None:
    """Create a file that must not exist yet and force it to disk before it is renamed into view."""
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_dir(path: str | Path) -> None:
    """Make renames and new entries in a directory survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes) -> None:
    """Replace path with data atomically and durably; on any failure nothing new is left behind."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}-{secrets.token_hex(8)}")
    try:
        write_new(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # e.g. a read-only file system: the original error wins
            tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
