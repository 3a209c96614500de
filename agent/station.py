"""The station application: one voter at the sensor, from finger to slip.

:class:`Station` owns the rules the commission relies on:

* a voter is identified (1:N over the station, or verification against the
  voter named by an ID document), then **marked durably before the slip is
  printed**; a voter already marked (here or at a peer kiosk) is refused with
  a refusal slip; a voter not identified after the allowed attempts gets a
  slip sending them to the commission, who may decide manually;
* no voter is identified while the printer cannot print (the 2021 "identified
  but no slip" and the US "check-in with no paper" failures);
* every outcome is an audit event, a telemetry event and a cumulative turnout
  message, and after a crash :meth:`Station.recover` finishes what was begun:
  counts in the mark store, the ledger, the audit log and telemetry agree.

Devices, matching and the journal are injected (ports below) so the same class
runs against real hardware, the simulators, or in-memory fakes in unit tests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from agent import __version__, parameters
from agent.config import atomic_write
from agent.drivers.document import Document
from agent.drivers.printer import NotPrinted, Printed, PrinterStatus, PrintOutcome
from agent.drivers.sensor import Capture, FingerprintSensor, Guidance, NoFinger
from agent.ledger import Ledger, SlipKind, SlipRecord, SlipState
from agent.lifecycle import Command, Lifecycle, Phase
from agent.marks import Mark, MarkStore, hlc_wall_ms
from agent.match import Matcher, Template, extract, scale
from agent.match.decision import Outcome, decide, decide_fused, verify
from agent.match.extraction.parameters import QUALITY_THRESHOLD
from agent.match.parameters import threshold
from agent.roll import LoadedRoll
from agent.slips import (
    ReportFacts,
    VoterLine,
    closing_report,
    identified_slip,
    not_identified_slip,
    refused_slip,
    zero_report,
)

log = logging.getLogger(__name__)


class PrinterPort(Protocol):
    """What the station needs of the receipt printer service."""

    def status(self) -> PrinterStatus:
        """Current real-time status."""
        ...

    def print_document(self, doc: Document) -> PrintOutcome:
        """Print ``doc``, checking status before and after."""
        ...


class Journal(Protocol):
    """Where outcomes go: the audit log and, from it, telemetry."""

    def record(self, event: str, **fields: object) -> None:
        """Append an audit event (durable) and queue it as telemetry."""
        ...

    def turnout(self, counts: Mapping[str, object]) -> None:
        """Queue a cumulative turnout message."""
        ...

    @property
    def head_hash(self) -> str:
        """Hash of the newest audit entry."""
        ...

    def has_event(self, event: str, slip_serial: str) -> bool:
        """Whether an event for ``slip_serial`` is already in the audit log."""
        ...


class StationError(RuntimeError):
    """An operator command could not be carried out; the message says why."""


@dataclass
class _Session:
    """One voter at the sensor."""

    attempt_id: int
    attempts: int = 0
    scores: list[NDArray[np.float32]] = field(default_factory=list)
    """Each accepted press's scores against the whole gallery (for fusion)."""
    document_voter: int | None = None


def score_band(score: float, method: str) -> str:
    """Coarse band of a match score for the audit log (raw scores are never logged)."""
    if method == "manual":
        return "none"
    if score >= threshold(fmr=parameters.HIGH_BAND_FMR):
        return "high"
    if score >= threshold(fmr=parameters.MEDIUM_BAND_FMR):
        return "medium"
    return "low"


def _now() -> dt.datetime:
    return dt.datetime.now().astimezone()


def _at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000).astimezone()


_SLIP_KIND_FIELD = {
    SlipKind.IDENTIFIED: "identified",
    SlipKind.REFUSED: "refusal",
    SlipKind.NOT_IDENTIFIED: "commission",
    SlipKind.MANUAL: "manual",
}

_VOTER_EVENTS = {
    SlipKind.IDENTIFIED: "voter-identified",
    SlipKind.REFUSED: "voter-refused",
    SlipKind.NOT_IDENTIFIED: "voter-not-identified",
    SlipKind.MANUAL: "manual-decision",
}


class Station:
    """The kiosk's station application (see module docstring)."""

    def __init__(
        self,
        *,
        device_id: str,
        station_id: str,
        district: str,
        roll: LoadedRoll,
        matcher: Matcher,
        marks: MarkStore,
        ledger: Ledger,
        lifecycle: Lifecycle,
        sensor: FingerprintSensor,
        printer: PrinterPort,
        journal: Journal,
        peers: Callable[[], list[str]] = list,
        on_mark: Callable[[Mark], None] = lambda _mark: None,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        self.device_id = device_id
        self.station_id = station_id
        self.district = district
        self.roll = roll
        self.matcher = matcher
        self.marks = marks
        self.ledger = ledger
        self.lifecycle = lifecycle
        self.sensor = sensor
        self.printer = printer
        self.journal = journal
        self._peers = peers
        self._on_mark = on_mark
        self._clock = clock
        self._lock = threading.RLock()
        self._document_voter: int | None = None
        self._document_lookup = "typed"
        self._document_deadline = 0.0
        self.export_dir: Path | None = None
        self._sign: Callable[[bytes], bytes] | None = None
        self._last_printer_state: str = "unknown"
        self._guidance: Guidance | None = None
        self._attempt_ids = 0

    # ------------------------------------------------------------------ counts

    def counts(self, local: list[Mark] | None = None) -> dict[str, int]:
        """This kiosk's cumulative outcome counts, derived from marks and ledger.

        ``local`` is this kiosk's marks when the caller has already read them.
        """
        if local is None:
            local = self.marks.local_marks()
        records = self.ledger.all()
        voter_slips = [r for r in records if r.kind in _VOTER_EVENTS and r.state != SlipState.VOID]
        return {
            "identified": sum(1 for m in local if m.method != "manual"),
            "manual": sum(1 for m in local if m.method == "manual"),
            "refused": sum(1 for r in voter_slips if r.kind is SlipKind.REFUSED),
            "not_identified": sum(1 for r in voter_slips if r.kind is SlipKind.NOT_IDENTIFIED),
            "slips": sum(r.originals for r in voter_slips),
            "duplicates": sum(r.duplicates for r in voter_slips),
        }

    def turnout_payload(self) -> dict[str, object]:
        """Cumulative turnout for telemetry: counts and identified per hour. No personal data."""
        local = self.marks.local_marks()  # read once: every voter's turn ends here
        counts = self.counts(local)
        by_hour: dict[str, int] = {}
        for m in local:
            hour = _at(hlc_wall_ms(m.hlc)).strftime("%H")
            by_hour[hour] = by_hour.get(hour, 0) + 1
        return {
            "identified": counts["identified"],
            "refused": counts["refused"],
            "not_identified": counts["not_identified"],
            "manual": counts["manual"],
            "by_hour": dict(sorted(by_hour.items())),
        }

    def _emit_turnout(self) -> None:
        self.journal.turnout(self.turnout_payload())

    # ---------------------------------------------------------------- recovery

    def recover(self) -> None:
        """Finish what a crash interrupted (idempotent; call once at start-up).

        * an identified serial allocated but with no mark: the mark never
          happened, the serial is voided (visible on the closing report);
        * an identified serial whose mark exists: it becomes pending;
        * every voter outcome gets its audit event if the crash came first;
        * pending and interrupted ('sending') slips print at the next chance,
          the interrupted ones as DUPLICATE.
        """
        with self._lock:
            by_serial = {m.slip_serial: m for m in self.marks.local_marks()}
            for rec in self.ledger.in_state(SlipState.ALLOCATED):
                if rec.serial in by_serial:
                    self.ledger.make_pending(rec.serial)
                else:
                    self.ledger.void(rec.serial)
                    self.journal.record("slip-voided", slip_serial=rec.serial)
            for rec in self.ledger.all():
                event = _VOTER_EVENTS.get(rec.kind)
                if event and rec.state != SlipState.VOID and not self.journal.has_event(
                    event, rec.serial
                ):
                    self._record_outcome(rec)
            self._emit_turnout()

    # ---------------------------------------------------------------- commands

    @property
    def phase(self) -> Phase:
        """The lifecycle phase."""
        return self.lifecycle.phase

    def _facts(self) -> ReportFacts:
        records = [r for r in self.ledger.all() if r.kind in _VOTER_EVENTS]
        conflicts = [
            f"№{c.voter}: " + ", ".join(f"{m.kiosk}/{m.slip_serial}" for m in c.marks)
            for c in self.marks.conflicts()
        ]
        return ReportFacts(
            station_id=self.station_id,
            district=self.district,
            kiosk=self.device_id,
            software_version=__version__,
            roll_hash=self.roll.package_hash,
            roll_voters=len(self.roll.roll.voters),
            audit_head=self.journal.head_hash,
            at=self._clock(),
            counts=self.counts(),
            first_serial=records[0].serial if records else "-",
            last_serial=records[-1].serial if records else "-",
            peers=self._peers(),
            merged_voters=self.marks.voters_marked(),
            conflicts=conflicts,
        )

    def command(self, name: str, arg: str = "") -> dict[str, Any]:
        """Carry out an operator command; returns a status dict or raises StationError."""
        with self._lock:
            handlers: dict[str, Callable[[str], dict[str, Any]]] = {
                "status": lambda _a: self.status(),
                "open": lambda _a: self._open(),
                "pause": lambda _a: self._simple(Command.PAUSE, "station-paused",
                                                 reason="operator"),
                "resume": lambda _a: self._simple(Command.RESUME, "station-resumed"),
                "close": lambda _a: self._close(),
                "export": lambda _a: self._export(),
                "reprint": self._reprint,
                "document": self._document,
                "manual": self._manual,
            }
            handler = handlers.get(name)
            if handler is None:
                raise StationError(f"unknown command {name!r}; known: {', '.join(handlers)}")
            try:
                return handler(arg)
            except (ValueError, KeyError) as exc:
                raise StationError(str(exc)) from exc

    def status(self) -> dict[str, Any]:
        """Phase, counts and pending work, for ``kesp-agent status``."""
        return {
            "phase": self.phase.value,
            "station": self.station_id,
            "device": self.device_id,
            "counts": self.counts(),
            "pending_slips": [r.serial for r in self.ledger.in_state(SlipState.PENDING,
                                                                     SlipState.SENDING)],
            "conflicts": len(self.marks.conflicts()),
            "roll_hash": self.roll.package_hash,
            "audit_head": self.journal.head_hash,
        }

    def _simple(self, command: Command, event: str, **fields: object) -> dict[str, Any]:
        self.lifecycle.check(command)
        self.lifecycle.apply(command)
        self.journal.record(event, **fields)
        return self.status()

    def _open(self) -> dict[str, Any]:
        self.lifecycle.check(Command.OPEN)
        if self.marks.count(local_only=True) or any(
            r.kind in _VOTER_EVENTS for r in self.ledger.all()
        ):
            raise StationError("refusing to open: this kiosk already holds marks or slips")
        rec = self.ledger.allocate(SlipKind.ZERO_REPORT, state=SlipState.PENDING)
        if not self._print(rec):
            raise StationError(
                f"zero report {rec.serial} could not be printed "
                f"(printer {self.printer.status().state.value}); fix the printer and retry"
            )
        self.journal.record("zero-report-printed", report_serial=rec.serial,
                            roll_hash=self.roll.package_hash)
        self.lifecycle.apply(Command.OPEN)
        self.journal.record("station-opened", roll_hash=self.roll.package_hash)
        self._emit_turnout()
        return self.status()

    def _close(self) -> dict[str, Any]:
        self.lifecycle.check(Command.CLOSE)
        self.lifecycle.apply(Command.CLOSE)
        rec = self.ledger.allocate(SlipKind.CLOSING_REPORT, state=SlipState.PENDING)
        counts = self.counts()
        outcome_counts = {k: counts[k] for k in ("identified", "refused", "not_identified",
                                                 "manual")}
        self.journal.record("station-closed", **outcome_counts)
        printed = self._print(rec)
        if printed:
            voter_slips = [r.serial for r in self.ledger.all() if r.kind in _VOTER_EVENTS]
            span = {"first_slip": voter_slips[0], "last_slip": voter_slips[-1]} if voter_slips \
                else {}
            self.journal.record("closing-report-printed", report_serial=rec.serial,
                                audit_head=self.journal.head_hash, **outcome_counts, **span)
        self._emit_turnout()
        result = self.status()
        result["closing_report"] = rec.serial
        result["closing_report_printed"] = printed
        return result

    def _reprint(self, serial: str) -> dict[str, Any]:
        rec = self.ledger.get(serial.strip())
        if rec.state is SlipState.PRINTED:
            self.ledger.reprint_request(rec.serial)
            self.journal.record("slip-reprinted", slip_serial=rec.serial, reason="operator")
        self.print_pending()
        return self.status()

    def _document(self, number: str) -> dict[str, Any]:
        """The operator typed an ID document number."""
        return self.present_document(number, lookup="typed")

    def present_document(self, number: str, lookup: str) -> dict[str, Any]:
        """An ID document number (``lookup`` "typed" or "mrz") selects the next voter."""
        with self._lock:
            index = self.roll.by_document.get(number.strip().upper())
            if index is None:
                raise StationError("no voter with that document number on this station's list")
            self._document_voter = index
            self._document_lookup = lookup
            self._document_deadline = time.monotonic() + parameters.DOCUMENT_HOLD_S
            return {"document": "accepted", "list_number": self.roll.voter(index).list_number}

    def enable_export(self, directory: Path, sign: Callable[[bytes], bytes]) -> None:
        """Where ``export`` writes the station archive, and how it is signed (device key)."""
        self.export_dir = directory
        self._sign = sign

    def _export(self) -> dict[str, Any]:
        """Closed -> exported: write the signed station archive for the commission and CEC."""
        self.lifecycle.check(Command.EXPORT)
        if self.export_dir is None or self._sign is None:
            raise StationError("export is not configured on this kiosk")
        archive = {
            "format": "kesp-station-export-v1",
            "station": self.station_id,
            "district": self.district,
            "device": self.device_id,
            "roll_hash": self.roll.package_hash,
            "audit_head": self.journal.head_hash,
            "counts": self.counts(),
            "marks": [
                {"voter": m.voter, "kiosk": m.kiosk, "seq": m.origin_seq, "method": m.method,
                 "slip": m.slip_serial, "hlc": m.hlc}
                for m in self.marks.all_marks()
            ],
            "slips": [
                {"serial": r.serial, "kind": r.kind.value, "state": r.state.value,
                 "originals": r.originals, "duplicates": r.duplicates}
                for r in self.ledger.all()
            ],
            "conflicts": [c.voter for c in self.marks.conflicts()],
        }
        body = json.dumps(archive, sort_keys=True, ensure_ascii=False, indent=1).encode("utf-8")
        digest = hashlib.sha256(body).hexdigest()
        name = f"export-{self.station_id}-{self.device_id}"
        atomic_write(self.export_dir / f"{name}.json", body, mode=0o600)
        atomic_write(self.export_dir / f"{name}.sig", self._sign(body).hex().encode() + b"\n",
                     mode=0o600)
        self.lifecycle.apply(Command.EXPORT)
        self.journal.record("station-exported", export_hash=digest)
        result = self.status()
        result["export"] = str(self.export_dir / f"{name}.json")
        return result

    def _manual(self, list_number: str) -> dict[str, Any]:
        """Commission decided to admit a voter who could not be identified."""
        if self.phase is not Phase.OPEN:
            raise StationError(f"station is {self.phase.value}, not open")
        index = self.roll.by_list_number.get(int(list_number))
        if index is None:
            raise StationError(f"list number {list_number} is not on this station's list")
        self._attempt_ids += 1
        self._finish_identified(index, "manual", score=0.0, attempt_id=self._attempt_ids)
        return self.status()

    # ------------------------------------------------------------ the voter

    def serve_once(self, wait_s: float = parameters.FINGER_POLL_S) -> None:
        """One turn of the main loop: pending prints, then at most one voter session."""
        with self._lock:
            if self.phase is not Phase.OPEN:
                return
            if not self.print_pending():
                self._guide(Guidance.FAULT)
                return
            self._guide(Guidance.READY)
        capture = self.sensor.wait_for_finger(wait_s)
        if isinstance(capture, NoFinger):
            return
        with self._lock:
            if self.phase is Phase.OPEN:
                self._session(capture)

    def _guide(self, guidance: Guidance) -> None:
        """Show ``guidance`` on the LED ring (only on change: LED commands cost a round trip)."""
        if guidance is not self._guidance:
            self.sensor.guide(guidance)
            self._guidance = guidance

    def _take_document_voter(self) -> int | None:
        index, self._document_voter = self._document_voter, None
        if index is not None and time.monotonic() > self._document_deadline:
            return None
        return index

    def _session(self, capture: Capture) -> None:
        self._attempt_ids += 1
        session = _Session(attempt_id=self._attempt_ids, document_voter=self._take_document_voter())
        self.journal.record("identification-started", attempt_id=session.attempt_id,
                            lookup=self._document_lookup if session.document_voter is not None
                            else "none")
        while True:
            session.attempts += 1
            self._guide(Guidance.CAPTURING)
            probe = extract(capture.image, dpi=capture.dpi)
            decided = self._decide(session, probe)
            if decided is not None:
                index, method, score = decided
                self._finish_identified(index, method, score, session.attempt_id)
                return
            if session.attempts >= parameters.MAX_ATTEMPTS:
                self._finish_not_identified(session.attempts, session.attempt_id)
                return
            self._guide(Guidance.RETRY)
            self.sensor.wait_for_lift(parameters.LIFT_TIMEOUT_S)
            self._guide(Guidance.READY)
            again = self.sensor.wait_for_finger(parameters.PRESS_AGAIN_TIMEOUT_S)
            if isinstance(again, NoFinger):
                self._finish_not_identified(session.attempts, session.attempt_id)
                return
            capture = again

    def _decide(self, session: _Session, probe: Template) -> tuple[int, str, float] | None:
        if probe.quality < QUALITY_THRESHOLD or len(probe) < parameters.MIN_MINUTIAE:
            self.journal.record("capture-rejected", attempt_id=session.attempt_id,
                                quality=int(probe.quality), reason="low-quality")
            return None
        if session.document_voter is not None:
            v = verify(self.matcher, probe, self.roll.templates_of(session.document_voter))
            return (session.document_voter, "verify", v.score) if v.accepted else None
        # One exhaustive search per press; a later press is fused with the previous
        # one's kept scores, so a second finger costs one search, not three.
        scores = scale.scores(self.roll.gallery, probe)
        result = decide(scores, self.roll.owners)
        method = "identify"
        if result.outcome is not Outcome.MATCH and session.scores:
            # A second press: alone it may now suffice; otherwise fuse it with the
            # previous one (a different finger, ideally), as the voter was asked.
            fused = decide_fused(session.scores[-1], scores, self.roll.owners)
            if fused.outcome is Outcome.MATCH:
                result, method = fused, "identify-2f"
        session.scores.append(scores)
        if result.outcome is Outcome.MATCH:
            return result.voter, method, float(result.score)
        return None

    def _finish_identified(self, index: int, method: str, score: float, attempt_id: int) -> None:
        voter = self.roll.voter(index)
        existing = self.marks.marks_for(voter.list_number)
        if existing:
            self._finish_refused(voter.list_number, existing, attempt_id)
            return
        rec = self.ledger.allocate(
            SlipKind.MANUAL if method == "manual" else SlipKind.IDENTIFIED,
            voter=voter.list_number,
            details={"method": method, "band": score_band(score, method),
                     "attempt": attempt_id},
        )
        mark = self.marks.mark_if_unmarked(voter.list_number, method, rec.serial)
        if not isinstance(mark, Mark):
            # A peer's mark arrived between the look-up and ours.
            self.ledger.void(rec.serial)
            self.journal.record("slip-voided", slip_serial=rec.serial)
            self._finish_refused(voter.list_number, mark, attempt_id)
            return
        self.ledger.make_pending(rec.serial)
        self._on_mark(mark)
        self._record_outcome(self.ledger.get(rec.serial))
        self._emit_turnout()
        self._print(self.ledger.get(rec.serial))
        self._guide(Guidance.ACCEPTED)
        self.sensor.wait_for_lift(parameters.LIFT_TIMEOUT_S)

    def _finish_refused(self, list_number: int, existing: tuple[Mark, ...],
                        attempt_id: int) -> None:
        first = min(existing, key=lambda m: m.hlc)
        rec = self.ledger.allocate(
            SlipKind.REFUSED,
            voter=list_number,
            details={"first_kiosk": first.kiosk, "first_ms": hlc_wall_ms(first.hlc),
                     "first_serial": first.slip_serial, "attempt": attempt_id},
            state=SlipState.PENDING,
        )
        self._record_outcome(rec)
        self._emit_turnout()
        self._print(rec)
        self._guide(Guidance.REFUSED)
        self.sensor.wait_for_lift(parameters.LIFT_TIMEOUT_S)

    def _finish_not_identified(self, attempts: int, attempt_id: int) -> None:
        rec = self.ledger.allocate(SlipKind.NOT_IDENTIFIED,
                                   details={"attempts": attempts, "attempt": attempt_id},
                                   state=SlipState.PENDING)
        self._record_outcome(rec)
        self._emit_turnout()
        self._print(rec)
        self._guide(Guidance.REFUSED)
        self.sensor.wait_for_lift(parameters.LIFT_TIMEOUT_S)

    def _record_outcome(self, rec: SlipRecord) -> None:
        event = _VOTER_EVENTS[rec.kind]
        fields: dict[str, object] = {"slip_serial": rec.serial}
        attempt = {"attempt_id": int(rec.details.get("attempt", 1))}
        if rec.kind is SlipKind.IDENTIFIED:
            fields.update(attempt, method=str(rec.details["method"]),
                          score_band=str(rec.details["band"]))
        elif rec.kind is SlipKind.MANUAL:
            fields["decision"] = "admit"
        elif rec.kind is SlipKind.REFUSED:
            fields.update(attempt, original_kiosk=str(rec.details["first_kiosk"]))
        else:
            fields.update(attempt, attempts=int(rec.details.get("attempts", 0)))
        self.journal.record(event, **fields)
        self.journal.record("slip-pending", slip_serial=rec.serial,
                            slip_kind=_SLIP_KIND_FIELD[rec.kind])

    # ------------------------------------------------------------- printing

    def print_pending(self) -> bool:
        """Print every pending slip; True when none is left (printer usable)."""
        for rec in self.ledger.in_state(SlipState.PENDING, SlipState.SENDING):
            if not self._print(rec):
                return False
        status = self.printer.status()
        self._note_printer(status)
        return status.printable

    def _note_printer(self, status: PrinterStatus) -> None:
        state = status.state.value
        if state != self._last_printer_state:
            previous, self._last_printer_state = self._last_printer_state, state
            self.journal.record("printer-status-changed", status=state, previous=previous)

    def _render(self, rec: SlipRecord, duplicate: bool) -> Document:
        at = _at(rec.created_ms)
        common = {"serial": rec.serial, "station_id": self.station_id, "kiosk": self.device_id}
        if rec.kind in (SlipKind.IDENTIFIED, SlipKind.MANUAL, SlipKind.REFUSED):
            if rec.voter is None:
                raise StationError(f"slip {rec.serial} has no voter")
            v = self.roll.voter(self.roll.by_list_number[rec.voter])
            line = VoterLine(v.list_number, v.name_ky, v.name_ru)
            if rec.kind is SlipKind.REFUSED:
                return refused_slip(
                    **common, voter=line, at=at, duplicate=duplicate,
                    first_at=_at(int(rec.details["first_ms"])),
                    first_kiosk=str(rec.details["first_kiosk"]),
                )
            return identified_slip(**common, voter=line, at=at, duplicate=duplicate,
                                   method=str(rec.details.get("method", "manual")))
        if rec.kind is SlipKind.NOT_IDENTIFIED:
            return not_identified_slip(**common, at=at, duplicate=duplicate,
                                       attempts=int(rec.details.get("attempts", 0)))
        facts = self._facts()
        if rec.kind is SlipKind.ZERO_REPORT:
            return zero_report(serial=rec.serial, facts=facts, duplicate=duplicate)
        return closing_report(serial=rec.serial, facts=facts, duplicate=duplicate)

    def _print(self, rec: SlipRecord) -> bool:
        """Print one slip under the ledger's rules; True when the printer confirmed it."""
        status = self.printer.status()
        self._note_printer(status)
        if not status.printable:
            return False
        duplicate = self.ledger.begin_print(rec.serial)
        outcome = self.printer.print_document(self._render(self.ledger.get(rec.serial), duplicate))
        if isinstance(outcome, Printed):
            self.ledger.printed(rec.serial, duplicate=duplicate)
            kind = _SLIP_KIND_FIELD.get(rec.kind)
            if kind is not None:  # reports have their own *-report-printed events
                self.journal.record("slip-printed", slip_serial=rec.serial, slip_kind=kind,
                                    duplicate=duplicate)
            return True
        if isinstance(outcome, NotPrinted):
            self.ledger.not_printed(rec.serial)
        else:
            self.ledger.uncertain(rec.serial)
        self._note_printer(outcome.status)
        self.journal.record("slip-print-failed", slip_serial=rec.serial,
                            status=outcome.status.state.value)
        return False
