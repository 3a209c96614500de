"""The sensor's and the printer's serial cables swapped: each port names the device answering there.

Real simulators on real ptys: the ESC/POS printer at the sensor's port, the
Grow module at the printer's port; the real drivers, the supervised sensor
and the printer service as the agent runs them; then the right device at the
port, and each recovers by itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.drivers.printer.document import Document, Text
from agent.drivers.printer.printer import ReceiptPrinter, open_printer
from agent.drivers.printer.profiles import (
    SIMULATOR_DEFAULT_PROFILE,
    PrinterTimings,
    get_profile,
)
from agent.drivers.printer.status import Printed, PrinterState
from agent.drivers.probe import grow_answers, printer_answers
from agent.drivers.sensor.parameters import SensorTimings
from agent.drivers.sensor.service import open_sensor
from agent.drivers.sensor.supervised import SupervisedSensor
from agent.drivers.sensor.types import SensorState, SensorStatus, WrongSensorError
from agent.drivers.transport import SerialLink
from agent.runtime.config import PrinterConfig, SensorConfig
from agent.runtime.service import _printer_advice
from hardware_sim.escpos_sim import EscposPrinterSimulator
from hardware_sim.grow_sim import GrowSensorSimulator
from hardware_sim.link import PtyLink
from hardware_sim.rig import wait_until

FAST = SensorTimings(reply_timeout_s=0.2, data_timeout_s=0.3, poll_interval_s=0.005,
                     command_retries=2, reconnect_interval_s=0.05)
SLIP = Document("slip", "0001", (Text("Өмүрбек / Омурбек"),))
PRINTER_FAST = PrinterTimings(status_timeout_s=0.3, write_timeout_s=0.3, print_timeout_s=2.0,
                              print_timeout_per_kib_s=0.2, reopen_delay_s=0.01)


def test_printer_at_the_sensor_port_is_named_then_the_sensor_recovers(tmp_path: Path) -> None:
    printer = EscposPrinterSimulator(tmp_path).start()
    port = str(printer.path)
    cfg = SensorConfig(kind="grow-serial", port=port)
    changes: list[SensorStatus] = []
    sensor = SupervisedSensor(lambda: open_sensor(cfg, FAST), where=port,
                              on_change=changes.append, retry_max_s=0.5).start()
    try:
        wait_until(lambda: sensor.status().state is SensorState.WRONG_DEVICE, 60, "wrong-device")
        detail = sensor.status().detail
        assert detail == (f"fingerprint sensor {port}: a receipt printer answers at {port} "
                          "(ESC/POS status), not a fingerprint sensor; sensor.port must "
                          "name the sensor's port: are the sensor's and the printer's cables "
                          "(USB ports) swapped?"), detail
        printer.stop()
        with GrowSensorSimulator(link=port):
            wait_until(lambda: sensor.connected, 60, "the sensor")
    finally:
        sensor.close()
    assert [c.state for c in changes][-1] is SensorState.READY
    assert SensorState.WRONG_DEVICE in [c.state for c in changes]


def test_sensor_at_the_printer_port_is_named_then_the_printer_recovers(tmp_path: Path) -> None:
    port = tmp_path / "printer.tty"
    cfg = PrinterConfig(kind="escpos-serial", port=str(port), profile=SIMULATOR_DEFAULT_PROFILE)
    with GrowSensorSimulator(link=port):
        printer = open_printer(cfg, timings=PRINTER_FAST)
        status = printer.status()
        assert status.state is PrinterState.WRONG_DEVICE, status
        assert status.detail == (f"a fingerprint sensor answers at {port} (Grow module), not a "
                                 "printer; printer.port must name the printer's port: are the "
                                 "sensor's and the printer's cables (USB ports) swapped?")
        assert _printer_advice(str(port), status) == f"receipt printer {port}: {status.detail}"
        assert printer.status().state is PrinterState.WRONG_DEVICE  # probed once, still named
    sim = EscposPrinterSimulator(tmp_path).start()
    try:
        wait_until(lambda: printer.status().state is PrinterState.READY, 30, "the printer")
    finally:
        printer.close()
        sim.stop()


def test_nothing_answering_is_not_a_wrong_device(tmp_path: Path) -> None:
    sim = EscposPrinterSimulator(tmp_path).start()
    try:
        assert printer_answers(str(sim.path)) is not None
        assert grow_answers(str(sim.path)) is None  # a printer is not a Grow module
    finally:
        sim.stop()
    with GrowSensorSimulator(link=tmp_path / "grow.tty") as grow:
        assert printer_answers(str(grow.path)) is None
        assert grow_answers(str(grow.path)) is not None
    assert printer_answers(str(tmp_path / "absent")) is None
    with pytest.raises(WrongSensorError), EscposPrinterSimulator(tmp_path / "p2") as p2:
        open_sensor(SensorConfig(kind="grow-serial", port=str(p2.path)), FAST)


def test_a_printer_that_answered_is_never_probed_as_a_sensor(tmp_path: Path) -> None:
    # A Grow packet sent to a printer would be printed (and its trailing ESC would
    # eat a byte of the next slip): a printer that fell silent is not probed.
    asked: list[int] = []
    sim = EscposPrinterSimulator(tmp_path, scenario="late-status").start()
    port = str(sim.path)
    printer = ReceiptPrinter(lambda: SerialLink(port, 19200),
                             get_profile(SIMULATOR_DEFAULT_PROFILE), PRINTER_FAST,
                             identify=lambda: str(asked.append(1) or ""))
    try:
        # The status reads right after the slip go unanswered: a lost reply, not a probe.
        assert isinstance(printer.print_document(SLIP), Printed)
        assert asked == [] and len(sim.wait_for_documents(1, 5)) == 1
        sim.stop()  # the port vanishes: what comes next is a new device
        assert printer.status().state is PrinterState.DISCONNECTED
        silent = PtyLink(Path(port))
        silent.plug()
        try:
            assert printer.status().state is PrinterState.DISCONNECTED
            assert asked == [1]  # silent since it appeared: asked, once
            assert printer.status().state is PrinterState.DISCONNECTED
            assert asked == [1]
        finally:
            silent.close()
    finally:
        printer.close()
        sim.stop()
