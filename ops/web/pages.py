"""Server-rendered pages of the ops dashboard: pure functions of a :class:`ops.board.Board`.

Each page is built with a :class:`Live` collector: every part that changes
during the day is wrapped in ``<div data-live="key">`` and also recorded by
key, so ``/api/live?page=<path>`` answers the same parts as JSON and the
page's script (``static/board.js``) swaps them in without a reload. There is
one renderer per page, so the live update can never drift from the page.
Every value that comes from telemetry is HTML-escaped here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from ops.alerts import Alert, KioskStatus
from ops.board import Board, KioskRow, cumulative
from ops.store import TurnoutCounts

MAX_ALERT_ROWS = 200
MAX_KIOSK_ROWS = 1000
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


class NotFoundError(LookupError):
    """The page names a district, station or kiosk ops does not know."""


@dataclass
class Live:
    """Collects the live parts of one page."""

    blocks: dict[str, str] = field(default_factory=dict)

    def block(self, key: str, html: str, tag: str = "div") -> str:
        """``html`` wrapped so the script can replace it; recorded under ``key``."""
        self.blocks[key] = html
        return f'<{tag} data-live="{escape(key)}">{html}</{tag}>'


@dataclass(frozen=True)
class Page:
    """A rendered page: its title, body and live parts."""

    title: str
    body: str
    live: Mapping[str, str]


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _href(kind: str, ident: str) -> str:
    from urllib.parse import quote

    return f"/{kind}/{quote(ident, safe='')}"


def _hm(board: Board, ms: int | None) -> str:
    if ms is None:
        return "never"
    return board.local(ms).strftime("%H:%M:%S")


def _pct(part: int, whole: int | None) -> str:
    if not whole:
        return ""
    return f"{100 * part / whole:.2f} %"


@dataclass(frozen=True)
class RollShare:
    """Turnout where it can be computed: stations whose kiosks reported their roll size."""

    identified: int
    voters: int
    stations: int


def roll_share(board: Board, stations: Sequence[str]) -> RollShare | None:
    """Identified voters over roll sizes, counting only stations whose roll size is known."""
    known = [s for s in stations if board.station_voters.get(s)]
    if not known:
        return None
    return RollShare(sum(board.by_station.get(s, TurnoutCounts()).identified for s in known),
                     sum(board.station_voters[s] for s in known), len(known))


def _figures(c: TurnoutCounts, share: RollShare | None) -> str:
    cells = [("identified", c.identified), ("refused (already identified)", c.refused),
             ("not identified", c.not_identified), ("manual decisions", c.manual)]
    html = "".join(f'<div class="fig"><span class="num" data-fig="{_e(k.split()[0])}">{v:,}'
                   f'</span><span class="lbl">{_e(k)}</span></div>' for k, v in cells)
    if share is not None:
        where = "1 station" if share.stations == 1 else f"{share.stations:,} stations"
        html += (f'<div class="fig"><span class="num" data-fig="turnout">'
                 f'{_e(_pct(share.identified, share.voters))}</span><span class="lbl">turnout: '
                 f'{share.voters:,} voters on the rolls of {where} reporting them</span></div>')
    return f'<div class="figs">{html}</div>'


def _status_line(counts: Mapping[KioskStatus, int], link: str | None = None) -> str:
    parts = []
    for s in KioskStatus:
        text = f'<span class="st-{s.value}" data-status="{s.value}">{counts[s]:,}</span> {s.value}'
        if link is not None and s is not KioskStatus.ONLINE and counts[s]:
            text = f'<a href="/kiosks?status={s.value}{link}">{text}</a>'
        parts.append(text)
    return '<p class="kiosks">Kiosks: ' + " &middot; ".join(parts) + "</p>"


def svg_chart(series: Sequence[tuple[str, TurnoutCounts]], width: int = 720,
              height: int = 260) -> str:
    """Cumulative identified voters by local hour, one line per series, as inline SVG."""
    lines = [(name, cumulative(c)) for name, c in series]
    hours = sorted({h for _, pts in lines for h, _ in pts} | {"07", "20"})
    first, last = int(hours[0]), int(hours[-1])
    peak = max([1, *(v for _, pts in lines for _, v in pts)])
    left, right, top, bottom = 60, width - 170, 15, height - 30

    def x(h: int) -> float:
        return left + (right - left) * (h - first) / max(1, last - first)

    def y(v: int) -> float:
        return bottom - (bottom - top) * v / peak

    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="cumulative identified voters by hour">']
    for k in range(5):
        v = peak * k // 4
        out.append(f'<line x1="{left}" x2="{right}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                   f'class="grid"/><text x="{left - 6}" y="{y(v) + 4:.1f}" '
                   f'text-anchor="end">{v:,}</text>')
    for h in range(first, last + 1):
        out.append(f'<text x="{x(h):.1f}" y="{height - 10}" text-anchor="middle">{h:02d}</text>')
    for i, (name, pts) in enumerate(lines):
        colour = PALETTE[i % len(PALETTE)]
        if pts:
            xy = " ".join(f"{x(int(h)):.1f},{y(v):.1f}" for h, v in pts)
            out.append(f'<polyline points="{xy}" fill="none" stroke="{colour}" '
                       f'stroke-width="2.5"/>')
        out.append(f'<text x="{right + 10}" y="{top + 14 + 16 * i}" fill="{colour}">'
                   f'{_e(name[:18])} {pts[-1][1] if pts else 0:,}</text>')
    out.append("</svg>")
    return "".join(out)


def _table(cls: str, headers: Sequence[str], rows: Sequence[str], total: int) -> str:
    """A table of the first rows, with "and N more" when ``total`` is larger."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    more = total - len(rows)
    tail = f"<p>and {more:,} more</p>" if more > 0 else ""
    return (f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>' + "".join(rows)
            + "</tbody></table>" + tail)


def _alerts_table(board: Board, alerts: Sequence[Alert]) -> str:
    if not alerts:
        return '<p class="ok">No open alerts.</p>'
    rows = []
    for a in alerts[:MAX_ALERT_ROWS]:
        cls = "sev" if a.severe else "warn"
        rows.append(f'<tr class="{cls}"><td>{_e(a.kind.value)}</td>'
                    f'<td><a href="{_href("kiosk", a.device)}">{_e(a.device)}</a></td>'
                    f'<td><a href="{_href("station", a.station)}">{_e(a.station)}</a></td>'
                    f'<td>{_e(a.district)}</td><td>{_e(a.detail)}</td></tr>')
    return _table("alerts", ("alert", "kiosk", "station", "district", "detail"), rows,
                  len(alerts))


def _counts_table(board: Board, kind: str, names: Sequence[str],
                  counts: Mapping[str, TurnoutCounts], kiosks_of: Mapping[str, Sequence[str]],
                  shares: Mapping[str, RollShare | None]) -> str:
    rows = []
    for name in names:
        c = counts.get(name, TurnoutCounts())
        st = board.status_counts(kiosks_of.get(name, ()))
        total = sum(st.values())
        share = shares.get(name)
        pct = _pct(share.identified, share.voters) if share is not None else ""
        rows.append(
            f'<tr data-row="{_e(name)}"><td><a href="{_href(kind, name)}">{_e(name)}</a></td>'
            f'<td class="n">{st[KioskStatus.ONLINE]}/{total}</td>'
            f'<td class="n" data-col="identified">{c.identified:,}</td>'
            f'<td class="n">{_e(pct)}</td>'
            f'<td class="n">{c.refused:,}</td><td class="n">{c.not_identified:,}</td>'
            f'<td class="n">{c.manual:,}</td></tr>')
    return _table("counts", (kind, "kiosks online", "identified", "turnout", "refused",
                             "not identified", "manual"), rows, len(rows))


def _kiosk_table(board: Board, rows: Sequence[KioskRow]) -> str:
    out = []
    for r in rows[:MAX_KIOSK_ROWS]:
        out.append(
            f'<tr data-row="{_e(r.device)}"><td><a href="{_href("kiosk", r.device)}">'
            f'{_e(r.device)}</a></td><td><a href="{_href("station", r.station)}">'
            f'{_e(r.station)}</a></td><td class="st-{r.status.value}">{r.status.value}</td>'
            f'<td>{_hm(board, r.last_seen_ms)}</td><td>{_e(r.printer)}</td>'
            f'<td>{_e(r.sensor)}</td><td class="n">{"" if r.outbox is None else r.outbox}</td>'
            f'<td class="n" data-col="identified">{r.identified:,}</td></tr>')
    return _table("kiosk-list", ("kiosk", "station", "status", "last heard", "printer",
                                 "sensor", "outbox", "identified"), out, len(rows))


def _asof(board: Board, live: Live) -> str:
    stamp = board.local(board.built_ms).strftime("%Y-%m-%d %H:%M:%S")
    behind = (f" &middot; audit check {board.audit_behind:,} records behind"
              if board.audit_behind else "")
    return live.block("asof", f'as of <time>{stamp}</time> {_e(board.zone.key)}{behind}',
                      "span")


def national(board: Board) -> Page:
    """``/``: the nation, its districts and every open alert."""
    lv = Live()
    districts = sorted(board.district_stations)
    kiosks_of = {d: [k for s in board.district_stations[d] for k in board.station_kiosks[s]]
                 for d in districts}
    shares = {d: roll_share(board, board.district_stations[d]) for d in districts}
    top = sorted(districts, key=lambda d: -board.by_district.get(d, TurnoutCounts()).identified)
    body = (
        f'<h1>Turnout, nation</h1><p class="asof">{_asof(board, lv)}</p>'
        + lv.block("figures", _figures(board.nation, roll_share(board, list(
            board.station_kiosks))))
        + lv.block("status", _status_line(board.status_counts(), ""))
        + "<h2>Identified voters over the day (cumulative, local time)</h2>"
        + lv.block("chart", svg_chart(
            [("nation", board.nation)]
            + [(d, board.by_district[d]) for d in top[:len(PALETTE) - 1]
               if d in board.by_district]))
        + f'<h2>Open alerts (<span data-live="nalerts">{len(board.alerts):,}</span>)</h2>'
        + lv.block("alerts", _alerts_table(board, board.alerts))
        + "<h2>Districts</h2>"
        + lv.block("districts", _counts_table(board, "district", districts, board.by_district,
                                              kiosks_of, shares))
    )
    lv.blocks["nalerts"] = f"{len(board.alerts):,}"
    return Page("KESP ops: nation", body, lv.blocks)


def district(board: Board, name: str) -> Page:
    """``/district/<id>``: one district, its stations and alerts."""
    if name not in board.district_stations:
        raise NotFoundError(f"district {name!r}")
    lv = Live()
    stations = list(board.district_stations[name])
    kiosks = [k for s in stations for k in board.station_kiosks[s]]
    alerts = [a for a in board.alerts if a.district == name]
    counts = board.by_district.get(name, TurnoutCounts())
    body = (
        f'<p><a href="/">nation</a> &rsaquo;</p><h1>District {_e(name)}</h1>'
        f'<p class="asof">{_asof(board, lv)}</p>'
        + lv.block("figures", _figures(counts, roll_share(board, stations)))
        + lv.block("status", _status_line(board.status_counts(kiosks),
                                          f"&amp;district={_e(name)}"))
        + "<h2>Identified voters over the day (cumulative, local time)</h2>"
        + lv.block("chart", svg_chart([(name, counts)]))
        + f"<h2>Open alerts ({len(alerts):,})</h2>" + lv.block("alerts",
                                                               _alerts_table(board, alerts))
        + "<h2>Stations</h2>"
        + lv.block("stations", _counts_table(board, "station", stations, board.by_station,
                                             board.station_kiosks,
                                             {s: roll_share(board, [s]) for s in stations}))
    )
    return Page(f"KESP ops: district {name}", body, lv.blocks)


def station(board: Board, name: str) -> Page:
    """``/station/<id>``: one station and its kiosks."""
    if name not in board.station_kiosks:
        raise NotFoundError(f"station {name!r}")
    lv = Live()
    kiosks = board.station_kiosks[name]
    district_name = board.station_district.get(name, "")
    counts = board.by_station.get(name, TurnoutCounts())
    alerts = [a for a in board.alerts if a.station == name]
    body = (
        f'<p><a href="/">nation</a> &rsaquo; <a href="{_href("district", district_name)}">'
        f'{_e(district_name)}</a> &rsaquo;</p><h1>Station {_e(name)}</h1>'
        f'<p class="asof">{_asof(board, lv)}</p>'
        + lv.block("figures", _figures(counts, roll_share(board, [name])))
        + lv.block("status", _status_line(board.status_counts(kiosks)))
        + "<h2>Identified voters over the day (cumulative, local time)</h2>"
        + lv.block("chart", svg_chart([(name, counts)]
                                      + [(k, board.by_device.get(k, TurnoutCounts()))
                                         for k in kiosks[:len(PALETTE) - 1]]))
        + f"<h2>Open alerts ({len(alerts):,})</h2>" + lv.block("alerts",
                                                               _alerts_table(board, alerts))
        + "<h2>Kiosks</h2>"
        + lv.block("kiosks", _kiosk_table(board, [board.kiosks[k] for k in kiosks]))
    )
    return Page(f"KESP ops: station {name}", body, lv.blocks)


def _event_detail(payload: Mapping[str, Any]) -> str:
    fields = payload.get("fields")
    if not isinstance(fields, Mapping) or not fields:
        return ""
    text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(fields.items())
                     if k != "signature")
    return text[:200]


def kiosk(board: Board, name: str,
          events: Sequence[tuple[int, int, str, Mapping[str, Any], bool]]) -> Page:
    """``/kiosk/<id>``: one kiosk's state, alerts and recent events (newest first)."""
    row = board.kiosks.get(name)
    if row is None:
        raise NotFoundError(f"kiosk {name!r}")
    lv = Live()
    d = row.state
    alerts = [a for a in board.alerts if a.device == name]
    facts = [("status", row.status.value), ("last heard", _hm(board, row.last_seen_ms)),
             ("printer", row.printer or "-"), ("sensor", row.sensor or "-"),
             ("outbox (not yet delivered)", "-" if row.outbox is None else str(row.outbox))]
    if d is not None:
        # round, then + 0.0: a skew of -0.04 s reads +0.0, never -0.0
        skew = "-" if d.skew_ms is None else f"{round(-d.skew_ms / 1000, 1) + 0.0:+.1f} s"
        facts += [("clock skew", skew),
                  ("session (boot)", str(d.birth_boot)),
                  ("records received", f"{d.contig_n:,} contiguous of {d.max_n:,}"),
                  ("records lost", str(d.lost_n))]
    c = board.by_device.get(name, TurnoutCounts())
    facts_html = "".join(f'<tr><th>{_e(k)}</th><td data-fact="{_e(k.split()[0])}">{_e(v)}'
                         f"</td></tr>" for k, v in facts)
    ev_rows = [
        f'<tr><td class="n">{n}</td><td>{_hm(board, wall)}</td>'
        f'<td>{_e(p.get("seq", ""))}</td><td>{_e(ev)}</td>'
        f'<td>{"replayed" if hist else ""}</td><td>{_e(_event_detail(p))}</td></tr>'
        for n, wall, ev, p, hist in events]
    events_html = _table("events", ("n", "time (kiosk clock)", "audit seq", "event", "",
                                    "fields"), ev_rows, len(ev_rows)) \
        if events else "<p>No events yet.</p>"
    body = (
        f'<p><a href="/">nation</a> &rsaquo; <a href="{_href("district", row.district)}">'
        f'{_e(row.district)}</a> &rsaquo; <a href="{_href("station", row.station)}">'
        f'{_e(row.station)}</a> &rsaquo;</p><h1>Kiosk {_e(name)}</h1>'
        f'<p class="asof">{_asof(board, lv)}</p>'
        + lv.block("facts", f'<table class="facts">{facts_html}</table>')
        + lv.block("figures", _figures(c, None))
        + f"<h2>Open alerts ({len(alerts):,})</h2>" + lv.block("alerts",
                                                               _alerts_table(board, alerts))
        + f"<h2>Recent events ({len(events)})</h2>" + lv.block("events", events_html)
    )
    return Page(f"KESP ops: kiosk {name}", body, lv.blocks)


def kiosk_list(board: Board, status: KioskStatus | None, district_name: str | None) -> Page:
    """``/kiosks?status=&district=``: kiosks filtered by status and district."""
    if district_name is not None and district_name not in board.district_stations:
        raise NotFoundError(f"district {district_name!r}")
    lv = Live()
    rows = [r for r in sorted(board.kiosks.values(), key=lambda r: (r.district, r.station,
                                                                     r.device))
            if (status is None or r.status is status)
            and (district_name is None or r.district == district_name)]
    what = f"{status.value if status else 'all'} kiosks" + (
        f" in {district_name}" if district_name else "")
    body = (f'<p><a href="/">nation</a> &rsaquo;</p><h1>{_e(what.capitalize())}</h1>'
            f'<p class="asof">{_asof(board, lv)}</p>'
            + lv.block("kiosks", f"<p>{len(rows):,} kiosks</p>" + _kiosk_table(board, rows)))
    return Page(f"KESP ops: {what}", body, lv.blocks)


def document(page: Page, refresh_s: float) -> str:
    """The whole HTML document around a page (the script polls ``/api/live``)."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{_e(page.title)}</title><link rel="stylesheet" href="/static/board.css">'
        f'</head><body data-refresh="{refresh_s:g}"><header><a href="/">KESP central ops</a>'
        '<span id="conn" class="conn">live</span></header><main>' + page.body
        + '</main><script src="/static/board.js"></script></body></html>'
    )


def error_document(status: int, message: str) -> str:
    """A plain error page: the status and one line saying what happened."""
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{status}</title></head><body><h1>{status}</h1><p>{_e(message)}</p>"
            '<p><a href="/">back to the national page</a></p></body></html>')
