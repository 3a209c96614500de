"""Prometheus exposition (text format 0.0.4) of a dashboard snapshot, with per-kiosk series.

Hand-written rather than ``prometheus-client``: every value here is a gauge
read from a snapshot of the store (several ops instances share one store, so
in-process counters would be wrong), which with ``prometheus-client`` means
a custom collector yielding ``GaugeMetricFamily`` objects: the same code plus
a dependency. The format is checked by ``promtool check metrics`` in
``tests/ops/test_ops_prometheus.py``.

Label sets are bounded: ``device``, ``station`` and ``district`` come from
kiosks in the registry (about 7,000), ``kind`` from the closed
:class:`ops.alerts.AlertKind`, ``state`` from :class:`ops.alerts.KioskStatus`,
``reason`` from the verifier's closed list. Nothing free-form from a kiosk
(printer text, event fields) becomes a label. A kiosk's alert series exists
only while the alert is open, so the usual count is a few hundred series,
not kiosks x kinds.
"""

from __future__ import annotations

from collections.abc import Iterable

from ops.alerts import AlertKind, KioskStatus
from ops.board import Board
from ops.verify import REJECT_REASONS

OUTCOMES = ("identified", "refused", "not_identified", "manual")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _kiosk_labels(device: str, station: str, district: str) -> str:
    return (f'device="{_label(device)}",station="{_label(station)}",'
            f'district="{_label(district)}"')


def _family(name: str, kind: str, help_: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", *samples]


def render_metrics(board: Board) -> str:
    """The whole ``/metrics`` page for ``board``."""
    out: list[str] = []
    out += _family("kesp_turnout", "gauge", "Cumulative identification outcomes per station.", (
        f'kesp_turnout{{district="{_label(board.station_district[s])}",station="{_label(s)}",'
        f'outcome="{o}"}} {getattr(c, o)}'
        for s, c in sorted(board.by_station.items()) for o in OUTCOMES))
    counts = board.status_counts()
    out += _family("kesp_devices", "gauge", "Kiosks known to ops, by status.",
                   (f'kesp_devices{{state="{s.value}"}} {counts[s]}' for s in KioskStatus))
    by_kind = dict.fromkeys(AlertKind, 0)
    for a in board.alerts:
        by_kind[a.kind] += 1
    out += _family("kesp_alerts", "gauge", "Open alerts by kind.",
                   (f'kesp_alerts{{kind="{k.value}"}} {by_kind[k]}' for k in AlertKind))
    out += _family("kesp_messages_accepted_total", "counter",
                   "Verified telemetry messages (all ops instances).",
                   [f"kesp_messages_accepted_total {board.stats.accepted}"])
    out += _family("kesp_messages_rejected_total", "counter",
                   "Refused telemetry messages by reason (all ops instances).",
                   (f'kesp_messages_rejected_total{{reason="{r}"}} '
                    f'{board.stats.rejected.get(r, 0)}' for r in REJECT_REASONS))
    out += _family("kesp_audit_unchecked", "gauge",
                   "Kiosk records not yet read by the audit-chain check (0 = caught up).",
                   [f"kesp_audit_unchecked {board.audit_behind}"])
    rows = sorted(board.kiosks.values(), key=lambda r: r.device)
    up, seen, skew, outbox, ident = [], [], [], [], []
    for r in rows:
        lab = _kiosk_labels(r.device, r.station, r.district)
        up.append(f"kesp_kiosk_up{{{lab}}} {int(r.status is KioskStatus.ONLINE)}")
        if r.last_seen_ms is not None:
            seen.append(f"kesp_kiosk_last_seen_timestamp_seconds{{{lab}}} "
                        f"{r.last_seen_ms / 1000:.3f}")
        if r.state is not None and r.state.skew_ms is not None:
            # skew_ms is receipt minus send: a kiosk clock ahead of ops is negative there.
            skew.append(f"kesp_kiosk_clock_skew_seconds{{{lab}}} {-r.state.skew_ms / 1000:.3f}")
        if r.outbox is not None:
            outbox.append(f"kesp_kiosk_outbox_depth{{{lab}}} {r.outbox}")
        ident.append(f"kesp_kiosk_identified{{{lab}}} {r.identified}")
    out += _family("kesp_kiosk_up", "gauge",
                   "1 while the kiosk's session is open and it was heard recently.", up)
    out += _family("kesp_kiosk_last_seen_timestamp_seconds", "gauge",
                   "When ops last received a verified message from the kiosk (Unix time).", seen)
    out += _family("kesp_kiosk_clock_skew_seconds", "gauge",
                   "Kiosk clock minus ops clock on its last live message.", skew)
    out += _family("kesp_kiosk_outbox_depth", "gauge",
                   "Records queued on the kiosk and not yet acknowledged (last health).", outbox)
    out += _family("kesp_kiosk_identified", "gauge",
                   "Voters identified at the kiosk (its last turnout message).", ident)
    out += _family("kesp_kiosk_alert", "gauge",
                   "1 for each open alert of a kiosk (series absent when closed).",
                   (f"kesp_kiosk_alert{{{_kiosk_labels(a.device, a.station, a.district)},"
                    f'kind="{a.kind.value}"}} 1'
                    for a in sorted(board.alerts, key=lambda a: (a.device, a.kind.value))))
    return "\n".join(out) + "\n"
