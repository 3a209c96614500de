"""The wrong USB device plugged: named with the expected one and the fix, then recovered.

Every device here is a simulator on one simulated bus (hardware_sim.usb_bus):
the recorded NB-1010 and AES3500 sensors (usb_replay) and the ESC/POS
printer's pyusb backend, driven by the real drivers, the supervised sensor
and the printer service as the agent runs them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from agent.drivers.printer.document import Document, Text
from agent.drivers.printer.printer import ReceiptPrinter, open_printer
from agent.drivers.printer.profiles import PrinterTimings
from agent.drivers.printer.status import NotPrinted, Printed, PrinterState
from agent.drivers.sensor.parameters import SensorTimings
from agent.drivers.sensor.supervised import SupervisedSensor
from agent.drivers.sensor.types import Capture, SensorState, SensorStatus
from agent.drivers.sensor.usb import Aes3500Driver, Nb1010Driver, UsbSensor
from agent.drivers.usb_ids import SENSOR_MODELS
from agent.runtime.config import AgentConfig, PrinterConfig, SensorConfig
from agent.runtime.operator_text import status_lines
from agent.runtime.service import _printer_advice
from hardware_sim.escpos_sim import EscposUsbSimulator
from hardware_sim.rig import wait_until
from hardware_sim.usb_bus import UsbBus
from hardware_sim.usb_replay import ReplayBackend, load_recording, replay_frame
from provisioning.selftest import check_printer, check_sensor

FAST = SensorTimings(reconnect_interval_s=0.02, poll_interval_s=0.0, usb_timeout_ms=200)
PRINTER_FAST = PrinterTimings(status_timeout_s=0.3, write_timeout_s=0.3, print_timeout_s=2.0,
                              print_timeout_per_kib_s=0.2, reopen_delay_s=0.01)
#: An id no simulator uses by default: "the printer the configuration names".
EPSON_ID = (0x04B8, 0x0E28)
SLIP = Document("slip", "0001", (Text("Өмүрбек / Омурбек"),))


def _replay(ref_data: Path, name: str) -> ReplayBackend:
    return ReplayBackend(load_recording(ref_data / "usb-recordings" / name))


def _supervise(bus: UsbBus, changes: list[SensorStatus]) -> SupervisedSensor:
    """The NB-1010 sensor as the agent opens it (sensor.kind nb1010-usb)."""
    return SupervisedSensor(lambda: UsbSensor.open(Nb1010Driver, FAST, bus), where="nb1010-usb",
                            on_change=changes.append, retry_max_s=0.2).start()


def _screen(device: str, state: str, detail: str) -> tuple[str, str]:
    """``kesp-agent status`` for these device states: (Kyrgyz, Russian)."""
    lines = status_lines({"station": "s-1", "device": "kiosk-1", "phase": "open",
                          "devices": {device: {"state": state, "detail": detail}}})
    return "\n".join(k for k, _ in lines), "\n".join(r for _, r in lines)


def _cfg(**kw: object) -> AgentConfig:
    return AgentConfig("kiosk-1", "s-1", "d-1", **kw)  # type: ignore[arg-type]


def test_the_id_table_agrees_with_the_drivers() -> None:
    drivers = {(d.MODEL.vendor, d.MODEL.product): (d.MODEL.name, kind)
               for d, kind in ((Nb1010Driver, "nb1010-usb"), (Aes3500Driver, "aes3500-usb"))}
    assert drivers == SENSOR_MODELS


# --- the sensor ------------------------------------------------------------------------


def test_another_sensor_model_is_named_once_then_the_right_one_recovers(
        ref_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    aes = _replay(ref_data, "aes3500")
    bus = UsbBus(aes)
    changes: list[SensorStatus] = []
    caplog.set_level(logging.WARNING, logger="agent.drivers.sensor.supervised")
    sensor = _supervise(bus, changes)
    try:
        wait_until(lambda: sensor.status().state is SensorState.WRONG_DEVICE, 20, "wrong-device")
        # The watcher keeps retrying (each retry reads the other sensor's product string).
        wait_until(lambda: aes.opens >= 4, 20, "retries")
        detail = sensor.status().detail
        assert "\n" not in detail
        assert "NB-1010-U 298d:1010 not found" in detail, detail
        assert 'AES3500 fingerprint sensor 08ff:5731 "Fingerprint Sensor"' in detail, detail
        assert 'set sensor.kind to "aes3500-usb"' in detail and "plug the NB-1010-U" in detail
        assert [r.getMessage() for r in caplog.records].count(detail) == 1  # once per change

        ky, ru = _screen("sensor", "wrong-device", detail)
        assert "подключено другое устройство" in ru and "башка түзмөк туташтырылган" in ky
        assert "Подключите нужное устройство" in ru and "Туура түзмөктү туташтырыңыз" in ky
        assert f"({detail})" in ru and f"({detail})" in ky  # the technician's English line

        bus.unplug(aes)
        nb = _replay(ref_data, "nb1010")
        bus.plug(nb)
        wait_until(lambda: sensor.connected, 20, "the sensor")
        got = sensor.wait_for_finger(5.0)
        _, expected, _ = replay_frame(ref_data / "usb-recordings" / "nb1010")
        assert isinstance(got, Capture) and np.array_equal(got.image, expected)
    finally:
        sensor.close()
    assert [c.state for c in changes] == [SensorState.WRONG_DEVICE, SensorState.READY]


def test_printer_where_the_sensor_is_expected_is_named_then_the_sensor_recovers(
        ref_data: Path, tmp_path: Path) -> None:
    printer = EscposUsbSimulator(tmp_path)
    bus = UsbBus(printer.backend)
    changes: list[SensorStatus] = []
    sensor = _supervise(bus, changes)
    try:
        wait_until(lambda: "printer" in sensor.status().detail, 20, "the printer named")
        status = sensor.status()
        # The kiosk's own USB printer is on the bus whenever the sensor is out:
        # the sensor is missing, not replaced, and the printer is named.
        assert status.state is SensorState.DISCONNECTED
        assert "NB-1010-U 298d:1010 not found" in status.detail
        assert ('only printer-class device 1209:0001 "ESC/POS printer simulator '
                '(epson-tm-t20iii)" on USB') in status.detail, status.detail
        assert "plug the fingerprint sensor" in status.detail
        bus.plug(_replay(ref_data, "nb1010"))
        wait_until(lambda: sensor.connected, 20, "the sensor")
        assert isinstance(sensor.wait_for_finger(5.0), Capture)
    finally:
        sensor.close()
    assert [c.state for c in changes] == [SensorState.DISCONNECTED, SensorState.READY]


def test_selftest_names_the_sensor_found_instead(ref_data: Path, tmp_path: Path) -> None:
    cfg = _cfg(sensor=SensorConfig(kind="aes3500-usb", port=""))
    bus = UsbBus(_replay(ref_data, "nb1010"), EscposUsbSimulator(tmp_path).backend)
    check = check_sensor(cfg, usb_backend=bus)
    assert check.status == "fail"
    assert check.detail.startswith("aes3500-usb: AES3500 08ff:5731 not found; NB-1010-U "
                                   'fingerprint sensor 298d:1010 "NB-1010-U" is plugged '
                                   'instead: set sensor.kind to "nb1010-usb"'), check.detail
    empty = check_sensor(cfg, usb_backend=UsbBus())
    assert empty.detail == "aes3500-usb: not connected: check its cable"


# --- the printer ---------------------------------------------------------------------


def _printer(port: str, bus: UsbBus) -> ReceiptPrinter:
    return open_printer(PrinterConfig(kind="escpos-usb", port=port, profile="epson-tm-t20iii"),
                        timings=PRINTER_FAST, usb_backend=bus)


def test_another_printer_model_is_named_once_then_the_configured_one_recovers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    other = EscposUsbSimulator(tmp_path / "other")
    bus = UsbBus(other.backend)
    port = "usb:04b8:0e28"
    caplog.set_level(logging.INFO, logger="agent.drivers.printer.printer")
    with _printer(port, bus) as printer:
        for _ in range(3):  # the station polls; the log says it once
            status = printer.status()
        assert status.state is PrinterState.WRONG_DEVICE
        assert status.detail.startswith("no USB printer for usb:04b8:0e28; printer-class "
                                        'device 1209:0001 "ESC/POS printer simulator'), status
        assert 'set printer.port to "usb:1209:0001"' in status.detail
        assert "plug the configured printer" in status.detail
        assert sum("wrong-device" in r.getMessage() for r in caplog.records) == 1
        assert isinstance(printer.print_document(SLIP), NotPrinted)
        assert other.engine.bytes_received == 0  # nothing went to the other printer

        advice = _printer_advice(port, status)
        assert advice == f"receipt printer {port}: {status.detail}"
        ky, ru = _screen("printer", "wrong-device", advice)
        assert "Подключите нужный принтер" in ru and "Туура принтерди туташтырыңыз" in ky
        assert f"({advice})" in ru

        bus.unplug(other.backend)
        right = EscposUsbSimulator(tmp_path / "right", usb_id=EPSON_ID)
        bus.plug(right.backend)
        assert printer.status().state is PrinterState.READY
        assert isinstance(printer.print_document(SLIP), Printed)
    assert len(right.wait_for_documents(1, 5)) == 1


def test_sensor_id_configured_as_the_printer_is_named(ref_data: Path, tmp_path: Path) -> None:
    bus = UsbBus(_replay(ref_data, "nb1010"))
    with _printer("usb:298d:1010", bus) as printer:
        status = printer.status()
        assert status.state is PrinterState.WRONG_DEVICE
        assert status.detail == ('printer.port usb:298d:1010 names the NB-1010-U fingerprint '
                                 'sensor 298d:1010, not a printer; no printer on USB: plug the '
                                 'receipt printer and set printer.port to "usb"'), status.detail
        sim = EscposUsbSimulator(tmp_path)
        bus.plug(sim.backend)
        status = printer.status()
        assert status.state is PrinterState.WRONG_DEVICE
        assert status.detail.endswith('is on USB: set printer.port to "usb:1209:0001"'), status
    # The technician fixes the key: the printer found is used.
    with _printer("usb:1209:0001", bus) as printer:
        assert isinstance(printer.print_document(SLIP), Printed)


def test_sensor_where_the_printer_is_expected_then_the_printer_recovers(
        ref_data: Path, tmp_path: Path) -> None:
    bus = UsbBus(_replay(ref_data, "nb1010"))
    cfg = _cfg(printer=PrinterConfig(kind="escpos-usb", port="usb", profile="epson-tm-t20iii"))
    check = check_printer(cfg, usb_backend=bus)
    assert check.status == "fail"
    assert check.detail == ('escpos-usb at usb: not connected; only NB-1010-U fingerprint '
                            'sensor 298d:1010 "NB-1010-U" on USB: plug the receipt printer '
                            '(the agent waits for it)'), check.detail
    with _printer("usb", bus) as printer:
        status = printer.status()
        assert status.state is PrinterState.DISCONNECTED
        assert status.instead and status.instead in status.detail
        sim = EscposUsbSimulator(tmp_path)
        bus.plug(sim.backend)
        assert isinstance(printer.print_document(SLIP), Printed)
    assert check_printer(cfg, usb_backend=bus).status == "ok"
