"""Ops state: deduplication, device sessions, health and turnout, in SQLite or PostgreSQL.

One schema, two back ends. A single ops instance uses SQLite (WAL,
``synchronous=FULL``); several instances behind the shared subscription use
one PostgreSQL database, where the primary key of ``seen`` makes the
"counter already seen?" decision atomic across instances: a replay is refused
whichever instance receives it. Every table name starts with ``prefix`` so
tests (and several elections) can share one database.

Tables::

    seen        (device, key) -> n, received_ms       dedup; key from verify.dedup_key
    device      per kiosk: last seen, birth/death boot, max/contiguous n,
                last health, clock skew, lost counters
    turnout     per kiosk: latest cumulative counts (highest n wins)
    turnout_log every accepted turnout record (turnout over the day)
    events      every accepted event record
    counters    (instance, name) -> value: accepted / rejected:<reason>

Updates are monotone ("keep the higher n / boot"), so the order in which
instances commit does not change the result.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ops.verify import TURNOUT_FIELDS, Accepted

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


class StoreError(RuntimeError):
    """The state database cannot be opened or used."""


@dataclass(frozen=True)
class TurnoutCounts:
    """Cumulative identification outcomes of a kiosk, station or district."""

    identified: int = 0
    refused: int = 0
    not_identified: int = 0
    manual: int = 0
    by_hour: Mapping[str, int] = field(default_factory=dict)

    def __add__(self, other: TurnoutCounts) -> TurnoutCounts:
        hours = dict(self.by_hour)
        for h, c in other.by_hour.items():
            hours[h] = hours.get(h, 0) + c
        return TurnoutCounts(
            self.identified + other.identified, self.refused + other.refused,
            self.not_identified + other.not_identified, self.manual + other.manual,
            dict(sorted(hours.items())),
        )

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> TurnoutCounts:
        """From a verified turnout payload."""
        return cls(int(p["identified"]), int(p["refused"]), int(p["not_identified"]),
                   int(p["manual"]), dict(sorted(p.get("by_hour", {}).items())))


@dataclass(frozen=True)
class TurnoutSummary:
    """Latest cumulative turnout per kiosk, summed per station and per district."""

    by_device: Mapping[str, TurnoutCounts]
    by_station: Mapping[str, TurnoutCounts]
    by_district: Mapping[str, TurnoutCounts]
    station_district: Mapping[str, str]


@dataclass(frozen=True)
class DeviceState:
    """What ops knows about one kiosk."""

    device: str
    station: str
    district: str
    online: bool
    """A birth was seen whose boot is newer than the last death."""
    last_seen_ms: int
    birth_boot: int
    death_boot: int
    max_n: int
    contig_n: int
    """Every counter value up to this one has been received."""
    birth_last_n: int
    oldest_n: int
    lost_n: int
    """Counter values the kiosk no longer retains and ops never got."""
    skew_ms: int | None
    health: Mapping[str, Any] | None
    health_ms: int | None


@dataclass(frozen=True)
class Stats:
    """Message counters, summed over all ops instances sharing the store."""

    accepted: int
    rejected: Mapping[str, int]

    @property
    def rejected_total(self) -> int:
        """All rejections, whatever the reason."""
        return sum(self.rejected.values())


class _Conn(Protocol):
    def cursor(self) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


_DDL = [
    "CREATE TABLE IF NOT EXISTS {p}seen (device TEXT NOT NULL, key TEXT NOT NULL, n BIGINT,"
    " received_ms BIGINT NOT NULL, PRIMARY KEY (device, key))",
    "CREATE INDEX IF NOT EXISTS {p}seen_n ON {p}seen (device, n)",
    "CREATE TABLE IF NOT EXISTS {p}device (device TEXT PRIMARY KEY, station TEXT NOT NULL,"
    " district TEXT NOT NULL, last_seen_ms BIGINT NOT NULL DEFAULT 0,"
    " birth_boot BIGINT NOT NULL DEFAULT 0, death_boot BIGINT NOT NULL DEFAULT 0,"
    " max_n BIGINT NOT NULL DEFAULT 0, contig_n BIGINT NOT NULL DEFAULT 0,"
    " birth_last_n BIGINT NOT NULL DEFAULT 0, oldest_n BIGINT NOT NULL DEFAULT 0,"
    " lost_n BIGINT NOT NULL DEFAULT 0, skew_ms BIGINT, skew_at_ms BIGINT NOT NULL DEFAULT 0,"
    " health TEXT, health_n BIGINT NOT NULL DEFAULT 0, health_ms BIGINT)",
    "CREATE TABLE IF NOT EXISTS {p}turnout (device TEXT PRIMARY KEY, station TEXT NOT NULL,"
    " district TEXT NOT NULL, n BIGINT NOT NULL, wall_ms BIGINT NOT NULL, payload TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {p}turnout_log (device TEXT NOT NULL, n BIGINT NOT NULL,"
    " station TEXT NOT NULL, district TEXT NOT NULL, wall_ms BIGINT NOT NULL,"
    " identified BIGINT NOT NULL, refused BIGINT NOT NULL, not_identified BIGINT NOT NULL,"
    " manual BIGINT NOT NULL, PRIMARY KEY (device, n))",
    "CREATE TABLE IF NOT EXISTS {p}events (device TEXT NOT NULL, n BIGINT NOT NULL,"
    " wall_ms BIGINT NOT NULL, event TEXT NOT NULL, payload TEXT NOT NULL,"
    " historical INTEGER NOT NULL, PRIMARY KEY (device, n))",
    "CREATE TABLE IF NOT EXISTS {p}counters (instance TEXT NOT NULL, name TEXT NOT NULL,"
    " value BIGINT NOT NULL, PRIMARY KEY (instance, name))",
]


@dataclass
class _DeviceAgg:
    station: str
    district: str
    last_seen_ms: int = 0
    max_n: int = 0
    birth: tuple[int, int, int] | None = None  # boot, last_n, oldest_n
    death_boot: int = 0
    skew: tuple[int, int] | None = None  # received_ms, skew_ms
    health: tuple[int, int, str] | None = None  # n, wall_ms, json
    turnout: tuple[int, int, str] | None = None


class StateStore:
    """Ops state in a SQL database; use :func:`open_store`. Thread-safe."""

    placeholder = "?"

    def __init__(self, conn: _Conn, prefix: str, instance: str) -> None:
        if not _PREFIX_RE.match(prefix):
            raise StoreError(f"table prefix {prefix!r} must match {_PREFIX_RE.pattern}")
        self._conn = conn
        self.prefix = prefix
        self.instance = instance
        self._lock = threading.RLock()
        with self._tx() as cur:
            self._lock_schema(cur)
            for stmt in _DDL:
                cur.execute(stmt.format(p=prefix))

    def _lock_schema(self, cur: Any) -> None:
        """Serialise concurrent schema creation (PostgreSQL only)."""

    def _sql(self, text: str) -> str:
        text = text.replace("{p}", self.prefix)
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                yield cur
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise
            finally:
                cur.close()

    def _insert_seen(
        self, cur: Any, rows: list[tuple[str, str, int | None, int]]
    ) -> set[tuple[str, str]]:
        new: set[tuple[str, str]] = set()
        for i in range(0, len(rows), 200):
            chunk = rows[i:i + 200]
            values = ",".join(["(?,?,?,?)"] * len(chunk))
            cur.execute(
                self._sql(f"INSERT INTO {{p}}seen (device, key, n, received_ms) VALUES {values}"
                          " ON CONFLICT DO NOTHING RETURNING device, key"),
                [v for row in chunk for v in row],
            )
            new.update((str(d), str(k)) for d, k in cur.fetchall())
        return new

    def ingest(self, accepted: Sequence[Accepted], rejected: Mapping[str, int]) -> list[bool]:
        """Record a batch in one transaction; per message, True if new, False if a duplicate.

        ``rejected`` counts this batch's messages refused by the verifier; the
        duplicates found here are added to it under ``duplicate``.
        """
        first: dict[tuple[str, str], int] = {}
        for i, acc in enumerate(accepted):
            first.setdefault((acc.env.device, acc.key), i)
        rows = sorted(
            (d, k, accepted[i].env.n if k.startswith("n:") else None, accepted[i].received_ms)
            for (d, k), i in first.items()
        )
        counts = dict(rejected)
        with self._tx() as cur:
            new = self._insert_seen(cur, rows) if rows else set()
            result = [
                (acc.env.device, acc.key) in new and first[(acc.env.device, acc.key)] == i
                for i, acc in enumerate(accepted)
            ]
            fresh = [acc for acc, ok in zip(accepted, result, strict=True) if ok]
            self._apply(cur, fresh)
            dups = len(accepted) - len(fresh)
            if dups:
                counts["duplicate"] = counts.get("duplicate", 0) + dups
            bumps = [(self.instance, f"rejected:{r}", c) for r, c in counts.items() if c]
            if fresh:
                bumps.append((self.instance, "accepted", len(fresh)))
            for inst, name, value in bumps:
                cur.execute(
                    self._sql("INSERT INTO {p}counters (instance, name, value) VALUES (?,?,?)"
                              " ON CONFLICT (instance, name) DO UPDATE"
                              " SET value = {p}counters.value + excluded.value"),
                    (inst, name, value),
                )
        return result

    def _apply(self, cur: Any, fresh: Sequence[Accepted]) -> None:
        aggs: dict[str, _DeviceAgg] = {}
        logs: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        for acc in fresh:
            env = acc.env
            agg = aggs.setdefault(env.device, _DeviceAgg(env.station, env.district))
            agg.last_seen_ms = max(agg.last_seen_ms, acc.received_ms)
            if not env.historical and (agg.skew is None or acc.received_ms >= agg.skew[0]):
                agg.skew = (acc.received_ms, acc.received_ms - env.sent_ms)
            if env.type == "birth":
                p = env.payload
                if agg.birth is None or env.boot >= agg.birth[0]:
                    agg.birth = (env.boot, int(p["last_n"]), int(p["oldest_n"]))
            elif env.type == "death":
                agg.death_boot = max(agg.death_boot, env.boot)
            else:
                agg.max_n = max(agg.max_n, env.n)
                text = json.dumps(env.payload, sort_keys=True, ensure_ascii=False)
                if env.type == "health":
                    if agg.health is None or env.n > agg.health[0]:
                        agg.health = (env.n, env.wall_ms, text)
                elif env.type == "turnout":
                    if agg.turnout is None or env.n > agg.turnout[0]:
                        agg.turnout = (env.n, env.wall_ms, text)
                    logs.append((env.device, env.n, env.station, env.district, env.wall_ms,
                                 *(int(env.payload[f]) for f in TURNOUT_FIELDS)))
                else:
                    events.append((env.device, env.n, env.wall_ms, str(env.payload["event"]),
                                   text, int(env.historical)))
        for device, a in sorted(aggs.items()):
            cur.execute(self._sql(
                "INSERT INTO {p}device (device, station, district) VALUES (?,?,?)"
                " ON CONFLICT (device) DO NOTHING"), (device, a.station, a.district))
            cur.execute(self._sql(
                "UPDATE {p}device SET last_seen_ms = ? WHERE device = ? AND last_seen_ms < ?"),
                (a.last_seen_ms, device, a.last_seen_ms))
            if a.max_n:
                cur.execute(self._sql(
                    "UPDATE {p}device SET max_n = ? WHERE device = ? AND max_n < ?"),
                    (a.max_n, device, a.max_n))
            if a.birth is not None:
                boot, last_n, oldest_n = a.birth
                cur.execute(self._sql(
                    "UPDATE {p}device SET birth_boot = ?, birth_last_n = ?, oldest_n = ?"
                    " WHERE device = ? AND birth_boot <= ?"),
                    (boot, last_n, oldest_n, device, boot))
            if a.death_boot:
                cur.execute(self._sql(
                    "UPDATE {p}device SET death_boot = ? WHERE device = ? AND death_boot < ?"),
                    (a.death_boot, device, a.death_boot))
            if a.skew is not None:
                cur.execute(self._sql(
                    "UPDATE {p}device SET skew_ms = ?, skew_at_ms = ?"
                    " WHERE device = ? AND skew_at_ms <= ?"),
                    (a.skew[1], a.skew[0], device, a.skew[0]))
            if a.health is not None:
                n, wall, text = a.health
                cur.execute(self._sql(
                    "UPDATE {p}device SET health = ?, health_n = ?, health_ms = ?"
                    " WHERE device = ? AND health_n < ?"), (text, n, wall, device, n))
            if a.turnout is not None:
                n, wall, text = a.turnout
                cur.execute(self._sql(
                    "INSERT INTO {p}turnout (device, station, district, n, wall_ms, payload)"
                    " VALUES (?,?,?,?,?,?) ON CONFLICT (device) DO UPDATE SET n = excluded.n,"
                    " wall_ms = excluded.wall_ms, payload = excluded.payload"
                    " WHERE {p}turnout.n < excluded.n"),
                    (device, a.station, a.district, n, wall, text))
        if logs:
            cur.executemany(self._sql(
                "INSERT INTO {p}turnout_log (device, n, station, district, wall_ms, identified,"
                " refused, not_identified, manual) VALUES (?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT DO NOTHING"), logs)
        if events:
            cur.executemany(self._sql(
                "INSERT INTO {p}events (device, n, wall_ms, event, payload, historical)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING"), events)

    # ------------------------------------------------------------------ reads

    def stats(self) -> Stats:
        """Accepted and rejected counters summed over instances."""
        with self._tx() as cur:
            cur.execute(self._sql("SELECT name, SUM(value) FROM {p}counters GROUP BY name"))
            rows = cur.fetchall()
        accepted = 0
        rejected: dict[str, int] = {}
        for name, value in rows:
            if name == "accepted":
                accepted = int(value)
            elif name.startswith("rejected:"):
                rejected[name.removeprefix("rejected:")] = int(value)
        return Stats(accepted, dict(sorted(rejected.items())))

    def devices(self) -> list[DeviceState]:
        """Every kiosk ops has heard from, sorted by id."""
        with self._tx() as cur:
            cur.execute(self._sql(
                "SELECT device, station, district, last_seen_ms, birth_boot, death_boot, max_n,"
                " contig_n, birth_last_n, oldest_n, lost_n, skew_ms, health, health_ms"
                " FROM {p}device ORDER BY device"))
            rows = cur.fetchall()
        return [
            DeviceState(
                device=r[0], station=r[1], district=r[2], online=int(r[4]) > int(r[5]),
                last_seen_ms=int(r[3]), birth_boot=int(r[4]), death_boot=int(r[5]),
                max_n=int(r[6]), contig_n=int(r[7]), birth_last_n=int(r[8]),
                oldest_n=int(r[9]), lost_n=int(r[10]),
                skew_ms=None if r[11] is None else int(r[11]),
                health=None if r[12] is None else json.loads(r[12]),
                health_ms=None if r[13] is None else int(r[13]),
            )
            for r in rows
        ]

    def turnout(self) -> TurnoutSummary:
        """Latest cumulative turnout per kiosk, summed per station and district."""
        with self._tx() as cur:
            cur.execute(self._sql("SELECT device, station, district, payload FROM {p}turnout"
                                  " ORDER BY device"))
            rows = cur.fetchall()
        by_device: dict[str, TurnoutCounts] = {}
        by_station: dict[str, TurnoutCounts] = {}
        by_district: dict[str, TurnoutCounts] = {}
        station_district: dict[str, str] = {}
        for device, station, district, payload in rows:
            c = TurnoutCounts.from_payload(json.loads(payload))
            by_device[device] = c
            by_station[station] = by_station.get(station, TurnoutCounts()) + c
            by_district[district] = by_district.get(district, TurnoutCounts()) + c
            station_district[station] = district
        return TurnoutSummary(by_device, by_station, by_district, station_district)

    def turnout_log(self, device: str) -> list[tuple[int, int]]:
        """(n, identified) of every accepted turnout record of ``device``, in counter order."""
        with self._tx() as cur:
            cur.execute(self._sql("SELECT n, identified FROM {p}turnout_log WHERE device = ?"
                                  " ORDER BY n"), (device,))
            return [(int(n), int(i)) for n, i in cur.fetchall()]

    def events(self, device: str) -> list[tuple[int, str, Mapping[str, Any]]]:
        """(n, event id, payload) of every accepted event of ``device``, in counter order."""
        with self._tx() as cur:
            cur.execute(self._sql("SELECT n, event, payload FROM {p}events WHERE device = ?"
                                  " ORDER BY n"), (device,))
            return [(int(n), str(e), json.loads(p)) for n, e, p in cur.fetchall()]

    # ------------------------------------------------------------------ gaps

    def advance_contiguous(self, device: str) -> tuple[int, int]:
        """Move the device's contiguous watermark over received counters.

        Counter values below the kiosk's oldest retained one (from its birth)
        that never arrived are written off as lost. Returns (contig_n,
        highest n known to exist).
        """
        with self._tx() as cur:
            cur.execute(self._sql("SELECT contig_n, max_n, birth_last_n, oldest_n, lost_n"
                                  " FROM {p}device WHERE device = ?"), (device,))
            row = cur.fetchone()
            if row is None:
                return (0, 0)
            contig, max_n, birth_last, oldest, lost = (int(v) for v in row)
            start = contig
            if oldest and contig + 1 < oldest:
                # Below the kiosk's oldest retained row nothing more can come.
                cur.execute(self._sql("SELECT COUNT(*) FROM {p}seen WHERE device = ?"
                                      " AND n > ? AND n < ?"), (device, contig, oldest))
                got = int(cur.fetchone()[0])
                lost += oldest - 1 - contig - got
                contig = oldest - 1
            while True:
                cur.execute(self._sql("SELECT n FROM {p}seen WHERE device = ? AND n > ?"
                                      " ORDER BY n LIMIT 5000"), (device, contig))
                ns = [int(r[0]) for r in cur.fetchall()]
                for n in ns:
                    if n != contig + 1:
                        break
                    contig = n
                else:
                    if len(ns) == 5000:
                        continue
                break
            if contig != start:
                cur.execute(self._sql("UPDATE {p}device SET contig_n = ?, lost_n = ?"
                                      " WHERE device = ? AND contig_n < ?"),
                            (contig, lost, device, contig))
            return contig, max(max_n, birth_last)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


class SqliteStore(StateStore):
    """Single-instance store in a SQLite file (WAL, synchronous=FULL)."""

    def __init__(self, path: str | Path, *, prefix: str = "kesp_", instance: str = "ops") -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open {path}: {exc}") from exc
        super().__init__(conn, prefix, instance)


class PostgresStore(StateStore):
    """Store shared by several ops instances in one PostgreSQL database."""

    placeholder = "%s"

    def __init__(self, url: str, *, prefix: str = "kesp_", instance: str = "ops") -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError(
                "a PostgreSQL store needs psycopg: pip install 'kesp-kiosk-agent[ops]'"
            ) from exc
        try:
            conn = psycopg.connect(url)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {url}: {exc}") from exc
        super().__init__(conn, prefix, instance)

    def _lock_schema(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.prefix + "schema",))

    def drop(self) -> None:
        """Drop this prefix's tables (tests clean up with it)."""
        with self._tx() as cur:
            for table in ("seen", "device", "turnout", "turnout_log", "events", "counters"):
                cur.execute(f"DROP TABLE IF EXISTS {self.prefix}{table}")


def open_store(target: str, *, prefix: str = "kesp_", instance: str = "ops") -> StateStore:
    """``postgresql://...`` opens PostgreSQL, anything else is a SQLite file path."""
    if target.startswith(("postgresql://", "postgres://")):
        return PostgresStore(target, prefix=prefix, instance=instance)
    return SqliteStore(target, prefix=prefix, instance=instance)
