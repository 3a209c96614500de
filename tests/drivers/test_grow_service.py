"""The Grow driver and FingerprintSensor service against the pty simulator."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from agent.drivers.sensor.grow import AURA_FOR_GUIDANCE, GrowSensor
from agent.drivers.sensor.grow_codec import (
    DATA_PACKET_SIZES,
    Confirmation,
    Instruction,
    Packet,
    Register,
)
from agent.drivers.sensor.grow_device import GrowDevice
from agent.drivers.sensor.parameters import SensorTimings
from agent.drivers.sensor.service import open_sensor
from agent.drivers.sensor.types import (
    Capture,
    DeviceRefusedError,
    Guidance,
    NoFinger,
    SensorDisconnected,
    SensorState,
)
from agent.drivers.transport import open_serial
from agent.runtime.config import SensorConfig
from hardware_sim.fingers import load_fvc
from hardware_sim.grow_sim import SCENARIOS, GrowSensorSimulator, Scenario

FAST = SensorTimings(reply_timeout_s=0.3, data_timeout_s=0.3, poll_interval_s=0.005,
                     reconnect_interval_s=0.05)


@pytest.fixture
def finger(ref_data: Path) -> tuple[NDArray[np.uint8], int]:
    return load_fvc(ref_data / "fvc2002", "DB1_B", 101, 2)


@pytest.fixture
def sim() -> Iterator[GrowSensorSimulator]:
    with GrowSensorSimulator("normal", seed=7) as s:
        yield s


def expected_capture(sim: GrowSensorSimulator) -> NDArray[np.uint8]:
    seen = sim.finger_image
    assert seen is not None
    return ((seen >> 4) * 17).astype(np.uint8)  # what 4-bit UART transfer leaves of it


def capture(sensor: GrowSensor, timeout_s: float = 5.0) -> Capture:
    got = sensor.wait_for_finger(timeout_s)
    assert isinstance(got, Capture), got
    return got


def test_capture_is_the_pressed_image_bit_exact(sim: GrowSensorSimulator,
                                                 finger: tuple[NDArray[np.uint8], int]) -> None:
    with GrowSensor.open(sim.path, timings=FAST) as sensor:
        sim.press(*finger)
        got = capture(sensor)
        assert got.dpi == 500 and got.image.shape == (288, 256)
        assert np.array_equal(got.image, expected_capture(sim))
        assert sim.captures == 1


@pytest.mark.parametrize("size", DATA_PACKET_SIZES)
def test_every_data_packet_size(sim: GrowSensorSimulator, size: int,
                                finger: tuple[NDArray[np.uint8], int]) -> None:
    with GrowSensor.open(sim.path, timings=FAST) as sensor:
        assert sensor.device is not None
        sensor.device.set_packet_size(size)
        assert sensor.device.read_sys_para().packet_size == size
        sim.press(*finger)
        assert np.array_equal(capture(sensor).image, expected_capture(sim))


def test_no_finger_is_a_value_not_an_error(sim: GrowSensorSimulator) -> None:
    with GrowSensor.open(sim.path, timings=FAST) as sensor:
        t0 = time.monotonic()
        assert sensor.wait_for_finger(0.2) == NoFinger()
        assert 0.2 <= time.monotonic() - t0 < 1.5


def test_wait_for_lift(sim: GrowSensorSimulator, finger: tuple[NDArray[np.uint8], int]) -> None:
    with GrowSensor.open(sim.path, timings=FAST) as sensor:
        sim.press(*finger)
        assert sensor.wait_for_lift(0.2) is False
        threading.Timer(0.1, sim.lift).start()
        assert sensor.wait_for_lift(3.0) is True


def test_guidance_reaches_the_led_ring(sim: GrowSensorSimulator) -> None:
    with GrowSensor.open(sim.path, timings=FAST) as sensor:
        for g in Guidance:
            sensor.guide(g)
            assert sim.guidance is g
            assert sim.led == AURA_FOR_GUIDANCE[g]
        assert sensor.has_led is True


def test_sensor_without_led_ring_makes_guide_a_no_op() -> None:
    with GrowSensorSimulator("no-led") as sim, GrowSensor.open(sim.path, timings=FAST) as sensor:
        sensor.guide(Guidance.READY)
        assert sensor.has_led is False
        before = sim.commands
        sensor.guide(Guidance.ACCEPTED)  # not even sent any more
        assert sim.commands == before and sim.led is None


def test_status_ready_and_busy_bits(sim: GrowSensorSimulator) -> None:
    with GrowSensor.open(sim.path, timings=FAST) as sensor:
        st = sensor.status()
        assert st.state is SensorState.READY and st.last_code == 0


@pytest.mark.parametrize("name", ["bad-checksum", "garbage", "dropped-bytes", "slow",
                                  "fragmented"])
def test_faulty_line_still_gives_exact_images(name: str,
                                              finger: tuple[NDArray[np.uint8], int]) -> None:
    with GrowSensorSimulator(name, seed=11) as sim:
        timings = FAST if name != "slow" else SensorTimings(
            reply_timeout_s=0.6, data_timeout_s=0.6, poll_interval_s=0.0,
            reconnect_interval_s=0.05)
        with GrowSensor.open(sim.path, timings=timings) as sensor:
            for _ in range(2):
                sim.press(*finger)
                assert np.array_equal(capture(sensor).image, expected_capture(sim))
                sim.lift()
                assert sensor.wait_for_lift(5.0)
            assert sensor.reconnects == 0


def test_persistent_corruption_becomes_a_typed_error() -> None:
    every_reply = Scenario("always-corrupt", "test", corrupt_every=1)
    with GrowSensorSimulator(every_reply) as sim:
        port = open_serial(sim.path, 57600, 0.02)
        dev = GrowDevice(port, timings=FAST)
        try:
            from agent.drivers.sensor.types import ChecksumError

            with pytest.raises(ChecksumError):
                dev.gen_img()
        finally:
            port.close()


def test_unplug_and_replug_during_wait_is_transparent(
        sim: GrowSensorSimulator, finger: tuple[NDArray[np.uint8], int]) -> None:
    with GrowSensor.open(sim.path, timings=FAST) as sensor:
        sim.unplug()

        def come_back() -> None:
            sim.replug()
            sim.press(*finger)

        threading.Timer(0.4, come_back).start()
        got = capture(sensor, 5.0)
        assert np.array_equal(got.image, expected_capture(sim))
        assert sensor.reconnects >= 1


def test_unplug_scenario_recovers_by_itself(finger: tuple[NDArray[np.uint8], int]) -> None:
    sc = SCENARIOS["unplug"]
    with GrowSensorSimulator(sc) as sim, GrowSensor.open(sim.path, timings=FAST) as sensor:
        sim.press(*finger)
        for _ in range(4):  # well past unplug_after commands
            assert np.array_equal(capture(sensor, 5.0).image, expected_capture(sim))
        assert sim.commands > sc.unplug_after
        assert sensor.reconnects >= 1


def test_device_gone_for_good_is_sensor_disconnected(sim: GrowSensorSimulator) -> None:
    sensor = GrowSensor.open(sim.path, timings=FAST)
    try:
        sim.unplug()
        with pytest.raises(SensorDisconnected):
            sensor.wait_for_finger(0.3)
        st = sensor.status()
        assert st.state is SensorState.DISCONNECTED
        sim.replug()
        assert sensor.status().state is SensorState.READY
    finally:
        sensor.close()


def test_open_missing_port(tmp_path: Path) -> None:
    with pytest.raises(SensorDisconnected):
        GrowSensor.open(str(tmp_path / "nothing"), timings=FAST)


def test_baud_negotiation_finds_and_resets_the_module() -> None:
    with (GrowSensorSimulator("baud-115200") as sim,
          GrowSensor.open(sim.path, baud=57600, timings=FAST) as sensor):
        assert sim.baud == 57600  # switched back to the configured speed
        assert sensor.status().state is SensorState.READY


def test_late_reply_is_not_taken_for_the_next_answer() -> None:
    from agent.drivers.sensor.types import SensorTimeoutError

    with GrowSensorSimulator(Scenario("late", "test", reply_delay_s=0.4)) as sim:
        port = open_serial(sim.path, 57600, 0.02)
        try:
            dev = GrowDevice(port, timings=FAST)
            with pytest.raises(SensorTimeoutError):
                dev.transact(Instruction.GEN_IMG, retries=1)
            time.sleep(0.3)  # the GenImg answer (NO_FINGER) arrives now, unasked for
            dev.timings = SensorTimings(reply_timeout_s=1.0, data_timeout_s=1.0)
            assert dev.read_sys_para().packet_size == 128
        finally:
            port.close()


def test_port_at_wrong_speed_hears_nothing() -> None:
    with GrowSensorSimulator("normal") as sim:
        port = open_serial(sim.path, 9600, 0.02)
        try:
            dev = GrowDevice(port, timings=FAST)
            from agent.drivers.sensor.types import SensorTimeoutError

            with pytest.raises(SensorTimeoutError):
                dev.gen_img()
        finally:
            port.close()


def test_password() -> None:
    with GrowSensorSimulator("password") as sim:
        with pytest.raises(DeviceRefusedError) as info:
            GrowSensor.open(sim.path, password=0x1234, timings=FAST)
        assert info.value.code == Confirmation.WRONG_PASSWORD
        with GrowSensor.open(sim.path, password=0xCAFE, timings=FAST) as sensor:
            assert sensor.status().state is SensorState.READY


def test_status_from_another_thread_during_captures(
        sim: GrowSensorSimulator, finger: tuple[NDArray[np.uint8], int]) -> None:
    # The telemetry thread asks for the status while the station captures.
    states: list[SensorState] = []
    stop = threading.Event()
    with GrowSensor.open(sim.path, timings=FAST) as sensor:
        def health() -> None:
            while not stop.is_set():
                states.append(sensor.status().state)

        t = threading.Thread(target=health)
        t.start()
        try:
            for _ in range(5):
                sim.press(*finger)
                assert np.array_equal(capture(sensor).image, expected_capture(sim))
                sim.lift()
                assert sensor.wait_for_lift(3.0)
        finally:
            stop.set()
            t.join()
    assert len(states) > 5 and set(states) == {SensorState.READY}
    assert sensor.reconnects == 0 and sim.protocol_errors == 0


def test_power_blip_on_a_protected_module(finger: tuple[NDArray[np.uint8], int]) -> None:
    with (GrowSensorSimulator("password") as sim,
          GrowSensor.open(sim.path, password=0xCAFE, timings=FAST) as sensor):
        sim.power_blip()  # module forgets the handshake, port stays
        sim.press(*finger)
        assert np.array_equal(capture(sensor).image, expected_capture(sim))
        assert sensor.reconnects == 0


def test_silent_ring_less_module_costs_one_timeout() -> None:
    silent = Scenario("silent-led", "test", led="silent")
    with GrowSensorSimulator(silent) as sim, GrowSensor.open(sim.path, timings=FAST) as sensor:
        t0 = time.monotonic()
        sensor.guide(Guidance.READY)
        assert sensor.has_led is False and sensor.reconnects == 0
        assert time.monotonic() - t0 < 2 * FAST.reply_timeout_s + 0.5
        before = sim.commands
        sensor.guide(Guidance.ACCEPTED)
        assert sim.commands == before
        assert sensor.status().state is SensorState.READY  # the line is clean again


def test_eight_bit_upimage(finger: tuple[NDArray[np.uint8], int]) -> None:
    with GrowSensorSimulator(Scenario("usb-8bit", "test", image_bits=8)) as sim:
        port = open_serial(sim.path, 57600, 0.02)
        try:
            dev = GrowDevice(port, timings=FAST, image_bits=8)
            dev.read_sys_para()
            sim.press(*finger)
            assert dev.gen_img() is Confirmation.OK
            seen = sim.finger_image
            assert seen is not None
            assert np.array_equal(dev.up_image(), seen)  # no quantisation
        finally:
            port.close()


def test_device_api_extras(sim: GrowSensorSimulator,
                           finger: tuple[NDArray[np.uint8], int]) -> None:
    port = open_serial(sim.path, 57600, 0.02)
    try:
        dev = GrowDevice(port, timings=FAST)
        assert dev.get_echo() is True
        dev.soft_reset()
        assert dev.img2tz(1) is Confirmation.NO_VALID_IMAGE
        sim.press(*finger)
        assert dev.gen_img() is Confirmation.OK
        assert dev.img2tz(1) is Confirmation.OK
        assert len(dev.up_char(1)) == 512
        with pytest.raises(DeviceRefusedError):
            dev.set_sys_para(Register.BAUD, 13)  # 9600 x 13 does not exist
        with pytest.raises(ValueError):
            dev.set_packet_size(100)
        with pytest.raises(ValueError):
            dev.set_baud(12345)
    finally:
        port.close()


def test_unknown_instruction_gets_receive_error(sim: GrowSensorSimulator) -> None:
    port = open_serial(sim.path, 57600, 0.02)
    try:
        dev = GrowDevice(port, timings=FAST)
        dev.send(Packet(Packet.command(Instruction.GEN_IMG).pid, b"\x77"))
        assert dev.receive(1.0) == Packet.ack(Confirmation.RECEIVE_ERROR)
    finally:
        port.close()


def test_open_sensor_factory(sim: GrowSensorSimulator,
                             finger: tuple[NDArray[np.uint8], int]) -> None:
    sensor = open_sensor(SensorConfig(kind="grow-serial", port=sim.path), FAST)
    try:
        sim.press(*finger)
        assert isinstance(sensor.wait_for_finger(5.0), Capture)
    finally:
        sensor.close()
