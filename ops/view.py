"""The ``kesp-ops watch`` screen: a text rendering of the dashboard's snapshot.

It renders a :class:`ops.board.Board`, the snapshot the dashboard and
``/metrics`` are built from, so kiosk status and alerts are those of
:mod:`ops.alerts` in the dashboard's words (the :class:`~ops.alerts.KioskStatus`
and :class:`~ops.alerts.AlertKind` values); nothing here decides whether a
kiosk is silent or in trouble. The turnout report (CSV and chart) is
:mod:`ops.report`.
"""

from __future__ import annotations

from ops.alerts import KioskStatus
from ops.board import Board
from ops.broker_link import BrokerLink
from ops.store import TurnoutCounts

KIND_WIDTH = max(len("document_reader_missing"), len("alert"))
"""Width of the alert column: the longest kind name, so columns line up."""


def _counts_row(name: str, c: TurnoutCounts) -> str:
    return (f"  {name:<22} {c.identified:>8} {c.refused:>8} {c.not_identified:>8} "
            f"{c.manual:>7}")


def status_line(board: Board) -> str:
    """``kiosks 3/5 online, 1 silent, ...``: every :class:`KioskStatus` with its count."""
    counts = board.status_counts()
    total = sum(counts.values())
    rest = ", ".join(f"{counts[s]} {s.value}" for s in KioskStatus if s is not KioskStatus.ONLINE)
    return f"kiosks {counts[KioskStatus.ONLINE]}/{total} online, {rest}"


def render_watch(board: Board, *, broker: BrokerLink | None = None,
                 with_registry: bool = True) -> str:
    """The ``kesp-ops watch`` screen for ``board`` as text.

    ``broker`` adds the state of the ingesting connection; ``with_registry``
    False says that kiosks that never reported cannot be listed (the board was
    built without the device registry). Times are in the board's zone.
    """
    clock = board.local(board.built_ms)
    lines = [
        f"KESP ops  {clock:%Y-%m-%d %H:%M:%S %Z}   {status_line(board)}"
        f"   messages accepted {board.stats.accepted}   rejected {board.stats.rejected_total}",
    ]
    if broker is not None:
        state = "connected" if broker.connected else \
            f"NOT CONNECTED: {broker.problem or 'connecting'}"
        lines.append(f"broker {broker.url}: {state}")
    if not with_registry:
        lines.append("(registered kiosks that never reported are listed with --registry)")
    lines += [
        "",
        f"  {'district / station':<22} {'ident.':>8} {'refused':>8} {'not id.':>8} {'manual':>7}",
    ]
    for district in sorted(board.by_district):
        lines.append(_counts_row(district, board.by_district[district]))
        for station in sorted(s for s in board.by_station
                              if board.station_district.get(s) == district):
            lines.append(_counts_row("  " + station, board.by_station[station]))
    # The dashboard's alert table: severe first; kind, kiosk, station, district, detail.
    lines += ["", f"alerts ({len(board.alerts)})"]
    lines += [f"  {a.kind.value:<{KIND_WIDTH}} {a.device:<20} {a.station:<12} {a.district:<12} "
              f"{a.detail}".rstrip() for a in board.alerts] or ["  none"]
    if board.stats.rejected:
        lines += ["", "rejected by reason: " + ", ".join(
            f"{r} {c}" for r, c in sorted(board.stats.rejected.items()))]
    return "\n".join(lines) + "\n"


def broker_lines(broker: BrokerLink | None) -> list[str]:
    """Exposition lines of ``kesp_ops_broker_connected`` (none without a broker)."""
    if broker is None:
        return []
    return ["# HELP kesp_ops_broker_connected 1 while this ops instance is connected to "
            "the broker.", "# TYPE kesp_ops_broker_connected gauge",
            f"kesp_ops_broker_connected {int(broker.connected)}"]
