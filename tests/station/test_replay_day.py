"""The station on a real USB sensor's recorded traffic, through its real pyusb driver."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardware_sim.replay_day import run_replay_day


@pytest.mark.parametrize("sensor", ["nb1010-replay", "aes3500-replay"])
def test_station_day_on_a_replayed_usb_sensor(
    sensor: str, ref_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_replay_day(ref_data, tmp_path / "day", sensor)
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "1 identified, 1 refused, 0 not identified" in out.out
