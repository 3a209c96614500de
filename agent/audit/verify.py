"""Verify an audit log: the chain, the checkpoint signatures, an external head anchor.

The rules are those of the format in :mod:`agent.audit.log`; the same check runs
over a log file (:func:`verify_chain`, for the commission and the technician)
and over the stream of telemetry payloads (:func:`verify_payloads`, for central
ops). Tampering is reported, never raised: the report names the first entry
that cannot be trusted.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from agent.audit.events import CATALOGUE, Catalogue, EventId
from agent.audit.log import (
    GENESIS_HASH,
    AuditError,
    AuditProblem,
    ChainError,
    canonical_bytes,
    checkpoint_message,
    decode_body,
    entry_hash,
)

__all__ = ["AuditReport", "verify_chain", "verify_payloads"]





@dataclass(frozen=True)
class AuditReport:
    """Outcome of :func:`verify_chain`; ``ok`` is False exactly when ``problem`` is set.

    ``first_bad_seq`` is the first entry that cannot be trusted; when a rewrite
    is only caught by a checkpoint, ``suspect_range`` gives the (inclusive)
    range of entries the rewrite may have touched. ``unsigned_tail`` counts the
    entries after the last valid checkpoint.
    """

    ok: bool
    entries: int
    device_id: str | None
    head_seq: int
    head_hash: str
    checkpoints: int
    signed_through: int
    unsigned_tail: int
    closed_cleanly: bool
    problem: AuditProblem | None = None
    first_bad_seq: int | None = None
    suspect_range: tuple[int, int] | None = None
    detail: str = ""

    def summary(self) -> str:
        """One human-readable paragraph for the CLI."""
        if not self.ok:
            where = f"entry {self.first_bad_seq}" if self.first_bad_seq else "log"
            kind = self.problem.value if self.problem else "unknown"
            text = f"FAILED at {where}: {kind}: {self.detail}"
            if self.suspect_range:
                text += f" (entries {self.suspect_range[0]}..{self.suspect_range[1]} suspect)"
            return text + f"; entries 1..{self.head_seq} verified"
        text = (
            f"OK: {self.entries} entries, head {self.head_seq} {self.head_hash}, "
            f"{self.checkpoints} checkpoints, signed through entry {self.signed_through}"
        )
        if not self.closed_cleanly:
            text += (
                f"; NOT closed cleanly, {self.unsigned_tail} entry(ies) after the last checkpoint"
            )
        return text


class _Verifier:
    """Streaming chain check over ``(row position, body text, stored hash)``."""

    def __init__(
        self,
        verify_key: VerifyKey,
        device_id: str | None,
        expected_head: str | None,
        catalogue: Catalogue,
    ) -> None:
        self.key = verify_key
        self.device_id = device_id
        self.expected_head = expected_head
        self.catalogue = catalogue
        self.count = 0
        self.head_seq = 0
        self.head_hash = GENESIS_HASH
        self.checkpoints = 0
        self.last_cp_seq = 0  # seq of the last valid checkpoint entry
        self.signed_through = 0
        self.last_final = False
        self.seen_expected = expected_head is None

    def report(self, problem: ChainError | None = None, bad: int | None = None,
               suspect: tuple[int, int] | None = None) -> AuditReport:  # fmt: skip
        return AuditReport(
            ok=problem is None,
            entries=self.count,
            device_id=self.device_id,
            head_seq=self.head_seq,
            head_hash=self.head_hash,
            checkpoints=self.checkpoints,
            signed_through=self.signed_through,
            unsigned_tail=self.head_seq - self.last_cp_seq,
            closed_cleanly=problem is None and self.last_final,
            problem=None if problem is None else problem.problem,
            first_bad_seq=bad,
            suspect_range=suspect,
            detail="" if problem is None else problem.detail,
        )

    def step(self, row_seq: int | None, text: str, stored_hash: str) -> AuditReport | None:
        """Check the next entry; a report when it is bad, else None."""
        expected = self.head_seq + 1
        if row_seq is not None and row_seq != expected:
            if row_seq > expected:
                return self.report(
                    ChainError(AuditProblem.REMOVED, f"entries {expected}..{row_seq - 1} missing"),
                    expected,
                )
            return self.report(ChainError(AuditProblem.REORDERED, "row out of order"), row_seq)
        try:
            body, event = decode_body(text, self.catalogue)
        except ChainError as exc:
            return self.report(exc, expected)
        if entry_hash(text.encode("ascii")) != stored_hash:
            return self.report(
                ChainError(AuditProblem.ALTERED, "content does not match its recorded hash"),
                expected,
            )
        if body["seq"] != expected:
            kind = AuditProblem.REMOVED if body["seq"] > expected else AuditProblem.REORDERED
            return self.report(
                ChainError(kind, f"entry carries seq {body['seq']}, expected {expected}"), expected
            )
        if self.device_id is None:
            self.device_id = body["device"]
        elif body["device"] != self.device_id:
            return self.report(
                ChainError(AuditProblem.WRONG_DEVICE, f"entry of device {body['device']!r}"),
                expected,
            )
        if body["prev"] != self.head_hash:
            # Entry n-1 hashes to itself but not to what entry n recorded for it:
            # n-1 was altered and re-hashed (or n was forged); n-1 is the first suspect.
            suspect = max(expected - 1, 1)
            return self.report(
                ChainError(
                    AuditProblem.ALTERED,
                    f"entry {expected} records a different hash for entry {expected - 1}",
                ),
                suspect,
                (suspect, expected),
            )
        if event is EventId.AUDIT_CHECKPOINT:
            bad = self._check_checkpoint(body, expected)
            if bad is not None:
                return bad
        self.count += 1
        self.head_seq, self.head_hash = expected, stored_hash
        self.last_final = event is EventId.AUDIT_CHECKPOINT and body["fields"]["final"] is True
        if stored_hash == self.expected_head:
            self.seen_expected = True
        return None

    def _check_checkpoint(self, body: Mapping[str, Any], seq: int) -> AuditReport | None:
        f = body["fields"]
        if f["upto_seq"] != seq - 1:
            return self.report(
                ChainError(AuditProblem.FORGED_CHECKPOINT, "checkpoint does not cover its prefix"),
                seq,
            )
        try:
            self.key.verify(
                checkpoint_message(body["device"], f["upto_seq"], f["upto_hash"], f["final"]),
                bytes.fromhex(f["signature"]),
            )
        except BadSignatureError:
            return self.report(
                ChainError(AuditProblem.FORGED_CHECKPOINT, "checkpoint signature is not valid"),
                seq,
            )
        if f["upto_hash"] != self.head_hash:
            # Validly signed, but over a different history: entries since the last
            # good checkpoint were rewritten with recomputed hashes.
            first = self.last_cp_seq + 1
            return self.report(
                ChainError(
                    AuditProblem.ALTERED,
                    "the signed head hash differs from the chain: entries were rewritten",
                ),
                first,
                (first, seq - 1),
            )
        self.checkpoints += 1
        self.last_cp_seq = seq
        self.signed_through = seq - 1
        return None

    def finish(self) -> AuditReport:
        if not self.seen_expected:
            return self.report(
                ChainError(
                    AuditProblem.TRUNCATED,
                    f"expected head {self.expected_head} is not in the log "
                    f"(log ends at entry {self.head_seq})",
                ),
                self.head_seq + 1,
            )
        return self.report()


def _verify_rows(
    rows: Iterable[tuple[int | None, str, str]],
    verify_key: VerifyKey,
    device_id: str | None,
    expected_head: str | None,
    catalogue: Catalogue,
) -> AuditReport:
    v = _Verifier(verify_key, device_id, expected_head, catalogue)
    it = iter(rows)
    for row_seq, text, stored in it:
        bad = v.step(row_seq, text, stored)
        if bad is None:
            continue
        if bad.problem is AuditProblem.REMOVED and bad.first_bad_seq is not None:
            # A seq that is skipped here but turns up later was moved, not removed.
            for _, later, _h in it:
                try:
                    moved = json.loads(later).get("seq") == bad.first_bad_seq
                except (json.JSONDecodeError, AttributeError):
                    moved = False
                if moved:
                    return replace(
                        bad,
                        problem=AuditProblem.REORDERED,
                        detail=f"entry {bad.first_bad_seq} appears later in the log",
                    )
        return bad
    return v.finish()


def verify_chain(
    path: str | os.PathLike[str],
    verify_key: VerifyKey,
    *,
    expected_head: str | None = None,
    device_id: str | None = None,
    catalogue: Catalogue = CATALOGUE,
) -> AuditReport:
    """Check a whole audit log file; report the first bad entry (never raises for tampering).

    ``expected_head`` is an external anchor (the head hash printed on the closing
    report or last received by telemetry): if it is not found, the log was cut
    back. ``device_id`` pins the device; otherwise the file's own is used.
    Raises :class:`AuditError` only if the file does not exist.
    """
    p = Path(path)
    if not p.is_file():
        raise AuditError(f"no audit log at {p}")
    try:
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise AuditError(f"cannot open {p}: {exc}") from exc
    unreadable = _Verifier(verify_key, device_id, None, catalogue)
    try:
        try:
            meta = con.execute("SELECT value FROM audit_meta WHERE key = 'device'").fetchone()
            cur = con.execute("SELECT seq, body, hash FROM audit ORDER BY seq")
        except sqlite3.DatabaseError as exc:
            return unreadable.report(ChainError(AuditProblem.UNREADABLE, str(exc)))
        if meta is not None:
            if device_id is not None and meta[0] != device_id:
                return unreadable.report(
                    ChainError(AuditProblem.WRONG_DEVICE, f"log belongs to {meta[0]!r}")
                )
            device_id = meta[0]

        def rows() -> Iterator[tuple[int | None, str, str]]:
            for seq, body, stored in cur:
                if not isinstance(body, str) or not isinstance(stored, str):
                    yield seq, "", ""
                else:
                    yield seq, body, stored

        try:
            return _verify_rows(rows(), verify_key, device_id, expected_head, catalogue)
        except sqlite3.DatabaseError as exc:
            return unreadable.report(ChainError(AuditProblem.UNREADABLE, str(exc)))
    finally:
        con.close()


def verify_payloads(
    payloads: Iterable[Mapping[str, Any]],
    verify_key: VerifyKey,
    *,
    expected_head: str | None = None,
    device_id: str | None = None,
    catalogue: Catalogue = CATALOGUE,
) -> AuditReport:
    """Check a sequence of telemetry payloads (:meth:`AuditEntry.to_payload`) as a chain.

    For the central side: the same rules as :func:`verify_chain`, over entries
    received in order from seq 1.
    """

    def rows() -> Iterator[tuple[int | None, str, str]]:
        for p in payloads:
            body = {k: v for k, v in p.items() if k != "hash"}
            stored = p.get("hash")
            try:
                text = canonical_bytes(body).decode("ascii")
            except (TypeError, ValueError):
                text = ""
            yield None, text, stored if isinstance(stored, str) else ""

    return _verify_rows(rows(), verify_key, device_id, expected_head, catalogue)

