"""The printer simulator decodes an independent encoder (python-escpos) correctly, over a pty."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import serial
from escpos.printer import Dummy
from PIL import Image

from hardware_sim.escpos_sim import SCENARIOS, EscposPrinterSimulator, cli_main


def _send_over_pty(sim: EscposPrinterSimulator, data: bytes) -> None:
    with serial.Serial(str(sim.path), 115200, timeout=1, write_timeout=5) as port:
        port.write(data)
        port.flush()


def _ink(png: Path) -> np.ndarray:
    return np.asarray(Image.open(png).convert("L")) < 128


def test_python_escpos_russian_text_image_qr_and_cut(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    picture = rng.random((24, 64)) < 0.4  # True = black
    p = Dummy(profile="TM-T20II")
    p.text("Привет, мир! Ёжик съел щуку.\n")
    p.image(Image.fromarray(np.where(picture, 0, 255).astype(np.uint8), mode="L"))
    p.cut()
    p.qr("KESP 0042", native=True, size=4)
    p.qr("KESP raster", native=False, size=3)
    p.cut(mode="PART")

    with EscposPrinterSimulator(tmp_path, profile="epson-tm-t20iii") as sim:
        _send_over_pty(sim, p.output)
        first, second = sim.wait_for_documents(2, 10)

    # 1. Russian text (python-escpos picks a Cyrillic code page with ESC t).
    lines = first.text.splitlines()
    assert lines[0] == "Привет, мир! Ёжик съел щуку."
    assert lines[1] == "[raster 64x24]"
    assert first.unknown == ()
    assert not first.partial_cut  # GS V 0: full cut

    # 2. The image's dots land on paper exactly (left-aligned, below one text line).
    ink = _ink(first.png)
    text_pitch = 30  # one line of font A text above the picture
    assert np.array_equal(ink[text_pitch : text_pitch + 24, :64], picture)
    assert not ink[text_pitch : text_pitch + 24, 64:].any()

    # 3. Native QR (GS ( k) and raster QR (qrcode library image) both decode.
    assert second.partial_cut
    lines2 = second.text.splitlines()
    assert "[QR KESP 0042]" in lines2
    assert any(line.startswith("[raster ") for line in lines2)


def test_raster_qr_from_python_escpos_matches_its_matrix(tmp_path: Path) -> None:
    import qrcode  # type: ignore[import-untyped]

    p = Dummy(profile="TM-T20II")
    p.qr("KESP raster", native=False, size=3)
    p.cut()
    with EscposPrinterSimulator(tmp_path) as sim:
        _send_over_pty(sim, p.output)
        [slip] = sim.wait_for_documents(1, 10)
    ink = _ink(slip.png)
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    symbol = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    qr = qrcode.QRCode(version=None, box_size=3, border=0,
                       error_correction=qrcode.constants.ERROR_CORRECT_L)
    qr.add_data("KESP raster")
    qr.make(fit=True)
    matrix = np.array(qr.get_matrix(), dtype=bool)
    assert symbol.shape == (matrix.shape[0] * 3, matrix.shape[1] * 3)
    assert np.array_equal(symbol[1::3, 1::3], matrix)


def test_unknown_commands_are_reported_on_the_slip(tmp_path: Path) -> None:
    with EscposPrinterSimulator(tmp_path) as sim:
        _send_over_pty(sim, b"\x1b@\x1bz1ok\n\x1bt\x63x\n\x1dV\x00")
        [slip] = sim.wait_for_documents(1, 5)
    assert slip.unknown == ("1b 7a", "ESC t 99 (no such code page)")
    assert (tmp_path / "0001.txt").read_text(encoding="utf-8") == "1ok\nx\n"


def test_paper_roll_runs_down_to_near_end_then_out(tmp_path: Path) -> None:
    slip = b"\x1b@" + b"line\n" * 20 + b"\x1dVB\x30"  # 20 x 30 + 48 dots = 81 mm
    with EscposPrinterSimulator(tmp_path, paper_mm=380) as sim:
        eng = sim.engine
        assert not eng.paper_near_end
        _send_over_pty(sim, slip * 2)
        assert len(sim.wait_for_documents(2, 5)) == 2
        assert eng.paper_near_end and not eng.paper_out
        _send_over_pty(sim, slip * 4)
        deadline = time.monotonic() + 5
        while not eng.paper_out and time.monotonic() < deadline:
            time.sleep(0.02)
        assert eng.paper_out and len(sim.documents) == 4
        assert eng.status_bytes() == bytes.fromhex("1a 32 12 7e")
        sim.load_paper()
        assert len(sim.wait_for_documents(6, 5)) == 6
        assert sim.documents[4].interrupted and not sim.documents[5].interrupted


def test_cli_lists_scenarios_and_runs_until_quit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["--list-scenarios"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in SCENARIOS)
    monkeypatch.setattr("sys.stdin", io.StringIO("open-cover\nstatus\nquit\n"))
    assert cli_main(["--out", str(tmp_path), "--scenario", "paper-near-end"]) == 0
    out = capsys.readouterr().out
    assert f"printer on {tmp_path / 'printer.tty'}" in out
    assert "cover_open=True" in out and "near_end=True" in out
    assert not (tmp_path / "printer.tty").exists()
