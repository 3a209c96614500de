"""Durable store-and-forward queue of telemetry records (SQLite, WAL, synchronous=FULL).

Every record gets the next value of a persisted 64-bit counter ``n``; the
counter and the row are written in one transaction, committed and fsynced
before :meth:`Outbox.append` returns, so a record acknowledged to the station
application survives ``kill -9`` and power loss. Counter values are
contiguous: ops uses gaps in ``n`` to notice lost messages.

Rows are published in ``n`` order and marked *acknowledged* after the
broker's PUBACK; acknowledged rows are kept (up to a bound) so ops can ask
for a resend if the broker lost them after acknowledging. Turnout and event
rows are never dropped. When the queue is long (uplink down) a new health
sample replaces the newest queued health sample instead of adding a row.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.runtime.durable import make_dirs
from agent.telemetry.envelope import TelemetryError

RecordKind = Literal["health", "turnout", "event"]
_SCHEMA_VERSION = 1


class OutboxError(TelemetryError):
    """The outbox database is unreadable, of an unknown version, or the disk failed."""


@dataclass(frozen=True)
class OutboxRow:
    """One queued record. ``live_boot`` is the session it was recorded in (-1: offline)."""

    n: int
    kind: RecordKind
    wall_ms: int
    mono_ms: int
    live_boot: int
    payload: bytes
    acked: bool


class Outbox:
    """The kiosk's telemetry queue; thread-safe (one connection behind a lock)."""

    def __init__(self, path: str | os.PathLike[str], *, retain_acked_rows: int = 50_000) -> None:
        self.path = Path(path)
        make_dirs(self.path.parent)
        self.retain_acked_rows = retain_acked_rows
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so an append that
            # returned is on disk even if power fails the next millisecond.
            self._db.execute("PRAGMA synchronous=FULL")
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc}") from exc

    def _init_schema(self) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS outbox ("
                " n INTEGER PRIMARY KEY, kind TEXT NOT NULL, wall_ms INTEGER NOT NULL,"
                " mono_ms INTEGER NOT NULL, live_boot INTEGER NOT NULL,"
                " payload BLOB NOT NULL, acked INTEGER NOT NULL DEFAULT 0)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS outbox_unacked ON outbox (acked, n)")
            # Signatures of ops commands already carried out (replay guard that
            # survives a restart); pruned once older than the command window.
            db.execute(
                "CREATE TABLE IF NOT EXISTS seen_commands ("
                " signature BLOB PRIMARY KEY, sent_ms INTEGER NOT NULL)"
            )
            for key, default in (("schema", _SCHEMA_VERSION), ("last_n", 0), ("boot", 0)):
                db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, default))
            version = self._meta("schema")
            if version != _SCHEMA_VERSION:
                raise OutboxError(f"outbox schema {version} is not {_SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0])

    def append(
        self,
        kind: RecordKind,
        payload: bytes,
        wall_ms: int,
        mono_ms: int,
        live_boot: int,
        *,
        coalesce_depth: int | None = None,
        coalesce_above_n: int = 0,
    ) -> int:
        """Queue a record durably and return its counter value ``n``.

        For ``kind == "health"`` with ``coalesce_depth`` set and at least that
        many unacknowledged rows, the newest queued health row with
        ``n > coalesce_above_n`` (i.e. not yet handed to the broker) is
        overwritten instead, and its ``n`` is returned.
        """
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    if kind == "health" and coalesce_depth is not None:
                        depth = db.execute(
                            "SELECT COUNT(*) FROM outbox WHERE acked = 0"
                        ).fetchone()[0]
                        if depth >= coalesce_depth:
                            row = db.execute(
                                "SELECT n FROM outbox WHERE kind = 'health' AND acked = 0"
                                " AND n > ? ORDER BY n DESC LIMIT 1",
                                (coalesce_above_n,),
                            ).fetchone()
                            if row is not None:
                                db.execute(
                                    "UPDATE outbox SET payload = ?, wall_ms = ?, mono_ms = ?,"
                                    " live_boot = ? WHERE n = ?",
                                    (payload, wall_ms, mono_ms, live_boot, row[0]),
                                )
                                db.execute("COMMIT")
                                return int(row[0])
                    n = self._meta("last_n") + 1
                    db.execute(
                        "INSERT INTO outbox (n, kind, wall_ms, mono_ms, live_boot, payload)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (n, kind, wall_ms, mono_ms, live_boot, payload),
                    )
                    db.execute("UPDATE meta SET value = ? WHERE key = 'last_n'", (n,))
                    db.execute("COMMIT")
                    return n
                except BaseException:
                    if db.in_transaction:  # SQLITE_FULL has rolled back already
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.DatabaseError as exc:
                raise OutboxError(f"outbox write failed: {exc}") from exc

    def next_boot(self) -> int:
        """Increment and return the persisted session counter (bdSeq)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            boot = self._meta("boot") + 1
            db.execute("UPDATE meta SET value = ? WHERE key = 'boot'", (boot,))
            db.execute("COMMIT")
            return boot

    def accept_command(self, signature: bytes, sent_ms: int, forget_before_ms: int) -> bool:
        """Durably record an ops command's signature; False if it was seen before (a replay).

        Signatures of commands sent before ``forget_before_ms`` are dropped: such
        commands are refused as stale anyway.
        """
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM seen_commands WHERE sent_ms < ?", (forget_before_ms,))
                fresh = db.execute(
                    "INSERT OR IGNORE INTO seen_commands VALUES (?, ?)", (signature, sent_ms)
                ).rowcount == 1
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return fresh

    def last_n(self) -> int:
        """The highest counter value allocated so far (0 when nothing was ever queued)."""
        with self._lock:
            return self._meta("last_n")

    def newest_payload(self, kind: RecordKind) -> bytes | None:
        """The payload of the newest record of ``kind`` still stored (None: none)."""
        with self._lock:
            row = self._db.execute(
                "SELECT payload FROM outbox WHERE kind = ? ORDER BY n DESC LIMIT 1", (kind,)
            ).fetchone()
            return None if row is None else bytes(row[0])

    def oldest_retained(self) -> int:
        """The lowest ``n`` still stored (acked or not); ``last_n + 1`` when empty."""
        with self._lock:
            row = self._db.execute("SELECT MIN(n) FROM outbox").fetchone()
            return int(row[0]) if row[0] is not None else self._meta("last_n") + 1

    def pending(self, after_n: int, limit: int) -> list[OutboxRow]:
        """Unacknowledged rows with ``n > after_n`` in counter order."""
        return self._select("acked = 0 AND n > ?", after_n, limit)

    def resend_rows(self, from_n: int, to_n: int, limit: int) -> list[OutboxRow]:
        """All retained rows (acked or not) with ``from_n <= n <= to_n``, for a resend."""
        with self._lock:
            cur = self._db.execute(
                "SELECT n, kind, wall_ms, mono_ms, live_boot, payload, acked FROM outbox"
                " WHERE n >= ? AND n <= ? ORDER BY n LIMIT ?",
                (from_n, to_n, limit),
            )
            return [_row(r) for r in cur.fetchall()]

    def _select(self, where: str, arg: int, limit: int) -> list[OutboxRow]:
        with self._lock:
            cur = self._db.execute(
                "SELECT n, kind, wall_ms, mono_ms, live_boot, payload, acked FROM outbox"
                f" WHERE {where} ORDER BY n LIMIT ?",
                (arg, limit),
            )
            return [_row(r) for r in cur.fetchall()]

    def ack(self, ns: Iterable[int]) -> None:
        """Mark rows acknowledged (one transaction) and prune the oldest acked rows."""
        batch = [(n,) for n in ns]
        if not batch:
            return
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("UPDATE outbox SET acked = 1 WHERE n = ?", batch)
                acked = db.execute("SELECT COUNT(*) FROM outbox WHERE acked = 1").fetchone()[0]
                excess = acked - self.retain_acked_rows
                if excess > 0:
                    db.execute(
                        "DELETE FROM outbox WHERE n IN (SELECT n FROM outbox WHERE acked = 1"
                        " ORDER BY n LIMIT ?)",
                        (excess,),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def depth(self) -> int:
        """Number of records not yet acknowledged by the broker."""
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM outbox WHERE acked = 0").fetchone()
            return int(row[0])

    def size_bytes(self) -> int:
        """Bytes on disk (database plus WAL)."""
        total = 0
        for suffix in ("", "-wal"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total

    def close(self) -> None:
        """Close the database (the WAL is checkpointed by SQLite)."""
        with self._lock:
            self._db.close()


def _row(r: tuple[int, str, int, int, int, bytes, int]) -> OutboxRow:
    kind = r[1]
    if kind not in ("health", "turnout", "event"):
        raise OutboxError(f"row {r[0]} has unknown kind {kind!r}")
    return OutboxRow(
        n=int(r[0]), kind=kind, wall_ms=int(r[2]), mono_ms=int(r[3]),  # type: ignore[arg-type]
        live_boot=int(r[4]), payload=bytes(r[5]), acked=bool(r[6]),
    )
