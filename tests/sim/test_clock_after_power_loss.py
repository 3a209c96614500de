"""A power cut, then a clock that boots hours in the past (no RTC on a Pi): the marks
made before the cut survive and this kiosk's order continues (``origin_seq``). The
hybrid clock then follows the wall clock (a floor hours ahead is treated as a clock
that was wrong, agent/station/marks.py HybridClock), so order is never read from
stamps across such a step.

The marks are made by another process on the forgetting disk of
hardware_sim/powerfs.py, which is killed with the power; the kiosk then starts with
its wall clock three hours back.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from agent.station import marks as marks_module
from agent.station.marks import MarkStore, hlc_wall_ms
from hardware_sim.powerfs import PowerFs

_MARKER = """
import sys, time
from nacl.signing import SigningKey
from agent.station.marks import MarkStore
key = SigningKey(bytes.fromhex(sys.argv[2]))
store = MarkStore(sys.argv[1], "kiosk-a", key, {"kiosk-a": key.verify_key})
last = [store.mark_local(v, "identify-2f", f"S-{v}") for v in range(1, 6)][-1]
print(last.hlc, last.origin_seq, flush=True)
time.sleep(600)
"""


def test_marks_survive_a_cut_and_stay_ordered_when_the_clock_boots_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    PowerFs.check_available()
    key = SigningKey.generate()
    with PowerFs(tmp_path / "disk", tmp_path / "state") as fs:
        db = fs.mountpoint / "marks.sqlite"
        marker = subprocess.Popen([sys.executable, "-c", _MARKER, str(db), bytes(key).hex()],
                                  stdout=subprocess.PIPE, text=True)
        assert marker.stdout is not None
        _hlc, seq = (int(x) for x in marker.stdout.readline().split())
        marker.kill()  # the power goes with the marker's connection open
        marker.wait()
        marker.stdout.close()
        fs.cut()
        back_ns = time.time_ns() - 3 * 3600 * 10**9
        monkeypatch.setattr(marks_module.time, "time_ns", lambda: back_ns)
        store = MarkStore(db, "kiosk-a", key, {"kiosk-a": key.verify_key})
        try:
            assert [m.voter for m in store.local_marks()] == [1, 2, 3, 4, 5]
            new = store.mark_local(6, "identify-2f", "S-6")
            assert new.origin_seq == seq + 1  # this kiosk's order survives the cut
            assert [m.origin_seq for m in store.local_marks()] == list(range(1, seq + 2))
            assert abs(hlc_wall_ms(new.hlc) - back_ns // 1_000_000) < 60_000
        finally:
            store.close()
