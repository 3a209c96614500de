"""Files and directories that survive a power cut.

A rename or a new directory entry is durable only once its directory is
fsynced; a new directory only once *its* parent is. :func:`atomic_write`
therefore fsyncs the file, renames it over the old one, fsyncs the directory,
and creates any missing parent directories with :func:`make_dirs`, which
fsyncs each new directory's parent (without that, the first ``export/`` of the
day could vanish after a cut while the lifecycle already says EXPORTED).

An interrupted :func:`atomic_write` leaves its temporary file behind (up to
the size of the gallery cache, ~180 MB for a large station):
:func:`remove_stale_temp_files` removes them at start-up.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".partial"
# mkstemp's names: "." + target name + "." + 8 random characters (+ our suffix; older
# versions of this module wrote none)
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}(\.partial)?$")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, making its entries (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: str | os.PathLike[str], mode: int = 0o755) -> None:
    """``mkdir -p`` that survives a power cut: each created directory's parent is fsynced."""
    p = Path(path)
    missing = []
    while not p.is_dir():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=mode)
        except FileExistsError:
            if not d.is_dir():
                raise
            continue
        fsync_dir(d.parent)


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename, fsync dir.

    A crash leaves either the old file or the new one, never half of one (and
    maybe a temp file, see :func:`remove_stale_temp_files`).
    """
    p = Path(path)
    make_dirs(p.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=TEMP_SUFFIX, dir=p.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(p.parent)


def remove_stale_temp_files(root: str | os.PathLike[str]) -> tuple[int, int]:
    """Remove the temp files interrupted :func:`atomic_write` calls left under ``root``
    (recursively); returns (files, bytes) removed. Call before anything writes there."""
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if not _TEMP_NAME.match(name):
                continue
            p = Path(dirpath) / name
            try:
                n = p.stat().st_size
                p.unlink()
            except FileNotFoundError:
                continue
            files += 1
            size += n
    return files, size


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a write that failed for lack of space:
    ENOSPC / EDQUOT, SQLite's SQLITE_FULL ("database or disk is full"), or SQLite's
    "disk I/O error" for a WAL index (``-shm``) it could not create or grow.

    SQLite reports the last as SQLITE_IOERR_SHMOPEN / _SHMSIZE, not SQLITE_FULL: a
    store opened, or a reader's first look at it, on a full disk. In the agent's own
    state directory (its own files, its own permissions) that is a full disk.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, sqlite3.Error) and (
                getattr(cur, "sqlite_errorcode", None) in _SQLITE_NO_ROOM
                or "database or disk is full" in str(cur)):
            return True
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


_SQLITE_NO_ROOM = frozenset({
    13,             # SQLITE_FULL
    10 | 18 << 8,   # SQLITE_IOERR_SHMOPEN
    10 | 19 << 8,   # SQLITE_IOERR_SHMSIZE
})
