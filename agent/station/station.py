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
The operator's commands are in :mod:`agent.station.operator`, the slips' layout
in :mod:`agent.station.slips`. What is left here is one job, a voter's turn
and what keeps it honest across a crash (recovery, printing under the ledger's
rules, counts), which is why this module runs past 450 lines: splitting the
turn from the printing it waits on would spread one rule over two files.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from agent import __version__
from agent.audit.event_ids import EventId
from agent.drivers.printer.document import Document
from agent.drivers.printer.status import (
    NotPrinted,
    Printed,
    PrinterState,
    PrinterStatus,
    PrintOutcome,
)
from agent.drivers.sensor.service import FingerprintSensor
from agent.drivers.sensor.types import Capture, Guidance, NoFinger
from agent.match import Matcher, Template, extract, scale
from agent.match.decision import Outcome, decide, decide_fused, verify
from agent.match.extraction.parameters import QUALITY_THRESHOLD
from agent.match.parameters import threshold
from agent.roll.installed import LoadedRoll
from agent.runtime.durable import is_disk_full
from agent.station import parameters
from agent.station.ledger import Ledger, SlipKind, SlipRecord, SlipState
from agent.station.lifecycle import Lifecycle, Phase
from agent.station.marks import Mark, MarkStore, hlc_wall_ms
from agent.station.slips import (
    Place,
    ReportFacts,
    SlipError,
    VoterLine,
    local_time,
    render_slip,
)
from agent.station.storage import StorageGuard

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

    def record(self, event: EventId, **fields: object) -> None:
        """Append an audit event (durable) and queue it as telemetry."""
        ...

    def turnout(self, counts: Mapping[str, object]) -> None:
        """Queue a cumulative turnout message."""
        ...

    @property
    def head_hash(self) -> str:
        """Hash of the newest audit entry."""
        ...

    def has_event(self, event: EventId, slip_serial: str) -> bool:
        """Whether an event for ``slip_serial`` is already in the audit log."""
        ...


class StationError(RuntimeError):
    """An operator command could not be carried out; the message says why.

    ``code`` names the kind of refusal (``kesp-agent`` words it in Kyrgyz and
    Russian from the code and ``params``; the message is the English fallback).
    """

    def __init__(self, message: str, code: str = "refused", **params: object) -> None:
        super().__init__(message)
        self.code = code
        self.params = params


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




_SLIP_KIND_FIELD = {
    SlipKind.IDENTIFIED: "identified",
    SlipKind.REFUSED: "refusal",
    SlipKind.NOT_IDENTIFIED: "commission",
    SlipKind.MANUAL: "manual",
}

_VOTER_EVENTS = {
    SlipKind.IDENTIFIED: EventId.VOTER_IDENTIFIED,
    SlipKind.REFUSED: EventId.VOTER_REFUSED,
    SlipKind.NOT_IDENTIFIED: EventId.VOTER_NOT_IDENTIFIED,
    SlipKind.MANUAL: EventId.MANUAL_DECISION,
}

VOTER_SLIPS = frozenset(_VOTER_EVENTS)
"""Slip kinds that end a voter's turn (the reports are the others)."""


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
        storage: StorageGuard | None = None,
        devices: Callable[[], Mapping[str, Mapping[str, str]]] | None = None,
        zone: dt.tzinfo | None = None,
    ) -> None:
        self.device_id = device_id
        self.storage = storage
        #: The commission's time zone: times on slips and reports (None: the system's).
        self.zone = zone
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
        self.lock = threading.RLock()
        """Held for a voter's turn and for each operator command: they never interleave."""
        self._document_voter: int | None = None
        self._document_lookup = "typed"
        self._document_deadline = 0.0
        self._last_printer = PrinterStatus(PrinterState.DISCONNECTED, None, "not checked yet")
        self._last_printer_state: str = "unknown"
        self._devices = devices
        self._guidance: Guidance | None = None
        self._attempt_ids = 0
        self._interrupted = False
        """A write failed for lack of space: :meth:`recover` runs before the next voter."""
        self._printed_unrecorded: dict[str, bool] = {}
        """Slips the printer confirmed whose ledger update failed (serial: duplicate)."""

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
            hour = local_time(hlc_wall_ms(m.hlc), self.zone).strftime("%H")
            by_hour[hour] = by_hour.get(hour, 0) + 1
        return {
            "identified": counts["identified"],
            "refused": counts["refused"],
            "not_identified": counts["not_identified"],
            "manual": counts["manual"],
            "by_hour": dict(sorted(by_hour.items())),
        }

    def emit_turnout(self) -> None:
        """Queue the cumulative turnout message (after every outcome and command)."""
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
        with self.lock:
            by_serial = {m.slip_serial: m for m in self.marks.local_marks()}
            for rec in self.ledger.in_state(SlipState.ALLOCATED):
                if rec.serial in by_serial:
                    self.ledger.make_pending(rec.serial)
                else:
                    self.ledger.void(rec.serial)
                    self.journal.record(EventId.SLIP_VOIDED, slip_serial=rec.serial)
            for rec in self.ledger.all():
                event = _VOTER_EVENTS.get(rec.kind)
                if event and rec.state != SlipState.VOID and not self.journal.has_event(
                    event, rec.serial
                ):
                    self._record_outcome(rec)
            self.emit_turnout()

    # ------------------------------------------------- for the operator's desk

    @property
    def phase(self) -> Phase:
        """The lifecycle phase."""
        return self.lifecycle.phase

    def report_facts(self) -> ReportFacts:
        """What a zero or closing report states, read from the stores now."""
        records = [r for r in self.ledger.all() if r.kind in _VOTER_EVENTS]
        conflicts = [
            f"№{c.voter}: " + ", ".join(f"{m.kiosk}/{m.slip_serial}" for m in c.marks)
            for c in self.marks.conflicts()
        ]
        roll = self.roll.roll
        at = self._clock()
        return ReportFacts(
            station_id=self.station_id,
            district=self.district,
            station_name=roll.station_name,
            district_name=roll.district_name,
            zone=str(getattr(self.zone, "key", "")) if self.zone else "",
            kiosk=self.device_id,
            software_version=__version__,
            roll_hash=self.roll.package_hash,
            roll_voters=len(self.roll.roll.voters),
            audit_head=self.journal.head_hash,
            at=at.astimezone(self.zone) if self.zone else at.astimezone(),
            counts=self.counts(),
            first_serial=records[0].serial if records else "-",
            last_serial=records[-1].serial if records else "-",
            peers=self._peers(),
            merged_voters=self.marks.voters_marked(),
            conflicts=conflicts,
            revoked=self._revoked_lines(),
            clock_ahead=self._clock_ahead_lines(),
        )

    def _clock_ahead_lines(self) -> list[str]:
        held = self.marks.held_refusing()
        return [f"{kiosk}: " + ", ".join(f"№{m.voter}/{m.slip_serial}"
                                         for m in held if m.kiosk == kiosk)
                for kiosk in sorted({m.kiosk for m in held})]

    def _revoked_lines(self) -> list[str]:
        held = self.marks.revoked_marks()
        return [
            f"{r.kiosk} (№ > {r.upto_seq}): "
            + (", ".join(f"№{m.voter}/{m.slip_serial}" for m in held if m.kiosk == r.kiosk)
               or "-")
            for r in self.marks.revocations()
        ]


    def status(self) -> dict[str, Any]:
        """Phase, counts and pending work, for ``kesp-agent status``."""
        return {
            "phase": self.phase.value,
            "station": self.station_id,
            "device": self.device_id,
            "counts": self.counts(),
            "pending_slips": [r.serial for r in self.ledger.in_state(SlipState.PENDING,
                                                                     SlipState.SENDING)
                              if r.serial not in self._printed_unrecorded],
            "conflicts": len(self.marks.conflicts()),
            "roll_hash": self.roll.package_hash,
            "audit_head": self.journal.head_hash,
            "storage": self.status_storage(),
            "devices": dict(self._devices()) if self._devices else {},
        }

    def status_storage(self) -> str:
        """``full`` while nobody is identified for lack of space on the state disk, else ``ok``."""
        return "full" if self.storage is not None and self.storage.full else "ok"

    @property
    def last_printer_status(self) -> PrinterStatus:
        """The printer's status as last read (no device traffic)."""
        return self._last_printer

    def present_document(self, number: str, lookup: str) -> dict[str, Any]:
        """An ID document number (``lookup`` "typed" or "mrz") selects the next voter."""
        with self.lock:
            index = self.roll.by_document.get(number.strip().upper())
            if index is None:
                raise StationError("no voter with that document number on this station's list",
                                   "unknown-document")
            self._document_voter = index
            self._document_lookup = lookup
            self._document_deadline = time.monotonic() + parameters.DOCUMENT_HOLD_S
            return {"document": "accepted", "list_number": self.roll.voter(index).list_number}

    # ------------------------------------------------------------ the voter

    def admit_manually(self, index: int) -> None:
        """The commission admits the voter at roll ``index`` who could not be identified."""
        with self.lock:
            self._attempt_ids += 1
            self._finish_identified(index, "manual", score=0.0, attempt_id=self._attempt_ids)

    def serve_once(self, wait_s: float = parameters.FINGER_POLL_S) -> None:
        """One turn of the main loop: pending prints, then at most one voter session.

        Before opening and after closing it only keeps the printer's state current
        (``status`` shows it; opening needs it) and waits ``wait_s``: it never spins.
        A full disk is not fatal: the write that failed rolled back whole, the sensor
        shows FAULT and nobody is invited until there is room (storage.py); then
        :meth:`recover` finishes the turn the disk interrupted (a mark stored but its
        slip still allocated, an outcome not yet in the audit log) before anyone else.
        """
        try:
            self._serve_once(wait_s)
        except Exception as exc:
            if self.storage is None or not is_disk_full(exc):
                raise
            self.disk_full(exc)

    def disk_full(self, exc: BaseException) -> None:
        """A write failed for lack of space (in a turn or an operator's command): nobody
        is invited for a while, and what was interrupted is finished once there is room."""
        if self.storage is not None:
            self.storage.hit(exc)
        with self.lock:
            self._interrupted = True
            self._guide(Guidance.FAULT)

    def _serve_once(self, wait_s: float) -> None:
        with self.lock:
            serving = self.phase is Phase.OPEN
            if not serving:
                self._note_printer(self.printer.status())
                # an operator's command (close, reprint) the disk interrupted
                if self._interrupted and (self.storage is None or self.storage.room()):
                    self._finish_interrupted()
            elif self.storage is not None and not self.storage.room():
                self._guide(Guidance.FAULT)
                serving = False
            else:
                if self._interrupted:
                    self._finish_interrupted()
                if not self.print_pending():
                    self._guide(Guidance.FAULT)
                    return
                self._guide(Guidance.READY)
        if not serving:
            time.sleep(wait_s)
            return
        capture = self.sensor.wait_for_finger(wait_s)
        if isinstance(capture, NoFinger):
            return
        with self.lock:
            if self.phase is Phase.OPEN:
                self._session(capture)
                if self.storage is not None:
                    self.storage.served()

    def _finish_interrupted(self) -> None:
        """After a disk-full error: what :meth:`recover` does after a crash, now that
        there is room (its own writes may fail again: then it is retried later)."""
        for serial, duplicate in list(self._printed_unrecorded.items()):
            self._record_printed(self.ledger.get(serial), duplicate)
        self.recover()
        if self.phase is not Phase.OPEN:
            self.print_pending()  # e.g. the closing report of a close the disk interrupted
        self._interrupted = False

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
        self.journal.record(EventId.IDENTIFICATION_STARTED, attempt_id=session.attempt_id,
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
            self.journal.record(EventId.CAPTURE_REJECTED, attempt_id=session.attempt_id,
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
        existing = self.marks.prior_marks(voter.list_number)
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
            self.journal.record(EventId.SLIP_VOIDED, slip_serial=rec.serial)
            self._finish_refused(voter.list_number, mark, attempt_id)
            return
        self.ledger.make_pending(rec.serial)
        for step in self.marks.clock.take_steps():
            self.journal.record(EventId.CLOCK_ADJUSTED, offset_ms=step, clock_source="system")
        self._on_mark(mark)
        self._record_outcome(self.ledger.get(rec.serial))
        self.emit_turnout()
        self.print_slip(self.ledger.get(rec.serial))
        self._guide(Guidance.ACCEPTED)
        self.sensor.wait_for_lift(parameters.LIFT_TIMEOUT_S)

    def _finish_refused(self, list_number: int, existing: tuple[Mark, ...],
                        attempt_id: int) -> None:
        first = min(existing, key=lambda m: m.hlc)
        details: dict[str, object] = {
            "first_kiosk": first.kiosk, "first_ms": hlc_wall_ms(first.hlc),
            "first_serial": first.slip_serial, "attempt": attempt_id,
        }
        # Held apart for its kiosk's clock, it refuses all the same; the slip and the
        # audit say so, or the commission would puzzle over a "first" time still to come.
        ahead = self.marks.held_apart(first)
        if ahead is not None:
            details["first_ahead_ms"] = min(ahead, 2**53)  # JSON-safe, as the service bounds it
        rec = self.ledger.allocate(SlipKind.REFUSED, voter=list_number, details=details,
                                   state=SlipState.PENDING)
        self._record_outcome(rec)
        self.emit_turnout()
        self.print_slip(rec)
        self._guide(Guidance.REFUSED)
        self.sensor.wait_for_lift(parameters.LIFT_TIMEOUT_S)

    def _finish_not_identified(self, attempts: int, attempt_id: int) -> None:
        rec = self.ledger.allocate(SlipKind.NOT_IDENTIFIED,
                                   details={"attempts": attempts, "attempt": attempt_id},
                                   state=SlipState.PENDING)
        self._record_outcome(rec)
        self.emit_turnout()
        self.print_slip(rec)
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
            if "first_ahead_ms" in rec.details:
                fields["ahead_ms"] = int(rec.details["first_ahead_ms"])
        else:
            fields.update(attempt, attempts=int(rec.details.get("attempts", 0)))
        self.journal.record(event, **fields)
        self.journal.record(EventId.SLIP_PENDING, slip_serial=rec.serial,
                            slip_kind=_SLIP_KIND_FIELD[rec.kind])

    # ------------------------------------------------------------- printing

    def print_pending(self) -> bool:
        """Print every pending slip; True when none is left (printer usable)."""
        for rec in self.ledger.in_state(SlipState.PENDING, SlipState.SENDING):
            if not self.print_slip(rec):
                return False
        status = self.printer.status()
        self._note_printer(status)
        return status.printable

    def _note_printer(self, status: PrinterStatus) -> None:
        self._last_printer = status
        state = status.state.value
        if state != self._last_printer_state:
            previous, self._last_printer_state = self._last_printer_state, state
            self.journal.record(EventId.PRINTER_STATUS_CHANGED, status=state, previous=previous)

    def _record_printed(self, rec: SlipRecord, duplicate: bool) -> None:
        """The printer confirmed a copy of ``rec``: the ledger, then the audit log."""
        self.ledger.printed(rec.serial, duplicate=duplicate)
        del self._printed_unrecorded[rec.serial]
        kind = _SLIP_KIND_FIELD.get(rec.kind)
        if kind is not None:  # reports have their own *-report-printed events
            self.journal.record(EventId.SLIP_PRINTED, slip_serial=rec.serial, slip_kind=kind,
                                duplicate=duplicate)

    def _voter_line(self, list_number: int) -> VoterLine:
        v = self.roll.voter(self.roll.by_list_number[list_number])
        return VoterLine(v.list_number, v.name_ky, v.name_ru)

    def _render(self, rec: SlipRecord, duplicate: bool) -> Document:
        try:
            roll = self.roll.roll
            place = Place(self.station_id, self.device_id, self.district, roll.station_name,
                          roll.district_name)
            return render_slip(rec, place=place, duplicate=duplicate, voter=self._voter_line,
                               facts=self.report_facts, zone=self.zone)
        except SlipError as exc:
            raise StationError(str(exc)) from exc

    def print_slip(self, rec: SlipRecord) -> bool:
        """Print one slip under the ledger's rules; True when the printer confirmed it."""
        status = self.printer.status()
        self._note_printer(status)
        if not status.printable:
            return False
        duplicate = self.ledger.begin_print(rec.serial)
        outcome = self.printer.print_document(self._render(self.ledger.get(rec.serial), duplicate))
        if isinstance(outcome, Printed):
            # The paper is out: if the disk is too full to say so, remember it, or the
            # slip would come out again (as DUPLICATE) once there is room.
            self._printed_unrecorded[rec.serial] = duplicate
            self._record_printed(rec, duplicate)
            return True
        if isinstance(outcome, NotPrinted):
            self.ledger.not_printed(rec.serial)
        else:
            self.ledger.uncertain(rec.serial)
        self._note_printer(outcome.status)
        self.journal.record(EventId.SLIP_PRINT_FAILED, slip_serial=rec.serial,
                            status=outcome.status.state.value)
        return False
