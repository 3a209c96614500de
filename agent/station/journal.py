"""The journal: one call records an event in the audit log and sends it as telemetry.

The audit log is the record of truth (hash-chained, signed checkpoints); the
telemetry event is its copy for central ops, carrying the entry's sequence
number and hash so ops can spot a gap. Turnout goes only to telemetry: it is
derived from the mark store and the ledger, never counted separately.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol

from agent.audit.event_ids import EventId
from agent.audit.log import AuditEntry, AuditLog


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
        if telemetry is not None:
            # Every durable entry, including the checkpoints the log writes by
            # itself, so ops can verify the whole chain from telemetry alone.
            def forward(entry: AuditEntry) -> None:
                telemetry.emit("event", entry.to_payload())

            audit.subscribe(forward)

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
        """Queue a cumulative turnout message."""
        if self._telemetry is not None:
            self._telemetry.emit("turnout", counts)

    @property
    def head_hash(self) -> str:
        """Hash of the newest audit entry."""
        return self._audit.head_hash

    def has_event(self, event: EventId, slip_serial: str) -> bool:
        """Whether the audit log already holds ``event`` for ``slip_serial``."""
        return (event, slip_serial) in self._index()
