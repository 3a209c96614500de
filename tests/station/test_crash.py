"""Crash consistency: power cuts at random moments lose and double nothing (fast slice).

The benchmark suite runs many more trials (benchmarks/bench_crash.py).
"""

from __future__ import annotations

from pathlib import Path

from hardware_sim.crash import run_trials


def test_random_power_cuts_keep_every_invariant(ref_data: Path, tmp_path: Path) -> None:
    report = run_trials(ref_data, tmp_path / "crash", trials=4, seed=3)
    assert report.kills == 4
    assert report.ok, report.problems
    assert sum(report.counts.values()) >= 1
