"""SQLite opened the way every durable store of the kiosk needs it.

WAL journal with ``synchronous=FULL``: a COMMIT returns only after the WAL is
fsynced, so a mark, an outbox entry or an audit entry acknowledged to the
caller survives power loss. ``BEGIN IMMEDIATE`` transactions take the write
lock up front, so read-check-write sequences cannot interleave.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.runtime.durable import fsync_dir, make_dirs


def connect_durable(path: str | os.PathLike[str], *, mode: int = 0o600) -> sqlite3.Connection:
    """Open (creating with ``mode``) a SQLite database in WAL / synchronous=FULL mode."""
    p = Path(path)
    make_dirs(p.parent)
    if not p.exists():
        fd = os.open(p, os.O_CREAT | os.O_WRONLY, mode)
        os.close(fd)
        fsync_dir(p.parent)  # the new database's name survives a cut, not only its WAL
    con = sqlite3.connect(p, isolation_level=None, check_same_thread=False, timeout=30.0)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("PRAGMA foreign_keys=ON")
    return con


@contextmanager
def immediate(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any exception)."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    except BaseException:
        if con.in_transaction:  # SQLite already rolled back after e.g. SQLITE_FULL
            con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
