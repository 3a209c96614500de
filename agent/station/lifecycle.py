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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class RollPin:
    """Which roll a station opened with: a later start refuses an older or foreign one."""

    election_id: str
    roll_version: int
    package_hash: str

    def refusal(self, installed: RollPin) -> str | None:
        """Why the ``installed`` roll may not run a station opened with this one, or None."""
        if installed.election_id != self.election_id:
            return (f"the installed roll is for election {installed.election_id!r} but this "
                    f"station opened with {self.election_id!r}")
        if installed.roll_version < self.roll_version:
            return (f"the installed roll v{installed.roll_version} is older than v"
                    f"{self.roll_version} the station opened with")
        if installed.roll_version == self.roll_version and (
                installed.package_hash != self.package_hash):
            return (f"the installed roll v{installed.roll_version} is not the package the "
                    "station opened with")
        return None


_PIN_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS roll_pin (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "election_id TEXT NOT NULL, roll_version INTEGER NOT NULL, package_hash TEXT NOT NULL)"
)


def _pin_row(con: sqlite3.Connection) -> RollPin | None:
    try:
        row = con.execute(
            "SELECT election_id, roll_version, package_hash FROM roll_pin"
        ).fetchone()
    except sqlite3.OperationalError:
        return None  # no table yet: opened by an earlier release, or never
    return RollPin(row[0], int(row[1]), row[2]) if row else None


def read_roll_pin(path: str | os.PathLike[str]) -> RollPin | None:
    """The pin recorded in ``path`` (None if there is no such file), writing nothing."""
    p = os.fspath(path)
    if not os.path.exists(p):
        return None
    flags = "mode=ro" if os.path.exists(p + "-wal") else "mode=ro&immutable=1"
    con = sqlite3.connect(f"file:{p}?{flags}", uri=True)
    try:
        return _pin_row(con)
    finally:
        con.close()


class Lifecycle:
    """The persisted phase of this kiosk's station day."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._con = connect_durable(path)
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS lifecycle (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "phase TEXT NOT NULL, command TEXT NOT NULL, at_ms INTEGER NOT NULL)"
        )
        self._con.execute(_PIN_SCHEMA)

    def pin_roll(self, pin: RollPin) -> None:
        """Record the roll the station opened with (kept: the first pin stands)."""
        with immediate(self._con) as con:
            con.execute("INSERT OR IGNORE INTO roll_pin VALUES (1, ?, ?, ?)",
                        (pin.election_id, pin.roll_version, pin.package_hash))

    @property
    def roll_pin(self) -> RollPin | None:
        """The roll the station opened with, if it was opened."""
        return _pin_row(self._con)

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
