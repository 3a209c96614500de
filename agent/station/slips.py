"""What the kiosk prints: voter slips and the commission's reports, in Kyrgyz and Russian.

Pure functions from facts to :class:`~agent.drivers.printer.document.Document`; the
printer driver decides how the letters reach the paper (KZ-1048 or raster).
Every line is given in Kyrgyz first, then Russian (the order used on official
CEC forms). Nothing here reads clocks or stores: callers pass the time, and
:func:`render_slip` lays out a ledger record from the facts it is given.
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


def _both(ky: str, ru: str, *, bold: bool = False, large: bool = False) -> tuple[Text, Text]:
    return Text(ky, bold=bold, large=large), Text(ru, bold=bold, large=large)


def _header(station_id: str, kiosk: str) -> tuple[Text | Rule, ...]:
    return (
        Text("БШК / ЦИК КР", align=Align.CENTER, bold=True),
        Text(f"Шайлоо участогу / Участок № {station_id}", align=Align.CENTER),
        Text(f"Түзмөк / Устройство: {kiosk}", align=Align.CENTER),
        Rule(),
    )


def _when(at: dt.datetime) -> Text:
    return Text(f"Убакыт / Время: {at.strftime('%Y-%m-%d %H:%M:%S')}")


@dataclass(frozen=True)
class VoterLine:
    """What a slip says about the voter (from the decrypted roll, never from telemetry)."""

    list_number: int
    name_ky: str
    name_ru: str


def identified_slip(
    *, serial: str, station_id: str, kiosk: str, voter: VoterLine, method: str,
    at: dt.datetime, duplicate: bool = False,
) -> Document:
    """The slip a voter hands to the commission to get the ballot."""
    ky, ru = _METHOD[method]
    blocks = (
        *_header(station_id, kiosk),
        *_both("ИДЕНТИФИКАЦИЯДАН ӨТТҮ", "ИДЕНТИФИКАЦИЯ ПРОЙДЕНА", bold=True, large=True),
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
    return Document("identified", serial, blocks, duplicate=duplicate)


def refused_slip(
    *, serial: str, station_id: str, kiosk: str, voter: VoterLine, first_at: dt.datetime,
    first_kiosk: str, at: dt.datetime, duplicate: bool = False,
) -> Document:
    """Refusal: the voter was already identified (here or at another kiosk)."""
    blocks = (
        *_header(station_id, kiosk),
        *_both("МУРДА ИДЕНТИФИКАЦИЯЛАНГАН", "УЖЕ ИДЕНТИФИЦИРОВАН", bold=True, large=True),
        Feed(),
        Text(f"Тизмедеги № / № в списке: {voter.list_number}"),
        Text(f"Биринчи жолу / Впервые: {first_at.strftime('%Y-%m-%d %H:%M:%S')}"),
        Text(f"Түзмөк / Устройство: {first_kiosk}"),
        _when(at),
        Text(f"Чек №: {serial}", bold=True),
        *_both("Бюллетень берилбейт. Комиссияга кайрылыңыз.",
               "Бюллетень не выдаётся. Обратитесь в комиссию."),
    )
    return Document("refused", serial, blocks, duplicate=duplicate)


def not_identified_slip(
    *, serial: str, station_id: str, kiosk: str, attempts: int, at: dt.datetime,
    duplicate: bool = False,
) -> Document:
    """No match after the allowed attempts: the commission decides and writes an akt."""
    blocks = (
        *_header(station_id, kiosk),
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


_COUNT_LABELS = (
    ("identified", "Идентификацияланды / Идентифицировано"),
    ("manual", "Комиссиянын чечими / По решению комиссии"),
    ("refused", "Баш тартылды / Отказано (повторно)"),
    ("not_identified", "Идентификацияланган жок / Не идентиф."),
    ("slips", "Чектер / Чеков"),
    ("duplicates", "Дубликаттар / Дубликатов"),
)


def _report(title_ky: str, title_ru: str, kind: str, serial: str, f: ReportFacts,
            extra: Sequence[Text | Rule], duplicate: bool) -> Document:
    blocks: list[Text | Rule | QRCode | Feed] = [
        *_header(f.station_id, f.kiosk),
        *_both(title_ky, title_ru, bold=True, large=True),
        Text(f"Округ / Округ: {f.district}"),
        Text(f"Тизмеде / В списке: {f.roll_voters}"),
        Text(f"Тизменин хэши / Хэш списка: {f.roll_hash[:16]}"),
        Text(f"Программа / ПО: {f.software_version}"),
        Text(f"Саат / Часы: {f.at.strftime('%Y-%m-%d %H:%M:%S %Z')}".rstrip()),
        Rule(),
    ]
    blocks += [Text(f"{label}: {int(f.counts.get(key, 0))}") for key, label in _COUNT_LABELS]
    blocks += [Rule(), *extra,
               Text(f"Аудит / Журнал: {f.audit_head[:16]}"),
               Text(f"Отчет №: {serial}", bold=True),
               QRCode(f"KESP:{kind}:{serial}:{f.roll_hash[:16]}:{f.audit_head[:16]}"),
               Feed(),
               *_both("Комиссия мүчөлөрүнүн колу:", "Подписи членов комиссии:"),
               Feed(3)]
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
        extra.append(Text(f"Участок боюнча / По участку: {facts.merged_voters}"))
    for line in facts.conflicts:
        extra.append(Text(f"КАРАМА-КАРШЫЛЫК / КОНФЛИКТ: {line}", bold=True))
    for line in facts.revoked:
        extra.append(Text(f"ЧАКЫРЫЛДЫ / ОТОЗВАН: {line}", bold=True))
    extra.append(Rule())
    return _report("ЖАБУУ ОТЧЕТУ", "ИТОГОВЫЙ ОТЧЕТ", "closing-report", serial, facts, extra,
                   duplicate)


class SlipError(ValueError):
    """A ledger record cannot be laid out as a slip (the message says why)."""


def local_time(ms: int) -> dt.datetime:
    """Milliseconds since the epoch as an aware local time (what the commission reads)."""
    return dt.datetime.fromtimestamp(ms / 1000).astimezone()


def render_slip(
    rec: SlipRecord, *, station_id: str, kiosk: str, duplicate: bool,
    voter: Callable[[int], VoterLine], facts: Callable[[], ReportFacts],
) -> Document:
    """Lay out the ledger record ``rec``: a voter slip, or the zero or closing report.

    ``voter`` gives the roll's line for a list number; ``facts`` is asked only
    for a report (it reads the stores).
    """
    at = local_time(rec.created_ms)
    if rec.kind in (SlipKind.IDENTIFIED, SlipKind.MANUAL, SlipKind.REFUSED):
        if rec.voter is None:
            raise SlipError(f"slip {rec.serial} has no voter")
        line = voter(rec.voter)
        if rec.kind is SlipKind.REFUSED:
            return refused_slip(
                serial=rec.serial, station_id=station_id, kiosk=kiosk, voter=line, at=at,
                duplicate=duplicate, first_at=local_time(int(rec.details["first_ms"])),
                first_kiosk=str(rec.details["first_kiosk"]),
            )
        return identified_slip(serial=rec.serial, station_id=station_id, kiosk=kiosk,
                               voter=line, at=at, duplicate=duplicate,
                               method=str(rec.details.get("method", "manual")))
    if rec.kind is SlipKind.NOT_IDENTIFIED:
        return not_identified_slip(serial=rec.serial, station_id=station_id, kiosk=kiosk,
                                   at=at, duplicate=duplicate,
                                   attempts=int(rec.details.get("attempts", 0)))
    if rec.kind is SlipKind.ZERO_REPORT:
        return zero_report(serial=rec.serial, facts=facts(), duplicate=duplicate)
    return closing_report(serial=rec.serial, facts=facts(), duplicate=duplicate)
