"""Closed set of audit event ids.

GENERATED from agent/audit/events.toml by ``python -m agent.audit.generate --write``; do not edit.
"""

from __future__ import annotations

from enum import Enum


class EventId(Enum):
    """Every event of the audit catalogue (see docs/EVENTS.md)."""

    AGENT_STARTED = "agent-started"
    AGENT_STOPPED = "agent-stopped"
    ROLL_INSTALL_STARTED = "roll-install-started"
    ROLL_INSTALLED = "roll-installed"
    ROLL_REJECTED = "roll-rejected"
    ROLL_VERIFIED = "roll-verified"
    ROLL_VERIFICATION_FAILED = "roll-verification-failed"
    STATION_OPENED = "station-opened"
    STATION_PAUSED = "station-paused"
    STATION_RESUMED = "station-resumed"
    STATION_CLOSED = "station-closed"
    STATION_EXPORTED = "station-exported"
    ZERO_REPORT_PRINTED = "zero-report-printed"
    CLOSING_REPORT_PRINTED = "closing-report-printed"
    DOCUMENT_READ = "document-read"
    DOCUMENT_READ_FAILED = "document-read-failed"
    IDENTIFICATION_STARTED = "identification-started"
    VOTER_IDENTIFIED = "voter-identified"
    VOTER_REFUSED = "voter-refused"
    VOTER_NOT_IDENTIFIED = "voter-not-identified"
    MANUAL_DECISION = "manual-decision"
    CAPTURE_REJECTED = "capture-rejected"
    SLIP_PENDING = "slip-pending"
    SLIP_PRINTED = "slip-printed"
    SLIP_REPRINTED = "slip-reprinted"
    SLIP_PRINT_FAILED = "slip-print-failed"
    SLIP_VOIDED = "slip-voided"
    PRINTER_STATUS_CHANGED = "printer-status-changed"
    SENSOR_STATUS_CHANGED = "sensor-status-changed"
    DOCUMENT_READER_STATUS_CHANGED = "document-reader-status-changed"
    POWER_STATUS_CHANGED = "power-status-changed"
    UPLINK_STATUS_CHANGED = "uplink-status-changed"
    PEER_STATUS_CHANGED = "peer-status-changed"
    MARK_CONFLICT = "mark-conflict"
    MARK_REJECTED = "mark-rejected"
    MARK_QUARANTINED = "mark-quarantined"
    MARK_ADMITTED = "mark-admitted"
    PEER_RATE_EXCEEDED = "peer-rate-exceeded"
    PEER_REVOKED = "peer-revoked"
    AUDIT_CHECKPOINT = "audit-checkpoint"
    CLOCK_UNSYNCHRONISED = "clock-unsynchronised"
    CLOCK_ADJUSTED = "clock-adjusted"
