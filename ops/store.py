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
    event_head  per kiosk: highest event counter and number of events (dashboard reader)
    turnout_signed  per kiosk: its latest turnout message as received (public feed)
    counters    (instance, name) -> value: accepted / rejected:<reason>

Updates are monotone ("keep the higher n / boot"), so the order in which
instances commit does not change the result.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

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
class TurnoutRecord:
    """One cumulative turnout record as a kiosk sent it (``turnout_log``)."""

    device: str
    station: str
    district: str
    n: int
    wall_ms: int
    """The kiosk's clock when it wrote the record (epoch ms, UTC)."""
    identified: int
    refused: int
    not_identified: int
    manual: int


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
    "CREATE TABLE IF NOT EXISTS {p}event_head (device TEXT PRIMARY KEY, n BIGINT NOT NULL,"
    " count BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {p}turnout_signed (device TEXT PRIMARY KEY, n BIGINT NOT NULL,"
    " message TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {p}counters (instance TEXT NOT NULL, name TEXT NOT NULL,"
    " value BIGINT NOT NULL, PRIMARY KEY (instance, name))",
]


_DEVICE_UPDATES = {  # in this order: the device row must exist before it is updated
    "insert": "INSERT INTO {p}device (device, station, district) VALUES (?,?,?)"
              " ON CONFLICT (device) DO NOTHING",
    "seen": "UPDATE {p}device SET last_seen_ms = ? WHERE device = ? AND last_seen_ms < ?",
    "max_n": "UPDATE {p}device SET max_n = ? WHERE device = ? AND max_n < ?",
    "birth": "UPDATE {p}device SET birth_boot = ?, birth_last_n = ?, oldest_n = ?"
             " WHERE device = ? AND birth_boot <= ?",
    "death": "UPDATE {p}device SET death_boot = ? WHERE device = ? AND death_boot < ?",
    "skew": "UPDATE {p}device SET skew_ms = ?, skew_at_ms = ? WHERE device = ? AND skew_at_ms <= ?",
    "health": "UPDATE {p}device SET health = ?, health_n = ?, health_ms = ?"
              " WHERE device = ? AND health_n < ?",
    "turnout": "INSERT INTO {p}turnout (device, station, district, n, wall_ms, payload)"
               " VALUES (?,?,?,?,?,?) ON CONFLICT (device) DO UPDATE SET n = excluded.n,"
               " wall_ms = excluded.wall_ms, payload = excluded.payload"
               " WHERE {p}turnout.n < excluded.n",
    "event_head": "INSERT INTO {p}event_head (device, n, count) VALUES (?,?,?)"
                  " ON CONFLICT (device) DO UPDATE SET count = {p}event_head.count"
                  " + excluded.count, n = CASE WHEN excluded.n > {p}event_head.n"
                  " THEN excluded.n ELSE {p}event_head.n END",
    "signed": "INSERT INTO {p}turnout_signed (device, n, message) VALUES (?,?,?)"
              " ON CONFLICT (device) DO UPDATE SET n = excluded.n, message = excluded.message"
              " WHERE {p}turnout_signed.n < excluded.n",
}


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
    signed: tuple[int, bytes] | None = None  # n, the latest turnout message as received
    event_n: int = 0  # highest counter of an event in this batch
    event_count: int = 0  # events of this batch


class StateStore:
    """Ops state in a SQL database; use :func:`open_store`. Thread-safe."""

    placeholder = "?"

    def __init__(self, conn: _Conn, prefix: str, instance: str, *, create: bool,
                 where: str) -> None:
        self._conn = conn
        self.prefix = prefix
        self.instance = instance
        self._lock = threading.RLock()
        with self._tx() as cur:
            self._lock_schema(cur)
            _check_schema(self._tables(cur), prefix, create=create, where=where,
                          shared=self.placeholder != "?")
            for stmt in _DDL:  # also adds tables a newer version introduced
                cur.execute(stmt.format(p=prefix))

    def _lock_schema(self, cur: Any) -> None:
        """Serialise concurrent schema creation (PostgreSQL only)."""

    def _tables(self, cur: Any) -> set[str]:
        """Names of the tables in the database."""
        cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {str(r[0]) for r in cur.fetchall()}

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
                        agg.signed = (env.n, acc.signed) if acc.signed else agg.signed
                    logs.append((env.device, env.n, env.station, env.district, env.wall_ms,
                                 *(int(env.payload[f]) for f in TURNOUT_FIELDS)))
                else:
                    events.append((env.device, env.n, env.wall_ms, str(env.payload["event"]),
                                   text, int(env.historical)))
                    agg.event_n = max(agg.event_n, env.n)
                    agg.event_count += 1
        # One statement per kind of update, executed for all devices of the batch
        # at once (psycopg pipelines an executemany; a statement per device and
        # column cost a round trip each and bounded PostgreSQL ingest).
        rows: dict[str, list[tuple[Any, ...]]] = {k: [] for k in _DEVICE_UPDATES}
        for device, a in sorted(aggs.items()):
            rows["insert"].append((device, a.station, a.district))
            rows["seen"].append((a.last_seen_ms, device, a.last_seen_ms))
            if a.max_n:
                rows["max_n"].append((a.max_n, device, a.max_n))
            if a.birth is not None:
                boot, last_n, oldest_n = a.birth
                rows["birth"].append((boot, last_n, oldest_n, device, boot))
            if a.death_boot:
                rows["death"].append((a.death_boot, device, a.death_boot))
            if a.skew is not None:
                rows["skew"].append((a.skew[1], a.skew[0], device, a.skew[0]))
            if a.health is not None:
                n, wall, text = a.health
                rows["health"].append((text, n, wall, device, n))
            if a.turnout is not None:
                n, wall, text = a.turnout
                rows["turnout"].append((device, a.station, a.district, n, wall, text))
            if a.event_n:
                rows["event_head"].append((device, a.event_n, a.event_count))
            if a.signed is not None:
                rows["signed"].append((device, a.signed[0],
                                       base64.b64encode(a.signed[1]).decode("ascii")))
        for kind, sql in _DEVICE_UPDATES.items():
            if rows[kind]:
                cur.executemany(self._sql(sql), rows[kind])
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

    def turnout_history(self, slot_ms: int = 15 * 60_000) -> list[TurnoutRecord]:
        """Each kiosk's last cumulative turnout record in every ``slot_ms`` of its clock.

        Sorted by device and counter. Differences between consecutive records
        add up to the latest counts whatever the slot; a 15-minute slot keeps
        every local hour of every time zone apart (UTC offsets are multiples
        of 15 minutes) with a few hundred rows per kiosk and day instead of
        one per voter.
        """
        with self._tx() as cur:
            cur.execute(self._sql(
                "SELECT t.device, t.station, t.district, t.n, t.wall_ms, t.identified,"
                " t.refused, t.not_identified, t.manual FROM {p}turnout_log t JOIN"
                " (SELECT device, MAX(n) AS n FROM {p}turnout_log"
                "  GROUP BY device, wall_ms / ?) last ON t.device = last.device AND t.n = last.n"
                " ORDER BY t.device, t.n"), (slot_ms,))
            rows = cur.fetchall()
        return [TurnoutRecord(str(r[0]), str(r[1]), str(r[2]), *(int(v) for v in r[3:]))
                for r in rows]

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

    def signed_turnout(self) -> dict[str, bytes]:
        """Per kiosk, its latest turnout message exactly as received (signature || body)."""
        with self._tx() as cur:
            cur.execute(self._sql("SELECT device, message FROM {p}turnout_signed ORDER BY device"))
            return {str(d): base64.b64decode(m) for d, m in cur.fetchall()}

    def event_heads(self) -> dict[str, tuple[int, int]]:
        """Per kiosk, (highest counter, number) of its stored events (for incremental readers).

        Kept in its own small table at ingest: a GROUP BY over the events, which
        grow to millions of rows by the evening, would make every dashboard
        refresh slower as the day goes on.
        """
        with self._tx() as cur:
            cur.execute(self._sql("SELECT device, n, count FROM {p}event_head"))
            return {str(d): (int(n), int(c)) for d, n, c in cur.fetchall()}

    def events_after(self, device: str, after_n: int,
                     limit: int) -> list[tuple[int, Mapping[str, Any]]]:
        """(n, payload) of ``device``'s events with counter above ``after_n``, oldest first."""
        with self._tx() as cur:
            cur.execute(self._sql("SELECT n, payload FROM {p}events WHERE device = ? AND n > ?"
                                  " ORDER BY n LIMIT ?"), (device, after_n, limit))
            return [(int(n), json.loads(p)) for n, p in cur.fetchall()]

    def recent_events(self, device: str,
                      limit: int) -> list[tuple[int, int, str, Mapping[str, Any], bool]]:
        """(n, kiosk wall ms, event id, payload, historical) of the newest events, newest first."""
        with self._tx() as cur:
            cur.execute(self._sql("SELECT n, wall_ms, event, payload, historical FROM {p}events"
                                  " WHERE device = ? ORDER BY n DESC LIMIT ?"), (device, limit))
            return [(int(n), int(w), str(e), json.loads(p), bool(h))
                    for n, w, e, p, h in cur.fetchall()]

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
    """Single-instance store in a SQLite file (WAL, synchronous=FULL).

    Opening never creates the file unless ``create`` is set: a mistyped path
    must not turn into a new, empty store that shows no kiosks.
    """

    def __init__(self, path: str | Path, *, prefix: str = "kesp_", instance: str = "ops",
                 create: bool = False) -> None:
        p = Path(path)
        _check_prefix(prefix)
        if p.is_dir():
            raise StoreError(f"ops store {p} is a directory; give the store's file, e.g. "
                             f"{p / 'ops.sqlite'}")
        if not p.exists():
            if not create:
                raise StoreError(f"ops store {p} does not exist; check --store, or create it "
                                 f"once with 'kesp-ops --store {p} init'")
            if not p.parent.is_dir():
                raise StoreError(f"cannot create ops store {p}: folder {p.parent} does not "
                                 "exist")
        uri = f"file:{quote(str(p.absolute()))}?mode={'rwc' if create else 'rw'}"
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30)
            # Checked before the PRAGMAs: WAL mode would change a file we refuse.
            tables = {str(r[0]) for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            _check_schema(tables, prefix, create=create, where=str(p), shared=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            super().__init__(conn, prefix, instance, create=create, where=str(p))
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            raise StoreError(f"ops store {p} is not a usable SQLite database ({exc}); check "
                             "--store") from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise


class PostgresStore(StateStore):
    """Store shared by several ops instances in one PostgreSQL database."""

    placeholder = "%s"

    def __init__(self, url: str, *, prefix: str = "kesp_", instance: str = "ops",
                 create: bool = False) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError(
                "a PostgreSQL store needs psycopg: pip install 'kesp-kiosk-agent[ops]'"
            ) from exc

        _check_prefix(prefix)
        try:
            conn = psycopg.connect(url)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to ops store {_redact(url)}: "
                             f"{str(exc).strip().splitlines()[0]}") from exc
        try:
            super().__init__(conn, prefix, instance, create=create, where=_redact(url))
        except BaseException:
            conn.close()
            raise

    def _tables(self, cur: Any) -> set[str]:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        return {str(r[0]) for r in cur.fetchall()}

    def _lock_schema(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.prefix + "schema",))

    def drop(self) -> None:
        """Drop this prefix's tables (tests clean up with it)."""
        with self._tx() as cur:
            for table in _TABLES:
                cur.execute(f"DROP TABLE IF EXISTS {self.prefix}{table}")


_TABLES = ("seen", "device", "turnout", "turnout_log", "events", "counters", "event_head",
           "turnout_signed")


def _check_schema(tables: set[str], prefix: str, *, create: bool, where: str,
                  shared: bool) -> None:
    """Refuse a database that is not (yet) this prefix's store, unless creating one.

    ``shared``: a PostgreSQL database may hold other programs' tables; a SQLite
    file that does is another program's file (a kiosk's marks.sqlite...).
    """
    if f"{prefix}device" in tables:
        return
    if not create:
        what = (f"has no {prefix}* tables (wrong --store or --prefix?)" if tables
                else "is empty")
        raise StoreError(f"ops store {where} {what}; create a new store with "
                         "'kesp-ops --store ... init'")
    foreign = sorted(t for t in tables if not t.endswith(_TABLES))
    if foreign and not shared:
        raise StoreError(f"{where} is another program's database (tables "
                         f"{', '.join(foreign[:4])}); choose a new file for --store")


def _check_prefix(prefix: str) -> None:
    if not _PREFIX_RE.match(prefix):
        raise StoreError(f"table prefix {prefix!r} must be 1-31 lowercase letters, digits or "
                         "'_', starting with a letter (check --prefix)")


def _redact(url: str) -> str:
    """The URL without its password (it ends up in error messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def open_store(target: str, *, prefix: str = "kesp_", instance: str = "ops",
               create: bool = False) -> StateStore:
    """``postgresql://...`` opens PostgreSQL, anything else is a SQLite file path.

    Without ``create`` the store must exist and hold this prefix's tables;
    otherwise :class:`StoreError` says so (nothing is created or changed).
    """
    if target.startswith(("postgresql://", "postgres://")):
        return PostgresStore(target, prefix=prefix, instance=instance, create=create)
    return SqliteStore(target, prefix=prefix, instance=instance, create=create)
