"""Watch each kiosk's audit chain and integrity events as they arrive at ops.

Every durable audit entry reaches ops as a telemetry ``event`` whose payload
is the entry's body plus its ``hash`` (``AuditEntry.to_payload``). Link by
link, in audit ``seq`` order, this module checks that

* ``hash`` is ``sha256("kesp-audit-v1\\0" || canonical body)``;
* ``prev`` is the hash of entry ``seq - 1`` (the genesis hash for entry 1);
* a checkpoint's ``signature`` is the kiosk's Ed25519 signature (key from the
  registry) over ``checkpoint_message(device, upto_seq, upto_hash, final)``.

A gap in ``seq`` (telemetry not yet delivered) is not a break: the check
waits at the gap until the entry arrives. It also counts the integrity events
the dashboard raises alerts for (mark conflicts, refused peer marks, a
refused roll). The watch is incremental: each :meth:`AuditWatch.refresh`
reads only events newer than the last it saw, at most
``BoardTuning.audit_rows_per_refresh`` rows, so a dashboard started late in
the day catches up over a few refreshes instead of stalling. An event that
arrives after a newer one (a resend fills a gap) is noticed because the
store's count of the kiosk's events is then ahead of what was read: that
kiosk's events are read again from the start, which :meth:`AuditWatch.feed`
makes harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from agent.audit.log import GENESIS_HASH, canonical_bytes, checkpoint_message, entry_hash
from ops.alerts import IntegrityFacts
from ops.registry import Registry

CONFLICT_EVENT = "mark-conflict"
# A peer's mark refused, held apart for a clock far ahead, or a peer marking faster
# than a kiosk can (agent/station/marks.py): each is a rogue-mark alert.
ROGUE_EVENTS = frozenset({"mark-rejected", "mark-quarantined", "peer-rate-exceeded"})
ROLL_REFUSED_EVENTS = frozenset({"roll-rejected", "roll-verification-failed"})
ROLL_OK_EVENTS = frozenset({"roll-installed", "roll-verified"})
CHECKPOINT_EVENT = "audit-checkpoint"


@dataclass
class _Chain:
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    waiting: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    """Entries received ahead of a gap, by audit seq."""
    last_n: int = 0
    """Highest telemetry counter of this kiosk's events read so far."""
    count: int = 0
    """Events read so far (compared with the store's count to find late arrivals)."""


def link_problem(entry: Mapping[str, Any], prev_hash: str, device: str,
                 key: VerifyKey | None) -> str | None:
    """Why ``entry`` does not extend a chain whose head hash is ``prev_hash``; None if it does."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    try:
        computed = entry_hash(canonical_bytes(body))
    except (TypeError, ValueError):
        return f"entry {entry.get('seq')} cannot be encoded canonically"
    if entry.get("hash") != computed:
        return f"entry {entry.get('seq')}: hash does not match its body (altered)"
    if entry.get("prev") != prev_hash:
        return f"entry {entry.get('seq')}: prev does not link to entry {entry.get('seq', 1) - 1}"
    if entry.get("device") != device:
        return f"entry {entry.get('seq')} names device {entry.get('device')!r}"
    if entry.get("event") == CHECKPOINT_EVENT:
        fields = entry.get("fields")
        if not isinstance(fields, Mapping):
            return f"checkpoint {entry.get('seq')} has no fields"
        if key is None:
            return None  # revoked or unknown key: the hash links still hold
        try:
            msg = checkpoint_message(device, int(fields["upto_seq"]), str(fields["upto_hash"]),
                                     bool(fields["final"]))
            key.verify(msg, bytes.fromhex(str(fields["signature"])))
        except (KeyError, ValueError, TypeError, BadSignatureError):
            return f"checkpoint {entry.get('seq')}: signature is not the kiosk's"
        if fields["upto_hash"] != prev_hash:
            return f"checkpoint {entry.get('seq')} does not cover the entry before it"
    return None


class AuditWatch:
    """Incremental audit-chain check and integrity-event counts for every kiosk."""

    def __init__(self) -> None:
        self._chains: dict[str, _Chain] = {}
        self.facts: dict[str, IntegrityFacts] = {}
        self.behind = 0
        """Events known to the store but not yet checked (0 once caught up)."""

    def feed(self, device: str, n: int, payload: Mapping[str, Any], registry: Registry) -> None:
        """One stored event of ``device`` with telemetry counter ``n``.

        Idempotent: an event fed twice (a re-read after a late arrival) changes
        nothing, so readers may re-read a kiosk's events from the start.
        """
        chain = self._chains.setdefault(device, _Chain())
        facts = self.facts.setdefault(device, IntegrityFacts())
        chain.last_n = max(chain.last_n, n)
        event = payload.get("event")
        fields = payload.get("fields")
        fields = fields if isinstance(fields, Mapping) else {}
        seq = payload.get("seq")
        order = seq if isinstance(seq, int) else 0
        if event == CONFLICT_EVENT:
            facts.conflict_events.add(n)
        elif event in ROGUE_EVENTS:
            facts.rogue_events.add(n)
        elif event in ROLL_REFUSED_EVENTS and order >= facts.roll_seq:
            facts.roll_refused = f"{event}: {fields.get('reason', '')}".rstrip(": ")
            facts.roll_seq = order
        elif event in ROLL_OK_EVENTS and order >= facts.roll_seq:
            facts.roll_refused, facts.roll_seq = None, order
            voters = fields.get("voters")
            if isinstance(voters, int) and not isinstance(voters, bool) and voters >= 0:
                facts.voters = voters
        if facts.audit_problem is not None or not isinstance(seq, int) or seq <= chain.head_seq:
            return
        chain.waiting[seq] = payload
        rec = registry.get(device)
        key = rec.key() if rec is not None and rec.active else None
        while chain.head_seq + 1 in chain.waiting:
            entry = chain.waiting.pop(chain.head_seq + 1)
            problem = link_problem(entry, chain.head_hash, device, key)
            if problem is not None:
                facts.audit_problem = problem
                chain.waiting.clear()
                return
            chain.head_seq += 1
            chain.head_hash = str(entry["hash"])

    def watermarks(self) -> dict[str, tuple[int, int]]:
        """Per kiosk, (highest event counter fed, events read)."""
        return {d: (c.last_n, c.count) for d, c in self._chains.items()}

    def read(self, device: str, rows: int, *, from_start: bool) -> None:
        """Record that ``rows`` events of ``device`` were read (all of them if ``from_start``)."""
        chain = self._chains.setdefault(device, _Chain())
        chain.count = rows if from_start else chain.count + rows

    def checked_through(self, device: str) -> int:
        """Audit seq up to which ``device``'s chain has been verified."""
        chain = self._chains.get(device)
        return 0 if chain is None else chain.head_seq
