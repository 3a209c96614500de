"""The kiosk's tamper-evident audit log: append-only, hash-chained, signed checkpoints.

Entry encoding (format version 1)
---------------------------------
Each entry is a JSON object ``body`` with exactly these keys::

    {"v": 1, "seq": n, "ts": "2026-11-27T07:12:03.125Z", "device": "<device id>",
     "event": "<catalogue id>", "type": "<catalogue type>", "fields": {...},
     "prev": "<hash of entry n-1, or 64 zeros for n = 1>"}

Its canonical bytes are ``json.dumps(body, sort_keys=True, separators=(",", ":"),
ensure_ascii=True)`` (pure ASCII, no whitespace, keys sorted at every level, no
floats anywhere), and its hash is ``sha256(b"kesp-audit-v1\\0" + canonical)``
in lowercase hex. ``seq`` starts at 1 and has no gaps. Anyone holding the
bodies can recompute every hash; the telemetry payload of an entry is the body
plus its ``hash`` (:meth:`AuditEntry.to_payload`).

Checkpoints
-----------
Every ``checkpoint_every`` entries, and on :meth:`AuditLog.close`, the log
appends an ``audit-checkpoint`` entry whose ``signature`` is the device's
Ed25519 signature over::

    b"kesp-audit-checkpoint-v1\\0" + device_id (utf-8) + b"\\0"
    + upto_seq (8 bytes, big-endian) + bytes.fromhex(upto_hash) + final (1 byte)

where ``upto_seq`` / ``upto_hash`` are the seq and hash of the entry just
before the checkpoint. A valid signature over the head hash vouches for every
earlier entry through the chain: rewriting history and recomputing the hashes
is detected at the next checkpoint unless the forger has the device key. The
entries after the last checkpoint (the *unsigned tail*; empty after a clean
close) are protected only by the chain and by their telemetry copies; cutting
the log back to an earlier checkpoint is detected against an external anchor,
such as the audit head hash printed on the closing report
(:func:`agent.audit.verify.verify_chain` with ``expected_head``).

Storage: SQLite, WAL, ``synchronous=FULL``
-------------------------------------------
Chosen over an fsynced append-only file because

* a commit is atomic: SQLite's WAL frames carry checksums, so a write torn by a
  power cut is discarded on the next open and the log ends at the last entry
  whose :meth:`AuditLog.append` returned; no hand-written tail repair;
* an entry and the checkpoint it triggers land in one transaction, so the
  "checkpoint every N" invariant survives a crash;
* ``count(event)`` for reports is an indexed query, and the marks store next to
  it uses the same engine and the same durability settings
  (:mod:`agent.runtime.sqlite_util`).

Triggers refuse ``UPDATE`` and ``DELETE`` on the entry table. That stops our own
code from rewriting history by mistake; it does not stop someone with the file
(they can drop the triggers), which is what the chain and signatures are for.

This module is the format and its writer, one job: the encoding, its checks
(:func:`decode_body`) and :class:`AuditLog` stay together (past 450 lines)
because the writer and the verifier (:mod:`agent.audit.verify`) must agree on
them byte for byte; the command line is :mod:`agent.audit.cli`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import sqlite3
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

from nacl.signing import SigningKey

from agent.audit.events import CATALOGUE, Catalogue, EventFieldError, EventId, FieldValue
from agent.runtime.durable import is_disk_full
from agent.runtime.sqlite_util import connect_durable, immediate

__all__ = [
    "AUDIT_FILE",
    "CHECKPOINT_EVERY",
    "GENESIS_HASH",
    "AuditCorruptError",
    "AuditEntry",
    "AuditError",
    "AuditLog",
    "AuditProblem",
    "ChainError",
    "canonical_bytes",
    "checkpoint_message",
    "decode_body",
    "entry_hash",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
AUDIT_FILE = "audit.sqlite"
GENESIS_HASH = "0" * 64
# Entries between signed checkpoints. A crash can leave at most this many
# entries protected by the chain alone; a signature costs ~0.1 ms, an fsync
# (paid per entry anyway) far more, so a small value is cheap.
CHECKPOINT_EVERY = 32

_HASH_DOMAIN = b"kesp-audit-v1\x00"
_SIG_DOMAIN = b"kesp-audit-checkpoint-v1\x00"
_BODY_KEYS = frozenset({"v", "seq", "ts", "device", "event", "type", "fields", "prev"})
_CHECKPOINT = EventId.AUDIT_CHECKPOINT

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq   INTEGER PRIMARY KEY,
    event TEXT NOT NULL,
    body  TEXT NOT NULL,
    hash  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_event ON audit(event);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
"""


class AuditError(Exception):
    """The audit log cannot be opened or written (wrong device, bad arguments, I/O)."""


class AuditCorruptError(AuditError):
    """The stored log's head entry does not check out, so nothing can be chained onto it."""


def canonical_bytes(body: Mapping[str, Any]) -> bytes:
    """The canonical encoding of an entry body (see the module docstring)."""
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def entry_hash(canonical: bytes) -> str:
    """Hash of an entry from its canonical bytes, lowercase hex."""
    return hashlib.sha256(_HASH_DOMAIN + canonical).hexdigest()


def checkpoint_message(device_id: str, upto_seq: int, upto_hash: str, final: bool) -> bytes:
    """The exact bytes a checkpoint's Ed25519 signature covers."""
    return (
        _SIG_DOMAIN
        + device_id.encode("utf-8")
        + b"\x00"
        + struct.pack(">Q", upto_seq)
        + bytes.fromhex(upto_hash)
        + (b"\x01" if final else b"\x00")
    )


def _utc_text(t: float) -> str:
    stamp = _dt.datetime.fromtimestamp(t, _dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the log, as stored and as sent as a telemetry event."""

    seq: int
    ts: str
    device: str
    event: EventId
    fields: Mapping[str, FieldValue]
    prev: str
    hash: str

    def body(self) -> dict[str, Any]:
        """The hashed body (everything but ``hash``)."""
        spec = CATALOGUE.spec(self.event)
        return {
            "v": FORMAT_VERSION,
            "seq": self.seq,
            "ts": self.ts,
            "device": self.device,
            "event": self.event.value,
            "type": spec.type.value,
            "fields": dict(self.fields),
            "prev": self.prev,
        }

    def to_payload(self) -> dict[str, Any]:
        """JSON-serialisable dict: the body plus ``hash`` (what telemetry carries)."""
        payload = self.body()
        payload["hash"] = self.hash
        return payload


class AuditProblem(Enum):
    """What is wrong at the first bad entry."""

    UNREADABLE = "unreadable"  # not a SQLite audit log at all
    WRONG_DEVICE = "wrong-device"  # entries of another device (or a mixed log)
    MALFORMED = "malformed"  # body not JSON / not canonical / wrong shape
    INVALID_EVENT = "invalid-event"  # event or fields not in the catalogue
    ALTERED = "altered"  # content does not match a hash that vouches for it
    REMOVED = "removed"  # one or more entries missing (seq gap)
    REORDERED = "reordered"  # an entry appears out of sequence
    FORGED_CHECKPOINT = "forged-checkpoint"  # checkpoint signature invalid / misplaced
    TRUNCATED = "truncated"  # the expected head is not in the log


class ChainError(Exception):
    """A stored or received entry breaks the chain's rules (what and why)."""

    def __init__(self, problem: AuditProblem, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail


def decode_body(text: str, catalogue: Catalogue) -> tuple[dict[str, Any], EventId]:
    """Parse a stored body and check its shape; raise :class:`ChainError`."""
    try:
        body = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ChainError(AuditProblem.MALFORMED, f"body is not JSON: {exc}") from None
    if not isinstance(body, dict) or set(body) != _BODY_KEYS:
        raise ChainError(AuditProblem.MALFORMED, "body does not have the version-1 keys")
    if canonical_bytes(body).decode("ascii") != text:
        raise ChainError(AuditProblem.MALFORMED, "body is not in canonical form")
    if body["v"] != FORMAT_VERSION:
        raise ChainError(AuditProblem.MALFORMED, f"unknown format version {body['v']!r}")
    for key, kind in (("seq", int), ("ts", str), ("device", str), ("prev", str)):
        if not isinstance(body[key], kind) or isinstance(body[key], bool):
            raise ChainError(AuditProblem.MALFORMED, f"'{key}' has the wrong type")
    if not isinstance(body["fields"], dict):
        raise ChainError(AuditProblem.MALFORMED, "'fields' is not an object")
    try:
        event = EventId(body["event"])
        spec = catalogue.spec(event)
        catalogue.validate(event, body["fields"])
    except (ValueError, EventFieldError) as exc:
        raise ChainError(AuditProblem.INVALID_EVENT, str(exc)) from None
    if body["type"] != spec.type.value:
        raise ChainError(AuditProblem.INVALID_EVENT, f"type {body['type']!r} != catalogue's")
    return body, event


def _entry_from_body(body: Mapping[str, Any], event: EventId, hash_: str) -> AuditEntry:
    return AuditEntry(
        seq=body["seq"],
        ts=body["ts"],
        device=body["device"],
        event=event,
        fields=MappingProxyType(dict(body["fields"])),
        prev=body["prev"],
        hash=hash_,
    )


class AuditLog:
    """The kiosk's audit log in a SQLite file (see the module docstring).

    ``append`` is durable before it returns and thread-safe. The log refuses to
    open a file written by another device id, and refuses to chain onto a head
    entry that does not hash to its recorded value (:class:`AuditCorruptError`).
    SQLite failures (disk full, I/O error, lock timeout) become :class:`AuditError`
    and leave the log as it was.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        signing_key: SigningKey,
        device_id: str,
        *,
        checkpoint_every: int = CHECKPOINT_EVERY,
        clock: Callable[[], float] = time.time,
        catalogue: Catalogue = CATALOGUE,
        lock_timeout_s: float = 30.0,
    ) -> None:
        if checkpoint_every < 1:
            raise AuditError("checkpoint_every must be at least 1")
        if not device_id or "\x00" in device_id:
            raise AuditError("device_id must be a non-empty string without NUL")
        self.path = Path(path)
        self._key = signing_key
        self.device_id = device_id
        self._every = checkpoint_every
        self._clock = clock
        self._catalogue = catalogue
        self._lock = threading.Lock()
        self._closed = False
        self._listeners: list[Callable[[AuditEntry], None]] = []
        try:
            self._con = connect_durable(self.path, mode=0o640)
            # How long a write waits for another connection's lock before failing.
            self._con.execute(f"PRAGMA busy_timeout = {int(lock_timeout_s * 1000)}")
        except (sqlite3.Error, OSError) as exc:
            raise AuditError(f"cannot open audit log {self.path}: {exc}") from exc
        try:
            self._con.executescript(_SCHEMA)
            with immediate(self._con):
                row = self._con.execute(
                    "SELECT value FROM audit_meta WHERE key = 'device'"
                ).fetchone()
                if row is None:
                    self._con.execute(
                        "INSERT INTO audit_meta(key, value) VALUES ('device', ?), ('format', ?)",
                        (device_id, str(FORMAT_VERSION)),
                    )
                elif row[0] != device_id:
                    raise AuditError(f"{self.path} belongs to device {row[0]!r}, not {device_id!r}")
            head = self._load_head()
            self._counts: Counter[str] = Counter(
                dict(self._con.execute("SELECT event, count(*) FROM audit GROUP BY event"))
            )
        except sqlite3.Error as exc:
            self._con.close()
            raise AuditError(f"cannot open audit log {self.path}: {exc}") from exc
        except BaseException:
            self._con.close()
            raise
        self._head_seq, self._head_hash, last = head
        #: Whether the previous session ended with a final checkpoint (a clean close).
        #: False after a crash or power cut, and for a new, empty log.
        self.previous_close_clean = (
            last is not None and last.event is _CHECKPOINT and last.fields.get("final") is True
        )
        self._since_checkpoint = self._entries_since_checkpoint()

    # ------------------------------------------------------------------ reading

    def _load_head(self) -> tuple[int, str, AuditEntry | None]:
        row = self._con.execute(
            "SELECT seq, body, hash FROM audit ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return 0, GENESIS_HASH, None
        seq, text, stored = row
        try:
            body, event = decode_body(text, self._catalogue)
        except ChainError as exc:
            raise AuditCorruptError(f"head entry {seq}: {exc.detail}") from None
        if entry_hash(text.encode("ascii")) != stored or body["seq"] != seq:
            raise AuditCorruptError(f"head entry {seq} does not match its recorded hash")
        return seq, stored, _entry_from_body(body, event, stored)

    def _entries_since_checkpoint(self) -> int:
        row = self._con.execute(
            "SELECT max(seq) FROM audit WHERE event = ?", (_CHECKPOINT.value,)
        ).fetchone()
        return self._head_seq - (row[0] or 0)

    @property
    def head_hash(self) -> str:
        """Hash of the newest entry (64 zeros for an empty log)."""
        return self._head_hash

    @property
    def head_seq(self) -> int:
        """Sequence number of the newest entry (0 for an empty log)."""
        return self._head_seq

    def count(self, event: EventId) -> int:
        """How many entries of ``event`` the log holds."""
        return self._counts[event.value]

    def entries(self, since: int = 0) -> Iterator[AuditEntry]:
        """Entries with ``seq > since`` in order (read in batches; safe while appending)."""
        last = since
        while True:
            with self._lock:
                self._check_open()
                rows = self._con.execute(
                    "SELECT seq, body, hash FROM audit WHERE seq > ? ORDER BY seq LIMIT 500",
                    (last,),
                ).fetchall()
            if not rows:
                return
            for seq, text, stored in rows:
                try:
                    body, event = decode_body(text, self._catalogue)
                except ChainError as exc:
                    raise AuditCorruptError(f"entry {seq}: {exc.detail}") from None
                yield _entry_from_body(body, event, stored)
                last = seq

    # ------------------------------------------------------------------ writing

    def _check_open(self) -> None:
        if self._closed:
            raise AuditError("the audit log is closed")

    def _insert(self, event: EventId, fields: Mapping[str, FieldValue]) -> AuditEntry:
        """Insert one entry after the current head (inside an open transaction)."""
        row = self._con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        head_seq, head_hash = (0, GENESIS_HASH) if row is None else (row[0], row[1])
        if head_seq != self._head_seq:
            raise AuditError(f"{self.path} was appended to by another writer")
        entry = AuditEntry(
            seq=head_seq + 1,
            ts=_utc_text(self._clock()),
            device=self.device_id,
            event=event,
            fields=MappingProxyType(dict(fields)),
            prev=head_hash,
            hash="",
        )
        text = canonical_bytes(entry.body())
        digest = entry_hash(text)
        self._con.execute(
            "INSERT INTO audit(seq, event, body, hash) VALUES (?, ?, ?, ?)",
            (entry.seq, event.value, text.decode("ascii"), digest),
        )
        self._head_seq, self._head_hash = entry.seq, digest
        return AuditEntry(
            entry.seq, entry.ts, entry.device, event, entry.fields, entry.prev, digest
        )

    def _checkpoint_fields(self, final: bool) -> dict[str, FieldValue]:
        sig = self._key.sign(
            checkpoint_message(self.device_id, self._head_seq, self._head_hash, final)
        ).signature
        return {
            "upto_seq": self._head_seq,
            "upto_hash": self._head_hash,
            "signature": sig.hex(),
            "final": final,
        }

    def _commit(self, writes: Callable[[], list[AuditEntry]]) -> list[AuditEntry]:
        """Run ``writes`` in one durable transaction; roll back in-memory state on failure."""
        saved = (self._head_seq, self._head_hash, self._since_checkpoint)
        try:
            with immediate(self._con):
                written = writes()
        except sqlite3.Error as exc:
            # Disk full, I/O error, file replaced: nothing was committed.
            self._head_seq, self._head_hash, self._since_checkpoint = saved
            raise AuditError(f"audit entry not written: {exc}") from exc
        except BaseException:
            self._head_seq, self._head_hash, self._since_checkpoint = saved
            raise
        for e in written:
            self._counts[e.event.value] += 1
            for listener in self._listeners:
                try:
                    listener(e)
                except Exception as exc:
                    # The entry is durable; a failing consumer (telemetry queue) must
                    # not turn a recorded event into an error for the station. It can
                    # catch up from entries(since=...).
                    if is_disk_full(exc):  # said once by the station's storage guard
                        log.error("audit entry %d not queued for telemetry yet: disk full",
                                  e.seq)
                    else:
                        log.exception("audit listener failed on entry %d", e.seq)
        return written

    def subscribe(self, listener: Callable[[AuditEntry], None]) -> None:
        """Call ``listener`` with every entry once it is durable, checkpoints included.

        Listeners run in seq order under the log's lock (so must not append);
        this is how telemetry gets the complete chain, including the
        checkpoints the log writes by itself, so the central side can run
        :func:`agent.audit.verify.verify_payloads`. An exception from a listener is logged, never
        raised to the caller of ``append``: the entry is already committed.
        """
        with self._lock:
            self._listeners.append(listener)

    def append(self, event: EventId, **fields: object) -> AuditEntry:
        """Append ``event`` with ``fields``; durable (fsynced) before it returns.

        Fields are checked against the catalogue: an unknown event, a missing,
        undeclared or ill-typed field raises :class:`agent.audit.events.EventFieldError`
        and nothing is written. ``audit-checkpoint`` entries are written by the
        log itself and cannot be appended.
        """
        if not isinstance(event, EventId):
            raise EventFieldError(str(event), "", "events are logged by EventId")
        if event is _CHECKPOINT:
            raise EventFieldError(event.value, "", "checkpoints are written by the log itself")
        clean = self._catalogue.validate(event, fields)

        def writes() -> list[AuditEntry]:
            out = [self._insert(event, clean)]
            self._since_checkpoint += 1
            if self._since_checkpoint >= self._every:
                out.append(self._insert(_CHECKPOINT, self._checkpoint_fields(final=False)))
                self._since_checkpoint = 0
            return out

        with self._lock:
            self._check_open()
            return self._commit(writes)[0]

    def checkpoint(self, *, final: bool = False) -> AuditEntry:
        """Write a signed checkpoint now (e.g. when the station pauses or closes)."""

        def writes() -> list[AuditEntry]:
            entry = self._insert(_CHECKPOINT, self._checkpoint_fields(final=final))
            self._since_checkpoint = 0
            return [entry]

        with self._lock:
            self._check_open()
            return self._commit(writes)[0]

    def close(self) -> None:
        """Write the final checkpoint (unless the log already ends with one) and close."""
        with self._lock:
            if self._closed:
                return
            try:
                last = self._con.execute(
                    "SELECT event, body FROM audit ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                already_final = (
                    last is not None
                    and last[0] == _CHECKPOINT.value
                    and json.loads(last[1])["fields"].get("final") is True
                )
                if not already_final:

                    def writes() -> list[AuditEntry]:
                        return [self._insert(_CHECKPOINT, self._checkpoint_fields(final=True))]

                    self._commit(writes)
            finally:
                self._closed = True
                self._con.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
