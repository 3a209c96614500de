"""Marks: "voter V was identified at kiosk K", the grow-only set every kiosk of a station shares.

A :class:`Mark` is signed by the kiosk that made it, numbered gap-free per
kiosk (``origin_seq``) and stamped with a hybrid logical clock, so

* merging two kiosks' sets is a plain union (order and repetition do not
  matter: the set is a CRDT keyed by ``(kiosk, origin_seq)``),
* a peer can ask "what do you have of kiosk K after n?" (version vectors),
* a forged or altered mark fails its signature and is rejected.

A voter with more than one mark is a *conflict*: it can only arise when two
kiosks identified the same voter while partitioned (or raced within the
propagation delay). Conflicts are never hidden; they are listed on the closing
report so the commission can reconcile with the paper list.

The store is SQLite (WAL, ``synchronous=FULL``): :meth:`MarkStore.mark_local`
returns only after the mark is on disk, which is what lets the station print
the slip *after* the mark and never lose one to a power cut.

A valid signature proves which kiosk made a mark, not that the mark is sane
(stolen kit, an RTC set to the wrong year). So :meth:`MarkStore.merge` trusts a
peer's mark only within bounds (:class:`MarkPolicy`, docs/PEERS.md "Trust
model"): a mark stamped further ahead of this kiosk's clock than the allowed
skew is *quarantined* (held apart, never observed into the clock, admitted once it
is no longer ahead: re-judged at every merge and :meth:`MarkStore.readmit`, without
waiting for a peer to send it again). A quarantined mark still refuses its voter
(:meth:`MarkStore.prior_marks`): it is validly signed by a trusted kiosk that
printed a slip, and only its stamp is wrong. A list number not in the roll is
refused; a kiosk the commission revoked has its later marks refused; a kiosk
whose marks come faster than a kiosk can identify voters is reported. Each mark
is judged on its own: a bad one never rolls back the good ones of its frame.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, get_args

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from agent.runtime.sqlite_util import connect_durable, immediate
from agent.station.parameters import (
    CLOCK_STEP_MS,
    PEER_MAX_MARKS_PER_WINDOW,
    PEER_RATE_WINDOW_S,
)

Method = Literal["verify", "identify", "identify-2f", "manual"]
METHODS: tuple[str, ...] = get_args(Method)

_MAGIC = b"KMK1"
_DOMAIN = b"kesp-mark-v1\x00"
_SIG_LEN = 64
_HEAD = struct.Struct(">4sIQQB")  # magic, voter, origin_seq, hlc, method index
_MAX_TEXT = 255


MAX_STORED_HLC = 2**63 - 1
"""SQLite integers are signed 64-bit: no stamp above this is stored or observed."""


_FLOOR_LIMIT = (2**47 - 1) << 16
"""A persisted floor at or above this leaves the clock no room to advance."""


class MarkError(ValueError):
    """A mark could not be decoded or is not valid."""


class ClockOverflowError(MarkError):
    """The hybrid clock would pass :data:`MAX_STORED_HLC` (a poisoned persisted floor)."""


@dataclass(frozen=True)
class MarkPolicy:
    """The bounds within which a peer's validly signed mark is believed (docs/PEERS.md).

    Defaults come from :mod:`agent.station.parameters`; the allowed skew is
    site configuration (``peer_max_clock_ahead_s``).
    """

    max_ahead_ms: int = 300_000
    """A mark stamped more than this ahead of our wall clock is quarantined."""
    rate_window_ms: int = PEER_RATE_WINDOW_S * 1000
    """Window of claimed (HLC) time over which a kiosk's rate of marks is checked."""
    max_marks_per_window: int = PEER_MAX_MARKS_PER_WINDOW
    """More marks than this from one kiosk inside one window is not physically possible."""


def hlc_pack(wall_ms: int, counter: int) -> int:
    """Pack a hybrid logical clock value: 48 bits of milliseconds, 16 bits of counter."""
    return (wall_ms << 16) | (counter & 0xFFFF)


def hlc_wall_ms(hlc: int) -> int:
    """The wall-clock milliseconds part of a packed HLC value."""
    return hlc >> 16


@dataclass(frozen=True)
class Mark:
    """One voter identified at one kiosk (see module docstring)."""

    voter: int
    kiosk: str
    origin_seq: int
    method: str
    slip_serial: str
    hlc: int
    signature: bytes = field(default=b"", repr=False)

    def signed_bytes(self) -> bytes:
        """The exact bytes the kiosk's Ed25519 signature covers."""
        return _DOMAIN + self._body()

    def _body(self) -> bytes:
        if self.method not in METHODS:
            raise MarkError(f"unknown method {self.method!r}")
        if not 0 < self.voter < 2**32:
            raise MarkError(f"voter {self.voter} out of range")
        if not 0 < self.origin_seq < 2**63:
            raise MarkError(f"origin_seq {self.origin_seq} out of range")
        if not 0 <= self.hlc < 2**64:
            raise MarkError(f"hlc {self.hlc} out of range")
        kiosk = self.kiosk.encode("utf-8")
        serial = self.slip_serial.encode("utf-8")
        if not 0 < len(kiosk) <= _MAX_TEXT or len(serial) > _MAX_TEXT:
            raise MarkError("kiosk id or slip serial too long or empty")
        return (
            _HEAD.pack(_MAGIC, self.voter, self.origin_seq, self.hlc, METHODS.index(self.method))
            + bytes([len(kiosk)])
            + kiosk
            + bytes([len(serial)])
            + serial
        )

    def to_bytes(self) -> bytes:
        """Wire/storage form: body followed by the 64-byte signature."""
        if len(self.signature) != _SIG_LEN:
            raise MarkError("mark is not signed")
        return self._body() + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> Mark:
        """Decode :meth:`to_bytes` output; :class:`MarkError` on anything malformed."""
        if len(data) < _HEAD.size + 2 + _SIG_LEN:
            raise MarkError(f"mark too short ({len(data)} bytes)")
        magic, voter, origin_seq, hlc, method_ix = _HEAD.unpack_from(data)
        if magic != _MAGIC:
            raise MarkError("bad magic")
        if method_ix >= len(METHODS):
            raise MarkError(f"unknown method code {method_ix}")
        pos = _HEAD.size
        klen = data[pos]
        kiosk_b = data[pos + 1 : pos + 1 + klen]
        pos += 1 + klen
        if pos >= len(data):
            raise MarkError("truncated before slip serial")
        slen = data[pos]
        serial_b = data[pos + 1 : pos + 1 + slen]
        pos += 1 + slen
        if len(kiosk_b) != klen or len(serial_b) != slen or len(data) - pos != _SIG_LEN:
            raise MarkError("length fields disagree with the data")
        try:
            kiosk, serial = kiosk_b.decode("utf-8"), serial_b.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MarkError("text field is not UTF-8") from exc
        mark = cls(voter, kiosk, origin_seq, METHODS[method_ix], serial, hlc, data[pos:])
        mark._body()  # range checks
        return mark

    def verify(self, key: VerifyKey) -> bool:
        """True when the signature is the kiosk's over :meth:`signed_bytes`."""
        try:
            key.verify(self.signed_bytes(), self.signature)
        except (BadSignatureError, MarkError, ValueError):
            return False
        return True


class HybridClock:
    """Hybrid logical clock (Kulkarni et al.): monotonic even when the wall clock steps back.

    A kiosk without a battery-backed RTC may boot with a clock in the past;
    the persisted high-water mark (``floor``) keeps its stamps increasing. But
    a floor further ahead of the wall clock than ``max_lead_ms`` came from a
    clock that was wrong (set years ahead, then corrected): stamps follow the
    wall clock again rather than stay frozen ahead, where peers would
    quarantine every mark and turnout hours would stop. Per-kiosk order never
    depends on it (``origin_seq``). Steps of the wall clock against the
    monotonic clock are kept for :meth:`take_steps` (the station audits them).
    """

    def __init__(self, floor: int = 0, wall_ms: Callable[[], int] | None = None, *,
                 max_lead_ms: int | None = None,
                 mono_ms: Callable[[], int] | None = None) -> None:
        self._last = floor
        self._wall = wall_ms or (lambda: time.time_ns() // 1_000_000)
        self._mono = mono_ms or (lambda: time.monotonic_ns() // 1_000_000)
        self._max_lead = max_lead_ms
        self._ref: tuple[int, int] | None = None
        self._steps: list[int] = []
        self._lock = threading.Lock()

    def now(self) -> int:
        """A fresh stamp, greater than every stamp issued or observed before
        (unless the floor was more than ``max_lead_ms`` ahead: see the class docstring)."""
        with self._lock:
            wall, mono = self._wall(), self._mono()
            if self._ref is not None:
                step = (wall - self._ref[0]) - (mono - self._ref[1])
                if abs(step) >= CLOCK_STEP_MS:
                    self._steps.append(step)
            self._ref = (wall, mono)
            last_wall, counter = hlc_wall_ms(self._last), self._last & 0xFFFF
            if wall > last_wall or (
                self._max_lead is not None and last_wall - wall > self._max_lead
            ):
                stamp = hlc_pack(wall, 0)
            else:
                stamp = hlc_pack(last_wall, counter + 1) if counter < 0xFFFF else hlc_pack(
                    last_wall + 1, 0
                )
            if stamp > MAX_STORED_HLC:
                raise ClockOverflowError(f"hybrid clock at {self._last} cannot advance")
            self._last = stamp
            return self._last

    def take_steps(self) -> list[int]:
        """Wall-clock steps (ms, new minus expected) seen since the last call."""
        with self._lock:
            steps, self._steps = self._steps, []
        return steps

    def observe(self, remote: int) -> None:
        """Move past a stamp seen on a peer's mark (callers bound it first: see MarkStore.merge)."""
        if not 0 <= remote <= MAX_STORED_HLC:
            raise ClockOverflowError(f"stamp {remote} cannot be stored")
        with self._lock:
            self._last = max(self._last, remote)

    def wall_ms(self) -> int:
        """This kiosk's wall clock in milliseconds (what peers' stamps are compared with)."""
        return self._wall()

    @property
    def last(self) -> int:
        """The highest stamp issued or observed."""
        return self._last


@dataclass(frozen=True)
class Conflict:
    """A voter holding marks from more than one identification."""

    voter: int
    marks: tuple[Mark, ...]


@dataclass(frozen=True)
class RateExceeded:
    """A kiosk's marks arrive faster than a kiosk can identify voters."""

    kiosk: str
    marks: int
    window_ms: int


@dataclass(frozen=True)
class Revocation:
    """The commission revoked ``kiosk``: its marks numbered above ``upto_seq`` are refused."""

    kiosk: str
    upto_seq: int
    by: str


@dataclass
class MergeResult:
    """What a merge did: new marks, repeats, rejects with reasons, voters now in conflict.

    ``quarantined`` marks are also in ``rejected`` (reason ``clock-ahead``): held
    apart, they are admitted once they are no longer ahead of this kiosk's clock
    (at a later merge or :meth:`MarkStore.readmit`); those are in ``released``
    (and in ``added``).
    """

    added: list[Mark] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[tuple[Mark, str]] = field(default_factory=list)
    conflicts: list[int] = field(default_factory=list)
    quarantined: list[tuple[Mark, int]] = field(default_factory=list)
    """Each quarantined mark with how far (ms) it was ahead of this kiosk's clock."""
    rate_exceeded: list[RateExceeded] = field(default_factory=list)
    released: list[Mark] = field(default_factory=list)
    """Marks that left the quarantine for the mark set (also in ``added``)."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS marks (
    kiosk TEXT NOT NULL,
    origin_seq INTEGER NOT NULL,
    voter INTEGER NOT NULL,
    method TEXT NOT NULL,
    slip_serial TEXT NOT NULL,
    hlc INTEGER NOT NULL,
    signature BLOB NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (kiosk, origin_seq)
);
CREATE INDEX IF NOT EXISTS marks_voter ON marks(voter);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    kiosk TEXT NOT NULL,
    origin_seq INTEGER NOT NULL,
    mark BLOB NOT NULL,
    ahead_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    voter INTEGER,
    hlc INTEGER,
    PRIMARY KEY (kiosk, origin_seq)
);
CREATE TABLE IF NOT EXISTS revoked (
    kiosk TEXT PRIMARY KEY,
    upto_seq INTEGER NOT NULL,
    by TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
"""


class MarkStore:
    """The kiosk's durable, mergeable set of marks (thread-safe)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        device_id: str,
        signing_key: SigningKey,
        trusted: Mapping[str, VerifyKey],
        *,
        policy: MarkPolicy | None = None,
        in_roll: Callable[[int], bool] | None = None,
        wall_ms: Callable[[], int] | None = None,
        mono_ms: Callable[[], int] | None = None,
    ) -> None:
        """``in_roll(list_number)`` says whether a voter is on the station's roll
        (None: every number is); ``wall_ms`` and ``mono_ms`` replace the system's
        wall and monotonic clocks in tests."""
        self.device_id = device_id
        self._key = signing_key
        self._trusted = dict(trusted)
        self._trusted.setdefault(device_id, signing_key.verify_key)
        self.policy = policy or MarkPolicy()
        self._in_roll = in_roll
        self._con = connect_durable(path)
        self._con.executescript(_SCHEMA)
        self._migrate_quarantine()
        self._lock = threading.RLock()
        self._rate_alerted: dict[str, int] = {}
        row = self._con.execute(
            "SELECT value FROM meta WHERE key='hlc'"
        ).fetchone()
        top = self._con.execute("SELECT MAX(hlc) FROM marks").fetchone()[0] or 0
        floor = max(row[0] if row else 0, top)
        if floor >= _FLOOR_LIMIT:
            # Poisoned by a peer's mark before stamps were bounded: the clock could
            # never advance again (a crash loop). Keep only this kiosk's own order.
            floor = self._con.execute(
                "SELECT COALESCE(MAX(hlc), 0) FROM marks WHERE kiosk=?", (device_id,)
            ).fetchone()[0]
            floor = floor if floor < _FLOOR_LIMIT else 0
        self.clock = HybridClock(floor, wall_ms, max_lead_ms=self.policy.max_ahead_ms,
                                 mono_ms=mono_ms)

    def _migrate_quarantine(self) -> None:
        """Give a quarantine table of an earlier release its ``voter`` and ``hlc`` columns.

        They let a voter's turn find the held-apart marks that refuse the voter, and
        the re-judging find the marks no longer ahead, without decoding every row.
        """
        columns = {r[1] for r in self._con.execute("PRAGMA table_info(quarantine)")}
        with immediate(self._con) as con:
            if "voter" not in columns:
                con.execute("ALTER TABLE quarantine ADD COLUMN voter INTEGER")
                con.execute("ALTER TABLE quarantine ADD COLUMN hlc INTEGER")
            for kiosk, seq, blob in con.execute(
                "SELECT kiosk, origin_seq, mark FROM quarantine WHERE voter IS NULL"
            ).fetchall():
                mark = Mark.from_bytes(bytes(blob))
                con.execute("UPDATE quarantine SET voter=?, hlc=? WHERE kiosk=? AND origin_seq=?",
                            (mark.voter, min(mark.hlc, MAX_STORED_HLC), kiosk, seq))
            con.execute("CREATE INDEX IF NOT EXISTS quarantine_voter ON quarantine(voter)")
            con.execute("CREATE INDEX IF NOT EXISTS quarantine_hlc ON quarantine(hlc)")

    @property
    def trusted(self) -> Mapping[str, VerifyKey]:
        """The kiosks whose marks this store accepts (the station's roll package), read-only."""
        return MappingProxyType(self._trusted)

    # -- reading -------------------------------------------------------------

    @staticmethod
    def _row(r: tuple[str, int, int, str, str, int, bytes]) -> Mark:
        return Mark(
            kiosk=r[0], origin_seq=r[1], voter=r[2], method=r[3], slip_serial=r[4],
            hlc=r[5], signature=bytes(r[6]),
        )

    _COLS = "kiosk, origin_seq, voter, method, slip_serial, hlc, signature"

    def marks_for(self, voter: int) -> tuple[Mark, ...]:
        """Every mark held for ``voter`` (own and merged), oldest first."""
        with self._lock:
            rows = self._con.execute(
                f"SELECT {self._COLS} FROM marks WHERE voter=? ORDER BY hlc", (voter,)
            ).fetchall()
        return tuple(self._row(r) for r in rows)

    def prior_marks(self, voter: int) -> tuple[Mark, ...]:
        """Every mark that refuses ``voter``: the admitted ones (oldest first), then the
        ones held apart only for their stamp (see :meth:`_held_refusing`)."""
        with self._lock:
            return self._prior(self._con, voter)

    def _prior(self, con: sqlite3.Connection, voter: int) -> tuple[Mark, ...]:
        rows = con.execute(
            f"SELECT {self._COLS} FROM marks WHERE voter=? ORDER BY hlc", (voter,)
        ).fetchall()
        return tuple(self._row(r) for r in rows) + self._held_refusing(con, voter)

    def _held_refusing(self, con: sqlite3.Connection, voter: int | None) -> tuple[Mark, ...]:
        """Quarantined marks (of ``voter``, or all) that count: a trusted kiosk's, validly
        signed, not above its revocation. Their only fault is a stamp ahead of our clock;
        a stolen kit could refuse voters as well with present stamps, so counting them
        opens nothing, and revocation ends both."""
        # Two statements rather than "? IS NULL OR voter = ?", which no index serves.
        where, args = ("q.voter = ? AND", (voter,)) if voter is not None else ("", ())
        rows = con.execute(
            "SELECT q.mark FROM quarantine q LEFT JOIN revoked r ON q.kiosk = r.kiosk "
            f"WHERE {where} (r.kiosk IS NULL OR q.origin_seq <= r.upto_seq) "
            "ORDER BY q.hlc, q.kiosk, q.origin_seq",
            args,
        ).fetchall()
        held = (Mark.from_bytes(bytes(r[0])) for r in rows)
        return tuple(m for m in held if (key := self._trusted.get(m.kiosk)) and m.verify(key))

    def held_apart(self, mark: Mark) -> int | None:
        """How far (ms) ``mark`` was ahead of this kiosk's clock when it was quarantined,
        or None when it is not held apart (admitted, or never seen)."""
        with self._lock:
            row = self._con.execute(
                "SELECT ahead_ms FROM quarantine WHERE kiosk=? AND origin_seq=? AND mark=?",
                (mark.kiosk, mark.origin_seq, mark.to_bytes()),
            ).fetchone()
        return None if row is None else int(row[0])

    def all_marks(self) -> list[Mark]:
        """The whole set, ordered by kiosk and origin sequence."""
        with self._lock:
            rows = self._con.execute(
                f"SELECT {self._COLS} FROM marks ORDER BY kiosk, origin_seq"
            ).fetchall()
        return [self._row(r) for r in rows]

    def local_marks(self) -> list[Mark]:
        """Marks this kiosk made, in the order it made them."""
        with self._lock:
            rows = self._con.execute(
                f"SELECT {self._COLS} FROM marks WHERE kiosk=? ORDER BY origin_seq",
                (self.device_id,),
            ).fetchall()
        return [self._row(r) for r in rows]

    def count(self, *, local_only: bool = False) -> int:
        """Number of marks held (or made here)."""
        with self._lock:
            if local_only:
                q = self._con.execute("SELECT COUNT(*) FROM marks WHERE kiosk=?", (self.device_id,))
            else:
                q = self._con.execute("SELECT COUNT(*) FROM marks")
            return int(q.fetchone()[0])

    def voters_marked(self) -> int:
        """Distinct voters holding at least one mark (the station's merged turnout).

        Marks held apart for their clock that refuse their voter count too (the
        kiosk that made them counts them on its own report), once per voter: a
        mark later admitted moves from one table to the other in one transaction.
        """
        with self._lock:
            voters = {int(r[0]) for r in self._con.execute("SELECT DISTINCT voter FROM marks")}
            voters.update(m.voter for m in self._held_refusing(self._con, None))
        return len(voters)

    def version_vector(self) -> dict[str, int]:
        """Per kiosk, the highest origin_seq held with no gap below it."""
        with self._lock:
            rows = self._con.execute(
                "SELECT kiosk, origin_seq FROM marks ORDER BY kiosk, origin_seq"
            ).fetchall()
        vector: dict[str, int] = {}
        for kiosk, seq in rows:
            if seq == vector.get(kiosk, 0) + 1:
                vector[kiosk] = seq
        return vector

    def marks_after(self, vector: Mapping[str, int]) -> list[Mark]:
        """The marks a peer holding ``vector`` lacks (by kiosk, in origin order)."""
        out: list[Mark] = []
        with self._lock:
            kiosks = [r[0] for r in self._con.execute("SELECT DISTINCT kiosk FROM marks")]
            for kiosk in sorted(kiosks):
                rows = self._con.execute(
                    f"SELECT {self._COLS} FROM marks WHERE kiosk=? AND origin_seq>? "
                    "ORDER BY origin_seq",
                    (kiosk, int(vector.get(kiosk, 0))),
                ).fetchall()
                out.extend(self._row(r) for r in rows)
        return out

    def conflicts(self) -> list[Conflict]:
        """Voters marked more than once, each with all their marks."""
        with self._lock:
            voters = [
                r[0]
                for r in self._con.execute(
                    "SELECT voter FROM marks GROUP BY voter HAVING COUNT(*) > 1 ORDER BY voter"
                )
            ]
        return [Conflict(v, self.marks_for(v)) for v in voters]

    def quarantined(self) -> list[tuple[Mark, int]]:
        """Marks held apart because they were stamped ahead of this kiosk's clock
        (all of them; :meth:`prior_marks` says which refuse their voter)."""
        with self._lock:
            rows = self._con.execute(
                "SELECT mark, ahead_ms FROM quarantine ORDER BY kiosk, origin_seq"
            ).fetchall()
        return [(Mark.from_bytes(bytes(r[0])), int(r[1])) for r in rows]

    def revocations(self) -> list[Revocation]:
        """Kiosks the commission revoked (here or at a peer), by kiosk id."""
        with self._lock:
            rows = self._con.execute(
                "SELECT kiosk, upto_seq, by FROM revoked ORDER BY kiosk"
            ).fetchall()
        return [Revocation(r[0], int(r[1]), r[2]) for r in rows]

    def held_refusing(self) -> list[Mark]:
        """Marks held apart for their clock that refuse their voter (closing report)."""
        with self._lock:
            return list(self._held_refusing(self._con, None))

    def revoked_marks(self) -> list[Mark]:
        """Marks held from revoked kiosks (made before the revocation): flagged on the report."""
        with self._lock:
            rows = self._con.execute(
                "SELECT m.kiosk, m.origin_seq, m.voter, m.method, m.slip_serial, m.hlc, "
                "m.signature FROM marks m JOIN revoked r ON m.kiosk = r.kiosk "
                "ORDER BY m.kiosk, m.origin_seq"
            ).fetchall()
        return [self._row(r) for r in rows]

    # -- writing -------------------------------------------------------------

    def revoke(self, kiosk: str, *, by: str, upto_seq: int | None = None) -> Revocation | None:
        """Revoke ``kiosk``: refuse its marks numbered above ``upto_seq`` from now on.

        ``upto_seq`` defaults to the highest of its marks held here with no gap
        (what the commission saw when it decided). A kiosk never revokes itself;
        a repeated revocation keeps the lower bound. Returns the revocation now
        in force, or None when nothing changed.
        """
        if kiosk == self.device_id:
            raise ValueError(f"kiosk {kiosk} cannot revoke itself")
        if kiosk not in self._trusted:
            raise ValueError(f"kiosk {kiosk!r} is not one of this station's kiosks")
        with self._lock, immediate(self._con) as con:
            if upto_seq is None:
                upto_seq = self.version_vector().get(kiosk, 0)
            held = con.execute("SELECT upto_seq FROM revoked WHERE kiosk=?", (kiosk,)).fetchone()
            if held is not None and int(held[0]) <= upto_seq:
                return None
            con.execute(
                "INSERT INTO revoked(kiosk, upto_seq, by, at_ms) VALUES (?,?,?,?) "
                "ON CONFLICT(kiosk) DO UPDATE SET upto_seq=excluded.upto_seq",
                (kiosk, upto_seq, by, self.clock.wall_ms()),
            )
            return Revocation(kiosk, upto_seq, by)

    def _insert(self, con: sqlite3.Connection, mark: Mark, *, floor: int | None = None) -> None:
        con.execute(
            f"INSERT INTO marks ({self._COLS}, received_ms) VALUES (?,?,?,?,?,?,?,?)",
            (
                mark.kiosk, mark.origin_seq, mark.voter, mark.method, mark.slip_serial,
                mark.hlc, mark.signature, time.time_ns() // 1_000_000,
            ),
        )
        con.execute(
            "INSERT INTO meta(key, value) VALUES('hlc', ?) "
            "ON CONFLICT(key) DO UPDATE SET value=MAX(value, excluded.value)",
            (self.clock.last if floor is None else floor,),
        )

    def _new_local(self, con: sqlite3.Connection, voter: int, method: str, serial: str) -> Mark:
        seq = con.execute(
            "SELECT COALESCE(MAX(origin_seq), 0) FROM marks WHERE kiosk=?", (self.device_id,)
        ).fetchone()[0] + 1
        unsigned = Mark(voter, self.device_id, seq, method, serial, self.clock.now())
        mark = Mark(
            voter, self.device_id, seq, method, serial, unsigned.hlc,
            self._key.sign(unsigned.signed_bytes()).signature,
        )
        self._insert(con, mark)
        return mark

    def mark_local(self, voter: int, method: str, slip_serial: str) -> Mark:
        """Record that this kiosk identified ``voter``; durable before it returns."""
        with self._lock, immediate(self._con) as con:
            return self._new_local(con, voter, method, slip_serial)

    def mark_if_unmarked(
        self, voter: int, method: str, slip_serial: str
    ) -> Mark | tuple[Mark, ...]:
        """Atomically: the new mark, or the marks that refuse ``voter`` (:meth:`prior_marks`:
        admitted ones, then those held apart only for their clock)."""
        with self._lock, immediate(self._con) as con:
            prior = self._prior(con, voter)
            if prior:
                return prior
            return self._new_local(con, voter, method, slip_serial)

    def merge(self, marks: Iterable[Mark]) -> MergeResult:
        """Union ``marks`` into the set: verify, bound, skip repeats, report new conflicts.

        Every mark is judged on its own (see the module docstring); refusals are
        values in the result, never exceptions, and the clock only observes the
        stamps of marks that were stored. The quarantine is re-judged first
        (:meth:`readmit`).
        """
        return self._merge(list(marks))

    def readmit(self) -> MergeResult:
        """Re-judge the marks held apart for their clock: admit those no longer ahead.

        No peer needs to send them again (the peer sync calls this every vector
        interval). A held mark that is no longer ahead but now fails another bound
        (its kiosk revoked since) leaves the quarantine as a refusal. The result is
        reported like a merge's; the admitted marks are in ``released``.
        """
        return self._merge([])

    def _merge(self, marks: list[Mark]) -> MergeResult:
        result = MergeResult()
        now = self.clock.wall_ms()
        with self._lock:
            # Cheap read first: the tick calls this every second, mostly for nothing.
            due = [Mark.from_bytes(bytes(r[0])) for r in self._con.execute(
                "SELECT mark FROM quarantine WHERE hlc < ? ORDER BY hlc",
                (hlc_pack(now + self.policy.max_ahead_ms + 1, 0),),
            )]
            if not due and not marks:
                return result
            with immediate(self._con) as con:
                revoked = {r[0]: int(r[1])
                           for r in con.execute("SELECT kiosk, upto_seq FROM revoked")}
                for mark in due:
                    reason = self._judge(con, mark, now, revoked)
                    if reason == "clock-ahead":
                        continue  # our clock stepped back since the read: still held
                    if reason is None:
                        self._admit(con, mark, result)
                        continue
                    con.execute("DELETE FROM quarantine WHERE kiosk=? AND origin_seq=?",
                                (mark.kiosk, mark.origin_seq))
                    if reason != "duplicate":
                        result.rejected.append((mark, reason))
                for mark in marks:
                    reason = self._judge(con, mark, now, revoked)
                    if reason == "duplicate":
                        result.duplicates += 1
                        continue
                    if reason == "clock-ahead":
                        ahead = hlc_wall_ms(mark.hlc) - now
                        result.quarantined.append((mark, ahead))
                        con.execute(
                            "INSERT OR IGNORE INTO quarantine "
                            "(kiosk, origin_seq, mark, ahead_ms, received_ms, voter, hlc) "
                            "VALUES (?,?,?,?,?,?,?)",
                            (mark.kiosk, mark.origin_seq, mark.to_bytes(),
                             min(ahead, MAX_STORED_HLC), now, mark.voter,
                             min(mark.hlc, MAX_STORED_HLC)),
                        )
                    if reason is not None:
                        result.rejected.append((mark, reason))
                        continue
                    self._admit(con, mark, result)
                result.rate_exceeded = self._check_rates(con, {m.kiosk for m in result.added})
        # Committed: only now may the clock move past the stored stamps.
        for mark in result.added:
            self.clock.observe(mark.hlc)
        return result

    def _admit(self, con: sqlite3.Connection, mark: Mark, result: MergeResult) -> None:
        """Store a judged mark, out of the quarantine if it was held there."""
        before = con.execute(
            "SELECT COUNT(*) FROM marks WHERE voter=?", (mark.voter,)
        ).fetchone()[0]
        self._insert(con, mark, floor=max(self.clock.last, mark.hlc))
        held = con.execute("DELETE FROM quarantine WHERE kiosk=? AND origin_seq=?",
                           (mark.kiosk, mark.origin_seq)).rowcount
        result.added.append(mark)
        if held:
            result.released.append(mark)
        if before >= 1:
            result.conflicts.append(mark.voter)

    def _judge(
        self, con: sqlite3.Connection, mark: Mark, now_ms: int, revoked: Mapping[str, int]
    ) -> str | None:
        """Why ``mark`` is refused ("duplicate" when already held), or None to store it."""
        key = self._trusted.get(mark.kiosk)
        if key is None:
            return "unknown-kiosk"
        if not mark.verify(key):
            return "bad-signature"
        held = con.execute(
            "SELECT signature FROM marks WHERE kiosk=? AND origin_seq=?",
            (mark.kiosk, mark.origin_seq),
        ).fetchone()
        if held is not None:
            # Two different validly signed marks with one number: the kiosk's
            # key or store is compromised. Keep the first.
            return "duplicate" if bytes(held[0]) == mark.signature else "equivocation"
        if mark.kiosk in revoked and mark.origin_seq > revoked[mark.kiosk]:
            return "revoked-kiosk"
        if self._in_roll is not None and not self._in_roll(mark.voter):
            return "not-in-roll"
        if hlc_wall_ms(mark.hlc) - now_ms > self.policy.max_ahead_ms or mark.hlc > MAX_STORED_HLC:
            return "clock-ahead"
        return None

    def _check_rates(self, con: sqlite3.Connection, kiosks: set[str]) -> list[RateExceeded]:
        """Kiosks holding more marks in one window of their own stamps than is possible."""
        window = self.policy.rate_window_ms
        found: list[RateExceeded] = []
        for kiosk in sorted(kiosks - {self.device_id}):
            top = con.execute("SELECT MAX(hlc) FROM marks WHERE kiosk=?", (kiosk,)).fetchone()[0]
            since = hlc_pack(max(hlc_wall_ms(top) - window, 0), 0)
            n = int(con.execute(
                "SELECT COUNT(*) FROM marks WHERE kiosk=? AND hlc>=?", (kiosk, since)
            ).fetchone()[0])
            # One alert per kiosk and window of its stamps, not one per frame.
            if n > self.policy.max_marks_per_window and (
                hlc_wall_ms(top) - self._rate_alerted.get(kiosk, -window) >= window
            ):
                self._rate_alerted[kiosk] = hlc_wall_ms(top)
                found.append(RateExceeded(kiosk, n, window))
        return found

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._con.close()
