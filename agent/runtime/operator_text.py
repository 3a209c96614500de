"""The operator's answers in Kyrgyz and Russian: what ``kesp-agent`` prints for people.

Pure functions from the agent's answer (the JSON ``--json`` prints) to
sentences and an exit code. Each message is a pair ``(ky, ru)``; a screen is
every Kyrgyz sentence, a blank line, then every Russian sentence (the order of
official CEC forms), each message once per language. Errors are one line,
Kyrgyz then Russian, so that a script's log and a person both get one line.

The answer is read defensively: fields another version of the agent does not
send are left out, unknown states are shown as they come.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Exit codes of ``kesp-agent`` (documented in docs/STATION.md, "Operator commands").
EXIT_DONE = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_HELD = 3
EXIT_UNAVAILABLE = 69
EXIT_CONFIG = 78

Pair = tuple[str, str]

_PHASE: dict[str, Pair] = {
    "unprovisioned": ("даярдала элек (тизме орнотула элек)", "не подготовлен (нет списка)"),
    "provisioned": ("даяр, ачыла элек", "готов, ещё не открыт"),
    "open": ("ачык, шайлоочуларды кабыл алат", "открыт, приём избирателей"),
    "paused": ("убактылуу токтотулган", "приостановлен"),
    "closed": ("жабык", "закрыт"),
    "exported": ("жабык, архив жазылган", "закрыт, архив записан"),
}

_COMMAND: dict[str, Pair] = {
    "open": ("ачуу", "открыть"),
    "pause": ("токтотуу", "приостановить"),
    "resume": ("улантуу", "возобновить"),
    "close": ("жабуу", "закрыть"),
    "export": ("архивди жазуу", "записать архив"),
    "install": ("тизмени орнотуу", "установить список"),
    "manual": ("комиссиянын чечими менен киргизүү", "допустить по решению комиссии"),
}

_DEVICE: dict[str, Pair] = {
    "sensor": ("Манжа изинин сенсору", "Сканер отпечатков"),
    "printer": ("Принтер", "Принтер"),
    "document_reader": ("Документ окугуч", "Считыватель документов"),
}

_STATE: dict[str, Pair] = {
    "ready": ("даяр", "готов"),
    "busy": ("иштеп жатат", "занят"),
    "disconnected": ("туташкан эмес", "не подключён"),
    "unplugged": ("туташкан эмес", "не подключён"),
    "fault": ("бузук", "неисправен"),
    "wrong-device": ("башка түзмөк туташтырылган", "подключено другое устройство"),
    "error": ("ката", "ошибка"),
    "paper-near-end": ("кагаз бүтүп баратат", "бумага заканчивается"),
    "paper-out": ("кагаз жок", "нет бумаги"),
    "cover-open": ("капкагы ачык", "открыта крышка"),
    "offline": ("иштебейт (offline)", "не в сети (offline)"),
    "not-configured": ("орнотулган эмес", "не установлен"),
    "unknown": ("белгисиз", "неизвестно"),
    "connected": ("байланыш бар", "связь есть"),
    "connecting": ("туташып жатат", "подключается"),
    "stale": ("байланыш үзүлүп жатат", "связь прерывается"),
    "unreachable": ("байланыш жок", "нет связи"),
    "idle": ("башталган эмес", "не запущен"),
    "stopped": ("токтотулган", "остановлен"),
}

#: What to do when the printer cannot print (the slip waits and prints by itself).
_PRINTER_FIX: dict[str, Pair] = {
    "paper-out": ("Кагаз түрмөгүн салыңыз.", "Вставьте рулон бумаги."),
    "cover-open": ("Принтердин капкагын жабыңыз.", "Закройте крышку принтера."),
    "disconnected": ("Принтердин кабелин жана кубатын текшериңиз.",
                     "Проверьте кабель и питание принтера."),
    "offline": ("Принтерди күйгүзүп, кагазды текшериңиз.",
                "Включите принтер и проверьте бумагу."),
    "error": ("Принтерди өчүрүп күйгүзүңүз; кайталанса техникке кайрылыңыз.",
              "Выключите и включите принтер; если повторится, вызовите техника."),
    "wrong-device": ("Туура принтерди туташтырыңыз же техникке кайрылыңыз: "
                     "жөндөөнү оңдоо керек болушу мүмкүн.",
                     "Подключите нужный принтер или вызовите техника: возможно, нужно "
                     "исправить настройку."),
}
_PRINTER_FIX_DEFAULT: Pair = ("Принтерди текшериңиз.", "Проверьте принтер.")
# The sensor and the document reader: a missing one is a cable, a failing one the technician.
# (The agent's own detail, naming the port, follows in brackets for the technician.)
_DEVICE_FIX: dict[str, Pair] = {
    "disconnected": ("Кабелин текшериңиз: түзмөк кайра туташканда иш өзү уланат.",
                     "Проверьте кабель: работа продолжится сама, когда устройство подключится."),
    "unplugged": ("Кабелин текшериңиз: түзмөк кайра туташканда иш өзү уланат.",
                  "Проверьте кабель: работа продолжится сама, когда устройство подключится."),
    # Plugging the right device is picked up by itself; a wrong configuration key
    # is the technician's (the detail in brackets names the key and the value).
    "wrong-device": ("Туура түзмөктү туташтырыңыз (иш өзү уланат) же техникке кайрылыңыз: "
                     "жөндөөнү оңдоо керек болушу мүмкүн.",
                     "Подключите нужное устройство (работа продолжится сама) или вызовите "
                     "техника: возможно, нужно исправить настройку."),
}
_DEVICE_FIX_DEFAULT: Pair = ("Техникке кайрылыңыз.", "Вызовите техника.")
#: The state disk is full (agent/station/storage.py): nothing is lost, nobody is identified.
DISK_FULL: Pair = (
    "Киосктун диски толуп калды: эч ким идентификацияланбайт, эч нерсе жоголгон жок. "
    "Орун бошотуу үчүн техникке кайрылыңыз (эски журналдар, чогултулган архивдер); "
    "киоск өзү улантат.",
    "Диск киоска заполнен: никто не идентифицируется, ничего не потеряно. "
    "Вызовите техника, чтобы освободить место (старые журналы, уже собранные архивы); "
    "киоск продолжит сам.")


@dataclass(frozen=True)
class Answer:
    """What to print and the exit code."""

    lines: tuple[Pair, ...]
    code: int

    def text(self) -> str:
        """Kyrgyz sentences, a blank line, Russian sentences."""
        ky = [k for k, _ in self.lines]
        ru = [r for _, r in self.lines]
        return "\n".join([*ky, "", *ru])


def one_line(pair: Pair) -> str:
    """A message as one line: Kyrgyz / Russian."""
    return f"{pair[0]} / {pair[1]}"


def _state(value: object) -> Pair:
    text = str(value)
    return _STATE.get(text, (text, text))


def _phase(value: object) -> Pair:
    text = str(value)
    return _PHASE.get(text, (text, text))


def _printer_fix(state: object) -> Pair:
    return _PRINTER_FIX.get(str(state), _PRINTER_FIX_DEFAULT)


def _device_fix(device: str, state: object) -> Pair:
    if device == "printer":
        return _printer_fix(state)
    return _DEVICE_FIX.get(str(state), _DEVICE_FIX_DEFAULT)


def _held(serials: Iterable[str], printer: object | None) -> list[Pair]:
    """Slips waiting for the printer, and what to do."""
    listed = ", ".join(serials)
    lines: list[Pair] = [(f"Басыла элек чектер: {listed}.", f"Не напечатаны чеки: {listed}.")]
    if printer is not None:
        ky, ru = _state(printer)
        fix = _printer_fix(printer)
        lines.append((f"Принтер: {ky}. {fix[0]} Чек өзү басылат.",
                      f"Принтер: {ru}. {fix[1]} Чек напечатается сам."))
    else:
        lines.append(("Принтерди текшериңиз: чек өзү басылат.",
                      "Проверьте принтер: чек напечатается сам."))
    return lines


def _pending(result: Mapping[str, Any]) -> list[str]:
    pending = result.get("pending_slips")
    return [str(s) for s in pending] if isinstance(pending, list) else []


def _printer_state(result: Mapping[str, Any]) -> object | None:
    devices = result.get("devices")
    if isinstance(devices, Mapping):
        printer = devices.get("printer")
        if isinstance(printer, Mapping):
            return printer.get("state")
    return None


def _protocol_mismatch(peer: Mapping[str, Any], ours: object) -> bool:
    """A peer refused for speaking another peer protocol (and not connected since)."""
    theirs = peer.get("protocol")
    return (isinstance(theirs, int) and isinstance(ours, int) and theirs != ours
            and peer.get("state") != "connected")


def _protocol_fix(kiosk: str, theirs: int, ours: int) -> Pair:
    """The kiosk on the older release is the one to update."""
    if theirs < ours:
        return (f"{kiosk} киоску киоскулар ортосундагы алмашуу протоколунун эскирээк "
                f"версиясында иштейт (v{theirs}, бул киоскто v{ours}): {kiosk} киоскун "
                "жаңыртыңыз; ага чейин алар белгилерди алмашпайт.",
                f"Киоск {kiosk} работает на более старой версии протокола обмена между "
                f"киосками (v{theirs}, у этого киоска v{ours}): обновите киоск {kiosk}; "
                "до тех пор они не обмениваются отметками.")
    return (f"{kiosk} киоску киоскулар ортосундагы алмашуу протоколунун жаңыраак "
            f"версиясында иштейт (v{theirs}, бул киоскто v{ours}): бул киоскту жаңыртыңыз; "
            "ага чейин алар белгилерди алмашпайт.",
            f"Киоск {kiosk} работает на более новой версии протокола обмена между "
            f"киосками (v{theirs}, у этого киоска v{ours}): обновите этот киоск; "
            "до тех пор они не обмениваются отметками.")


def status_lines(result: Mapping[str, Any]) -> list[Pair]:
    """``kesp-agent status``: phase, counts, devices, peers, uplink, pending slips, what to do."""
    lines: list[Pair] = []
    station, device = result.get("station", "?"), result.get("device", "?")
    ky, ru = _phase(result.get("phase", "unknown"))
    lines.append((f"Участок {station}, түзмөк {device}: {ky}.",
                  f"Участок {station}, устройство {device}: {ru}."))
    counts = result.get("counts")
    if isinstance(counts, Mapping):
        def n(key: str) -> int:
            value = counts.get(key, 0)
            return value if isinstance(value, int) else 0

        lines.append((
            f"Идентификацияланды: {n('identified')}, комиссиянын чечими менен: {n('manual')}, "
            f"баш тартылды (кайра келген): {n('refused')}, "
            f"идентификацияланган жок: {n('not_identified')}.",
            f"Идентифицировано: {n('identified')}, по решению комиссии: {n('manual')}, "
            f"отказано (повторно): {n('refused')}, не идентифицировано: {n('not_identified')}.",
        ))
    todo: list[Pair] = []
    devices = result.get("devices")
    if isinstance(devices, Mapping):
        for key, (name_ky, name_ru) in _DEVICE.items():
            dev = devices.get(key)
            if not isinstance(dev, Mapping):
                continue
            state = dev.get("state", "unknown")
            s_ky, s_ru = _state(state)
            lines.append((f"{name_ky}: {s_ky}.", f"{name_ru}: {s_ru}."))
            detail = dev.get("detail")
            if state not in ("ready", "busy", "paper-near-end", "not-configured"):
                fix_ky, fix_ru = _device_fix(key, state)
                why = f" ({detail})" if detail else ""
                todo.append((f"{name_ky}: {fix_ky}{why}", f"{name_ru}: {fix_ru}{why}"))
            if key == "printer" and state == "paper-near-end":
                todo.append(("Кагаз бүтүп баратат: жаңы түрмөктү даярдаңыз.",
                             "Бумага заканчивается: приготовьте новый рулон."))
    else:
        lines.append(("Түзмөктөрдүн абалы бул агенттин версиясында көрсөтүлбөйт.",
                      "Состояние устройств эта версия агента не сообщает."))
    peers = result.get("peers")
    if isinstance(peers, list) and peers:
        listed = [p for p in peers if isinstance(p, Mapping)]
        parts = [(str(p.get("kiosk", "?")), _state(p.get("state", "unknown"))) for p in listed]
        lines.append(("Шериктеш киоскулар: " + ", ".join(f"{k} {s[0]}" for k, s in parts) + ".",
                      "Соседние киоски: " + ", ".join(f"{k} {s[1]}" for k, s in parts) + "."))
        ours = result.get("peer_protocol")
        mismatched = [p for p in listed if _protocol_mismatch(p, ours)]
        if isinstance(ours, int):
            todo.extend(_protocol_fix(str(p.get("kiosk", "?")), p["protocol"], ours)
                        for p in mismatched)
        if any(p.get("state") == "unreachable" for p in listed if p not in mismatched):
            todo.append(("Байланышы жок киосктун тармак кабелин текшериңиз; добуш берүү уланат.",
                         "Проверьте сетевой кабель киоска без связи; голосование продолжается."))
    elif isinstance(peers, list):
        lines.append(("Шериктеш киоскулар жок.", "Соседних киосков нет."))
    uplink = result.get("uplink")
    if isinstance(uplink, Mapping):
        s_ky, s_ru = _state(uplink.get("state", "unknown"))
        queued = uplink.get("outbox", 0)
        lines.append((f"Борбор менен байланыш: {s_ky}; жөнөтүлө элек билдирүүлөр: {queued}.",
                      f"Связь с центром: {s_ru}; неотправленных сообщений: {queued}."))
        if uplink.get("state") not in ("connected", None):
            todo.append(("Борбор менен байланыш жок: киоск оффлайн иштей берет, "
                         "билдирүүлөр кийин жөнөтүлөт.",
                         "Нет связи с центром: киоск работает офлайн, "
                         "сообщения уйдут позже."))
    pending = _pending(result)
    if result.get("storage") == "full":
        lines.append(("Диск: толуп калды.", "Диск: заполнен."))
        todo.append(DISK_FULL)
        if pending:  # they wait for room on the disk, not for the printer
            serials = ", ".join(pending)
            todo.append((f"Басыла элек чектер: {serials}; орун бошогондо өзү басылат.",
                         f"Не напечатаны чеки: {serials}; напечатаются сами, когда "
                         "освободится место."))
    elif pending:
        todo.extend(_held(pending, _printer_state(result)))
    else:
        lines.append(("Басыла элек чек жок.", "Ненапечатанных чеков нет."))
    conflicts = result.get("conflicts")
    if isinstance(conflicts, int) and conflicts:
        todo.append((f"Карама-каршылыктар: {conflicts}; жабуу отчетун комиссия менен текшериңиз.",
                     f"Конфликтов: {conflicts}; сверьте итоговый отчёт с комиссией."))
    if todo:
        lines.append(("Эмне кылуу керек:", "Что сделать:"))
        lines.extend(todo)
    elif result.get("phase") == "open":
        lines.append(("Баары даяр, эч нерсе кылуунун кереги жок.",
                      "Всё готово, ничего делать не нужно."))
    return lines


def _slip_outcome(outcome: Mapping[str, Any]) -> tuple[list[Pair], int]:
    """A voter slip made by ``manual`` (admitted or refused) and whether it printed."""
    kind, serial = outcome.get("kind"), outcome.get("serial", "?")
    number = outcome.get("list_number", "?")
    if kind == "refused":
        where = f"{outcome.get('first_kiosk', '?')}, чек {outcome.get('first_serial', '?')}"
        lines = [(f"Баш тартылды: тизмедеги №{number} шайлоочу мурда идентификацияланган "
                  f"({where}). Бюллетень берилбейт; чек {serial}.",
                  f"Отказано: избиратель №{number} по списку уже идентифицирован "
                  f"({where}). Бюллетень не выдаётся; чек {serial}.")]
        ahead = outcome.get("first_ahead_ms")
        if isinstance(ahead, int):
            # Its mark is held apart for that kiosk's clock; it refuses all the same.
            kiosk, minutes = outcome.get("first_kiosk", "?"), max(1, round(ahead / 60_000))
            lines.append((f"{kiosk} түзмөгүнүн сааты {minutes} мүн. алдыда; "
                          "техникке айтыңыз.",
                          f"Часы устройства {kiosk} спешат на {minutes} мин.; "
                          "сообщите технику."))
        code = EXIT_REFUSED
    else:
        lines = [(f"Тизмедеги №{number} шайлоочу комиссиянын чечими менен киргизилди; "
                  f"чек {serial}.",
                  f"Избиратель №{number} по списку допущен по решению комиссии; чек {serial}.")]
        code = EXIT_DONE
    if not outcome.get("printed", False):
        lines.extend(_held([str(serial)], outcome.get("printer")))
        if code == EXIT_DONE:
            code = EXIT_HELD  # a refusal stays a refusal (exit 1) even when its slip waits
    return lines, code


def command_answer(command: str, result: Mapping[str, Any]) -> Answer:
    """The sentences and exit code for a command the agent carried out."""
    if command == "status":
        lines = status_lines(result)
        return Answer(tuple(lines), EXIT_HELD if _pending(result) else EXIT_DONE)
    phase_ky, phase_ru = _phase(result.get("phase", "unknown"))
    lines = []
    code = EXIT_DONE
    outcome = result.get("outcome")
    if command == "open":
        lines.append(("Участок ачылды, нөл отчет басылды.",
                      "Участок открыт, нулевой отчёт напечатан."))
    elif command == "pause":
        lines.append(("Шайлоочуларды кабыл алуу убактылуу токтотулду.",
                      "Приём избирателей приостановлен."))
    elif command == "resume":
        lines.append(("Шайлоочуларды кабыл алуу улантылды.", "Приём избирателей возобновлён."))
    elif command == "close":
        serial = result.get("closing_report", "?")
        if result.get("closing_report_printed", True):
            lines.append((f"Участок жабылды, жабуу отчету {serial} басылды.",
                          f"Участок закрыт, итоговый отчёт {serial} напечатан."))
        else:
            lines.append((f"Участок жабылды, бирок жабуу отчету {serial} басылган жок.",
                          f"Участок закрыт, но итоговый отчёт {serial} не напечатан."))
            printer = outcome.get("printer") if isinstance(outcome, Mapping) else None
            lines.extend(_held([str(serial)], printer))
            code = EXIT_HELD
    elif command == "export":
        path = result.get("export", "?")
        lines.append((f"Архив жазылды: {path}", f"Архив записан: {path}"))
    elif command == "document":
        number = result.get("list_number", "?")
        lines.append((f"Документ кабыл алынды: тизмедеги №{number}. "
                      "Шайлоочу манжасын сенсорго койсун.",
                      f"Документ принят: №{number} по списку. "
                      "Пусть избиратель приложит палец к сканеру."))
        return Answer(tuple(lines), EXIT_DONE)
    elif command == "reprint" and isinstance(outcome, Mapping):
        serial = outcome.get("serial", "?")
        if outcome.get("printed"):
            lines.append((f"Чек {serial} кайра басылды (ДУБЛИКАТ).",
                          f"Чек {serial} напечатан повторно (ДУБЛИКАТ)."))
        else:
            lines.extend(_held([str(serial)], outcome.get("printer")))
            code = EXIT_HELD
    elif command == "revoke":
        revoked = ", ".join(str(k) for k in result.get("revoked", [])) or "—"
        lines.append((f"Чакырылып алынган киоскулар: {revoked}. Алардын жаңы белгилери "
                      "кабыл алынбайт; мурунку белгилери жабуу отчетунда көрсөтүлөт.",
                      f"Отозванные киоски: {revoked}. Их новые отметки не принимаются; "
                      "прежние будут отмечены в итоговом отчёте."))
    elif command == "manual" and isinstance(outcome, Mapping):
        more, code = _slip_outcome(outcome)
        lines.extend(more)
    else:
        lines.append(("Аткарылды.", "Выполнено."))
    lines.append((f"Участок: {phase_ky}.", f"Участок: {phase_ru}."))
    if code == EXIT_DONE and command != "reprint":
        others = [s for s in _pending(result)
                  if not (isinstance(outcome, Mapping) and s == outcome.get("serial"))]
        if others:
            lines.extend(_held(others, _printer_state(result)))
            code = EXIT_HELD
    return Answer(tuple(lines), code)


def refusal(code: str, params: Mapping[str, Any], message: str) -> Pair:
    """One sentence per language for a command the agent refused (``StationError.code``)."""
    if code == "phase":
        ky, ru = _phase(params.get("phase", "unknown"))
        cmd = _COMMAND.get(str(params.get("command")), (str(params.get("command")),) * 2)
        can = ", ".join(f"kesp-agent {a}" for a in params.get("allowed", [])) or "—"
        return (f"Азыр \"{cmd[0]}\" мүмкүн эмес: участок {ky}. Азыр мүмкүн: {can}.",
                f"Сейчас нельзя \"{cmd[1]}\": участок {ru}. Сейчас можно: {can}.")
    if code == "unknown-list-number":
        n = params.get("list_number", "?")
        return (f"№{n} бул участоктун тизмесинде жок: номерди кагаз тизмеден текшериңиз.",
                f"Номера {n} нет в списке этого участка: сверьте номер с бумажным списком.")
    if code == "bad-list-number":
        n = params.get("list_number", "?")
        return (f"Тизмедеги номер бүтүн сан болушу керек, {n!r} эмес.",
                f"Номер по списку должен быть целым числом, а не {n!r}.")
    if code == "unknown-document":
        return ("Бул документтин номери участоктун тизмесинде жок: номерди текшериңиз же "
                "комиссияга кайрылыңыз.",
                "Номера документа нет в списке участка: проверьте номер или обратитесь "
                "в комиссию.")
    if code == "unknown-serial":
        s = params.get("serial", "?")
        return (f"{s} номерлүү чек бул киоскто жок: номерди чектен текшериңиз.",
                f"Чека {s} на этом киоске нет: сверьте номер с чеком.")
    if code == "not-empty":
        return ("Ачылбайт: бул киоскто мурунтан белгилер же чектер бар. Техникке кайрылыңыз.",
                "Открыть нельзя: на киоске уже есть отметки или чеки. Вызовите техника.")
    if code == "zero-report-not-printed":
        state = params.get("printer")
        fix = _printer_fix(state)
        return (f"Нөл отчет басылган жок (принтер: {_state(state)[0]}), участок ачылган жок. "
                f"{fix[0]} Анан kesp-agent open кайра териңиз.",
                f"Нулевой отчёт не напечатан (принтер: {_state(state)[1]}), участок не открыт. "
                f"{fix[1]} Затем снова kesp-agent open.")
    if code == "disk-full":
        return ("Буйрук аткарылган жок: киосктун диски толуп калды, эч нерсе жазылган жок. "
                "Орун бошотуу үчүн техникке кайрылыңыз, анан буйрукту кайталаңыз.",
                "Команда не выполнена: диск киоска заполнен, ничего не записано. "
                "Вызовите техника, чтобы освободить место, затем повторите команду.")
    if code == "no-export":
        return ("Бул киоскто архив жазуу орнотулган эмес: техникке кайрылыңыз.",
                "Запись архива на этом киоске не настроена: вызовите техника.")
    return (f"Агент баш тартты: {message}", f"Агент отказал: {message}")


def unreachable(detail: str, free_mb: float | None = None) -> Pair:
    """The agent did not answer; ``free_mb`` when its state disk is full (a start-up
    that failed for lack of space: systemd starts it again, the disk must be freed)."""
    if free_mb is not None:
        return (f"Агент жооп бербейт, киосктун диски толуп калды (бош {free_mb:.1f} МБ): "
                "орун бошотуу үчүн техникке кайрылыңыз; агент өзү кайра иштейт.",
                f"Агент не отвечает, диск киоска заполнен (свободно {free_mb:.1f} МБ): "
                "вызовите техника, чтобы освободить место; агент запустится сам.")
    return (f"Агент жооп бербейт ({detail}): systemctl status kesp-agent менен текшериңиз.",
            f"Агент не отвечает ({detail}): проверьте systemctl status kesp-agent.")
