"""The operator's commands through the real CLI and control socket, as a commission types them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from agent.runtime.keys import load_keys
from hardware_sim.rig import Rig, is_duplicate, slip_serial
from tests.cli_helpers import Run, one_line_refusal


def _cli(rig: Rig, *args: str) -> Run:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.runtime.cli", "--config", str(rig.config), *args],
        check=False, capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def _json(rig: Rig, *args: str) -> dict[str, object]:
    r = _cli(rig, "--json", *args)
    assert r.code in (0, 3), r
    out: dict[str, object] = json.loads(r.out)
    return out


def _both_languages(text: str) -> None:
    """Kyrgyz (its own letters) and Russian sentences, each once."""
    ky, _, ru = text.partition("\n\n")
    assert any(ch in ky for ch in "ңөүҢӨҮ"), ky
    assert ru and not any(ch in ru for ch in "ңөүҢӨҮ"), ru
    assert len(ky.splitlines()) == len(ru.splitlines())


def _state_files(rig: Rig) -> dict[str, int]:
    """What a refused command must not change: the stores' outcome counts."""
    counts = _json(rig, "status")["counts"]
    assert isinstance(counts, dict)
    return dict(counts)


def test_operator_day_through_the_cli(ref_data: Path, tmp_path: Path) -> None:
    with Rig(ref_data, tmp_path / "station", quiet=True) as rig:
        rig.start_agent()
        mode = stat.S_IMODE(rig.kiosk.sock.stat().st_mode)
        assert mode == 0o660, oct(mode)

        status = _cli(rig, "status")
        assert status.code == 0, status
        _both_languages(status.out)
        assert "даяр, ачыла элек" in status.out and "готов, ещё не открыт" in status.out
        for thing in ("Принтер:", "Связь с центром:", "Ненапечатанных чеков нет"):
            assert thing in status.out, status.out
        assert _json(rig, "status")["phase"] == "provisioned"
        one_line_refusal(_cli(rig, "pause"), "kesp-agent open", "участок готов")

        # Mistyped arguments: one line naming the thing and the fix, exit 2, nothing sent.
        before = _state_files(rig)
        one_line_refusal(_cli(rig, "manual", "abc"), "'abc'", "kesp-agent manual 17", code=2)
        one_line_refusal(_cli(rig, "manual", "-3"), "kesp-agent manual 17", code=2)
        one_line_refusal(_cli(rig, "reprint", "7"), "'7'", "s-0001-kiosk-a-00007", code=2)
        one_line_refusal(_cli(rig, "document", "AB 12;rm"), "4-20", code=2)
        assert _state_files(rig) == before

        opened = _cli(rig, "open")
        assert opened.code == 0 and "нулевой отчёт напечатан" in opened.out, opened
        _both_languages(opened.out)
        zero = rig.printer.wait_for_documents(1, timeout=30)[0]
        assert "НУЛЕВОЙ ОТЧЕТ" in zero.text
        one_line_refusal(_cli(rig, "open"), "kesp-agent pause", "kesp-agent close")

        assert _json(rig, "pause")["phase"] == "paused"
        one_line_refusal(_cli(rig, "manual", "7"), "kesp-agent resume")
        assert _json(rig, "resume")["phase"] == "open"

        one_line_refusal(_cli(rig, "document", "XX0000000"), "проверьте номер")
        before = _state_files(rig)
        one_line_refusal(_cli(rig, "manual", "99999"), "99999", "бумажным списком")
        assert _state_files(rig) == before
        one_line_refusal(_cli(rig, "revoke", "kiosk-9999-z"), "not one of this station's kiosks")
        one_line_refusal(_cli(rig, "revoke", rig.kiosk.device), "cannot revoke itself")
        one_line_refusal(_cli(rig, "revoke", "Kiosk 9"), "'Kiosk 9'", code=2)

        admitted = _cli(rig, "manual", "7")
        assert admitted.code == 0 and "№7" in admitted.out and "допущен по решению комиссии" \
            in admitted.out, admitted
        slip = rig.printer.wait_for_documents(2, timeout=30)[1]
        serial = slip_serial(slip.text)
        assert serial and serial in admitted.out

        again = _cli(rig, "manual", "7")  # already marked: refused, says so, exit 1
        assert again.code == 1, again
        assert "Отказано" in again.out and serial in again.out and "Бюллетень не выдаётся" \
            in again.out
        counts = _json(rig, "status")["counts"]
        assert isinstance(counts, dict) and counts["manual"] == 1 and counts["refused"] == 1

        # Cover open: the slip is held, the operator is told which and what to do, exit 3.
        rig.printer.open_cover()
        held = _cli(rig, "manual", "8")
        assert held.code == 3, held
        assert "Закройте крышку принтера" in held.out and "капкагын жабыңыз" in held.out
        waiting = _cli(rig, "status")
        assert waiting.code == 3 and "Не напечатаны чеки" in waiting.out, waiting
        rig.printer.close_cover()
        rig.printer.wait_for_documents(4, timeout=30)

        reprinted = _cli(rig, "reprint", serial)
        assert reprinted.code == 0 and "ДУБЛИКАТ" in reprinted.out, reprinted
        docs = rig.printer.wait_for_documents(5, timeout=30)
        assert is_duplicate(docs[4].text) and serial in docs[4].text
        one_line_refusal(_cli(rig, "reprint", "s-0001-kiosk-a-09999"), "s-0001-kiosk-a-09999")

        closed = _cli(rig, "close")
        assert closed.code == 0 and "итоговый отчёт" in closed.out, closed
        closing = rig.printer.wait_for_documents(6, timeout=30)[5].text
        assert "ИТОГОВЫЙ ОТЧЕТ" in closing and serial in closing

        # The log of a running agent after a proper close is open, not an unclean stop.
        running = _cli(rig, "audit", "verify")
        assert running.code == 0 and "агент работает" in running.out, running
        assert "NOT closed cleanly" not in running.out
        shown = _cli(rig, "audit", "show", "--last", "3")
        assert shown.code == 0 and len(shown.out.splitlines()) == 3, shown

        exported = _json(rig, "export")
        assert exported["phase"] == "exported"
        archive = Path(str(exported["export"]))
        body = archive.read_bytes()
        signature = bytes.fromhex(archive.with_suffix(".sig").read_text())
        verify_key = load_keys(rig.kiosk.dir / "keys").signing.verify_key
        verify_key.verify(body, signature)
        assert json.loads(body)["counts"]["manual"] == 2
        assert rig.stop_agent() == 0

        audit = _cli(rig, "audit", "verify")
        assert audit.code == 0 and "закрыт штатно" in audit.out, audit

        rig.kiosk.sock.parent.mkdir(parents=True, exist_ok=True)
        one_line_refusal(_cli(rig, "status"), "systemctl status kesp-agent", code=69)
