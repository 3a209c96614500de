"""``kesp-ops report``: admissions per local hour (CSV) and a chart of the day (PNG).

What is counted, the same way in every row, total and chart line:

==================  ==========================================================
``identified``      admitted after a fingerprint match
``manual``          admitted by the commission without a fingerprint match
``admitted``        identified + manual: voters given their ballot
``refused``         attempts refused because the voter was already admitted
``not_identified``  attempts without a match (the voter may then be admitted
                    manually, so one person can count here and under manual)
==================  ==========================================================

Hours come from the records, not from the kiosk's ``by_hour`` map: a kiosk
sends its cumulative counts after every voter's turn, stamped with its clock
(epoch ms), and ops keeps every record (``turnout_log``). The difference
between two consecutive records of a kiosk is counted in the local hour of
the later one. ``by_hour`` is not used because it carries no date, is in the
kiosk's own time zone and mixes manual admissions with fingerprint ones.
Because every hour row is such a difference, the rows of a kiosk add up to
its latest cumulative record: the totals agree with the hours by
construction, and :func:`disagreements` checks them against the latest
counts the store holds.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ops.store import TurnoutRecord, TurnoutSummary

DEFAULT_TIMEZONE = "Asia/Bishkek"
POLLING_HOURS = (7, 20)
"""Opening and closing time (07:00-20:00): the chart shows at least these hours."""
CSV_COLUMNS = ("district", "station", "local_hour", "identified", "manual", "admitted",
               "cumulative_admitted", "refused", "not_identified")
ALL = "all"
"""The station (and district) of a total row over several stations."""
_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
_PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


class ReportError(ValueError):
    """The report cannot be made as asked (unknown time zone, bad day)."""


def load_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``, or :class:`ReportError` saying what to do."""
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError as exc:
        raise ReportError(
            f"time zone {name!r} is unknown: give an IANA name such as {DEFAULT_TIMEZONE!r} "
            "(if that one fails too, install the time zone data: 'apt-get install tzdata' "
            "or 'pip install tzdata')") from exc
    except ValueError as exc:
        raise ReportError(f"time zone {name!r} is not a valid name: give an IANA name such "
                          f"as {DEFAULT_TIMEZONE!r}") from exc


@dataclass(frozen=True)
class Counts:
    """Outcome counts of a kiosk, a station, an hour or a total."""

    identified: int = 0
    manual: int = 0
    refused: int = 0
    not_identified: int = 0

    @property
    def admitted(self) -> int:
        """Voters given their ballot: by fingerprint or by the commission."""
        return self.identified + self.manual

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    @classmethod
    def of(cls, rec: TurnoutRecord) -> Counts:
        """The cumulative counts a turnout record carries."""
        return cls(rec.identified, rec.manual, rec.refused, rec.not_identified)


@dataclass(frozen=True)
class HourRow:
    """What one station recorded in one local hour."""

    district: str
    station: str
    hour: dt.datetime
    """Start of the hour, aware, in the report's zone."""
    counts: Counts


@dataclass(frozen=True)
class TurnoutReport:
    """Admissions per station and local hour; rows sorted by district, station, hour."""

    zone: ZoneInfo
    rows: tuple[HourRow, ...]

    def stations(self) -> dict[tuple[str, str], Counts]:
        """(district, station) -> total over all hours."""
        out: dict[tuple[str, str], Counts] = defaultdict(Counts)
        for r in self.rows:
            out[(r.district, r.station)] += r.counts
        return dict(sorted(out.items()))

    def districts(self) -> dict[str, Counts]:
        """district -> total over its stations."""
        out: dict[str, Counts] = defaultdict(Counts)
        for (district, _), c in self.stations().items():
            out[district] += c
        return dict(sorted(out.items()))

    def total(self) -> Counts:
        """Everything, every district."""
        return sum((r.counts for r in self.rows), Counts())

    def by_day(self) -> dict[dt.date, int]:
        """Local date -> admitted that day."""
        out: dict[dt.date, int] = defaultdict(int)
        for r in self.rows:
            out[r.hour.date()] += r.counts.admitted
        return dict(sorted(out.items()))


def _hour_of(wall_ms: int, zone: ZoneInfo) -> dt.datetime:
    at = dt.datetime.fromtimestamp(wall_ms / 1000, dt.UTC).astimezone(zone)
    return at.replace(minute=0, second=0, microsecond=0)


def build_report(records: Iterable[TurnoutRecord], zone: ZoneInfo) -> TurnoutReport:
    """Per station and local hour, the difference between consecutive cumulative records."""
    by_device: dict[str, list[TurnoutRecord]] = defaultdict(list)
    for rec in records:
        by_device[rec.device].append(rec)
    cells: dict[tuple[str, str, dt.datetime], Counts] = defaultdict(Counts)
    for recs in by_device.values():
        previous = Counts()
        for rec in sorted(recs, key=lambda r: r.n):
            now = Counts.of(rec)
            cells[(rec.district, rec.station, _hour_of(rec.wall_ms, zone))] += now - previous
            previous = now
    rows = tuple(HourRow(d, s, h, c) for (d, s, h), c in sorted(cells.items())
                 if c != Counts())
    return TurnoutReport(zone, rows)


def disagreements(report: TurnoutReport, latest: TurnoutSummary) -> list[str]:
    """Stations whose hour rows do not add up to the latest counts in the store (none: [])."""
    problems = []
    stations = {s: c for (_, s), c in report.stations().items()}
    for station, c in sorted(latest.by_station.items()):
        want = Counts(c.identified, c.manual, c.refused, c.not_identified)
        got = stations.pop(station, Counts())
        if got != want:
            problems.append(f"station {station}: hours add up to {got}, latest record {want}")
    problems += [f"station {s}: hours without a latest record" for s in sorted(stations)]
    return problems


def _hour_text(hour: dt.datetime) -> str:
    return hour.isoformat(sep=" ", timespec="minutes")


def _count_cells(c: Counts, cumulative: int) -> list[object]:
    return [c.identified, c.manual, c.admitted, cumulative, c.refused, c.not_identified]


def report_csv(report: TurnoutReport) -> str:
    """The hour rows of every station, then a total row per station, district and overall.

    ``local_hour`` is the start of the hour in the report's zone with its UTC
    offset (``2026-12-06 07:00+06:00``), or ``total``; total rows over several
    stations have station ``all`` (and district ``all`` for the overall one).
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    stations = report.stations()
    districts = report.districts()
    for district in districts:
        for (d, station), total in stations.items():
            if d != district:
                continue
            cumulative = 0
            for r in report.rows:
                if (r.district, r.station) == (d, station):
                    cumulative += r.counts.admitted
                    w.writerow([d, station, _hour_text(r.hour),
                                *_count_cells(r.counts, cumulative)])
            w.writerow([d, station, "total", *_count_cells(total, total.admitted)])
        total = districts[district]
        w.writerow([district, ALL, "total", *_count_cells(total, total.admitted)])
    total = report.total()
    w.writerow([ALL, ALL, "total", *_count_cells(total, total.admitted)])
    return buf.getvalue()


def default_day(report: TurnoutReport, today: dt.date) -> dt.date:
    """The local date with the most admissions (``today`` when there are none)."""
    days = report.by_day()
    if not days or not any(days.values()):
        return today
    return max(days, key=lambda d: (days[d], d))


def _axis(report: TurnoutReport, day: dt.date) -> list[dt.datetime]:
    """Start of every local hour shown: at least the polling hours, and every hour with data."""
    zone = report.zone
    hours = {r.hour.hour for r in report.rows if r.hour.date() == day}
    first = min([POLLING_HOURS[0], *hours])
    last = max([POLLING_HOURS[1] - 1, *hours])
    start = dt.datetime.combine(day, dt.time(first), zone).astimezone(dt.UTC)
    out: list[dt.datetime] = []
    at = start
    while True:  # whole hours in UTC, so a DST change neither repeats nor skips an hour
        local = at.astimezone(zone)
        if local.date() != day or local.hour > last:
            return out
        out.append(local.replace(minute=0))
        at += dt.timedelta(hours=1)


def hour_label(hour: dt.datetime, *, end: bool = False) -> str:
    """``07:00`` for the start of an hour; with ``end`` its end (``24:00`` after 23 h)."""
    if not end:
        return f"{hour:%H}:00"
    return "24:00" if hour.hour == 23 else f"{hour.hour + 1:02d}:00"


_OTHER = "other "
CHART_DISTRICTS = 10
"""Lines the chart can tell apart (its palette, its legend's height)."""


def _chart_groups(totals: Mapping[str, Counts]) -> dict[str, str]:
    """district -> its line: the largest districts their own, the rest one "other" line."""
    if len(totals) <= CHART_DISTRICTS:
        return {d: d for d in totals}
    ranked = sorted(totals, key=lambda d: (-totals[d].admitted, d))
    own = set(ranked[:CHART_DISTRICTS - 1])
    other = f"{_OTHER}{len(totals) - len(own)} districts"
    return {d: d if d in own else other for d in totals}


def _font(size: int, bold: bool = False) -> Any:
    from PIL import ImageFont

    path = _FONT_DIR / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return ImageFont.load_default(size)


def _nice_step(peak: int, ticks: int = 5) -> int:
    raw = max(1.0, peak / ticks)
    power = 10 ** math.floor(math.log10(raw))
    return int(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


@dataclass(frozen=True)
class ChartSummary:
    """What the chart shows, for the console line and for tests."""

    day: dt.date
    hours: tuple[dt.datetime, ...]
    admitted_by_district: Mapping[str, int]
    """Admitted up to the end of the chart's last hour (earlier days included)."""
    on_other_days: int
    """Admissions recorded on other local dates (in the CSV, not on the chart's axis)."""


def report_png(report: TurnoutReport, *, day: dt.date | None = None,
               now: dt.datetime | None = None, width: int = 1100, height: int = 680
               ) -> tuple[bytes, ChartSummary]:
    """Chart of one local day: cumulative admitted voters per district, and per hour.

    The upper panel has one line per district (cumulative, counting admissions
    of earlier days from the start); the lower panel the admissions of each
    hour, stacked by district. Axis labels, legend and notes say what is
    counted and in which time zone. The lines stop at ``now`` (default: the
    current time), or at the end of the last hour with data if that is later
    (a kiosk clock ahead of ops'): hours still to come have no line yet.
    Returns the PNG bytes and what it shows.
    """
    from PIL import Image, ImageDraw

    zone = report.zone
    now = (now or dt.datetime.now(dt.UTC)).astimezone(zone)
    day = day or default_day(report, now.date())
    hours = _axis(report, day)
    one_hour = dt.timedelta(hours=1)
    bounds = [h.astimezone(dt.UTC) for h in hours] + [hours[-1].astimezone(dt.UTC) + one_hour]
    latest = max((r.hour for r in report.rows), default=now)
    if latest > now:  # a kiosk clock ahead of ours: show what it sent, whole hours
        now = latest + one_hour
    as_of = f";  as of {now:%H:%M}" if bounds[0] <= now < bounds[-1] else ""
    group = _chart_groups(report.districts())
    districts = sorted(set(group.values()), key=lambda g: (g.startswith(_OTHER), g))
    per_hour: dict[str, list[int]] = {d: [0] * len(hours) for d in districts}
    before: dict[str, int] = dict.fromkeys(districts, 0)
    after = 0
    index = {h: i for i, h in enumerate(hours)}
    for r in report.rows:
        if r.hour in index:
            per_hour[group[r.district]][index[r.hour]] += r.counts.admitted
        elif r.hour < hours[0]:
            before[group[r.district]] += r.counts.admitted
        else:
            after += r.counts.admitted
    earlier = sum(before.values())
    cumulative = {d: [before[d]] for d in districts}
    for d in districts:
        for v in per_hour[d]:
            cumulative[d].append(cumulative[d][-1] + v)

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    title, text, small = _font(22, bold=True), _font(15), _font(13)
    grid, ink, muted = (226, 226, 226), (30, 30, 30), (100, 100, 100)
    offset = hours[0].strftime("%z")
    offset = f"UTC{offset[:3]}:{offset[3:]}"
    draw.text((30, 14), f"Voters admitted on {day:%A %d %B %Y}, by district", font=title,
              fill=ink)
    draw.text((30, 46), "admitted = identified by fingerprint + admitted by the commission "
              f"(manual);  hours in {zone.key} time ({offset}){as_of}", font=text, fill=muted)
    left, right = 90, width - 260
    top1, bottom1 = 100, 100 + int((height - 190) * 0.62)
    top2, bottom2 = bottom1 + 45, height - 60
    n = len(hours)

    def x_at(i: float) -> int:
        return left + round((right - left) * i / n)

    def y_axis(top: int, bottom: int, peak: int, label: str) -> int:
        step = _nice_step(peak)
        top_value = step * max(1, math.ceil(peak / step))
        for v in range(0, top_value + 1, step):
            y = bottom - (bottom - top) * v // top_value
            draw.line([(left, y), (right, y)], fill=grid)
            draw.text((left - 10, y), f"{v:,}".replace(",", " "), font=small, fill=muted,
                      anchor="rm")
        draw.text((left, top - 22), label, font=text, fill=ink)
        draw.line([(left, top), (left, bottom), (right, bottom)], fill=ink, width=2)
        return top_value

    peak1 = max([1, *(c[-1] for c in cumulative.values())])
    top_value1 = y_axis(top1, bottom1, peak1, "admitted so far (cumulative)")
    totals_per_hour = [sum(per_hour[d][i] for d in districts) for i in range(n)]
    peak2 = max([1, *totals_per_hour])
    # headroom above the tallest bar for its label
    top_value2 = y_axis(top2, bottom2, peak2 + max(1, peak2 // 8), "admitted in each hour")
    for i, h in enumerate(hours):
        for y in (bottom1, bottom2):
            draw.line([(x_at(i), y), (x_at(i), y + 5)], fill=ink)
        draw.text((x_at(i), bottom2 + 8), hour_label(h), font=small, fill=ink, anchor="mt")
    draw.text((x_at(n), bottom2 + 8), hour_label(hours[-1], end=True), font=small, fill=ink,
              anchor="mt")
    bar_w = max(2, (right - left) // n - 8)
    for i in range(n):
        y = bottom2
        for k, d in enumerate(districts):
            v = per_hour[d][i]
            if v:
                h_px = (bottom2 - top2) * v // top_value2
                cx = (x_at(i) + x_at(i + 1)) // 2
                draw.rectangle([cx - bar_w // 2, y - h_px, cx + bar_w // 2, y],
                               fill=_PALETTE[k % len(_PALETTE)])
                y -= h_px
        if totals_per_hour[i]:
            draw.text(((x_at(i) + x_at(i + 1)) // 2, y - 3), str(totals_per_hour[i]),
                      font=small, fill=ink, anchor="mb")
    for k, d in enumerate(districts):
        colour = _PALETTE[k % len(_PALETTE)]

        def y_of(v: int) -> int:
            return bottom1 - (bottom1 - top1) * v // top_value1

        points = [(x_at(i), y_of(v)) for i, v in enumerate(cumulative[d]) if bounds[i] <= now]
        dots = list(points)
        current = [i for i in range(n) if bounds[i] <= now < bounds[i + 1]]
        if current:  # the hour in progress: up to now, with what has arrived
            i = current[0]
            points.append((x_at(i + (now - bounds[i]) / one_hour), y_of(cumulative[d][i + 1])))
        if len(points) > 1:
            draw.line(points, fill=colour, width=3, joint="curve")
        for p in dots + points[len(dots):]:
            draw.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=colour)
    district_totals: dict[str, Counts] = defaultdict(Counts)
    for district, c in report.districts().items():
        district_totals[group[district]] += c
    draw.text((right + 25, top1 - 22), "district: admitted", font=text, fill=ink)
    for k, d in enumerate(districts):
        colour = _PALETTE[k % len(_PALETTE)]
        y = top1 + 6 + 44 * k
        draw.rectangle([right + 25, y, right + 41, y + 16], fill=colour)
        draw.text((right + 50, y - 2), f"{d}: {cumulative[d][-1]}", font=text, fill=ink)
        c = district_totals[d]
        draw.text((right + 50, y + 18), f"{c.identified} fingerprint, {c.manual} manual",
                  font=small, fill=muted)
    if not districts:
        draw.text(((left + right) // 2, (top1 + bottom1) // 2),
                  "no turnout received yet", font=title, fill=muted, anchor="mm")
    notes = []
    if earlier:
        notes.append(f"{earlier} admitted before {hour_label(hours[0])} on earlier days are "
                     "included in the lines")
    if after:
        notes.append(f"{after} admitted after this day are not shown (see turnout.csv)")
    if notes:
        draw.text((30, height - 24), ";  ".join(notes), font=small, fill=(180, 40, 40))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue(), ChartSummary(day, tuple(hours),
                                        {d: cumulative[d][-1] for d in districts},
                                        earlier + after)


def parse_day(text: str) -> dt.date:
    """``--day YYYY-MM-DD``."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise ReportError(f"--day {text!r} is not a date like 2026-12-06") from exc

