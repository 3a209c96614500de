"""The supervised sensor: absent, unplugged, wrong or babbling devices never raise to the station.

Real Grow simulator on a real pty (or a pty with something else behind it);
the supervisor opens it with the real driver, as the agent does.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agent.drivers.sensor.grow import GrowSensor
from agent.drivers.sensor.parameters import SensorTimings
from agent.drivers.sensor.supervised import SupervisedSensor
from agent.drivers.sensor.types import Capture, Guidance, NoFinger, SensorState, SensorStatus
from hardware_sim.grow_sim import SCENARIOS, GrowSensorSimulator
from hardware_sim.link import PtyLink

FAST = SensorTimings(reply_timeout_s=0.2, data_timeout_s=0.3, poll_interval_s=0.005,
                     command_retries=2, reconnect_interval_s=0.05)


def _supervise(path: Path | str, changes: list[SensorStatus]) -> SupervisedSensor:
    return SupervisedSensor(lambda: GrowSensor.open(str(path), timings=FAST), where=str(path),
                            on_change=changes.append, retry_max_s=0.5).start()


def _until(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _finger(sim: GrowSensorSimulator) -> None:
    rng = np.random.default_rng(1)
    sim.press(rng.integers(0, 255, (288, 256), dtype=np.uint8), 500)


@pytest.fixture
def link_path(tmp_path: Path) -> Path:
    return tmp_path / "ttySENSOR"


def test_absent_at_start_then_plugged(link_path: Path) -> None:
    changes: list[SensorStatus] = []
    sensor = _supervise(link_path, changes)
    try:
        t0 = time.monotonic()
        assert isinstance(sensor.wait_for_finger(0.3), NoFinger)
        assert time.monotonic() - t0 >= 0.25  # it waited, it did not spin or raise
        sensor.guide(Guidance.READY)  # no device: nothing to show, nothing raised
        status = sensor.status()
        assert status.state is SensorState.DISCONNECTED
        assert str(link_path) in status.detail and "not found" in status.detail
        with GrowSensorSimulator(link=link_path) as sim:
            assert _until(lambda: sensor.connected)
            # the ring shows what the station asked for while the sensor was away
            assert _until(lambda: sim.guidance is Guidance.READY)
            _finger(sim)
            assert isinstance(sensor.wait_for_finger(5.0), Capture)
        assert [c.state for c in changes] == [SensorState.DISCONNECTED, SensorState.READY]
    finally:
        sensor.close()


def test_unplugged_mid_use_never_raises_and_comes_back(link_path: Path) -> None:
    changes: list[SensorStatus] = []
    with GrowSensorSimulator(link=link_path) as sim:
        sensor = _supervise(link_path, changes)
        try:
            assert _until(lambda: sensor.connected)
            sim.unplug()
            for _ in range(5):
                assert isinstance(sensor.wait_for_finger(0.3), NoFinger)
                assert sensor.wait_for_lift(0.3) is True
            assert sensor.status().state is SensorState.DISCONNECTED
            sim.replug()
            assert _until(lambda: sensor.connected)
            _finger(sim)
            assert isinstance(sensor.wait_for_finger(5.0), Capture)
        finally:
            sensor.close()
    states = [c.state for c in changes]
    assert states[0] is SensorState.READY and states[-1] is SensorState.READY
    assert SensorState.DISCONNECTED in states


def test_vanishing_during_the_handshake_is_retried(link_path: Path) -> None:
    # The cable goes after the first command of the handshake and comes back 1 s later.
    flaky = replace(SCENARIOS["unplug"], unplug_after=1, replug_after_s=1.0)
    changes: list[SensorStatus] = []
    with GrowSensorSimulator(flaky, link=link_path) as sim:
        sensor = _supervise(link_path, changes)
        try:
            assert _until(lambda: sensor.connected)
            _finger(sim)
            assert isinstance(sensor.wait_for_finger(5.0), Capture)
        finally:
            sensor.close()
    assert changes[-1].state is SensorState.READY


class _Impostor:
    """Another device behind a pty: silent, or answering every byte with noise."""

    def __init__(self, path: Path, noisy: bool) -> None:
        self.link = PtyLink(path)
        self.noisy = noisy
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> _Impostor:
        self.link.plug()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self.link.close()

    def _serve(self) -> None:
        rng = np.random.default_rng(5)
        while not self._stop.is_set():
            master = self.link.master
            if master is None:
                return
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                data = os.read(master, 4096)
                if self.noisy and data:
                    os.write(master, rng.integers(0, 256, 2 * len(data), dtype=np.uint8)
                             .tobytes())


@pytest.mark.parametrize("noisy", [False, True], ids=["silent-device", "garbage"])
def test_wrong_device_at_the_sensor_port_is_named_and_waited_on(link_path: Path,
                                                                noisy: bool) -> None:
    changes: list[SensorStatus] = []
    with _Impostor(link_path, noisy):
        sensor = _supervise(link_path, changes)
        try:
            assert _until(lambda: sensor.status().state is SensorState.FAULT, timeout=30)
            assert isinstance(sensor.wait_for_finger(0.2), NoFinger)
            detail = sensor.status().detail
            assert str(link_path) in detail and "sensor.port" in detail, detail
            assert "\n" not in detail
            assert not sensor.connected
        finally:
            sensor.close()


def test_close_stops_the_watcher(link_path: Path) -> None:
    sensor = _supervise(link_path, [])
    sensor.close()
    assert _until(lambda: not any(t.name == "sensor-watch" for t in threading.enumerate()), 3)
