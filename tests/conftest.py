"""Shared fixtures: a private mosquitto per test, the reference fingerprint data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hardware_sim.mosquitto import PrivateMosquitto
from hardware_sim.reference_data import ReferenceDataError, reference_data


@pytest.fixture(scope="session")
def ref_data() -> Path:
    """The reference fingerprints and USB recordings shipped in ``hardware_sim/data``
    (read-only). The suite needs nothing beside the repository."""
    try:
        return reference_data()
    except ReferenceDataError as exc:
        pytest.fail(str(exc))


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
