"""True power loss (issue 20): cuts along voters' turns on a disk that forgets.

The kiosk's state directory is on the FUSE filesystem of hardware_sim/powerfs.py;
each cut drops everything the agent had not synced. The benchmark runs 1,000
(benchmarks/bench_powerloss.py). Where /dev/fuse is missing these tests FAIL,
saying so: a durability guarantee that cannot be checked is not a pass.
"""

from __future__ import annotations

from pathlib import Path

from hardware_sim.powerloss import run_power_losses, summary


def test_power_cuts_along_turns_lose_and_double_nothing(ref_data: Path,
                                                          tmp_path: Path) -> None:
    report = run_power_losses(ref_data, tmp_path / "pl", trials=16, seed=20, per_day=16)
    assert report.cuts == 16
    assert report.ok, summary(report) + "\n" + "\n".join(report.problems)
    assert not report.lost_marks and not report.double_originals
    assert report.disagreements == 0
    assert report.mix["first-time"] > report.mix["repeat"], summary(report)
    # the cuts fall along the turn, not only after it (a cut planned past the end of a
    # short turn, e.g. at the mark of a visitor who is refused, falls right after it)
    assert sum(n for where, n in report.stages.items() if where != "after") >= 4, \
        summary(report)


def test_the_harness_catches_a_mark_store_without_full_sync(ref_data: Path,
                                                            tmp_path: Path) -> None:
    """Self-check: ``synchronous=NORMAL`` planted on the mark store must be caught."""
    report = run_power_losses(ref_data, tmp_path / "plant", trials=16, seed=4, per_day=16,
                              plant="sync-normal-marks", stop_on_problem=True)
    assert not report.ok, f"the planted bug went unseen: {summary(report)}"
    assert report.lost_marks, report.problems
