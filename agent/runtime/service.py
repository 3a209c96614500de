"""``kesp-agent run``: wire the kiosk together and serve voters until told to stop.

Start-up order matters and is the same on every boot:

1. configuration and keys (refuse to start on anything wrong, exit 78);
2. extraction and matching kernels warmed (Numba cache, :mod:`agent.match.warm`)
   while the roll is decrypted, so the first voter never waits for a compile
   or a cache load;
3. the roll re-verified and decrypted in memory (exit 78 if refused);
4. stores (marks, ledger, lifecycle, audit) and telemetry opened, then
   :meth:`Station.recover` finishes whatever a power cut interrupted;
5. devices opened, the control socket served, ``READY=1`` sent to systemd.

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

from nacl.signing import VerifyKey

from agent import __version__
from agent.audit.event_ids import EventId
from agent.audit.log import AuditLog
from agent.drivers.docreader.reader import MrzRead, MrzRejected, SerialDocumentReader
from agent.drivers.printer.printer import open_printer
from agent.drivers.sensor.service import FingerprintSensor, open_sensor
from agent.drivers.transport import (
    DeviceUnavailable,
    TransportUnavailableError,
    preflight_serial,
)
from agent.match import Matcher
from agent.match.warm import warm_up
from agent.peers.sync import (
    EVENT_CONFLICT,
    EVENT_MARK_REJECTED,
    EVENT_PEER_REJECTED,
    EVENT_PEER_STATUS,
    PeerSync,
)
from agent.roll.installed import RollError, load_cec_key, load_roll
from agent.runtime import sdnotify
from agent.runtime.config import AgentConfig, ConfigError, load_config
from agent.runtime.control import ControlServer
from agent.runtime.keys import KeyFileError, load_keys
from agent.station import parameters
from agent.station.journal import AuditJournal
from agent.station.ledger import Ledger
from agent.station.lifecycle import Command, Lifecycle, Phase
from agent.station.marks import MarkStore
from agent.station.operator import Operator
from agent.station.station import Station, StationError
from agent.telemetry import Telemetry

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
        state.mkdir(parents=True, exist_ok=True)
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
        if cfg.sensor.kind == "grow-serial" and sensor is None:
            preflight_serial("sensor", cfg.sensor.port)
        if cfg.printer.kind == "escpos-serial":
            preflight_serial("printer", cfg.printer.port)
        self.roll.persist_cache(state, self.keys)
        self.audit = AuditLog(state / "audit.sqlite", self.keys.signing, cfg.device_id)
        clean = self.audit.previous_close_clean or self.audit.head_seq == 0
        self.marks = MarkStore(
            state / "marks.sqlite", cfg.device_id, self.keys.signing,
            {k.device_id: _verify_key(k.verify_key) for k in self.roll.roll.kiosks},
        )
        self.ledger = Ledger(state / "ledger.sqlite", cfg.station_id, cfg.device_id)
        self.lifecycle = Lifecycle(state / "lifecycle.sqlite")
        self.sensor = sensor if sensor is not None else open_sensor(cfg.sensor)
        self.printer = open_printer(cfg.printer)
        self.telemetry = Telemetry(cfg, self.keys, health=self.health)
        self.journal = AuditJournal(self.audit, self.telemetry)
        self.peers = (PeerSync(cfg, self.keys, self.marks, on_event=self._peer_event)
                      if cfg.peers else None)
        self.station = Station(
            device_id=cfg.device_id, station_id=cfg.station_id, district=cfg.district,
            roll=self.roll, matcher=self.matcher, marks=self.marks, ledger=self.ledger,
            lifecycle=self.lifecycle, sensor=self.sensor, printer=self.printer,
            journal=self.journal, peers=self._peer_names,
            on_mark=self.peers.notify_local if self.peers else lambda _m: None,
        )
        self.operator = Operator(self.station)
        self.operator.enable_export(state / "export", lambda body: self.keys.signing.sign(body)
                                    .signature)
        self.journal.record(
            EventId.AGENT_STARTED, software_version=__version__,
            boot_count=self.audit.count(EventId.AGENT_STARTED) + 1,
            clean_previous_stop=clean,
        )
        self.journal.record(EventId.ROLL_VERIFIED, roll_hash=self.roll.package_hash,
                            voters=len(self.roll.roll.voters))
        if self.lifecycle.phase is Phase.UNPROVISIONED:
            self.lifecycle.apply(Command.INSTALL)
        self.station.recover()
        self.control = ControlServer(cfg.control_socket, self.operator.command)
        self.times = StartupTimes(warm_s, t2 - t1, time.monotonic() - t0)
        self._stop = threading.Event()

    def _read_documents(self) -> None:
        """Document-reader thread: MRZ reads select the next voter (lookup "mrz")."""
        path = self.cfg.document_reader
        reader: SerialDocumentReader | None = None
        state = "unknown"
        while not self._stop.is_set():
            try:
                if reader is None:
                    reader = SerialDocumentReader.open(path)
                    state = self._note_reader(state, "ready")
                outcome = reader.read(1.0)
            except (TransportUnavailableError, OSError):
                state = self._note_reader(state, "unplugged")
                if reader is not None:
                    with contextlib.suppress(OSError):
                        reader.close()
                reader = None
                self._stop.wait(parameters.DOCUMENT_REOPEN_S)
                continue
            if isinstance(outcome, MrzRead):
                self.journal.record(EventId.DOCUMENT_READ, mrz_format=outcome.format)
                try:
                    self.station.present_document(outcome.mrz.document_number, lookup="mrz")
                except StationError as exc:
                    log.info("document read: %s", exc)
            elif isinstance(outcome, MrzRejected):
                self.journal.record(EventId.DOCUMENT_READ_FAILED, mrz_format=outcome.format,
                                    mrz_problem=outcome.problem)
        if reader is not None:
            reader.close()

    def _note_reader(self, previous: str, status: str) -> str:
        if status != previous:
            self.journal.record(EventId.DOCUMENT_READER_STATUS_CHANGED, status=status,
                                previous=previous)
        return status

    def _peer_names(self) -> list[str]:
        return [p.kiosk for p in self.peers.status()] if self.peers else []

    def _peer_event(self, name: str, fields: Mapping[str, object]) -> None:
        """Peer-sync reports become audit events (and so telemetry alerts)."""
        if name == EVENT_PEER_STATUS:
            self.journal.record(EventId.PEER_STATUS_CHANGED, peer=str(fields["peer"]),
                                status=str(fields["state"]), previous=str(fields["previous"]))
        elif name == EVENT_CONFLICT:
            marks = fields.get("marks")
            for m in marks if isinstance(marks, list) else []:
                self.journal.record(EventId.MARK_CONFLICT, slip_serial=str(m["slip_serial"]),
                                    mark_kiosk=str(m["kiosk"]), mark_seq=int(m["origin_seq"]),
                                    peer=str(fields["via_peer"]))
        elif name == EVENT_MARK_REJECTED:
            self.journal.record(EventId.MARK_REJECTED, peer=str(fields["via_peer"]),
                                mark_kiosk=str(fields["kiosk"]),
                                mark_seq=int(str(fields["origin_seq"])),
                                reason=str(fields["reason"]))
        elif name == EVENT_PEER_REJECTED:
            sender = str(fields.get("claimed_sender") or "unknown")
            self.journal.record(EventId.MARK_REJECTED, peer=sender if _TOKEN.match(sender)
                                else "unknown", mark_kiosk="unknown", mark_seq=0,
                                reason=str(fields["reason"]))

    def health(self) -> Mapping[str, object]:
        """Device and roll facts for the periodic health message (nothing personal)."""
        return {
            "sensor": self.sensor.status().state.value,
            "printer": self.printer.status().state.value,
            "phase": self.lifecycle.phase.value,
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
            threading.Thread(target=self._read_documents, name="docreader", daemon=True).start()
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
        self.journal.record(EventId.AGENT_STOPPED, stop_reason=reason, exit_code=code)
        self.audit.close()
        self.telemetry.flush(parameters.SHUTDOWN_FLUSH_S)
        self.telemetry.stop(graceful=True)
        for closer in (self.sensor.close, self.marks.close, self.ledger.close,
                       self.lifecycle.close):
            try:
                closer()
            except Exception:  # closing must not mask the stop reason
                log.exception("error while closing")


def _verify_key(hex_key: str) -> VerifyKey:
    return VerifyKey(bytes.fromhex(hex_key))


def run(config_path: str) -> int:
    """Start the agent from a configuration file; returns the exit code."""
    try:
        cfg = load_config(config_path)
        agent = Agent(cfg)
    except (ConfigError, KeyFileError, RollError, DeviceUnavailable) as exc:
        print(f"kesp-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        agent.request_stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return agent.run()
