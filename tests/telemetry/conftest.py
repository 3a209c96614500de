"""Fixtures for device-side telemetry tests: a kiosk config, keys, a spy subscriber."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from telemetry_helpers import OPS_KEY, Spy

from agent.runtime.config import AgentConfig, BrokerConfig
from agent.runtime.keys import DeviceKeys, generate_keys
from hardware_sim.mosquitto import PrivateMosquitto


@pytest.fixture
def keys(tmp_path: Path) -> DeviceKeys:
    return generate_keys(tmp_path / "keys")


@pytest.fixture
def cfg(tmp_path: Path, mosquitto: PrivateMosquitto) -> AgentConfig:
    return AgentConfig(device_id="k-1", station_id="st-1", district="d-1",
                       state_dir=str(tmp_path / "state"),
                       broker=BrokerConfig(url=mosquitto.url,
                                           ops_verify_key=bytes(OPS_KEY.verify_key).hex()),
                       health_interval_s=60.0)


@pytest.fixture
def spy(mosquitto: PrivateMosquitto) -> Iterator[Spy]:
    s = Spy(mosquitto)
    assert s.subscribed.wait(10)  # subscribed before the kiosk publishes
    try:
        yield s
    finally:
        s.client.loop_stop()
        s.client.disconnect()
