"""The operator's commands: open, pause, resume, close, export, reprint, document, manual, revoke.

``kesp-agent <command>`` reaches :meth:`Operator.command` through the control
socket. Each command is checked against the lifecycle, carried out on the
:class:`~agent.station.station.Station` under its lock (so it never interleaves
with a voter's turn), journalled, and answered with the station's status; a
command that cannot be carried out raises :class:`StationError` with the reason
and the fix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.audit.event_ids import EventId
from agent.runtime.durable import atomic_write, is_disk_full
from agent.station.ledger import LedgerError, SlipKind, SlipRecord, SlipState
from agent.station.lifecycle import TRANSITIONS, Command, Phase, RollPin, TransitionError
from agent.station.station import VOTER_SLIPS, Station, StationError


class Operator:
    """The commission's and the technician's commands on one :class:`Station`."""

    def __init__(self, station: Station) -> None:
        self.station = station
        self.export_dir: Path | None = None
        self._sign: Callable[[bytes], bytes] | None = None
        #: More of the kiosk's state for ``status`` (peers, uplink), set by the service.
        self.status_extras: Callable[[], dict[str, Any]] = dict

    def enable_export(self, directory: Path, sign: Callable[[bytes], bytes]) -> None:
        """Where ``export`` writes the station archive, and how it is signed (device key)."""
        self.export_dir = directory
        self._sign = sign

    def command(self, name: str, arg: str = "") -> dict[str, Any]:
        """Carry out an operator command; returns a status dict or raises StationError."""
        with self.station.lock:
            handlers: dict[str, Callable[[str], dict[str, Any]]] = {
                "status": lambda _a: self.station.status(),
                "open": lambda _a: self._open(),
                "pause": lambda _a: self._simple(Command.PAUSE, EventId.STATION_PAUSED,
                                                 reason="operator"),
                "resume": lambda _a: self._simple(Command.RESUME, EventId.STATION_RESUMED),
                "close": lambda _a: self._close(),
                "export": lambda _a: self._export(),
                "reprint": self._reprint,
                "document": self._document,
                "manual": self._manual,
                "revoke": self._revoke,
            }
            handler = handlers.get(name)
            if handler is None:
                raise StationError(f"unknown command {name!r}; known: {', '.join(handlers)}",
                                   "unknown-command", command=name)
            try:
                result = handler(arg)
            except TransitionError as exc:
                allowed = sorted(c.value for (p, c) in TRANSITIONS if p is exc.phase)
                raise StationError(str(exc), "phase", phase=exc.phase.value,
                                   command=exc.command.value, allowed=allowed) from exc
            except LedgerError as exc:
                raise StationError(str(exc), "unknown-serial", serial=arg.strip()) from exc
            except (ValueError, KeyError) as exc:
                raise StationError(str(exc)) from exc
            except Exception as exc:
                if not is_disk_full(exc):
                    raise
                # Rolled back whole; the station finishes what was begun once there is room.
                self.station.disk_full(exc)
                raise StationError(f"the state disk is full ({exc}): free space, then "
                                   "repeat the command", "disk-full",
                                   command=name) from exc
            for key, value in self.status_extras().items():
                result.setdefault(key, value)
            return result

    def _outcome(self, rec: SlipRecord) -> dict[str, Any]:
        """What became of one slip, for the operator's answer (kind, serial, printed?)."""
        rec = self.station.ledger.get(rec.serial)
        out: dict[str, Any] = {"kind": rec.kind.value, "serial": rec.serial,
                               "printed": rec.state is SlipState.PRINTED}
        if rec.voter is not None:
            out["list_number"] = rec.voter
        if rec.kind is SlipKind.REFUSED:
            out["first_kiosk"] = rec.details.get("first_kiosk")
            out["first_serial"] = rec.details.get("first_serial")
            if "first_ahead_ms" in rec.details:
                out["first_ahead_ms"] = rec.details["first_ahead_ms"]
        if not out["printed"]:
            out["printer"] = self.station.printer.status().state.value
        return out

    def _simple(self, command: Command, event: EventId, **fields: object) -> dict[str, Any]:
        self.station.lifecycle.check(command)
        self.station.lifecycle.apply(command)
        self.station.journal.record(event, **fields)
        return self.station.status()

    def _open(self) -> dict[str, Any]:
        self.station.lifecycle.check(Command.OPEN)
        if self.station.marks.count(local_only=True) or any(
            r.kind in VOTER_SLIPS for r in self.station.ledger.all()
        ):
            raise StationError("refusing to open: this kiosk already holds marks or slips",
                               "not-empty")
        # A zero report that a missing printer could not print is retried, not doubled.
        earlier = [r for r in self.station.ledger.in_state(SlipState.PENDING, SlipState.SENDING)
                   if r.kind is SlipKind.ZERO_REPORT]
        rec = earlier[0] if earlier else self.station.ledger.allocate(SlipKind.ZERO_REPORT,
                                                                      state=SlipState.PENDING)
        if not self.station.print_slip(rec):
            printer = self.station.printer.status().state.value
            raise StationError(
                f"zero report {rec.serial} could not be printed "
                f"(printer {printer}); fix the printer and retry",
                "zero-report-not-printed", serial=rec.serial, printer=printer,
            )
        self.station.journal.record(EventId.ZERO_REPORT_PRINTED, report_serial=rec.serial,
                            roll_hash=self.station.roll.package_hash)
        roll = self.station.roll
        # Pinned before the phase changes: a start after a cut in between still has it.
        self.station.lifecycle.pin_roll(RollPin(roll.roll.election_id, roll.roll.roll_version,
                                                roll.package_hash))
        self.station.lifecycle.apply(Command.OPEN)
        self.station.journal.record(EventId.STATION_OPENED,
                                    roll_hash=self.station.roll.package_hash)
        self.station.emit_turnout()
        return self.station.status()

    def _close(self) -> dict[str, Any]:
        self.station.lifecycle.check(Command.CLOSE)
        self.station.lifecycle.apply(Command.CLOSE)
        rec = self.station.ledger.allocate(SlipKind.CLOSING_REPORT, state=SlipState.PENDING)
        counts = self.station.counts()
        outcome_counts = {k: counts[k] for k in ("identified", "refused", "not_identified",
                                                 "manual")}
        self.station.journal.record(EventId.STATION_CLOSED, **outcome_counts)
        printed = self.station.print_slip(rec)
        if printed:
            voter_slips = [r.serial for r in self.station.ledger.all() if r.kind in VOTER_SLIPS]
            span = {"first_slip": voter_slips[0], "last_slip": voter_slips[-1]} if voter_slips \
                else {}
            self.station.journal.record(EventId.CLOSING_REPORT_PRINTED, report_serial=rec.serial,
                                audit_head=self.station.journal.head_hash, **outcome_counts, **span)
        self.station.emit_turnout()
        result = self.station.status()
        result["closing_report"] = rec.serial
        result["closing_report_printed"] = printed
        result["outcome"] = self._outcome(rec)
        return result

    def _reprint(self, serial: str) -> dict[str, Any]:
        rec = self.station.ledger.get(serial.strip())
        if rec.state is SlipState.PRINTED:
            self.station.ledger.reprint_request(rec.serial)
            self.station.journal.record(EventId.SLIP_REPRINTED, slip_serial=rec.serial,
                                        reason="operator")
        self.station.print_pending()
        result = self.station.status()
        result["outcome"] = self._outcome(rec)
        return result

    def _document(self, number: str) -> dict[str, Any]:
        """The operator typed an ID document number."""
        return self.station.present_document(number, lookup="typed")

    def _export(self) -> dict[str, Any]:
        """Closed -> exported: write the signed station archive for the commission and CEC."""
        self.station.lifecycle.check(Command.EXPORT)
        if self.export_dir is None or self._sign is None:
            raise StationError("export is not configured on this kiosk", "no-export")
        archive = {
            "format": "kesp-station-export-v1",
            "station": self.station.station_id,
            "district": self.station.district,
            "device": self.station.device_id,
            "roll_hash": self.station.roll.package_hash,
            "audit_head": self.station.journal.head_hash,
            "counts": self.station.counts(),
            "marks": [
                {"voter": m.voter, "kiosk": m.kiosk, "seq": m.origin_seq, "method": m.method,
                 "slip": m.slip_serial, "hlc": m.hlc}
                for m in self.station.marks.all_marks()
            ],
            "slips": [
                {"serial": r.serial, "kind": r.kind.value, "state": r.state.value,
                 "originals": r.originals, "duplicates": r.duplicates}
                for r in self.station.ledger.all()
            ],
            "conflicts": [c.voter for c in self.station.marks.conflicts()],
        }
        body = json.dumps(archive, sort_keys=True, ensure_ascii=False, indent=1).encode("utf-8")
        digest = hashlib.sha256(body).hexdigest()
        name = f"export-{self.station.station_id}-{self.station.device_id}"
        atomic_write(self.export_dir / f"{name}.json", body, mode=0o600)
        atomic_write(self.export_dir / f"{name}.sig", self._sign(body).hex().encode() + b"\n",
                     mode=0o600)
        self.station.lifecycle.apply(Command.EXPORT)
        self.station.journal.record(EventId.STATION_EXPORTED, export_hash=digest)
        result = self.station.status()
        result["export"] = str(self.export_dir / f"{name}.json")
        return result

    def _revoke(self, kiosk: str) -> dict[str, Any]:
        """The commission revokes a peer kiosk (stolen, misbehaving) during the day.

        Its marks numbered above what this kiosk holds now are refused here and,
        as peer sync passes the revocation on, at every kiosk of the station; the
        ones held are flagged on the closing report (docs/PEERS.md, "Trust model").
        """
        kiosk = kiosk.strip()
        if not kiosk:
            raise StationError("revoke needs the kiosk id, e.g. kesp-agent revoke st-0042-k2")
        revocation = self.station.marks.revoke(kiosk, by=self.station.device_id)
        if revocation is not None:
            self.station.journal.record(EventId.PEER_REVOKED, mark_kiosk=kiosk,
                                        revoked_upto=revocation.upto_seq,
                                        revoked_by=self.station.device_id)
        result = self.station.status()
        result["revoked"] = [r.kiosk for r in self.station.marks.revocations()]
        return result

    def _manual(self, list_number: str) -> dict[str, Any]:
        """Commission decided to admit a voter who could not be identified."""
        if self.station.phase is not Phase.OPEN:
            raise StationError(f"station is {self.station.phase.value}, not open", "phase",
                               phase=self.station.phase.value, command="manual",
                               allowed=sorted(c.value for (p, c) in TRANSITIONS
                                              if p is self.station.phase))
        try:
            number = int(list_number.strip())
        except ValueError:
            raise StationError(f"list number {list_number!r} is not a whole number",
                               "bad-list-number", list_number=list_number) from None
        index = self.station.roll.by_list_number.get(number)
        if index is None:
            raise StationError(f"list number {number} is not on this station's list",
                               "unknown-list-number", list_number=number)
        before = {r.serial for r in self.station.ledger.all()}
        self.station.admit_manually(index)
        result = self.station.status()
        new = [r for r in self.station.ledger.all()
               if r.serial not in before and r.kind in VOTER_SLIPS
               and r.state is not SlipState.VOID]
        if new:
            result["outcome"] = self._outcome(new[-1])
        return result

