"""The station's lifecycle as an explicit, persisted state machine.

    unprovisioned -> provisioned -> open <-> paused -> closed -> exported
                                    (open|paused) -> closed

The transition table is data (:data:`TRANSITIONS`); :func:`next_phase` is the
one pure function that applies it. :class:`Lifecycle` persists every
transition (SQLite, fsync) so a power cut never forgets that the station was
opened or closed.
"""

from __future__ import annotations

import os
import sqlite3
import time
from enum import Enum

from agent.runtime.sqlite_util import connect_durable, immediate


class Phase(Enum):
    """Where the station is in its day."""

    UNPROVISIONED = "unprovisioned"
    PROVISIONED = "provisioned"
    OPEN = "open"
    PAUSED = "paused"
    CLOSED = "closed"
    EXPORTED = "exported"


class Command(Enum):
    """Operator commands that move the lifecycle."""

    INSTALL = "install"
    OPEN = "open"
    PAUSE = "pause"
    RESUME = "resume"
    CLOSE = "close"
    EXPORT = "export"


TRANSITIONS: dict[tuple[Phase, Command], Phase] = {
    (Phase.UNPROVISIONED, Command.INSTALL): Phase.PROVISIONED,
    (Phase.PROVISIONED, Command.INSTALL): Phase.PROVISIONED,
    (Phase.PROVISIONED, Command.OPEN): Phase.OPEN,
    (Phase.OPEN, Command.PAUSE): Phase.PAUSED,
    (Phase.PAUSED, Command.RESUME): Phase.OPEN,
    (Phase.OPEN, Command.CLOSE): Phase.CLOSED,
    (Phase.PAUSED, Command.CLOSE): Phase.CLOSED,
    (Phase.CLOSED, Command.EXPORT): Phase.EXPORTED,
}


class TransitionError(RuntimeError):
    """The command is not allowed in the current phase."""

    def __init__(self, phase: Phase, command: Command) -> None:
        allowed = sorted(c.value for (p, c) in TRANSITIONS if p is phase)
        super().__init__(
            f"cannot {command.value} while the station is {phase.value}"
            + (f" (allowed: {', '.join(allowed)})" if allowed else "")
        )
        self.phase = phase
        self.command = command


def next_phase(phase: Phase, command: Command) -> Phase:
    """The phase after ``command``, or :class:`TransitionError`."""
    try:
        return TRANSITIONS[(phase, command)]
    except KeyError:
        raise TransitionError(phase, command) from None


def read_phase(path: str | os.PathLike[str]) -> Phase:
    """The phase recorded in ``path`` without writing anything (no WAL/SHM files created).

    With no ``-wal`` file beside it (no agent running) the database is read as
    immutable; otherwise read-only through the running agent's WAL.
    """
    p = os.fspath(path)
    flags = "mode=ro" if os.path.exists(p + "-wal") else "mode=ro&immutable=1"
    con = sqlite3.connect(f"file:{p}?{flags}", uri=True)
    try:
        row = con.execute("SELECT phase FROM lifecycle ORDER BY seq DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        row = None  # no table yet: nothing was ever recorded
    finally:
        con.close()
    return Phase(row[0]) if row else Phase.UNPROVISIONED


class Lifecycle:
    """The persisted phase of this kiosk's station day."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._con = connect_durable(path)
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS lifecycle (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "phase TEXT NOT NULL, command TEXT NOT NULL, at_ms INTEGER NOT NULL)"
        )

    @property
    def phase(self) -> Phase:
        """The current phase (UNPROVISIONED before any transition)."""
        row = self._con.execute(
            "SELECT phase FROM lifecycle ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return Phase(row[0]) if row else Phase.UNPROVISIONED

    def check(self, command: Command) -> Phase:
        """The phase ``command`` would lead to (raises if not allowed); changes nothing."""
        return next_phase(self.phase, command)

    def apply(self, command: Command) -> Phase:
        """Apply ``command`` durably and return the new phase."""
        with immediate(self._con) as con:
            target = self.check(command)
            con.execute(
                "INSERT INTO lifecycle (phase, command, at_ms) VALUES (?,?,?)",
                (target.value, command.value, time.time_ns() // 1_000_000),
            )
        return target

    def opened_at_ms(self) -> int | None:
        """When the station was opened, if it was."""
        row = self._con.execute(
            "SELECT at_ms FROM lifecycle WHERE command='open' ORDER BY seq LIMIT 1"
        ).fetchone()
        return int(row[0]) if row else None

    def close(self) -> None:
        """Close the database."""
        self._con.close()
