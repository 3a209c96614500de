"""Renderers of ops state: the ``watch`` text view and the Prometheus exposition.

The turnout report (CSV and chart) is :mod:`ops.report`.

All pure functions of store snapshots, so the lead's demo, ``kesp-ops`` and
tests render the same thing.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ops.broker_link import BrokerLink
from ops.parameters import OpsTuning
from ops.registry import Registry
from ops.store import DeviceState, Stats, TurnoutCounts, TurnoutSummary


@dataclass(frozen=True)
class Alert:
    """One problem worth a human's attention."""

    device: str
    kind: str  # offline|silent|paper|printer|sensor|document-reader|clock|lost|broker
    detail: str


def _status_of(app: Mapping[str, Any], name: str) -> str:
    value = app.get(name)
    if isinstance(value, Mapping):
        value = value.get("status", "")
    return str(value or "").lower()


_PRINTER_DOWN = ("disconnected", "wrong-device", "error", "cover-open", "offline")
"""Printer states (besides paper) that stop a kiosk from serving voters."""


def silent_kiosks(registry: Registry, devices: Sequence[DeviceState]) -> list[str]:
    """Active registered kiosks ops has never heard from, sorted by id."""
    heard = {d.device for d in devices}
    return sorted(d for d, rec in registry.devices.items() if rec.active and d not in heard)


def alerts(devices: Sequence[DeviceState], now_ms: int, tuning: OpsTuning,
           registry: Registry | None = None) -> list[Alert]:
    """Offline kiosks, paper low/out, printer/sensor/document-reader trouble, clock skew and
    lost records.

    Printer and sensor states are read from the kiosk's health ``app`` map
    (``printer``/``sensor``: a status string or ``{"status": ...}``). With the
    ``registry``, registered kiosks that never reported are listed as ``silent``.
    """
    out: list[Alert] = []
    if registry is not None:
        out += [Alert(d, "silent", f"registered {registry.devices[d].registered_at}, never "
                      "reported: is it powered, initialised and online?")
                for d in silent_kiosks(registry, devices)]
    for d in devices:
        silent_s = (now_ms - d.last_seen_ms) / 1000
        if not d.online or silent_s > tuning.offline_alert_s:
            out.append(Alert(d.device, "offline", f"last seen {silent_s / 60:.0f} min ago"))
        app = (d.health or {}).get("app") or {}
        if isinstance(app, Mapping):
            printer = _status_of(app, "printer")
            if "paper" in printer:
                out.append(Alert(d.device, "paper", printer))
            elif printer in _PRINTER_DOWN:
                out.append(Alert(d.device, "printer", printer))
            sensor = _status_of(app, "sensor")
            if sensor and sensor not in ("ready", "ok", "idle"):
                out.append(Alert(d.device, "sensor", sensor))
            reader = _status_of(app, "document_reader")
            if reader and reader not in ("ready", "unknown"):
                out.append(Alert(d.device, "document-reader", reader))
        system = (d.health or {}).get("system") or {}
        clock = system.get("clock") if isinstance(system, Mapping) else None
        if d.skew_ms is not None and abs(d.skew_ms) > tuning.skew_alert_s * 1000:
            out.append(Alert(d.device, "clock", f"skew {d.skew_ms / 1000:+.0f} s"))
        elif clock == "unsynchronised":
            out.append(Alert(d.device, "clock", "not NTP-synchronised"))
        if d.lost_n:
            out.append(Alert(d.device, "lost", f"{d.lost_n} records no longer retained"))
    return out


def _counts_row(name: str, c: TurnoutCounts) -> str:
    return (f"  {name:<22} {c.identified:>8} {c.refused:>8} {c.not_identified:>8} "
            f"{c.manual:>7}")


def render_watch(summary: TurnoutSummary, devices: Sequence[DeviceState], stats: Stats,
                 tuning: OpsTuning, now_ms: int | None = None, *,
                 registry: Registry | None = None, broker: BrokerLink | None = None,
                 zone: dt.tzinfo | None = None) -> str:
    """The ``kesp-ops watch`` screen as text.

    ``registry`` adds the registered kiosks that never reported, ``broker``
    the state of the ingesting connection, ``zone`` the clock's time zone
    (default: this machine's).
    """
    now_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    online = sum(1 for d in devices if d.online)
    silent = silent_kiosks(registry, devices) if registry is not None else []
    known = len(devices) + len(silent)
    clock = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).astimezone(zone)
    lines = [
        f"KESP ops  {clock:%Y-%m-%d %H:%M:%S %Z}"
        f"   kiosks online {online}/{known}"
        + (f" ({len(silent)} never reported)" if silent else "")
        + f"   messages accepted {stats.accepted}   rejected {stats.rejected_total}",
    ]
    if broker is not None:
        state = "connected" if broker.connected else \
            f"NOT CONNECTED: {broker.problem or 'connecting'}"
        lines.append(f"broker {broker.url}: {state}")
    if registry is None:
        lines.append("(registered kiosks that never reported are listed with --registry)")
    lines += [
        "",
        f"  {'district / station':<22} {'ident.':>8} {'refused':>8} {'not id.':>8} {'manual':>7}",
    ]
    for district in sorted(summary.by_district):
        lines.append(_counts_row(district, summary.by_district[district]))
        for station in sorted(s for s, d in summary.station_district.items() if d == district):
            lines.append(_counts_row("  " + station, summary.by_station[station]))
    found = alerts(devices, now_ms, tuning, registry)
    if broker is not None and not broker.connected and broker.problem:
        found.insert(0, Alert(broker.url, "broker", broker.problem))
    lines += ["", f"alerts ({len(found)})"]
    lines += [f"  {a.kind:<8} {a.device:<20} {a.detail}" for a in found] or ["  none"]
    if stats.rejected:
        lines += ["", "rejected by reason: " + ", ".join(
            f"{r} {c}" for r, c in sorted(stats.rejected.items()))]
    return "\n".join(lines) + "\n"


def broker_lines(broker: BrokerLink | None) -> list[str]:
    """Exposition lines of ``kesp_ops_broker_connected`` (none without a broker)."""
    if broker is None:
        return []
    return ["# HELP kesp_ops_broker_connected 1 while this ops instance is connected to "
            "the broker.", "# TYPE kesp_ops_broker_connected gauge",
            f"kesp_ops_broker_connected {int(broker.connected)}"]
