"""A snapshot of everything the dashboard shows, built from the state store in one pass.

The web server rebuilds a :class:`Board` every ``BoardTuning.refresh_s`` in a
background thread and serves pages from the newest one, so an HTTP request
never waits on the database for the national, district and station pages (a
kiosk's page reads its recent events with a time-out, see
:mod:`ops.web.server`).

Turnout over the day comes from the kiosks' own ``by_hour`` counts (the
kiosk's local hour of each identification; kiosks run on Asia/Bishkek time),
summed into cumulative series per station, district and the nation. Times of
day that ops itself shows (last heard, event times, "as of") are converted to
the dashboard's configured zone with :mod:`zoneinfo`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from ops.alerts import (
    Alert,
    IntegrityFacts,
    KioskStatus,
    all_alerts,
    kiosk_status,
    never_reported,
)
from ops.audit_watch import AuditWatch
from ops.parameters import BoardTuning, OpsTuning
from ops.registry import Registry
from ops.store import DeviceState, StateStore, Stats, TurnoutCounts

HOURS = tuple(f"{h:02d}" for h in range(24))


@dataclass(frozen=True)
class KioskRow:
    """One kiosk as the dashboard lists it."""

    device: str
    station: str
    district: str
    status: KioskStatus
    last_seen_ms: int | None
    """None for a registered kiosk ops has never heard from."""
    printer: str
    sensor: str
    outbox: int | None
    identified: int
    state: DeviceState | None


@dataclass(frozen=True)
class Board:
    """One consistent view of ops state for the dashboard, the metrics and ``watch``."""

    built_ms: int
    zone: ZoneInfo
    nation: TurnoutCounts
    by_district: Mapping[str, TurnoutCounts]
    by_station: Mapping[str, TurnoutCounts]
    by_device: Mapping[str, TurnoutCounts]
    station_district: Mapping[str, str]
    district_stations: Mapping[str, tuple[str, ...]]
    station_kiosks: Mapping[str, tuple[str, ...]]
    kiosks: Mapping[str, KioskRow]
    alerts: Sequence[Alert]
    stats: Stats
    audit_behind: int
    station_voters: Mapping[str, int]
    """Voters on each station's roll (as its kiosks reported it), where known."""

    def status_counts(self, kiosks: Sequence[str] | None = None) -> dict[KioskStatus, int]:
        """How many of ``kiosks`` (default all) have each :class:`KioskStatus`."""
        rows = self.kiosks.values() if kiosks is None else (self.kiosks[k] for k in kiosks)
        out = dict.fromkeys(KioskStatus, 0)
        for r in rows:
            out[r.status] += 1
        return out

    def local(self, ms: int) -> dt.datetime:
        """``ms`` (UTC epoch milliseconds) in the dashboard's zone."""
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).astimezone(self.zone)


def cumulative(counts: TurnoutCounts) -> list[tuple[str, int]]:
    """(hour "HH", identified up to the end of that hour) from the first to the last hour."""
    if not counts.by_hour:
        return []
    hours = sorted(counts.by_hour)
    first, last = HOURS.index(hours[0]), HOURS.index(hours[-1])
    total, out = 0, []
    for h in HOURS[first:last + 1]:
        total += counts.by_hour.get(h, 0)
        out.append((h, total))
    return out


def _device_status_text(health: Mapping[str, object] | None, name: str) -> str:
    app = (health or {}).get("app")
    if not isinstance(app, Mapping):
        return ""
    value = app.get(name)
    if isinstance(value, Mapping):
        value = value.get("status", "")
    return str(value or "")[:40]


def build_board(store: StateStore, registry: Registry, watch: AuditWatch, zone: ZoneInfo,
                board: BoardTuning, ops: OpsTuning, now_ms: int | None = None) -> Board:
    """Read the store once and derive turnout, kiosk status and alerts."""
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    refresh_audit(store, registry, watch, board.audit_rows_per_refresh)
    summary = store.turnout()
    devices = store.devices()
    stats = store.stats()
    facts: Mapping[str, IntegrityFacts] = watch.facts
    kiosks: dict[str, KioskRow] = {}
    for d in devices:
        health = d.health or {}
        depth = health.get("outbox_depth")
        kiosks[d.device] = KioskRow(
            d.device, d.station, d.district, kiosk_status(d, now_ms, board), d.last_seen_ms,
            _device_status_text(health, "printer"), _device_status_text(health, "sensor"),
            depth if isinstance(depth, int) and not isinstance(depth, bool) else None,
            summary.by_device.get(d.device, TurnoutCounts()).identified, d)
    for rec in never_reported(registry, devices):
        kiosks[rec.device_id] = KioskRow(rec.device_id, rec.station_id, rec.district,
                                         kiosk_status(None, now_ms, board), None, "", "", None,
                                         0, None)
    station_district = dict(summary.station_district)
    station_kiosks: dict[str, list[str]] = {}
    for row in sorted(kiosks.values(), key=lambda r: r.device):
        station_district.setdefault(row.station, row.district)
        station_kiosks.setdefault(row.station, []).append(row.device)
    district_stations: dict[str, list[str]] = {}
    for station, district in sorted(station_district.items()):
        district_stations.setdefault(district, []).append(station)
    station_voters: dict[str, int] = {}
    for device, f in facts.items():
        known = kiosks.get(device)
        if known is not None and f.voters is not None:
            station_voters[known.station] = max(station_voters.get(known.station, 0), f.voters)
    nation = TurnoutCounts()
    for c in summary.by_district.values():
        nation = nation + c
    alerts = all_alerts(devices, now_ms, board, ops, facts, registry)
    return Board(
        built_ms=now_ms, zone=zone, nation=nation, by_district=dict(summary.by_district),
        by_station=dict(summary.by_station), by_device=dict(summary.by_device),
        station_district=station_district,
        district_stations={k: tuple(v) for k, v in district_stations.items()},
        station_kiosks={k: tuple(v) for k, v in station_kiosks.items()},
        kiosks=kiosks, alerts=alerts, stats=stats, audit_behind=watch.behind,
        station_voters=station_voters,
    )


def refresh_audit(store: StateStore, registry: Registry, watch: AuditWatch,
                  budget: int) -> None:
    """Feed the watch the events stored since its last refresh, at most ``budget`` rows."""
    heads = store.event_heads()
    marks = watch.watermarks()
    behind = 0
    for device, (head, count) in sorted(heads.items()):
        last, read = marks.get(device, (0, 0))
        if read >= count:
            continue
        if budget <= 0:
            behind += count - read
            continue
        # Newer events only, unless one arrived late (below what was read): then all.
        # A re-read is never cut short (a kiosk sends a few thousand events a day).
        late = head <= last
        rows = store.events_after(device, 0 if late else last, count if late else budget)
        budget -= len(rows)
        for n, payload in rows:
            watch.feed(device, n, payload, registry)
        watch.read(device, len(rows), from_start=late)
        behind += max(0, count - (len(rows) if late else read + len(rows)))
    watch.behind = behind
