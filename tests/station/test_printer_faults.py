"""Printer faults at the station: no voter identified without paper; never two originals.

Real agent process, simulated Grow sensor and ESC/POS printer on ptys.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.drivers.sensor.types import Guidance
from hardware_sim.rig import Rig, is_duplicate, slip_kind, slip_serial


@pytest.fixture
def rig(ref_data: Path, tmp_path: Path) -> Iterator[Rig]:
    with Rig(ref_data, tmp_path / "station", quiet=True) as rig:
        rig.start_agent()
        rig.command("open")
        rig.printer.wait_for_documents(1, timeout=30)
        yield rig


def _marks(rig: Rig, voter: int) -> int:
    con = sqlite3.connect(f"file:{rig.kiosk.state / 'marks.sqlite'}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT COUNT(*) FROM marks WHERE voter=?", (voter,)).fetchone()[0])
    finally:
        con.close()


def _until(predicate: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def _serve_presses(rig: Rig, finger: int, until_docs: int, timeout: float = 60.0) -> None:
    """Keep pressing (new impression on each RETRY) until ``until_docs`` documents exist."""
    impressions = itertools.cycle(rig.pressable(finger))
    deadline = time.monotonic() + timeout
    while len(rig.printer.documents) < until_docs and time.monotonic() < deadline:
        g = rig.sensor.guidance
        if g is Guidance.RETRY and rig.sensor.finger_present:
            rig.sensor.lift()
        elif g is Guidance.READY and not rig.sensor.finger_present:
            rig.press(finger, next(impressions))
        time.sleep(0.02)
    rig.sensor.lift()


def test_no_voter_is_identified_while_the_cover_is_open(rig: Rig) -> None:
    rig.printer.open_cover()
    assert _until(lambda: rig.sensor.guidance is Guidance.FAULT)
    rig.press(0, 2)
    time.sleep(2.0)
    assert len(rig.printer.documents) == 1  # only the zero report
    assert _marks(rig, 1) == 0
    status = rig.command("status")
    assert status["counts"]["identified"] == 0  # type: ignore[index]
    rig.sensor.lift()
    rig.printer.close_cover()
    _serve_presses(rig, 0, until_docs=2)
    assert slip_kind(rig.printer.documents[1].text) == "identified"
    assert _marks(rig, 1) == 1


def test_paper_out_mid_slip_gives_one_original_and_duplicates_only(rig: Rig) -> None:
    rig.printer.load_paper(mm=15)  # runs out in the middle of the next slip
    _serve_presses(rig, 1, until_docs=2, timeout=20)
    assert _until(lambda: rig.sensor.guidance is Guidance.FAULT)
    assert _marks(rig, 2) == 1  # the mark was committed before printing began
    rig.printer.load_paper()  # a new roll: the held original finishes
    assert _until(lambda: len(rig.printer.documents) >= 3)
    slips = [d for d in rig.printer.documents if slip_kind(d.text) == "identified"]
    serials = {slip_serial(d.text) for d in slips}
    assert len(serials) == 1
    originals = [d for d in slips if not is_duplicate(d.text)]
    duplicates = [d for d in slips if is_duplicate(d.text)]
    assert len(originals) == 1 and len(duplicates) >= 1
    status = rig.command("status")
    assert status["pending_slips"] == []
    assert _marks(rig, 2) == 1
