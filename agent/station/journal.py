"""The journal: one call records an event in the audit log and sends it as telemetry.

The audit log is the record of truth (hash-chained, signed checkpoints); the
telemetry event is its copy for central ops, carrying the entry's sequence
number and hash so ops can spot a gap. Turnout goes only to telemetry: it is
derived from the mark store and the ledger, never counted separately.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Mapping
from typing import Literal, Protocol

from agent.audit.event_ids import EventId
from agent.audit.log import AuditEntry, AuditLog
from agent.runtime.durable import is_disk_full

log = logging.getLogger(__name__)


class EventSink(Protocol):
    """The part of :class:`agent.telemetry.Telemetry` the journal uses."""

    def emit(self, kind: Literal["event", "turnout"], payload: Mapping[str, object]) -> int:
        """Queue a signed message durably; returns its sequence number."""
        ...


class AuditJournal:
    """Audit log + telemetry, behind the station's ``Journal`` port."""

    def __init__(self, audit: AuditLog, telemetry: EventSink | None) -> None:
        self._audit = audit
        self._telemetry = telemetry
        self._seen: set[tuple[EventId, str]] | None = None
        self._unsent: deque[AuditEntry] = deque()
        """Durable entries whose telemetry copy a full disk refused, oldest first."""
        if telemetry is not None:
            # Every durable entry, including the checkpoints the log writes by
            # itself, so ops can verify the whole chain from telemetry alone. One
            # that a full outbox refused goes first with the next (ops waits at a gap
            # in the chain until it arrives).
            def forward(entry: AuditEntry) -> None:
                self._unsent.append(entry)
                while self._unsent:
                    try:
                        telemetry.emit("event", self._unsent[0].to_payload())
                    except Exception as exc:
                        if not is_disk_full(exc):
                            self._unsent.popleft()  # it can never be sent: not retried
                        raise
                    self._unsent.popleft()

            audit.subscribe(forward)

    def requeue_unsent(self, newest_sent: bytes | None) -> int:
        """At start-up: the audit entries after ``newest_sent`` (the newest event payload
        telemetry holds) go to telemetry with the next entry, in order; returns how many.

        They exist when a full disk refused their copies and the agent stopped before
        it could queue them again. Nothing is resent when telemetry holds no event at
        all (a new or replaced outbox): ops asks for what it misses.
        """
        if self._telemetry is None or newest_sent is None:
            return 0
        try:
            seq = int(json.loads(newest_sent)["seq"])
        except (ValueError, KeyError, TypeError):
            return 0
        missing = list(self._audit.entries(since=seq))
        self._unsent.extend(missing)
        return len(missing)

    def _index(self) -> set[tuple[EventId, str]]:
        if self._seen is None:
            self._seen = set()
            for entry in self._audit.entries():
                serial = entry.fields.get("slip_serial")
                if serial is not None:
                    self._seen.add((entry.event, str(serial)))
        return self._seen

    def record(self, event: EventId, **fields: object) -> None:
        """Append ``event`` to the audit log (durable), then queue it as telemetry.

        ``event`` is a member of the closed catalogue, so a misspelt event is a
        type error for ``mypy``, not a failure at run time.
        """
        self._audit.append(event, **fields)
        if "slip_serial" in fields:
            self._index().add((event, str(fields["slip_serial"])))

    def turnout(self, counts: Mapping[str, object]) -> None:
        """Queue a cumulative turnout message.

        One that a full disk refuses is dropped, not raised: turnout is cumulative,
        so the next message carries it, and the voter's slip must not wait for it.
        """
        if self._telemetry is None:
            return
        try:
            self._telemetry.emit("turnout", counts)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            log.warning("turnout not queued for telemetry (disk full): the next one carries it")

    @property
    def head_hash(self) -> str:
        """Hash of the newest audit entry."""
        return self._audit.head_hash

    def has_event(self, event: EventId, slip_serial: str) -> bool:
        """Whether the audit log already holds ``event`` for ``slip_serial``."""
        return (event, slip_serial) in self._index()
