"""Renderers of ops state: the ``watch`` text view, Prometheus exposition, turnout CSV and PNG.

All pure functions of store snapshots, so the lead's demo, ``kesp-ops`` and
tests render the same thing.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.parameters import OpsTuning
from ops.store import DeviceState, Stats, TurnoutCounts, TurnoutSummary


@dataclass(frozen=True)
class Alert:
    """One problem worth a human's attention."""

    device: str
    kind: str  # offline | paper | sensor | clock | lost
    detail: str


def _status_of(app: Mapping[str, Any], name: str) -> str:
    value = app.get(name)
    if isinstance(value, Mapping):
        value = value.get("status", "")
    return str(value or "").lower()


_PRINTER_DOWN = ("disconnected", "error", "cover-open", "offline")
"""Printer states (besides paper) that stop a kiosk from serving voters."""


def alerts(devices: Sequence[DeviceState], now_ms: int, tuning: OpsTuning) -> list[Alert]:
    """Offline kiosks, paper low/out, printer/sensor/document-reader trouble, clock skew and
    lost records.

    Printer and sensor states are read from the kiosk's health ``app`` map
    (``printer``/``sensor``: a status string or ``{"status": ...}``).
    """
    out: list[Alert] = []
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
                 tuning: OpsTuning, now_ms: int | None = None) -> str:
    """The ``kesp-ops watch`` screen as text."""
    now_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    online = sum(1 for d in devices if d.online)
    lines = [
        f"KESP ops  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now_ms / 1000))}"
        f"   kiosks online {online}/{len(devices)}   messages accepted {stats.accepted}"
        f"   rejected {stats.rejected_total}",
        "",
        f"  {'district / station':<22} {'ident.':>8} {'refused':>8} {'not id.':>8} {'manual':>7}",
    ]
    for district in sorted(summary.by_district):
        lines.append(_counts_row(district, summary.by_district[district]))
        for station in sorted(s for s, d in summary.station_district.items() if d == district):
            lines.append(_counts_row("  " + station, summary.by_station[station]))
    found = alerts(devices, now_ms, tuning)
    lines += ["", f"alerts ({len(found)})"]
    lines += [f"  {a.kind:<8} {a.device:<20} {a.detail}" for a in found] or ["  none"]
    if stats.rejected:
        lines += ["", "rejected by reason: " + ", ".join(
            f"{r} {c}" for r, c in sorted(stats.rejected.items()))]
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_prometheus(summary: TurnoutSummary, devices: Sequence[DeviceState], stats: Stats,
                      tuning: OpsTuning, now_ms: int | None = None) -> str:
    """Prometheus text exposition format 0.0.4."""
    now_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    out = ["# HELP kesp_turnout Cumulative identification outcomes per station.",
           "# TYPE kesp_turnout gauge"]
    for station, c in sorted(summary.by_station.items()):
        district = summary.station_district[station]
        for outcome in ("identified", "refused", "not_identified", "manual"):
            out.append(f'kesp_turnout{{district="{_label(district)}",station="{_label(station)}",'
                       f'outcome="{outcome}"}} {getattr(c, outcome)}')
    out += ["# HELP kesp_devices Kiosks known to ops, by state.", "# TYPE kesp_devices gauge",
            f'kesp_devices{{state="online"}} {sum(1 for d in devices if d.online)}',
            f'kesp_devices{{state="offline"}} {sum(1 for d in devices if not d.online)}']
    by_kind: dict[str, int] = {}
    for a in alerts(devices, now_ms, tuning):
        by_kind[a.kind] = by_kind.get(a.kind, 0) + 1
    out += ["# HELP kesp_alerts Current alerts by kind.", "# TYPE kesp_alerts gauge"]
    out += [f'kesp_alerts{{kind="{k}"}} {by_kind.get(k, 0)}'
            for k in ("offline", "paper", "printer", "sensor", "document-reader", "clock",
                      "lost")]
    out += ["# HELP kesp_messages_accepted_total Verified telemetry messages.",
            "# TYPE kesp_messages_accepted_total counter",
            f"kesp_messages_accepted_total {stats.accepted}",
            "# HELP kesp_messages_rejected_total Refused telemetry messages by reason.",
            "# TYPE kesp_messages_rejected_total counter"]
    out += [f'kesp_messages_rejected_total{{reason="{r}"}} {c}'
            for r, c in sorted(stats.rejected.items())]
    return "\n".join(out) + "\n"


def turnout_csv(summary: TurnoutSummary) -> str:
    """district,station,hour,identified_in_hour,cumulative_identified + totals per station."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["district", "station", "hour", "identified_in_hour", "cumulative_identified",
                "refused", "not_identified", "manual"])
    for station, c in sorted(summary.by_station.items(),
                             key=lambda kv: (summary.station_district[kv[0]], kv[0])):
        total = 0
        for hour, count in sorted(c.by_hour.items()):
            total += count
            w.writerow([summary.station_district[station], station, hour, count, total, "", "",
                        ""])
        w.writerow([summary.station_district[station], station, "total", "", c.identified,
                    c.refused, c.not_identified, c.manual])
    return buf.getvalue()


def turnout_png(summary: TurnoutSummary, path: str | Path, *, width: int = 900,
                height: int = 500) -> None:
    """Line chart of cumulative identifications over the day, one line per district."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 70, width - 170, 40, height - 50
    hours = list(range(7, 21))
    series: dict[str, list[int]] = {}
    for district, c in sorted(summary.by_district.items()):
        total, points = 0, []
        for h in hours:
            total += c.by_hour.get(f"{h:02d}", 0)
            points.append(total)
        series[district] = points
    peak = max([1, *(p[-1] for p in series.values())])
    draw.text((left, 12), "Identified voters over the day, by district (cumulative)", fill="black")
    draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
    for i, h in enumerate(hours):
        x = left + (right - left) * i // (len(hours) - 1)
        draw.line([(x, bottom), (x, bottom + 4)], fill="black")
        draw.text((x - 8, bottom + 8), f"{h:02d}", fill="black")
    for k in range(5):
        value = peak * k // 4
        y = bottom - (bottom - top) * k // 4
        draw.text((8, y - 6), f"{value:>7}", fill="black")
        draw.line([(left, y), (right, y)], fill=(225, 225, 225))
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
               (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
    for idx, (district, points) in enumerate(series.items()):
        colour = palette[idx % len(palette)]
        xy = [(left + (right - left) * i // (len(hours) - 1),
               bottom - (bottom - top) * v // peak) for i, v in enumerate(points)]
        draw.line(xy, fill=colour, width=3)
        draw.text((right + 12, top + 16 * idx), f"{district} {points[-1]}", fill=colour)
    img.save(str(path), format="PNG")
