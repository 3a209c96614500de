"""The printer service against the pty simulator: outcomes, faults, recovery."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent.drivers.printer.document import Align, Document, QRCode, Text
from agent.drivers.printer.errors import DocumentError
from agent.drivers.printer.printer import ReceiptPrinter, open_printer
from agent.drivers.printer.profiles import PrinterTimings
from agent.drivers.printer.status import NotPrinted, Printed, PrinterState, Uncertain
from agent.runtime.config import ConfigError, PrinterConfig
from hardware_sim.escpos_sim import EscposPrinterSimulator

FAST = PrinterTimings(
    status_timeout_s=0.3,
    write_timeout_s=0.5,
    print_timeout_s=3.0,
    print_timeout_per_kib_s=0.5,
    reopen_delay_s=0.01,
)

SLIP = Document(
    "slip",
    "0007",
    (
        Text("Шайлоочунун чеги", Align.CENTER, bold=True),
        Text("Аты-жөнү: Өмүрбек Үсөнов"),
        Text("Ңң Өө Үү"),
        QRCode("KESP:0007"),
    ),
)


def _open(sim: EscposPrinterSimulator, profile: str = "epson-tm-t20iii",
          timings: PrinterTimings = FAST) -> ReceiptPrinter:
    return open_printer(
        PrinterConfig(kind="escpos-serial", port=str(sim.path), baud=115200, profile=profile),
        timings=timings,
    )


@pytest.fixture
def sim(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EscposPrinterSimulator]:
    scenario = getattr(request, "param", "normal")
    with EscposPrinterSimulator(tmp_path / "slips", scenario=scenario) as s:
        yield s


def test_prints_a_kyrgyz_slip(sim: EscposPrinterSimulator) -> None:
    with _open(sim) as printer:
        assert printer.status().state is PrinterState.READY
        outcome = printer.print_document(SLIP)
    assert isinstance(outcome, Printed)
    assert outcome.status_after.state is PrinterState.READY
    [slip] = sim.wait_for_documents(1, 5)
    assert slip.text.splitlines() == [
        "Шайлоочунун чеги", "Аты-жөнү: Өмүрбек Үсөнов", "Ңң Өө Үү", "[QR KESP:0007]"
    ]
    assert slip.png.name == "0001.png" and slip.png.stat().st_size > 0
    assert slip.txt.read_text(encoding="utf-8").startswith("Шайлоочунун чеги\n")
    assert not slip.interrupted and slip.partial_cut and slip.unknown == ()


@pytest.mark.parametrize(
    ("sim", "state"),
    [
        ("paper-out", PrinterState.PAPER_OUT),
        ("cover-open", PrinterState.COVER_OPEN),
        ("offline", PrinterState.OFFLINE),
    ],
    indirect=["sim"],
)
def test_not_ready_printer_sends_nothing(sim: EscposPrinterSimulator, state: PrinterState) -> None:
    with _open(sim) as printer:
        outcome = printer.print_document(SLIP)
        assert isinstance(outcome, NotPrinted) and outcome.status.state is state
        # Only the four DLE EOT queries went out: nothing was printed or buffered.
        assert sim.engine.bytes_received == 12
        sim.load_paper()
        sim.close_cover()
        sim.set_offline(False)
        assert isinstance(printer.print_document(SLIP), Printed)
    assert len(sim.wait_for_documents(1, 5)) == 1


@pytest.mark.parametrize("sim", ["paper-near-end"], indirect=True)
def test_near_end_still_prints(sim: EscposPrinterSimulator) -> None:
    with _open(sim) as printer:
        assert printer.status().state is PrinterState.PAPER_NEAR_END
        outcome = printer.print_document(SLIP)
    assert isinstance(outcome, Printed)
    assert outcome.status_after.state is PrinterState.PAPER_NEAR_END


@pytest.mark.parametrize("sim", ["paper-out-mid-slip"], indirect=True)
def test_paper_out_mid_slip_is_uncertain_then_duplicate(sim: EscposPrinterSimulator) -> None:
    with _open(sim) as printer:
        outcome = printer.print_document(SLIP)
        assert isinstance(outcome, Uncertain)
        assert outcome.status.state is PrinterState.PAPER_OUT
        assert "mid-slip" in outcome.detail
        assert sim.documents == []
        sim.load_paper()
        # The printer finishes the held original once paper is in ...
        [held] = sim.wait_for_documents(1, 5)
        assert held.interrupted and "[paper out]" in held.text
        # ... and the application's reprint is marked as a duplicate.
        reprint = printer.print_document(
            Document(SLIP.kind, SLIP.serial, SLIP.blocks, duplicate=True)
        )
        assert isinstance(reprint, Printed)
    slips = sim.wait_for_documents(2, 5)
    assert slips[1].text.splitlines()[:2] == ["ДУБЛИКАТ", "DUPLICATE"]


def test_unplug_and_replug_recovers_by_reopening(sim: EscposPrinterSimulator) -> None:
    with _open(sim) as printer:
        assert printer.status().state is PrinterState.READY
        sim.unplug()
        gone = printer.status()
        assert gone.state is PrinterState.DISCONNECTED and gone.flags is None
        outcome = printer.print_document(SLIP)
        assert isinstance(outcome, NotPrinted)
        assert outcome.status.state is PrinterState.DISCONNECTED
        sim.plug()
        assert printer.status().state is PrinterState.READY
        assert isinstance(printer.print_document(SLIP), Printed)
    assert len(sim.wait_for_documents(1, 5)) == 1


@pytest.mark.parametrize("sim", ["unplug-after-first"], indirect=True)
def test_unplug_right_after_the_cut_is_uncertain(sim: EscposPrinterSimulator) -> None:
    with _open(sim) as printer:
        outcome = printer.print_document(SLIP)
        assert isinstance(outcome, Uncertain)
        assert outcome.status.state is PrinterState.DISCONNECTED
    # The original did leave the printer: exactly why the reprint must say DUPLICATE.
    assert len(sim.documents) == 1


@pytest.mark.parametrize("sim", ["stall"], indirect=True)
def test_stalled_printer_is_uncertain_and_reported_disconnected(
    sim: EscposPrinterSimulator,
) -> None:
    with _open(sim, timings=replace(FAST, print_timeout_s=1.0)) as printer:
        outcome = printer.print_document(SLIP)
        assert isinstance(outcome, Uncertain)
        assert outcome.status.state is PrinterState.DISCONNECTED
        assert "no reply" in outcome.status.detail
        assert sim.documents == []
        sim.stall(False)
        # The bytes were sent: once the printer wakes up the original comes out.
        assert len(sim.wait_for_documents(1, 5)) == 1


@pytest.mark.parametrize("sim", ["garbage-status"], indirect=True)
def test_garbled_status_is_an_error_state(sim: EscposPrinterSimulator) -> None:
    with _open(sim) as printer:
        status = printer.status()
        assert status.state is PrinterState.ERROR and "0xx1xx10" in status.detail
        assert isinstance(printer.print_document(SLIP), NotPrinted)
    assert sim.documents == []


@pytest.mark.parametrize("sim", ["slow"], indirect=True)
def test_slow_printer_still_confirms(sim: EscposPrinterSimulator) -> None:
    with _open(sim) as printer:
        assert isinstance(printer.print_document(SLIP), Printed)
    assert len(sim.documents) == 1


def test_raster_profile_prints_kyrgyz_as_images(sim: EscposPrinterSimulator) -> None:
    # The simulator is a KZ-1048 printer; a host configured as generic-58 sends
    # Kyrgyz lines as rasters, which any printer prints.
    with _open(sim, profile="generic-58") as printer:
        assert isinstance(printer.print_document(SLIP), Printed)
    [slip] = sim.wait_for_documents(1, 5)
    # One typeface per slip: every line (the Russian one too) and the QR are consecutive
    # rasters in DejaVu Sans, read back as one image.
    [marker] = [line for line in slip.text.splitlines() if line]
    width, height = marker.removeprefix("[raster ").removesuffix("]").split("x")
    assert width == "384" and int(height) > 3 * 15 + 21 * 6  # heading, text lines + QR


def test_bad_document_raises_before_any_io(sim: EscposPrinterSimulator) -> None:
    with _open(sim) as printer, pytest.raises(DocumentError):
        printer.print_document(Document("slip", "1", (Text("a\x1bi"),)))
    assert sim.engine.bytes_received == 0


def test_absent_printer_is_a_status_not_an_exception(tmp_path: Path) -> None:
    printer = open_printer(
        PrinterConfig(kind="escpos-serial", port=str(tmp_path / "nothing")), timings=FAST
    )
    status = printer.status()
    assert status.state is PrinterState.DISCONNECTED and "cannot open" in status.detail
    assert isinstance(printer.print_document(SLIP), NotPrinted)
    printer.close()


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="unknown printer profile 'tm-x'") as info:
        open_printer(PrinterConfig(profile="tm-x"))
    assert info.value.field == "printer.profile"
    with pytest.raises(ConfigError) as info2:
        open_printer(PrinterConfig(kind="escpos-usb", port="/dev/usb/lp0"))
    assert info2.value.field == "printer.port"
