"""The reference data: shipped in the package, a fuller copy only when asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.match.evaluation import load_set
from hardware_sim.fingers import FVC_DPI, impressions_of
from hardware_sim.reference_data import EMBEDDED, ReferenceDataError, reference_data


def test_the_package_carries_what_the_demo_and_the_tests_need() -> None:
    root = reference_data()
    assert root == EMBEDDED
    for db in FVC_DPI:
        assert len(load_set(root / "fvc2002" / db)) == 80  # every ISO template
        for finger in range(101, 111):
            assert impressions_of(root / "fvc2002", db, finger) == [2, 3]
    for sensor in ("nb1010", "aes3500"):
        for name in ("device", "capture.ioctl", "capture.png"):
            assert (root / "usb-recordings" / sensor / name).is_file()
    # where each source comes from, and its licence
    notes = (root / "README.md").read_text()
    assert "openafis" in notes and "BSD" in notes and "LGPL-2.1" in notes
    assert (root / "fvc2002" / "LICENSE").is_file()
    assert (root / "usb-recordings" / "COPYING").is_file()


def test_the_full_set_is_asked_for_by_name(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KESP_SHARED_DATA", str(tmp_path))
    with pytest.raises(ReferenceDataError, match="KESP_SHARED_DATA=") as err:
        reference_data(full=True)
    assert str(tmp_path) in str(err.value)
    full = tmp_path / "fvc2002" / "DB1_B"
    full.mkdir(parents=True)
    (full / "101_8.png").write_bytes(b"")
    assert reference_data(full=True) == tmp_path
