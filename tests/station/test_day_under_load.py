"""The whole simulated day (``kesp-sim day``, as ``make demo``) with every CPU saturated.

Issue 18: under CPU load a status read after a slip timed out and an original
already printed came out again as DUPLICATE (``assert 42 == (39 + 2)`` in the
day test). Here busy-loop processes (nice 0) keep both cores busy for the whole
day; the day must still end with DEMO OK, one slip file per outcome plus the
two reports, and no DUPLICATE at all (nothing in the plan interrupts a slip).
Slow (a few minutes under load): ``pytest -m slow``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hardware_sim.rig import is_duplicate


@pytest.mark.slow
def test_day_under_cpu_load(tmp_path: Path) -> None:
    n = max(2, min(4, 2 * (os.cpu_count() or 1)))
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        out = subprocess.run(
            [sys.executable, "-m", "hardware_sim.cli", "day", "--out", str(tmp_path / "demo")],
            capture_output=True, text=True, timeout=1500, check=False,
        )
    finally:
        for p in busy:
            p.kill()
            p.wait(10)
    assert out.returncode == 0, out.stdout + out.stderr
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("DEMO OK:")]
    words = line.split()
    identified, refused, unknown, slips = (int(words[i]) for i in (2, 4, 6, 9))
    assert slips == identified + refused + unknown
    texts = [p.read_text(encoding="utf-8")
             for p in (tmp_path / "demo" / "kiosk-a" / "slips").glob("*.txt")]
    assert len(texts) == slips + 2  # plus zero and closing reports
    assert not [t for t in texts if is_duplicate(t)]
