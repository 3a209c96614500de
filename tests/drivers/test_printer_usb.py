"""The printer service over USB (pyusb) against the simulator's pyusb backend."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from agent.drivers.printer.document import Document, QRCode, Text
from agent.drivers.printer.printer import ReceiptPrinter, open_printer
from agent.drivers.printer.profiles import PrinterTimings, get_profile
from agent.drivers.printer.status import NotPrinted, Printed, PrinterState, Uncertain
from agent.drivers.transport import TransportUnavailableError, UsbLink
from agent.runtime.config import PrinterConfig
from hardware_sim.escpos_sim import EscposUsbSimulator, Scenario

FAST = PrinterTimings(status_timeout_s=0.3, write_timeout_s=0.3, print_timeout_s=2.0,
                      print_timeout_per_kib_s=0.2, reopen_delay_s=0.01)
SLIP = Document("slip", "0009", (
    Text("Аты-жөнү: Өмүрбек Үсөнов " * 8),
    QRCode("KESP:0009"),
))


def _open(sim: EscposUsbSimulator, profile: str = "epson-tm-t20iii") -> ReceiptPrinter:
    return open_printer(PrinterConfig(kind="escpos-usb", port=sim.port, profile=profile),
                        timings=FAST, usb_backend=sim.backend)


def test_usb_print_detaches_usblp_and_writes_in_chunks(tmp_path: Path) -> None:
    sim = EscposUsbSimulator(tmp_path)
    assert sim.backend.kernel_driver_active
    with _open(sim, "generic-58") as printer:
        assert printer.status().state is PrinterState.READY
        assert not sim.backend.kernel_driver_active and sim.backend.claimed
        outcome = printer.print_document(SLIP)
    assert isinstance(outcome, Printed)
    assert not sim.backend.claimed  # released on close
    chunk = get_profile("generic-58").write_chunk
    assert max(sim.backend.writes) == chunk and len(sim.backend.writes) > 3
    [slip] = sim.wait_for_documents(1, 5)
    assert slip.text.startswith("[raster 384x")  # generic-58 rasterises Kyrgyz and QR


def test_usb_kyrgyz_text_round_trips_on_kz1048(tmp_path: Path) -> None:
    sim = EscposUsbSimulator(tmp_path)
    with _open(sim) as printer:
        assert isinstance(printer.print_document(SLIP), Printed)
    [slip] = sim.wait_for_documents(1, 5)
    assert "Өмүрбек Үсөнов" in slip.text and "[QR KESP:0009]" in slip.text


def test_usb_unplug_gives_disconnected_and_replug_recovers(tmp_path: Path) -> None:
    sim = EscposUsbSimulator(tmp_path)
    with _open(sim) as printer:
        assert printer.status().state is PrinterState.READY
        sim.unplug()
        status = printer.status()
        assert status.state is PrinterState.DISCONNECTED
        assert isinstance(printer.print_document(SLIP), NotPrinted)
        sim.plug()  # re-enumerates with usblp attached again: the driver detaches it again
        assert printer.status().state is PrinterState.READY
        assert not sim.backend.kernel_driver_active
        assert isinstance(printer.print_document(SLIP), Printed)


def test_usb_timeout_mid_slip_is_uncertain(tmp_path: Path) -> None:
    sim = EscposUsbSimulator(tmp_path, scenario="stall")  # accepts 100 bytes, then ETIMEDOUT
    with _open(sim) as printer:
        outcome = printer.print_document(SLIP)
        assert isinstance(outcome, Uncertain)
        assert "timed out" in outcome.detail.lower()
        assert outcome.status.state is PrinterState.DISCONNECTED
        sim.stall(False)
        assert printer.status().state is PrinterState.READY


def test_next_slip_after_a_write_cut_mid_image_is_clean(tmp_path: Path) -> None:
    # The transfer dies inside the first raster band; the printer is left
    # waiting for image data. The next slip must not be swallowed by it.
    sim = EscposUsbSimulator(tmp_path, scenario=Scenario("t", "mid-raster", stall_after_bytes=700))
    with _open(sim, "generic-58") as printer:
        assert isinstance(printer.print_document(SLIP), Uncertain)
        sim.stall(False)
        again = printer.print_document(Document("slip", "0010", (Text("Экинчи чек"),)))
        assert isinstance(again, Printed)
    [slip] = sim.wait_for_documents(1, 5)
    # The half-sent band of the failed slip comes out (blank-padded) above it.
    assert slip.text.splitlines()[-1] == "Экинчи чек"
    assert slip.text.startswith("[raster 384x") and slip.unknown == ()


def test_usb_epipe_clears_the_halt_and_nothing_was_printed(tmp_path: Path) -> None:
    sim = EscposUsbSimulator(tmp_path)
    sim.backend.write_error = (12, errno.EPIPE)  # after the status query: the slip is refused
    with _open(sim) as printer:
        outcome = printer.print_document(SLIP)
        assert isinstance(outcome, NotPrinted) and outcome.status.state is PrinterState.READY
        assert sim.backend.halts_cleared == [0x01]
        assert isinstance(printer.print_document(SLIP), Printed)  # the original, again
    assert len(sim.wait_for_documents(1, 5)) == 1


def test_usb_unplugged_mid_transfer_is_uncertain_then_recovers(tmp_path: Path) -> None:
    sim = EscposUsbSimulator(tmp_path)
    sim.backend.write_error = (2000, errno.ENODEV)
    with _open(sim, "generic-58") as printer:
        outcome = printer.print_document(SLIP)
        assert isinstance(outcome, Uncertain)
        assert outcome.status.state is PrinterState.DISCONNECTED
        sim.plug()
        assert printer.status().state is PrinterState.READY
        reprint = Document(SLIP.kind, SLIP.serial, SLIP.blocks, duplicate=True)
        assert isinstance(printer.print_document(reprint), Printed)
    [slip] = sim.wait_for_documents(1, 5)
    assert "[raster " in slip.text and slip.unknown == ()


def test_usb_zero_status_bytes_are_an_error_state(tmp_path: Path) -> None:
    sim = EscposUsbSimulator(tmp_path, scenario="garbage-status")
    with _open(sim) as printer:
        status = printer.status()
        assert status.state is PrinterState.ERROR and "00 00 00 00" in status.detail


def test_usb_paper_out_then_load(tmp_path: Path) -> None:
    sim = EscposUsbSimulator(tmp_path, scenario="paper-out")
    with _open(sim) as printer:
        outcome = printer.print_document(SLIP)
        assert isinstance(outcome, NotPrinted) and outcome.status.state is PrinterState.PAPER_OUT
        sim.load_paper()
        assert isinstance(printer.print_document(SLIP), Printed)


def test_usb_absent_device_and_busy_interface(tmp_path: Path) -> None:
    sim = EscposUsbSimulator(tmp_path)
    sim.unplug()
    with pytest.raises(TransportUnavailableError, match="no USB printer"):
        UsbLink(sim.port, get_profile("generic-58").usb_ids, sim.backend)
    sim.plug()
    # A kernel driver that refuses to let go: claim fails with EBUSY, reported as unavailable.
    sim.backend.detach_kernel_driver = _refuse  # type: ignore[method-assign]
    with pytest.raises(TransportUnavailableError) as info:
        UsbLink(sim.port, get_profile("generic-58").usb_ids, sim.backend)
    assert info.value.errno == 16


def _refuse(handle: object, intf: int) -> None:
    """A detach that silently does nothing (as when usblp is re-bound by udev)."""
