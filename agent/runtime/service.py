"""``kesp-agent run``: wire the kiosk together and serve voters until told to stop.

Start-up order matters and is the same on every boot:

1. configuration and keys (refuse to start on anything wrong, exit 78);
2. extraction and matching kernels warmed (Numba cache, :mod:`agent.match.warm`)
   while the roll is decrypted, so the first voter never waits for a compile
   or a cache load;
3. the roll re-verified and decrypted in memory (exit 78 if refused);
4. stores (marks, ledger, lifecycle, audit) and telemetry opened, then
   :meth:`Station.recover` finishes whatever a power cut interrupted;
5. the control socket served, ``READY=1`` sent to systemd.

Devices are not a reason to stop: a sensor, printer or document reader that is
absent at start or unplugged later is reopened in the background (polling with
a capped backoff, :mod:`agent.drivers.sensor.supervised` says why not udev
events), its state is shown (LED ring, ``kesp-agent status``, health telemetry,
a ``*-status-changed`` audit event) and no voter is identified until it is
back. Exit 78 is for what a restart cannot fix: configuration, keys, the roll.

SIGTERM ends the loop cleanly: ``agent-stopped`` is logged, a final audit
checkpoint is written, the telemetry session ends with its death message.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from nacl.signing import VerifyKey

from agent import __version__
from agent.audit.event_ids import EventId
from agent.audit.log import AuditLog
from agent.drivers.docreader.reader import MrzRead, MrzRejected, SerialDocumentReader
from agent.drivers.printer.printer import open_printer
from agent.drivers.printer.status import PrinterState, PrinterStatus
from agent.drivers.sensor.service import FingerprintSensor, open_sensor
from agent.drivers.sensor.supervised import SupervisedSensor
from agent.drivers.sensor.types import SensorStatus
from agent.drivers.transport import TransportUnavailableError
from agent.match import Matcher
from agent.match.warm import warm_up
from agent.peers.sync import (
    EVENT_CONFLICT,
    EVENT_MARK_ADMITTED,
    EVENT_MARK_QUARANTINED,
    EVENT_MARK_REJECTED,
    EVENT_PEER_REJECTED,
    EVENT_PEER_REVOKED,
    EVENT_PEER_STATUS,
    EVENT_RATE_EXCEEDED,
    PeerSync,
)
from agent.roll.installed import RollError, load_cec_key, load_roll
from agent.runtime import sdnotify
from agent.runtime.config import AgentConfig, ConfigError, load_config
from agent.runtime.control import ControlServer
from agent.runtime.durable import is_disk_full, make_dirs, remove_stale_temp_files
from agent.runtime.keys import KeyFileError, load_keys
from agent.station import parameters
from agent.station.journal import AuditJournal
from agent.station.ledger import Ledger
from agent.station.lifecycle import Command, Lifecycle, Phase, RollPin, read_roll_pin
from agent.station.marks import MarkPolicy, MarkStore
from agent.station.operator import Operator
from agent.station.station import Station, StationError
from agent.station.storage import StorageGuard, disk_full_line, free_bytes
from agent.telemetry import Telemetry
from agent.telemetry.health import clock_sync_state

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"^[a-z0-9][a-z0-9._:-]{0,63}$")
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 78  # EX_CONFIG: systemd's RestartPreventExitStatus keeps a broken kiosk from looping


@dataclass(frozen=True)
class StartupTimes:
    """Seconds spent in each start-up step (cold start is a tracked figure)."""

    warm_up_s: float
    roll_s: float
    total_s: float


def _timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` took."""
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


class Agent:
    """A running kiosk agent (see module docstring)."""

    def __init__(self, cfg: AgentConfig, *, sensor: FingerprintSensor | None = None) -> None:
        """Start everything ``cfg`` describes; ``sensor`` replaces the configured one
        (the USB-replay demo runs the agent in-process on a recorded sensor)."""
        t0 = time.monotonic()
        self.cfg = cfg
        state = cfg.state_path
        make_dirs(state)
        for root in (state, Path(cfg.key_dir)):
            files, size = remove_stale_temp_files(root)
            if files:
                log.info("removed %d temp file(s) of interrupted writes (%.1f MB) under %s",
                         files, size / 1e6, root)
        self.keys = load_keys(cfg.key_dir)
        cec_key = load_cec_key(Path(cfg.key_dir))
        self.matcher = Matcher()
        # The kernels load from the Numba cache while the roll is read and decrypted
        # (libsodium and NumPy copies release the GIL): start-up pays the longer of
        # the two, not their sum. A gallery built from templates waits for the warm-up.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="warm-up") as pool:
            # Tell systemd the start is alive while kernels compile (a software update).
            warming = pool.submit(sdnotify.extend_while, sdnotify.Notifier(),
                                  partial(_timed, warm_up))
            t1 = time.monotonic()
            self.roll = load_roll(state, self.keys, cec_key, cfg.station_id, self.matcher,
                                  write_cache=False, before_build=warming.result)
            t2 = time.monotonic()
            warm_s = warming.result()
        installed = RollPin(self.roll.roll.election_id, self.roll.roll.roll_version,
                            self.roll.package_hash)
        pin = read_roll_pin(state / "lifecycle.sqlite")
        refusal = pin.refusal(installed) if pin is not None else None
        if refusal is not None:
            raise RollError(f"{refusal}: a rolled-back or swapped roll is refused; reinstall the "
                            "roll package the commission opened with")
        self.roll.persist_cache(state, self.keys, keep_free=parameters.MIN_FREE_BYTES)
        self.audit = AuditLog(state / "audit.sqlite", self.keys.signing, cfg.device_id)
        clean = self.audit.previous_close_clean or self.audit.head_seq == 0
        self.marks = MarkStore(
            state / "marks.sqlite", cfg.device_id, self.keys.signing,
            {k.device_id: _verify_key(k.verify_key) for k in self.roll.roll.kiosks},
            policy=MarkPolicy(max_ahead_ms=int(cfg.peer_max_clock_ahead_s * 1000)),
            in_roll=self.roll.by_list_number.__contains__,
        )
        self.ledger = Ledger(state / "ledger.sqlite", cfg.station_id, cfg.device_id)
        self.lifecycle = Lifecycle(state / "lifecycle.sqlite")
        self._sensor_state = "unknown"
        self._reader = _ReaderState("not-configured" if not cfg.document_reader else "unknown")
        self.supervised: SupervisedSensor | None = None
        if sensor is None:
            where = cfg.sensor.port if cfg.sensor.kind == "grow-serial" else cfg.sensor.kind
            self.supervised = SupervisedSensor(lambda: open_sensor(cfg.sensor), where=where,
                                               on_change=self._sensor_changed,
                                               retry_max_s=cfg.device_retry_max_s)
            sensor = self.supervised
        self.sensor: FingerprintSensor = sensor
        self.printer = open_printer(cfg.printer)
        self.telemetry = Telemetry(cfg, self.keys, health=self.health)
        self.journal = AuditJournal(self.audit, self.telemetry)
        requeued = self.journal.requeue_unsent(self.telemetry.outbox.newest_payload("event"))
        if requeued:
            log.warning("%d audit entries a full disk kept from telemetry are queued now",
                        requeued)
        # A device coming or going reaches ops in the next health sample, not a minute later.
        self.audit.subscribe(lambda entry: self.telemetry.health_soon()
                             if entry.event in _DEVICE_EVENTS else None)
        self.peers = (PeerSync(cfg, self.keys, self.marks, on_event=self._peer_event)
                      if cfg.peers else None)
        self.station = Station(
            device_id=cfg.device_id, station_id=cfg.station_id, district=cfg.district,
            roll=self.roll, matcher=self.matcher, marks=self.marks, ledger=self.ledger,
            lifecycle=self.lifecycle, sensor=self.sensor, printer=self.printer,
            journal=self.journal, peers=self._peer_names,
            on_mark=self.peers.notify_local if self.peers else lambda _m: None,
            storage=StorageGuard(state),
            devices=self.devices,
            zone=cfg.zone(),
        )
        self.operator = Operator(self.station)
        self.operator.status_extras = self._status_extras
        self.operator.enable_export(state / "export", lambda body: self.keys.signing.sign(body)
                                    .signature)
        self.journal.record(
            EventId.AGENT_STARTED, software_version=__version__,
            boot_count=self.audit.count(EventId.AGENT_STARTED) + 1,
            clean_previous_stop=clean,
        )
        self.journal.record(EventId.ROLL_VERIFIED, roll_hash=self.roll.package_hash,
                            voters=len(self.roll.roll.voters))
        if clock_sync_state() == "unsynchronised":
            log.warning("the clock is not NTP-synchronised: stamping from the saved clock")
            self.journal.record(EventId.CLOCK_UNSYNCHRONISED)
        if self.lifecycle.phase is Phase.UNPROVISIONED:
            self.lifecycle.apply(Command.INSTALL)
        elif self.lifecycle.phase is not Phase.PROVISIONED and pin is None:
            self.lifecycle.pin_roll(installed)  # opened by a release that kept no pin
        self.station.recover()
        if self.supervised is not None:
            self.supervised.start()  # opens the sensor in the background, now and after faults
        self.control = ControlServer(cfg.control_socket, self.operator.command)
        self.times = StartupTimes(warm_s, t2 - t1, time.monotonic() - t0)
        self._stop = threading.Event()
        self._reader_thread: threading.Thread | None = None

    def _record_aside(self, event: EventId, **fields: object) -> None:
        """An audit event from a thread other than the voter's turn (a device came or
        went, a document was read, a peer's report).

        On a full disk it is not written (it is logged, and said in the storage
        guard's line) rather than killing that thread; the station invites nobody
        until there is room, as when a turn's write fails.
        """
        try:
            self.journal.record(event, **fields)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            log.error("audit event %s not written: disk full", event.value)
            if self.station.storage is not None:
                self.station.storage.hit(exc)

    def _read_documents(self) -> None:
        """Document-reader thread: MRZ reads select the next voter (lookup "mrz")."""
        path = self.cfg.document_reader
        reader: SerialDocumentReader | None = None
        while not self._stop.is_set():
            try:
                if reader is None:
                    reader = SerialDocumentReader.open(path)
                    self._note_reader("ready", "")
                outcome = reader.read(1.0)
            except (TransportUnavailableError, OSError) as exc:
                self._note_reader("unplugged", _reader_advice(path, exc))
                if reader is not None:
                    with contextlib.suppress(OSError):
                        reader.close()
                reader = None
                self._stop.wait(parameters.DOCUMENT_REOPEN_S)
                continue
            if isinstance(outcome, MrzRead):
                self._record_aside(EventId.DOCUMENT_READ, mrz_format=outcome.format)
                try:
                    self.station.present_document(outcome.mrz.document_number, lookup="mrz")
                except StationError as exc:
                    log.info("document read: %s", exc)
            elif isinstance(outcome, MrzRejected):
                self._record_aside(EventId.DOCUMENT_READ_FAILED, mrz_format=outcome.format,
                                    mrz_problem=outcome.problem)
        if reader is not None:
            reader.close()

    def _note_reader(self, status: str, detail: str) -> None:
        previous, self._reader = self._reader.state, _ReaderState(status, detail)
        if status != previous:
            if detail:
                log.warning("%s", detail)
            self._record_aside(EventId.DOCUMENT_READER_STATUS_CHANGED, status=status,
                                previous=previous)

    def _sensor_changed(self, status: SensorStatus) -> None:
        """The supervised sensor came, went or failed (called from its watcher thread)."""
        state = status.state.value
        previous, self._sensor_state = self._sensor_state, state
        if state != previous:
            self._record_aside(EventId.SENSOR_STATUS_CHANGED, status=state, previous=previous)

    def devices(self) -> dict[str, dict[str, str]]:
        """Each device's state and, when it is not usable, one line saying what to do.

        For ``kesp-agent status`` and the health telemetry; cheap (no printer I/O).
        """
        sensor = self.sensor.status()
        printer = self.station.last_printer_status
        out = {
            "sensor": {"state": sensor.state.value, "detail": sensor.detail},
            "printer": {"state": printer.state.value,
                        "detail": _printer_advice(self.cfg.printer.port, printer)},
        }
        if self.cfg.document_reader:
            out["document_reader"] = {"state": self._reader.state, "detail": self._reader.detail}
        return out

    def _status_extras(self) -> dict[str, Any]:
        """Peers and the uplink for ``kesp-agent status`` (no device traffic)."""
        uplink = self.telemetry.status()
        peers = [
            {"kiosk": p.kiosk, "state": p.state.value,
             "last_heard_s_ago": None if p.last_heard_s_ago is None
             else round(p.last_heard_s_ago),
             "protocol": p.protocol}
            for p in (self.peers.status() if self.peers else [])
        ]
        return {"peers": peers,
                **({"peer_protocol": self.peers.protocol} if self.peers else {}),
                "uplink": {"state": uplink.uplink.value, "outbox": uplink.outbox_depth},
                # Fallback for a station status without device states (kept if it has them).
                "devices": {"sensor": {"state": self.sensor.status().state.value},
                            "printer": {"state": self.printer.status().state.value}}}

    def _peer_names(self) -> list[str]:
        return [p.kiosk for p in self.peers.status()] if self.peers else []

    def _peer_event(self, name: str, fields: Mapping[str, object]) -> None:
        """Peer-sync reports become audit events (and so telemetry alerts)."""
        if name == EVENT_PEER_STATUS:
            self._record_aside(EventId.PEER_STATUS_CHANGED, peer=str(fields["peer"]),
                                status=str(fields["state"]), previous=str(fields["previous"]))
        elif name == EVENT_CONFLICT:
            marks = fields.get("marks")
            for m in marks if isinstance(marks, list) else []:
                self._record_aside(EventId.MARK_CONFLICT, slip_serial=str(m["slip_serial"]),
                                    mark_kiosk=str(m["kiosk"]), mark_seq=int(m["origin_seq"]),
                                    peer=str(fields["via_peer"]))
        elif name == EVENT_MARK_REJECTED:
            self._record_aside(EventId.MARK_REJECTED, peer=str(fields["via_peer"]),
                                mark_kiosk=str(fields["kiosk"]),
                                mark_seq=int(str(fields["origin_seq"])),
                                reason=str(fields["reason"]))
        elif name == EVENT_MARK_QUARANTINED:
            self._record_aside(EventId.MARK_QUARANTINED, peer=str(fields["via_peer"]),
                                mark_kiosk=str(fields["kiosk"]),
                                mark_seq=int(str(fields["origin_seq"])),
                                ahead_ms=min(int(str(fields["ahead_ms"])), 2**53))
        elif name == EVENT_MARK_ADMITTED:
            self._record_aside(EventId.MARK_ADMITTED, mark_kiosk=str(fields["kiosk"]),
                                mark_seq=int(str(fields["origin_seq"])))
        elif name == EVENT_RATE_EXCEEDED:
            self._record_aside(EventId.PEER_RATE_EXCEEDED, mark_kiosk=str(fields["kiosk"]),
                                marks_in_window=int(str(fields["marks"])),
                                window_s=int(str(fields["window_ms"])) // 1000)
        elif name == EVENT_PEER_REVOKED:
            self._record_aside(EventId.PEER_REVOKED, mark_kiosk=str(fields["kiosk"]),
                                revoked_upto=int(str(fields["upto_seq"])),
                                revoked_by=str(fields["by"]))
        elif name == EVENT_PEER_REJECTED:
            sender = str(fields.get("claimed_sender") or "unknown")
            versions = {k: int(str(fields[k])) for k in ("peer_protocol", "protocol")
                        if k in fields}
            self._record_aside(EventId.MARK_REJECTED, peer=sender if _TOKEN.match(sender)
                                else "unknown", mark_kiosk="unknown", mark_seq=0,
                                reason=str(fields["reason"]), **versions)

    def health(self) -> Mapping[str, object]:
        """Device and roll facts for the periodic health message (nothing personal)."""
        devices = self.devices()
        return {
            "sensor": devices["sensor"]["state"],
            "printer": self.printer.status().state.value,
            **({"document_reader": devices["document_reader"]["state"]}
               if "document_reader" in devices else {}),
            "device_problems": [d["detail"] for d in devices.values() if d["detail"]],
            "phase": self.lifecycle.phase.value,
            # a full state disk stops identification (storage.py): ops must hear it
            "storage": self.station.status_storage(),
            "roll_version": self.roll.roll.roll_version,
            "roll_hash": self.roll.package_hash,
            "software_version": __version__,
        }

    def request_stop(self) -> None:
        """Ask the main loop to end (signal handlers call this)."""
        self._stop.set()

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the process exit code."""
        self.telemetry.start()
        if self.peers is not None:
            self.peers.start()
        self.control.start()
        if self.cfg.document_reader:
            self._reader_thread = threading.Thread(target=self._read_documents,
                                                   name="docreader", daemon=True)
            self._reader_thread.start()
        notifier = sdnotify.Notifier()
        watchdog = sdnotify.Watchdog(notifier)
        notifier.ready(f"serving station {self.cfg.station_id}")
        log.info("agent ready in %.2fs (warm-up %.2fs, roll %.2fs)", self.times.total_s,
                 self.times.warm_up_s, self.times.roll_s)
        reason = "sigterm"
        try:
            while not self._stop.is_set():
                self.station.serve_once()
                watchdog.kick()
        except Exception:
            log.exception("fatal error in the main loop")
            reason = "fatal-error"
        notifier.stopping(reason)
        code = EXIT_OK if reason == "sigterm" else EXIT_FAILURE
        self.shutdown(reason, code)
        notifier.close()
        return code

    def shutdown(self, reason: str, code: int) -> None:
        """Log the stop, close stores and devices, end the telemetry session."""
        self.control.stop()
        if self.peers is not None:
            self.peers.stop()
        # On a full disk the log stays whole without these two: the next start sees an
        # unclean stop, as after a power cut.
        for what, write in (("agent-stopped", partial(
                                self.journal.record, EventId.AGENT_STOPPED,
                                stop_reason=reason, exit_code=code)),
                            ("the final audit checkpoint", self.audit.close)):
            try:
                write()
            except Exception as exc:
                if not is_disk_full(exc):
                    raise
                log.error("%s: %s not written", disk_full_line(
                    self.cfg.state_path, free_bytes(self.cfg.state_path)), what)
        self.telemetry.flush(parameters.SHUTDOWN_FLUSH_S)
        self.telemetry.stop(graceful=True)
        if self._reader_thread is not None:
            self._reader_thread.join(timeout=3.0)
        for closer in (self.sensor.close, self.marks.close, self.ledger.close,
                       self.lifecycle.close):
            try:
                closer()
            except Exception:  # closing must not mask the stop reason
                log.exception("error while closing")


_DEVICE_EVENTS = frozenset({EventId.SENSOR_STATUS_CHANGED, EventId.PRINTER_STATUS_CHANGED,
                            EventId.DOCUMENT_READER_STATUS_CHANGED})


@dataclass(frozen=True)
class _ReaderState:
    state: str
    detail: str = ""


def _reader_advice(path: str, exc: OSError) -> str:
    if Path(path).exists():
        return (f"document reader {path} cannot be opened ({exc}): check that document_reader "
                "names the reader's port; type document numbers meanwhile")
    return (f"document reader {path} not found: check its cable; type document numbers "
            "meanwhile (the agent waits for it)")


def _printer_advice(port: str, status: PrinterStatus) -> str:
    """One line for a printer that cannot print now: what the commission does about it."""
    fixes = {
        PrinterState.DISCONNECTED: "check the printer's cable and power (the agent waits for it)",
        PrinterState.PAPER_OUT: "put in a new paper roll",
        PrinterState.COVER_OPEN: "close the printer's cover",
        PrinterState.OFFLINE: "release the feed button, or switch the printer off and on",
        PrinterState.ERROR: "switch the printer off and on; call the technician if it stays",
    }
    if status.state is PrinterState.WRONG_DEVICE:
        return f"receipt printer {port}: {status.detail}"  # the detail ends with the fix
    fix = fixes.get(status.state)
    if fix is None:
        return ""
    if status.state is PrinterState.ERROR and status.flags is None:
        # no valid status bytes at all: something else is at that port, or a wrong profile
        fix = "check that printer.port names the printer and printer.profile its model"
    elif status.state is PrinterState.DISCONNECTED and Path(port).exists():
        fix += ", and that printer.port names the printer"
    why = f" ({status.detail})" if status.detail else ""
    return f"receipt printer {port} {status.state.value}{why}: {fix}"


def _verify_key(hex_key: str) -> VerifyKey:
    return VerifyKey(bytes.fromhex(hex_key))


def _start_failed_disk_full(state: Path, exc: BaseException) -> int:
    """One line for a start-up that a full disk stopped; exit 1, so that systemd starts
    the agent again (every store rolled back what it could not write: nothing is half
    written, and the next start finishes what this one began)."""
    print(f"kesp-agent: {disk_full_line(state, free_bytes(state), detail=f' ({exc})')}; "
          "the agent cannot start: free space (delete old logs or exports already "
          "collected), systemd starts it again", file=sys.stderr)
    return EXIT_FAILURE


def run(config_path: str) -> int:
    """Start the agent from a configuration file; returns the exit code."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print(f"kesp-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        agent = Agent(cfg)
    except (KeyFileError, RollError) as exc:
        if is_disk_full(exc):
            return _start_failed_disk_full(cfg.state_path, exc)
        print(f"kesp-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        return _start_failed_disk_full(cfg.state_path, exc)

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        agent.request_stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return agent.run()
