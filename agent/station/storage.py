"""Room on the state disk: nobody is identified when the outcome might not be stored.

A full disk (ENOSPC, SQLite's "database or disk is full") must never stop the
agent nor leave half an outcome: every store writes in one SQLite transaction,
which a failed write rolls back. :class:`StorageGuard` checks the free space
before each voter is invited, and a disk-full error met during a turn puts the
station in the same state for :data:`~agent.station.parameters.STORAGE_RETRY_S`:
the sensor shows FAULT, one log line names the directory, the space left and
what to do, and the station resumes by itself once a voter can be served again
(one more line). The audit log and the telemetry outbox live on the same disk,
so the log (journald) and ``kesp-agent status`` are where it shows.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from agent.station import parameters

log = logging.getLogger(__name__)


class StorageGuard:
    """Free space on the state disk, checked before each voter (see module docstring)."""

    def __init__(self, state_dir: str | Path,
                 reserve_bytes: int = parameters.MIN_FREE_BYTES) -> None:
        self.state_dir = Path(state_dir)
        self.reserve_bytes = reserve_bytes
        self.full = False
        self._retry_at = 0.0
        self._said_at: float | None = None

    def free_bytes(self) -> int | None:
        """Free bytes on the state disk (None if it cannot be read)."""
        return free_bytes(self.state_dir)

    def room(self) -> bool:
        """True when a voter may be invited."""
        if time.monotonic() < self._retry_at:
            return False
        free = self.free_bytes()
        self.full = free is not None and free < self.reserve_bytes
        if self.full:
            self._say_full(free, "")
        return not self.full

    def hit(self, exc: BaseException) -> None:
        """A write failed for lack of space during a turn: stop inviting voters a while."""
        self.full = True
        self._retry_at = time.monotonic() + parameters.STORAGE_RETRY_S
        self._say_full(self.free_bytes(), f" ({exc})")

    def served(self) -> None:
        """A voter's turn completed: if a full disk was announced, say it is over."""
        if self._said_at is not None:
            self._said_at = None
            log.warning("disk space back under %s: the station serves voters again",
                        self.state_dir)

    def _say_full(self, free: int | None, detail: str) -> None:
        now = time.monotonic()
        if self._said_at is not None and now - self._said_at < parameters.STORAGE_REPEAT_S:
            return
        self._said_at = now
        log.error("%s; nobody is identified until space is freed (delete old logs or "
                  "exports already collected); the station resumes by itself",
                  disk_full_line(self.state_dir, free, self.reserve_bytes, detail))


def disk_full_line(state_dir: Path, free: int | None,
                   reserve_bytes: int = parameters.MIN_FREE_BYTES, detail: str = "") -> str:
    """``disk full under DIR: X MB free, Y MB needed (detail)``: the start of every line
    that reports a full state disk (the station's, and a start-up that failed)."""
    left = "unknown" if free is None else f"{free / 1e6:.1f} MB"
    return f"disk full under {state_dir}: {left} free, {reserve_bytes / 1e6:.0f} MB needed{detail}"


def free_bytes(state_dir: Path) -> int | None:
    """Free bytes on the disk holding ``state_dir`` (None if it cannot be read)."""
    try:
        return shutil.disk_usage(state_dir).free
    except OSError:
        return None
