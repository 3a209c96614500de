"""The whole simulated polling-station day, end to end, against a private mosquitto.

The demo runs as ``make demo`` runs it, ``kesp-sim day`` in its own process: the
tests read what it prints and its exit code, and import nothing from it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hardware_sim.mosquitto import mosquitto_binary


def kesp_sim_day(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``kesp-sim day`` to the end; its exit code, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "hardware_sim.cli", "day", "--out", str(out), *args],
        capture_output=True, text=True, timeout=570, check=False,
    )


def test_demo_day_ends_with_demo_ok_and_agreeing_counts(tmp_path: Path) -> None:
    # no --data, as `make demo` runs it: the fingerprints shipped with the package
    assert mosquitto_binary() is not None, "make test installs mosquitto; it is missing"
    out = kesp_sim_day(tmp_path / "demo")
    assert out.returncode == 0, out.stdout + out.stderr
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("DEMO OK:")]
    words = line.split()
    identified, refused, unknown, slips, verified = (int(words[i]) for i in (2, 4, 6, 9, 11))
    # The plan: 29 voters (one by ID card) + 1 manual admission, 4 repeat visits, 5 people
    # whose finger is not on the list. The demo fails on any false match (a slip naming
    # another voter); genuine voters may occasionally need the commission, so the
    # bands below leave room for a few of them and no more.
    assert identified >= 24 and refused >= 2 and unknown >= 5
    assert unknown <= 5 + 6
    assert slips == identified + refused + unknown
    assert verified > identified + refused + unknown  # events, turnout, births, health
    slip_files = sorted((tmp_path / "demo" / "kiosk-a" / "slips").glob("*.png"))
    assert len(slip_files) == slips + 2  # plus zero and closing reports
    # Every visit either went as planned or says, on its line, why not and that it is
    # allowed; the summary counts exactly those.
    visits = [ln for ln in out.stdout.splitlines() if " press(es) -> " in ln]
    explained = [ln for ln in visits if "allowed: " in ln]
    assert all(ln.endswith(" ok") or "allowed: " in ln for ln in visits), visits
    assert not any("NOT ALLOWED" in ln for ln in visits)
    assert line.endswith(f"seed 7, {len(explained)} allowed differences from the plan")


def test_demo_without_fingerprint_data_says_what_to_do(tmp_path: Path) -> None:
    out = kesp_sim_day(tmp_path / "demo", "--data", str(tmp_path / "nothing"))
    assert out.returncode == 2
    assert f"no fingerprint data at {tmp_path / 'nothing'}" in out.stderr
    assert "--data" in out.stderr and "Traceback" not in out.stderr


def test_three_kiosks_share_one_answer(tmp_path: Path) -> None:
    """Three real agents, peers on loopback: repeat visits at another kiosk are refused,
    the merged mark sets end identical with no voter marked twice (the demo checks both)."""
    out = kesp_sim_day(tmp_path / "demo3", "--kiosks", "3")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "merged marks identical on all 3 kiosks" in out.stdout
    assert "0 conflicts" in out.stdout
    repeats = [ln for ln in out.stdout.splitlines() if " again at kiosk-" in ln]
    assert len(repeats) == 4
    assert sum("-> refused" in ln for ln in repeats) >= 3
