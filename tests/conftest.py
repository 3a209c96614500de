"""Shared fixtures: a private mosquitto per test, the shared data directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardware_sim.mosquitto import PrivateMosquitto

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("KESP_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (read-only reference fingerprints and USB recordings)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set KESP_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    """A private broker on a free loopback port; tests may stop/restart it."""
    broker = PrivateMosquitto(workdir=tmp_path / "mosquitto")
    broker.workdir.mkdir()
    broker.start()
    try:
        yield broker
    finally:
        broker.close()
