"""USB sensor service against the replay backend: captures, faults, recovery."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import usb.core
from numpy.typing import NDArray

from agent.drivers.sensor.parameters import SensorTimings
from agent.drivers.sensor.service import open_sensor
from agent.drivers.sensor.types import (
    Capture,
    Guidance,
    NoFinger,
    SensorBusyError,
    SensorDisconnected,
    SensorState,
    SensorTimeoutError,
    UsbTransferError,
)
from agent.drivers.sensor.usb import Aes3500Driver, Nb1010Driver, UsbSensor, usb_fault
from agent.runtime.config import SensorConfig
from hardware_sim.usb_replay import Fault, ReplayBackend, load_recording, replay_frame

FAST = SensorTimings(reconnect_interval_s=0.02, poll_interval_s=0.0, usb_timeout_ms=200)


@pytest.fixture
def rec_dir(ref_data: Path) -> Path:
    return ref_data / "usb-recordings" / "nb1010"


@pytest.fixture
def expected(rec_dir: Path) -> NDArray[np.uint8]:
    _, raw, _ = replay_frame(rec_dir)
    return raw


def backend(rec_dir: Path, *faults: Fault) -> ReplayBackend:
    return ReplayBackend(load_recording(rec_dir), faults=faults)


def capture(sensor: UsbSensor, timeout_s: float = 3.0) -> Capture:
    got = sensor.wait_for_finger(timeout_s)
    assert isinstance(got, Capture), got
    return got


def test_nb1010_capture(rec_dir: Path, expected: NDArray[np.uint8]) -> None:
    b = backend(rec_dir)
    with UsbSensor.open(Nb1010Driver, FAST, b) as sensor:
        got = capture(sensor)
        assert got.dpi == 385 and np.array_equal(got.image, expected)
        sensor.guide(Guidance.ACCEPTED)  # no LEDs: must not touch the device
        assert sensor.status().state is SensorState.READY
    b.assert_complete()
    assert b.opens == 1


def test_aes3500_capture(ref_data: Path) -> None:
    d = ref_data / "usb-recordings" / "aes3500"
    _, raw, _ = replay_frame(d)
    b = ReplayBackend(load_recording(d))
    with UsbSensor.open(Aes3500Driver, FAST, b) as sensor:
        got = capture(sensor)
        assert got.image.shape == (128, 128) and got.dpi == 250
        assert np.array_equal(got.image, Aes3500Driver.to_capture(raw).image)
    b.assert_complete()


def test_open_sensor_factory_with_replay(rec_dir: Path, expected: NDArray[np.uint8]) -> None:
    sensor = open_sensor(SensorConfig(kind="nb1010-usb"), FAST, usb_backend=backend(rec_dir))
    try:
        got = sensor.wait_for_finger(3.0)
        assert isinstance(got, Capture) and np.array_equal(got.image, expected)
    finally:
        sensor.close()


@pytest.mark.parametrize("folder", ["nb1010", "aes3500"])
def test_looping_replay_with_a_lifted_finger(ref_data: Path, folder: str) -> None:
    d = ref_data / "usb-recordings" / folder
    driver, raw, _ = replay_frame(d)
    b = ReplayBackend(load_recording(d), loop=True)
    with UsbSensor.open(driver, FAST, b) as sensor:
        first = capture(sensor)
        assert np.array_equal(first.image, driver.to_capture(raw).image)
        assert sensor.wait_for_lift(0.05) is False  # the recorded finger is still there
        b.finger_on = False
        assert sensor.wait_for_lift(1.0) is True
        assert sensor.wait_for_finger(0.05) == NoFinger()
        b.finger_on = True
        assert np.array_equal(capture(sensor).image, first.image)


@pytest.mark.parametrize(("kind", "at"), [("ETIMEDOUT", 5), ("EPIPE", 3), ("ETIMEDOUT", 50),
                                         ("short-read", 30)])
def test_transfer_fault_recovers_by_reopening(rec_dir: Path, expected: NDArray[np.uint8],
                                              kind: str, at: int) -> None:
    b = backend(rec_dir, Fault(kind, at))  # type: ignore[arg-type]
    with UsbSensor.open(Nb1010Driver, FAST, b) as sensor:
        assert np.array_equal(capture(sensor).image, expected)
        assert sensor.reconnects == 1
    assert b.opens == 2
    b.assert_complete()  # the second session replayed everything
    if kind == "EPIPE":
        assert b.halts_cleared  # the stall was cleared before giving up the handle


def test_unplug_mid_transfer_then_replug(rec_dir: Path, expected: NDArray[np.uint8]) -> None:
    b = backend(rec_dir, Fault("unplug", at=40, gone_s=0.15))
    with UsbSensor.open(Nb1010Driver, FAST, b) as sensor:
        assert np.array_equal(capture(sensor).image, expected)
        assert sensor.reconnects >= 2  # the reopen fails while the device is away


def test_device_gone_for_good(rec_dir: Path) -> None:
    b = backend(rec_dir, Fault("ENODEV", at=2, gone_s=3600))
    sensor = UsbSensor.open(Nb1010Driver, FAST, b)
    try:
        with pytest.raises(SensorDisconnected):
            sensor.wait_for_finger(0.2)
        assert sensor.status().state is SensorState.DISCONNECTED
        b.replug()
        assert sensor.status().state is SensorState.READY
    finally:
        sensor.close()


def test_busy_interface(rec_dir: Path, expected: NDArray[np.uint8]) -> None:
    with pytest.raises(SensorBusyError):
        UsbSensor.open(Nb1010Driver, FAST, backend(rec_dir, Fault("EBUSY", at=0)))
    # The service retries a busy claim until its deadline.
    b = backend(rec_dir, Fault("EBUSY", at=0), Fault("EBUSY", at=1))
    sensor = UsbSensor(Nb1010Driver, FAST, b)
    assert sensor.status().state is SensorState.BUSY
    assert np.array_equal(capture(sensor).image, expected)
    assert sensor.status().state is SensorState.READY
    sensor.close()


def test_absent_device(rec_dir: Path) -> None:
    b = backend(rec_dir)
    b.unplug()
    with pytest.raises(SensorDisconnected):
        UsbSensor.open(Nb1010Driver, FAST, b)


def test_usb_errno_mapping() -> None:
    def err(code: int) -> usb.core.USBError:
        return usb.core.USBError("x", errno=code)

    assert isinstance(usb_fault(err(errno.ENODEV), "r"), SensorDisconnected)
    assert isinstance(usb_fault(err(errno.EBUSY), "r"), SensorBusyError)
    assert isinstance(usb_fault(usb.core.USBTimeoutError("t", errno=errno.ETIMEDOUT), "r"),
                      SensorTimeoutError)
    denied = usb_fault(err(errno.EACCES), "open")
    assert isinstance(denied, UsbTransferError) and "udev" in str(denied)
    pipe = usb_fault(err(errno.EPIPE), "r")
    assert isinstance(pipe, UsbTransferError) and pipe.errno == errno.EPIPE
