"""The slip ledger: every slip and report serial, and how far its printing got.

Durability rules (issue 7) are enforced here, with the mark store:

* a serial is *allocated* (committed) before anything refers to it;
* for an identified voter the mark is committed *before* the slip becomes
  *pending*, so a power cut can never leave a printed slip without a mark;
* before the bytes of an original go to the printer the slip is *sending*
  (committed). If the process dies there, or the printer reports a fault
  afterwards, an original **may** have left the printer, so every later copy
  is printed as DUPLICATE. Only a print that provably did not start
  (``NotPrinted``) may be retried as an original. Hence never two originals.

Serials are ``<station>-<kiosk>-<NNNNN>``: unique per kiosk, increasing, and
readable by the commission (like VxPollBook's per-machine receipt numbers).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from agent.runtime.sqlite_util import connect_durable, immediate


class SlipKind(Enum):
    """What a serial was issued for."""

    IDENTIFIED = "identified"
    REFUSED = "refused"
    NOT_IDENTIFIED = "not-identified"
    MANUAL = "manual"
    ZERO_REPORT = "zero-report"
    CLOSING_REPORT = "closing-report"


class SlipState(Enum):
    """How far a slip got (see module docstring)."""

    ALLOCATED = "allocated"
    PENDING = "pending"
    SENDING = "sending"
    PRINTED = "printed"
    VOID = "void"


class LedgerError(RuntimeError):
    """A ledger operation was asked for a serial or state that does not allow it."""


@dataclass(frozen=True)
class SlipRecord:
    """One row of the ledger."""

    serial: str
    seq: int
    kind: SlipKind
    state: SlipState
    voter: int | None
    details: Mapping[str, Any]
    originals: int
    duplicates: int
    uncertain: bool
    created_ms: int

    @property
    def next_is_duplicate(self) -> bool:
        """Whether the next print of this slip must carry the DUPLICATE banner."""
        return self.originals > 0 or self.uncertain or self.state is SlipState.SENDING


_SCHEMA = """
CREATE TABLE IF NOT EXISTS slips (
    serial TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    voter INTEGER,
    details TEXT NOT NULL,
    originals INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    uncertain INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    printed_ms INTEGER
);
"""


class Ledger:
    """Durable slip ledger (SQLite WAL, synchronous=FULL), thread-safe."""

    def __init__(self, path: str | os.PathLike[str], station_id: str, kiosk_label: str) -> None:
        self._con = connect_durable(path)
        self._con.executescript(_SCHEMA)
        self._prefix = f"{station_id}-{kiosk_label}"
        self._lock = threading.RLock()

    @staticmethod
    def _record(r: tuple[Any, ...]) -> SlipRecord:
        return SlipRecord(
            serial=r[0], seq=r[1], kind=SlipKind(r[2]), state=SlipState(r[3]), voter=r[4],
            details=json.loads(r[5]), originals=r[6], duplicates=r[7], uncertain=bool(r[8]),
            created_ms=r[9],
        )

    _COLS = "serial, seq, kind, state, voter, details, originals, duplicates, uncertain, created_ms"

    def allocate(
        self,
        kind: SlipKind,
        voter: int | None = None,
        details: Mapping[str, Any] | None = None,
        *,
        state: SlipState = SlipState.ALLOCATED,
    ) -> SlipRecord:
        """Reserve the next serial (committed before it returns)."""
        with self._lock, immediate(self._con) as con:
            seq = con.execute("SELECT COALESCE(MAX(seq), 0) FROM slips").fetchone()[0] + 1
            serial = f"{self._prefix}-{seq:05d}"
            con.execute(
                "INSERT INTO slips (serial, seq, kind, state, voter, details, created_ms) "
                "VALUES (?,?,?,?,?,?,?)",
                (serial, seq, kind.value, state.value, voter,
                 json.dumps(dict(details or {}), sort_keys=True), time.time_ns() // 1_000_000),
            )
        return self.get(serial)

    def get(self, serial: str) -> SlipRecord:
        """The record of ``serial``; :class:`LedgerError` when unknown."""
        with self._lock:
            row = self._con.execute(
                f"SELECT {self._COLS} FROM slips WHERE serial=?", (serial,)
            ).fetchone()
        if row is None:
            raise LedgerError(f"no slip with serial {serial!r}")
        return self._record(row)

    def _set(self, serial: str, expect: tuple[SlipState, ...], sql: str, *args: object) -> None:
        with self._lock, immediate(self._con) as con:
            row = con.execute("SELECT state FROM slips WHERE serial=?", (serial,)).fetchone()
            if row is None:
                raise LedgerError(f"no slip with serial {serial!r}")
            if SlipState(row[0]) not in expect:
                raise LedgerError(f"slip {serial} is {row[0]}, expected one of "
                                  f"{', '.join(s.value for s in expect)}")
            con.execute(f"UPDATE slips SET {sql} WHERE serial=?", (*args, serial))

    def make_pending(self, serial: str) -> None:
        """The slip may now be printed (its mark, if any, is committed)."""
        self._set(serial, (SlipState.ALLOCATED,), "state='pending'")

    def void(self, serial: str) -> None:
        """An allocated serial that will never be used (crash before its mark)."""
        self._set(serial, (SlipState.ALLOCATED,), "state='void'")

    def begin_print(self, serial: str) -> bool:
        """Commit 'sending' before bytes go out; returns whether this copy is a DUPLICATE."""
        rec = self.get(serial)
        duplicate = rec.next_is_duplicate
        self._set(serial, (SlipState.PENDING, SlipState.SENDING, SlipState.PRINTED),
                  "state='sending', uncertain=?", int(duplicate or rec.uncertain))
        return duplicate

    def printed(self, serial: str, *, duplicate: bool) -> None:
        """The printer confirmed the copy."""
        column = "duplicates" if duplicate else "originals"
        self._set(serial, (SlipState.SENDING,),
                  f"state='printed', {column}={column}+1, printed_ms=?",
                  time.time_ns() // 1_000_000)

    def not_printed(self, serial: str) -> None:
        """Nothing left the printer: back to pending (an original stays possible)."""
        rec = self.get(serial)
        state = "printed" if rec.originals or rec.duplicates else "pending"
        self._set(serial, (SlipState.SENDING,), f"state='{state}'")

    def uncertain(self, serial: str) -> None:
        """An original may have left the printer: keep pending, every later copy is DUPLICATE."""
        rec = self.get(serial)
        state = "printed" if rec.originals or rec.duplicates else "pending"
        self._set(serial, (SlipState.SENDING,), f"state='{state}', uncertain=1")

    def reprint_request(self, serial: str) -> None:
        """The commission asks for another copy of a printed slip (always DUPLICATE)."""
        self._set(serial, (SlipState.PRINTED,), "state='pending', uncertain=1")

    def in_state(self, *states: SlipState) -> list[SlipRecord]:
        """Records in any of ``states``, oldest first."""
        marks = ",".join("?" * len(states))
        with self._lock:
            rows = self._con.execute(
                f"SELECT {self._COLS} FROM slips WHERE state IN ({marks}) ORDER BY seq",
                [s.value for s in states],
            ).fetchall()
        return [self._record(r) for r in rows]

    def all(self) -> list[SlipRecord]:
        """Every record, oldest first."""
        with self._lock:
            rows = self._con.execute(f"SELECT {self._COLS} FROM slips ORDER BY seq").fetchall()
        return [self._record(r) for r in rows]

    def count(self, kind: SlipKind, *, exclude_void: bool = True) -> int:
        """How many serials of ``kind`` were issued (void ones excluded by default)."""
        sql = "SELECT COUNT(*) FROM slips WHERE kind=?"
        if exclude_void:
            sql += " AND state != 'void'"
        with self._lock:
            return int(self._con.execute(sql, (kind.value,)).fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._con.close()
