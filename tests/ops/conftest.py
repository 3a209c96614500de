"""Fixture ``world``: private broker, registry, ops key; kiosks and ops made on demand."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ops_helpers import World

from hardware_sim.mosquitto import PrivateMosquitto
from ops.registry import create_ops_key


@pytest.fixture
def world(tmp_path: Path, mosquitto: PrivateMosquitto) -> Iterator[World]:
    w = World(tmp_path, mosquitto, create_ops_key(tmp_path / "ops.sign"),
              tmp_path / "devices.json")
    try:
        yield w
    finally:
        for tel in w.kiosks:
            if tel.uplink.value != "stopped":
                tel.stop(graceful=False)
        for svc in w.services:
            if svc._thread is not None:
                svc.stop()
