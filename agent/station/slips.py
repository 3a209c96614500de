"""What the kiosk prints: voter slips and the commission's reports, in Kyrgyz and Russian.

Pure functions from facts to :class:`~agent.drivers.printer.document.Document`; the
printer driver decides how the letters reach the paper (KZ-1048 or raster).
Every line is given in Kyrgyz first, then Russian (the order used on official
CEC forms). Nothing here reads clocks or stores: callers pass the time, and
:func:`render_slip` lays out a ledger record from the facts it is given.

Times are the commission's local time (the kiosk's configured zone,
Asia/Bishkek by default) with the zone printed beside them; the station and
district are named as the roll names them (ids only when the roll has no
names). The printer driver wraps lines at word boundaries in one typeface.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from agent.drivers.printer.document import Align, Document, Feed, QRCode, Rule, Text
from agent.station.ledger import SlipKind, SlipRecord

_METHOD = {
    "verify": ("манжа изи + документ", "отпечаток + документ"),
    "identify": ("манжа изи", "отпечаток пальца"),
    "identify-2f": ("эки манжа изи", "отпечатки двух пальцев"),
    "manual": ("комиссиянын чечими", "решение комиссии"),
}


@dataclass(frozen=True)
class Place:
    """Where a slip is printed: the station and district (names from the roll), the kiosk."""

    station_id: str
    kiosk: str
    district: str = ""
    station_name: str = ""
    district_name: str = ""


def _both(ky: str, ru: str, *, bold: bool = False, large: bool = False) -> tuple[Text, Text]:
    return (Text(ky, align=Align.CENTER, bold=bold, large=large),
            Text(ru, align=Align.CENTER, bold=bold, large=large))


def _header(place: Place) -> tuple[Text | Rule, ...]:
    lines: list[Text | Rule] = [
        Text("БШК / ЦИК КР", align=Align.CENTER, bold=True),
        Text("Шайлоо участогу / Избирательный участок", align=Align.CENTER),
        Text(place.station_name or place.station_id, align=Align.CENTER, bold=True),
    ]
    if place.district_name or place.district:
        lines.append(Text(f"Округ: {place.district_name or place.district}", align=Align.CENTER))
    lines += [Text(f"Түзмөк / Устройство: {place.kiosk}", align=Align.CENTER), Rule()]
    return tuple(lines)


def zone_label(at: dt.datetime) -> str:
    """``UTC+6`` (or ``UTC+5:30``): the zone printed beside every time."""
    offset = at.utcoffset()
    if offset is None:
        return "UTC?"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    h, m = divmod(abs(minutes), 60)
    return f"UTC{sign}{h}" + (f":{m:02d}" if m else "")


def stamp(at: dt.datetime) -> str:
    """A printed time: date, time and zone."""
    return f"{at.strftime('%Y-%m-%d %H:%M:%S')} ({zone_label(at)})"


def _when(at: dt.datetime) -> Text:
    return Text(f"Убакыт / Время: {stamp(at)}")


@dataclass(frozen=True)
class VoterLine:
    """What a slip says about the voter (from the decrypted roll, never from telemetry)."""

    list_number: int
    name_ky: str
    name_ru: str


#: The heading of a voter's admission slip: identified by the kiosk, or admitted
#: by the commission's decision (a different act: the commission signs for it).
_ADMITTED = {
    "manual": ("КОМИССИЯНЫН ЧЕЧИМИ МЕНЕН УРУКСАТ БЕРИЛДИ", "ДОПУЩЕН ПО РЕШЕНИЮ КОМИССИИ"),
}
_IDENTIFIED = ("ИДЕНТИФИКАЦИЯДАН ӨТТҮ", "ИДЕНТИФИКАЦИЯ ПРОЙДЕНА")


def identified_slip(
    *, serial: str, place: Place, voter: VoterLine, method: str,
    at: dt.datetime, duplicate: bool = False,
) -> Document:
    """The slip a voter hands to the commission to get the ballot.

    A commission's manual admission (``method`` "manual") has its own heading.
    """
    ky, ru = _METHOD[method]
    title_ky, title_ru = _ADMITTED.get(method, _IDENTIFIED)
    blocks = (
        *_header(place),
        *_both(title_ky, title_ru, bold=True, large=True),
        Feed(),
        Text(f"Тизмедеги № / № в списке: {voter.list_number}", bold=True),
        Text(voter.name_ky),
        Text(voter.name_ru),
        Text(f"Ыкма / Способ: {ky} / {ru}"),
        _when(at),
        Text(f"Чек №: {serial}", bold=True),
        QRCode(f"KESP:{serial}:{voter.list_number}"),
        *_both("Бул чекти комиссияга бериңиз.", "Передайте этот чек комиссии."),
    )
    return Document("manual" if method == "manual" else "identified", serial, blocks,
                    duplicate=duplicate)


def refused_slip(
    *, serial: str, place: Place, voter: VoterLine, first_at: dt.datetime,
    first_kiosk: str, at: dt.datetime, duplicate: bool = False,
    first_ahead_ms: int | None = None,
) -> Document:
    """Refusal: the voter was already identified (here or at another kiosk).

    ``first_ahead_ms``: the first mark is held apart because its kiosk's clock is
    that far ahead of this one's (its "first" time may still be to come).
    """
    ahead: tuple[Text, ...] = ()
    if first_ahead_ms is not None:
        minutes = max(1, round(first_ahead_ms / 60_000))
        ahead = (Text(f"{first_kiosk} түзмөгүнүн сааты {minutes} мүн. алдыда"),
                 Text(f"Часы устройства {first_kiosk} спешат на {minutes} мин."))
    blocks = (
        *_header(place),
        *_both("МУРДА ИДЕНТИФИКАЦИЯЛАНГАН", "УЖЕ ИДЕНТИФИЦИРОВАН", bold=True, large=True),
        Feed(),
        Text(f"Тизмедеги № / № в списке: {voter.list_number}"),
        Text(f"Биринчи жолу / Впервые: {stamp(first_at)}"),
        Text(f"Түзмөк / Устройство: {first_kiosk}"),
        *ahead,
        _when(at),
        Text(f"Чек №: {serial}", bold=True),
        *_both("Бюллетень берилбейт. Комиссияга кайрылыңыз.",
               "Бюллетень не выдаётся. Обратитесь в комиссию."),
    )
    return Document("refused", serial, blocks, duplicate=duplicate)


def not_identified_slip(
    *, serial: str, place: Place, attempts: int, at: dt.datetime,
    duplicate: bool = False,
) -> Document:
    """No match after the allowed attempts: the commission decides and writes an akt."""
    blocks = (
        *_header(place),
        *_both("ИДЕНТИФИКАЦИЯЛАНГАН ЖОК", "НЕ ИДЕНТИФИЦИРОВАН", bold=True, large=True),
        Feed(),
        Text(f"Аракеттер / Попыток: {attempts}"),
        _when(at),
        Text(f"Чек №: {serial}", bold=True),
        *_both("Участоктук шайлоо комиссиясына кайрылыңыз.",
               "Обратитесь в участковую избирательную комиссию."),
    )
    return Document("not-identified", serial, blocks, duplicate=duplicate)


@dataclass(frozen=True)
class ReportFacts:
    """Everything a zero or closing report states."""

    station_id: str
    district: str
    kiosk: str
    software_version: str
    roll_hash: str
    roll_voters: int
    audit_head: str
    at: dt.datetime
    counts: Mapping[str, int]
    first_serial: str = "-"
    last_serial: str = "-"
    peers: Sequence[str] = ()
    merged_voters: int = 0
    conflicts: Sequence[str] = ()
    revoked: Sequence[str] = ()
    """One line per revoked peer kiosk, naming the marks of it held (flagged, to check)."""
    clock_ahead: Sequence[str] = ()
    """One line per peer kiosk whose marks are held apart for its clock (they refuse
    their voters and count in ``merged_voters``), naming them."""
    station_name: str = ""
    district_name: str = ""
    zone: str = ""
    """IANA name of the zone of ``at`` (e.g. Asia/Bishkek)."""


_COUNT_LABELS = (
    ("identified", "Идентификацияланган шайлоочулар / Идентифицировано избирателей"),
    ("manual", "Комиссиянын чечими менен уруксат берилгендер / Допущено по решению комиссии"),
    ("refused", "Кайра келгендерге баш тартылды / Отказано повторно пришедшим"),
    ("not_identified", "Идентификацияланбагандар / Не идентифицировано"),
    ("slips", "Басылган чектер / Напечатано чеков"),
    ("duplicates", "Дубликаттар / Напечатано дубликатов"),
)
#: Who signs the opening and closing reports (a line each to sign on).
_SIGNERS = (
    "Төрага / Председатель",
    "Төраганын орун басары / Заместитель председателя",
    "Катчы / Секретарь",
    "Мүчөлөр / Члены комиссии",
)
_SIGN_LINE = "_" * 24


def _report(title_ky: str, title_ru: str, kind: str, serial: str, f: ReportFacts,
            extra: Sequence[Text | Rule], duplicate: bool) -> Document:
    place = Place(f.station_id, f.kiosk, f.district, f.station_name, f.district_name)
    zone = f" {f.zone}" if f.zone else ""
    blocks: list[Text | Rule | QRCode | Feed] = [
        *_header(place),
        *_both(title_ky, title_ru, bold=True, large=True),
        Text(f"Участоктун коду / Код участка: {f.station_id}, {f.district}"),
        Text(f"Тизмедеги шайлоочулар / Избирателей в списке: {f.roll_voters}"),
        Text(f"Тизменин хэши / Хэш списка: {f.roll_hash[:16]}"),
        Text(f"Программа / ПО: {f.software_version}"),
        Text(f"Убакыт / Время: {stamp(f.at)}{zone}"),
        Rule(),
        Text("Бул киоск боюнча / По этому киоску:", bold=True),
    ]
    blocks += [Text(f"{label}: {int(f.counts.get(key, 0))}") for key, label in _COUNT_LABELS]
    blocks += [Rule(), *extra,
               Text(f"Аудит / Журнал: {f.audit_head[:16]}"),
               Text(f"Отчет №: {serial}", bold=True),
               QRCode(f"KESP:{kind}:{serial}:{f.roll_hash[:16]}:{f.audit_head[:16]}"),
               Feed(),
               Text("Комиссиянын колдору / Подписи комиссии:", bold=True)]
    for signer in _SIGNERS:
        blocks += [Feed(), Text(f"{signer}:"), Feed(), Text(_SIGN_LINE)]
    blocks.append(Feed(3))
    return Document(kind, serial, tuple(blocks), duplicate=duplicate)


def zero_report(*, serial: str, facts: ReportFacts, duplicate: bool = False) -> Document:
    """Opening report: proves nothing was recorded before the station opened."""
    return _report("НӨЛ ОТЧЕТ", "НУЛЕВОЙ ОТЧЕТ", "zero-report", serial, facts, (), duplicate)


def closing_report(*, serial: str, facts: ReportFacts, duplicate: bool = False) -> Document:
    """Closing report: counts, serial range, hashes, peers and conflicts."""
    extra: list[Text | Rule] = [
        Text(f"Биринчи чек / Первый чек: {facts.first_serial}"),
        Text(f"Акыркы чек / Последний чек: {facts.last_serial}"),
    ]
    if facts.peers:
        extra.append(Text(f"Шериктер / Соседние: {', '.join(facts.peers)}"))
        extra.append(Text("Участок боюнча белгиленген шайлоочулар (бардык киоскулар) / "
                          f"Отмечено избирателей по участку (все киоски): "
                          f"{facts.merged_voters}"))
    for line in facts.conflicts:
        extra.append(Text(f"КАРАМА-КАРШЫЛЫК / КОНФЛИКТ: {line}", bold=True))
    for line in facts.revoked:
        extra.append(Text(f"ЧАКЫРЫЛДЫ / ОТОЗВАН: {line}", bold=True))
    for line in facts.clock_ahead:
        extra.append(Text(f"СААТЫ АЛДЫДА / ЧАСЫ СПЕШАТ: {line}", bold=True))
    extra.append(Rule())
    return _report("ЖАБУУ ОТЧЕТУ", "ИТОГОВЫЙ ОТЧЕТ", "closing-report", serial, facts, extra,
                   duplicate)


class SlipError(ValueError):
    """A ledger record cannot be laid out as a slip (the message says why)."""


def local_time(ms: int, zone: dt.tzinfo | None = None) -> dt.datetime:
    """Milliseconds since the epoch as an aware time in ``zone`` (default: the system's)."""
    if zone is None:
        return dt.datetime.fromtimestamp(ms / 1000).astimezone()
    return dt.datetime.fromtimestamp(ms / 1000, tz=zone)


def render_slip(
    rec: SlipRecord, *, place: Place, duplicate: bool,
    voter: Callable[[int], VoterLine], facts: Callable[[], ReportFacts],
    zone: dt.tzinfo | None = None,
) -> Document:
    """Lay out the ledger record ``rec``: a voter slip, or the zero or closing report.

    ``voter`` gives the roll's line for a list number; ``facts`` is asked only
    for a report (it reads the stores); times are shown in ``zone``.
    """
    at = local_time(rec.created_ms, zone)
    if rec.kind in (SlipKind.IDENTIFIED, SlipKind.MANUAL, SlipKind.REFUSED):
        if rec.voter is None:
            raise SlipError(f"slip {rec.serial} has no voter")
        line = voter(rec.voter)
        if rec.kind is SlipKind.REFUSED:
            return refused_slip(
                serial=rec.serial, place=place, voter=line, at=at,
                duplicate=duplicate, first_at=local_time(int(rec.details["first_ms"]), zone),
                first_kiosk=str(rec.details["first_kiosk"]),
                first_ahead_ms=(int(rec.details["first_ahead_ms"])
                                if "first_ahead_ms" in rec.details else None),
            )
        return identified_slip(serial=rec.serial, place=place, voter=line, at=at,
                               duplicate=duplicate, method=str(rec.details.get("method", "manual")))
    if rec.kind is SlipKind.NOT_IDENTIFIED:
        return not_identified_slip(serial=rec.serial, place=place, at=at, duplicate=duplicate,
                                   attempts=int(rec.details.get("attempts", 0)))
    if rec.kind is SlipKind.ZERO_REPORT:
        return zero_report(serial=rec.serial, facts=facts(), duplicate=duplicate)
    return closing_report(serial=rec.serial, facts=facts(), duplicate=duplicate)
