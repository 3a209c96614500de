"""Kiosk status and open alerts, derived from the telemetry kiosks already send.

The one source of kiosk status and alerts: the dashboard, the per-kiosk
Prometheus series and their alert rules, and the terminal ``kesp-ops watch``
all render what these pure functions return (through :func:`ops.board.build_board`),
so they cannot disagree about a kiosk:

* :func:`kiosk_status`: online / silent / offline / never_reported from the
  session and last-seen;
* :func:`never_reported`: registered kiosks ops has never heard from;
* :func:`device_alerts`: what needs a human at one kiosk, from its last health
  sample, its clock skew, its lost records and the integrity facts that the
  audit-chain watch (:mod:`ops.audit_watch`) collects from its events;
* :func:`all_alerts`: every kiosk's, the never-reported ones included.

Thresholds are in :mod:`ops.parameters` only (``BoardTuning``, ``OpsTuning``).

Sources, per alert kind (``docs/OPS.md`` lists what kiosks do not send yet):

==================  ==========================================================
``offline``         session ended (death) or nothing heard for ``offline_after_s``
``silent``          session open but nothing heard for ``silent_after_s``
``never_reported``  registered (active) in the device registry, nothing ever received
``paper_out``       health ``app.printer`` = ``paper-out``
``paper_low``       health ``app.printer`` = ``paper-near-end``
``cover_open``      health ``app.printer`` = ``cover-open``
``printer_missing`` health ``app.printer`` = ``disconnected`` or ``offline``
``printer_error``   health ``app.printer`` = ``error``
``sensor_missing``  health ``app.sensor`` = ``disconnected``
``sensor_fault``    health ``app.sensor`` = ``fault`` or ``error``
``clock_skew``      |ops receipt - kiosk send time| over ``OpsTuning.skew_alert_s``
``clock_unsynced``  health ``system.clock`` = ``unsynchronised``
``disk_low``        health ``system.disk_free`` below ``disk_low_fraction``, or ``app.storage``
                    = ``full`` (the kiosk stopped identifying for lack of space)
``outbox_backlog``  health ``outbox_depth`` above ``outbox_backlog``
``lost_records``    counter values the kiosk no longer retains and ops never got
``peer_conflict``   a ``mark-conflict`` event (two kiosks identified one voter)
``rogue_mark``      a ``mark-rejected``, ``mark-quarantined`` or ``peer-rate-exceeded`` event
                    (a peer's mark failed its checks, was stamped far ahead, or came too fast)
``roll_refused``    a ``roll-rejected`` or ``roll-verification-failed`` event
``audit_broken``    the kiosk's audit events do not chain (hash, prev, checkpoint)
==================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ops.parameters import BoardTuning, OpsTuning
from ops.registry import DeviceRecord, Registry
from ops.store import DeviceState


class KioskStatus(Enum):
    """Whether a kiosk is reporting (a Prometheus label value and a dashboard word)."""

    ONLINE = "online"
    """Session open and heard within ``BoardTuning.silent_after_s``."""
    SILENT = "silent"
    """Session open, but nothing heard for ``silent_after_s`` (a hung kiosk, a dead link
    whose will the broker has not published yet)."""
    OFFLINE = "offline"
    """Session ended (death) or nothing heard for ``offline_after_s``."""
    NEVER_REPORTED = "never_reported"
    """Registered, but ops never received anything from it (not yet powered on,
    initialised or connected). Not *silent*: a silent kiosk did report once."""


class AlertKind(Enum):
    """Closed set of alert kinds (a Prometheus label value: bounded)."""

    OFFLINE = "offline"
    SILENT = "silent"
    NEVER_REPORTED = "never_reported"
    PAPER_OUT = "paper_out"
    PAPER_LOW = "paper_low"
    COVER_OPEN = "cover_open"
    PRINTER_MISSING = "printer_missing"
    PRINTER_ERROR = "printer_error"
    SENSOR_MISSING = "sensor_missing"
    SENSOR_FAULT = "sensor_fault"
    DOCUMENT_READER_MISSING = "document_reader_missing"
    CLOCK_SKEW = "clock_skew"
    CLOCK_UNSYNCED = "clock_unsynced"
    DISK_LOW = "disk_low"
    OUTBOX_BACKLOG = "outbox_backlog"
    LOST_RECORDS = "lost_records"
    PEER_CONFLICT = "peer_conflict"
    ROGUE_MARK = "rogue_mark"
    ROLL_REFUSED = "roll_refused"
    AUDIT_BROKEN = "audit_broken"


SEVERE = frozenset({
    AlertKind.OFFLINE, AlertKind.NEVER_REPORTED, AlertKind.PAPER_OUT, AlertKind.COVER_OPEN,
    AlertKind.PRINTER_MISSING, AlertKind.PRINTER_ERROR, AlertKind.SENSOR_MISSING,
    AlertKind.SENSOR_FAULT, AlertKind.PEER_CONFLICT, AlertKind.ROGUE_MARK, AlertKind.ROLL_REFUSED,
    AlertKind.AUDIT_BROKEN,
})
"""Kinds that stop or endanger identification at the station (shown first, in red)."""

_PRINTER = {
    "paper-out": AlertKind.PAPER_OUT, "paper_out": AlertKind.PAPER_OUT,
    "paper-near-end": AlertKind.PAPER_LOW, "paper_near_end": AlertKind.PAPER_LOW,
    "cover-open": AlertKind.COVER_OPEN, "cover_open": AlertKind.COVER_OPEN,
    "disconnected": AlertKind.PRINTER_MISSING, "offline": AlertKind.PRINTER_MISSING,
    "error": AlertKind.PRINTER_ERROR,
    "wrong-device": AlertKind.PRINTER_MISSING,
}
_SENSOR = {
    "disconnected": AlertKind.SENSOR_MISSING, "wrong-device": AlertKind.SENSOR_MISSING,
    "fault": AlertKind.SENSOR_FAULT, "error": AlertKind.SENSOR_FAULT,
}


@dataclass(frozen=True)
class Alert:
    """One open problem at one kiosk."""

    device: str
    station: str
    district: str
    kind: AlertKind
    detail: str
    since_ms: int | None = None
    """When the fact behind it was reported (kiosk clock for events), if known."""

    @property
    def severe(self) -> bool:
        """True for kinds that stop or endanger identification."""
        return self.kind in SEVERE


@dataclass
class IntegrityFacts:
    """What the audit-chain watch learnt from one kiosk's events."""

    conflict_events: set[int] = field(default_factory=set)
    """Telemetry counters of the kiosk's ``mark-conflict`` events (a set: reading an
    event twice must not count it twice)."""
    rogue_events: set[int] = field(default_factory=set)
    roll_refused: str | None = None
    roll_seq: int = 0
    """Audit seq of the roll event ``roll_refused`` reflects (the newest wins)."""
    audit_problem: str | None = None
    voters: int | None = None
    """Voters on the kiosk's installed roll (``roll-installed``/``roll-verified``)."""

    @property
    def conflicts(self) -> int:
        """Voters identified at two kiosks, as this kiosk reported them."""
        return len(self.conflict_events)

    @property
    def rogue_marks(self) -> int:
        """Peer marks this kiosk refused."""
        return len(self.rogue_events)


def kiosk_status(d: DeviceState | None, now_ms: int, board: BoardTuning) -> KioskStatus:
    """Online, silent or offline, from the session state and the time since last heard;
    ``never_reported`` for a registered kiosk without a state (``d`` None)."""
    if d is None:
        return KioskStatus.NEVER_REPORTED
    quiet_s = (now_ms - d.last_seen_ms) / 1000
    if not d.online or quiet_s >= board.offline_after_s:
        return KioskStatus.OFFLINE
    if quiet_s >= board.silent_after_s:
        return KioskStatus.SILENT
    return KioskStatus.ONLINE


def _status_of(app: Mapping[str, Any], name: str) -> str:
    value = app.get(name)
    if isinstance(value, Mapping):
        value = value.get("status", "")
    return str(value or "").lower()


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def never_reported(registry: Registry, devices: Sequence[DeviceState]) -> list[DeviceRecord]:
    """Active registered kiosks ops has never heard from, by device id."""
    heard = {d.device for d in devices}
    return sorted((r for r in registry.devices.values() if r.active and r.device_id not in heard),
                  key=lambda r: r.device_id)


def never_reported_alert(rec: DeviceRecord) -> Alert:
    """The ``never_reported`` alert of a registered kiosk that never sent anything."""
    return Alert(rec.device_id, rec.station_id, rec.district, AlertKind.NEVER_REPORTED,
                 f"registered {rec.registered_at}, never reported: is it powered, "
                 "initialised and online?")


def device_alerts(d: DeviceState, now_ms: int, board: BoardTuning, ops: OpsTuning,
                  facts: IntegrityFacts | None = None) -> list[Alert]:
    """Open alerts of one kiosk, in :class:`AlertKind` order."""
    out: list[Alert] = []

    def add(kind: AlertKind, detail: str, since: int | None = None) -> None:
        out.append(Alert(d.device, d.station, d.district, kind, detail, since))

    status = kiosk_status(d, now_ms, board)
    quiet = _ago(max(0.0, (now_ms - d.last_seen_ms) / 1000))
    if status is KioskStatus.OFFLINE:
        add(AlertKind.OFFLINE, ("session ended, " if not d.online else "")
            + f"last heard {quiet} ago", d.last_seen_ms)
    elif status is KioskStatus.SILENT:
        add(AlertKind.SILENT, f"nothing heard for {quiet}", d.last_seen_ms)
    health = d.health or {}
    app = health.get("app")
    if isinstance(app, Mapping):
        printer = _status_of(app, "printer")
        if printer in _PRINTER:
            add(_PRINTER[printer], f"printer {printer}", d.health_ms)
        sensor = _status_of(app, "sensor")
        if sensor in _SENSOR:
            add(_SENSOR[sensor], f"sensor {sensor}", d.health_ms)
        if _status_of(app, "storage") == "full":
            add(AlertKind.DISK_LOW, "state disk full: nobody is identified", d.health_ms)
        if _status_of(app, "document_reader") == "unplugged":
            # not severe: the station types document numbers meanwhile
            add(AlertKind.DOCUMENT_READER_MISSING, "document reader unplugged", d.health_ms)
    if d.skew_ms is not None and abs(d.skew_ms) > ops.skew_alert_s * 1000:
        add(AlertKind.CLOCK_SKEW, f"kiosk clock {-d.skew_ms / 1000:+.0f} s off ops")
    system = health.get("system")
    if isinstance(system, Mapping):
        if system.get("clock") == "unsynchronised":
            add(AlertKind.CLOCK_UNSYNCED, "clock not NTP-synchronised", d.health_ms)
        disk = system.get("disk_free")
        if isinstance(disk, int | float) and not isinstance(disk, bool) \
                and disk < board.disk_low_fraction:
            add(AlertKind.DISK_LOW, f"{disk * 100:.1f} % disk free", d.health_ms)
    depth = health.get("outbox_depth")
    if isinstance(depth, int) and not isinstance(depth, bool) and depth > board.outbox_backlog:
        add(AlertKind.OUTBOX_BACKLOG, f"{depth} records not yet delivered", d.health_ms)
    if d.lost_n:
        add(AlertKind.LOST_RECORDS, f"{d.lost_n} records no longer retained by the kiosk")
    if facts is not None:
        if facts.conflicts:
            add(AlertKind.PEER_CONFLICT, f"{facts.conflicts} voter(s) identified at two kiosks")
        if facts.rogue_marks:
            add(AlertKind.ROGUE_MARK, f"{facts.rogue_marks} peer mark(s) refused")
        if facts.roll_refused is not None:
            add(AlertKind.ROLL_REFUSED, facts.roll_refused)
        if facts.audit_problem is not None:
            add(AlertKind.AUDIT_BROKEN, facts.audit_problem)
    order = list(AlertKind)
    out.sort(key=lambda a: order.index(a.kind))
    return out


def all_alerts(devices: Sequence[DeviceState], now_ms: int, board: BoardTuning,
               ops: OpsTuning, facts: Mapping[str, IntegrityFacts],
               registry: Registry | None = None) -> list[Alert]:
    """Open alerts of every kiosk: severe first, then by kind, district, station, device.

    With the ``registry``, each active registered kiosk that never reported has
    a ``never_reported`` alert.
    """
    out = [a for d in devices for a in device_alerts(d, now_ms, board, ops, facts.get(d.device))]
    if registry is not None:
        out += [never_reported_alert(rec) for rec in never_reported(registry, devices)]
    order = list(AlertKind)
    out.sort(key=lambda a: (not a.severe, order.index(a.kind), a.district, a.station, a.device))
    return out
