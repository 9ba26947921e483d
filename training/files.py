"""Crash-safe file writes and reads that cannot block: readers see the old file or the new one.

Temporary files and directories are named `.tmp-*` and locked (flock) while being written, so a
clean-up after a crash (`remove_stale`) removes only those nobody is writing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import stat
import time
from pathlib import Path

TMP_PREFIX = ".tmp-"
STALE_AFTER = 60.0  # seconds: a temporary file this old and unlocked belongs to a dead writer


class NotRegularFile(OSError):
    """A path that should be a regular file is a FIFO, a device, a directory or a symlink."""


def write_new(path: str | Path, data: bytes) -> None:
    """Create a file that must not exist yet and force it to disk before it is renamed into view."""
    with open(path, "xb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # "being written": remove_stale leaves it
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
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{secrets.token_hex(8)}")
    try:
        write_new(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # e.g. a read-only file system: the original error wins
            tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def read_regular(path: str | Path, limit: int, *, dir_fd: int | None = None) -> bytes:
    """Read at most limit + 1 bytes of a regular file without ever blocking on what it is.

    O_NONBLOCK makes opening a FIFO return at once, O_NOFOLLOW refuses a symlink, and fstat
    refuses anything but a regular file before a byte is read (a FIFO's read would wait for a
    writer forever). Raises FileNotFoundError, NotRegularFile or another OSError.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise NotRegularFile(exc.errno, "is a symbolic link, not a regular file") from exc
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(0, f"is not a regular file ({_kind(mode)})")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    """What a non-regular file is, for error messages."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def unlocked(path: Path) -> bool:
    """Whether nobody holds a flock on path (a file or a directory); False when it cannot tell."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def remove_stale(directory: str | Path, prefixes: tuple[str, ...] = (TMP_PREFIX,),
                 older_than: float = STALE_AFTER) -> list[str]:
    """Remove leftovers of dead writers: entries with a prefix, old enough and not locked.

    A writer holds a flock on what it writes (atomic_write's file, ModelStore.save's directory)
    and mtime moves while it writes, so neither a slow writer nor a fresh one is touched.
    """
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(prefixes):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if now - info.st_mtime < older_than or not unlocked(Path(entry.path)):
            continue
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(entry.name)
    return removed
