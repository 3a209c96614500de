"""A small fleet of kiosks in several states, sending real signed telemetry to a real broker.

Each kiosk is the real :class:`agent.telemetry.Telemetry` with its own keys,
outbox and (where it matters) a real :class:`agent.audit.AuditLog` journalled
through :class:`agent.journal.AuditJournal`, exactly as the agent wires them.
Their states cover every kind of kiosk row and alert the dashboard shows:

=============  =========  =====================================================
kiosk          district   state
=============  =========  =====================================================
bsk-1-k1       bishkek    healthy; roll of 400 voters installed
bsk-1-k2       bishkek    printer out of paper
bsk-2-k1       bishkek    cover open, sensor unplugged, a mark conflict logged
osh-1-k1       osh        healthy, but one audit event altered on the way
osh-1-k2       osh        sent once, then silent (session open, nothing more)
osh-1-k3       osh        registered, never heard from
osh-1-k4       osh        stopped (graceful death): offline
=============  =========  =====================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from ops_helpers import FAST, World

from agent.audit.event_ids import EventId
from agent.audit.log import AuditLog
from agent.station.journal import AuditJournal
from agent.telemetry import Telemetry

PLACES = {
    "bsk-1-k1": ("bishkek", "bsk-1"), "bsk-1-k2": ("bishkek", "bsk-1"),
    "bsk-2-k1": ("bishkek", "bsk-2"), "osh-1-k1": ("osh", "osh-1"),
    "osh-1-k2": ("osh", "osh-1"), "osh-1-k3": ("osh", "osh-1"), "osh-1-k4": ("osh", "osh-1"),
}
HEALTH = {
    "bsk-1-k1": {"printer": "ready", "sensor": "ready"},
    "bsk-1-k2": {"printer": "paper-out", "sensor": "ready"},
    "bsk-2-k1": {"printer": "cover-open", "sensor": "disconnected"},
    "osh-1-k1": {"printer": "ready", "sensor": "ready"},
    "osh-1-k2": {"printer": "ready", "sensor": "ready"},
    "osh-1-k4": {"printer": "ready", "sensor": "ready"},
}
TURNOUT = {  # identified by local hour
    "bsk-1-k1": {"08": 5, "09": 7}, "bsk-1-k2": {"08": 3, "09": 4, "10": 2},
    "bsk-2-k1": {"09": 6}, "osh-1-k1": {"07": 2, "08": 10, "09": 8},
    "osh-1-k2": {"08": 4}, "osh-1-k4": {"08": 1},
}
SILENT = "osh-1-k2"
NEVER = "osh-1-k3"
STOPPED = "osh-1-k4"
TAMPERED = "osh-1-k1"
CONFLICT = "bsk-2-k1"
ROLL_KIOSK = "bsk-1-k1"
SHA = "ab" * 32


def turnout_payload(hours: dict[str, int], refused: int = 1) -> dict[str, object]:
    """A kiosk's cumulative turnout message from its identifications per hour."""
    return {"identified": sum(hours.values()), "refused": refused, "not_identified": 0,
            "manual": 0, "by_hour": dict(sorted(hours.items()))}


@dataclasses.dataclass
class Fleet:
    world: World
    kiosks: dict[str, Telemetry]
    journals: dict[str, AuditJournal]

    def flush(self, timeout_s: float = 15.0) -> bool:
        return all(t.flush(timeout_s) for d, t in self.kiosks.items() if d != STOPPED)


def _health(device: str) -> Callable[[], dict[str, object]]:
    return lambda: dict(HEALTH[device])


def start_fleet(world: World, tmp: Path) -> Fleet:
    """Register all seven kiosks, start six, and send their turnout, events and health."""
    kiosks: dict[str, Telemetry] = {}
    journals: dict[str, AuditJournal] = {}
    tampered_log: AuditLog | None = None
    for device, (district, station) in PLACES.items():
        cfg = world.config(device, station, district)
        if device == NEVER:
            continue
        interval = 3600.0 if device == SILENT else 1.0
        cfg = dataclasses.replace(cfg, health_interval_s=interval)
        tel = Telemetry(cfg, world.keys[device], _health(device), tuning=FAST)
        tel.start()
        world.kiosks.append(tel)
        kiosks[device] = tel
        audit = AuditLog(tmp / "audit" / f"{device}.sqlite", world.keys[device].signing, device)
        if device == TAMPERED:
            # Its entries are sent by hand below, one of them altered on the way.
            tampered_log = audit
        else:
            journals[device] = AuditJournal(audit, tel)
            journals[device].record(EventId.AGENT_STARTED, software_version="0.1.0",
                                    boot_count=1, clean_previous_stop=True)
        tel.emit("turnout", turnout_payload(TURNOUT[device]))
    journals[ROLL_KIOSK].record(EventId.ROLL_INSTALLED, package_hash=SHA, roll_hash=SHA,
                                voters=400, election_id="e2026", station_id="bsk-1")
    journals[CONFLICT].record(EventId.MARK_CONFLICT, slip_serial="K02-000007",
                              mark_kiosk="bsk-2-k9", mark_seq=7, peer="bsk-2-k9")
    assert tampered_log is not None
    # An audit entry altered between the kiosk's log and ops: its hash no longer matches.
    first = tampered_log.append(EventId.AGENT_STARTED, software_version="0.1.0", boot_count=1,
                                clean_previous_stop=True)
    kiosks[TAMPERED].emit("event", first.to_payload())
    altered = tampered_log.append(EventId.STATION_OPENED, roll_hash=SHA).to_payload()
    altered["ts"] = "2026-10-04T01:00:00.000Z"
    kiosks[TAMPERED].emit("event", altered)
    fleet = Fleet(world, kiosks, journals)
    kiosks[STOPPED].flush(10)
    kiosks[STOPPED].stop(graceful=True)
    return fleet
