"""True power losses (issue 20): 1,000 cuts along voters' turns on a disk that forgets.

The kiosk's state directory is on :mod:`hardware_sim.powerfs` (unsynced
writes and directory entries are dropped at each cut); see
:mod:`hardware_sim.powerloss` for where the cuts fall and what is checked
after each. ``KESP_POWERLOSS_TRIALS`` sets the number of cuts (default 1000);
``KESP_POWERLOSS_BUDGET_S`` stops starting new days after that many seconds,
and the section then says how many cuts were run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from benchmarks.results import write_section
from hardware_sim.powerloss import run_power_losses
from hardware_sim.reference_data import reference_data


def main() -> None:
    """Run the trials and write the RESULTS.md section."""
    trials = int(os.environ.get("KESP_POWERLOSS_TRIALS", "1000"))
    budget = os.environ.get("KESP_POWERLOSS_BUDGET_S")
    t0 = time.monotonic()
    report = run_power_losses(reference_data(), Path("out/bench-powerloss"), trials, seed=2026,
                              budget_s=float(budget) if budget else None)
    wall = time.monotonic() - t0
    restart = np.asarray(report.restart_s or [0.0])
    mix = ", ".join(f"{k} {v} ({100 * v / max(1, report.cuts):.0f} %)"
                    for k, v in report.mix.most_common())
    rows = [
        "| figure | value |",
        "|---|---|",
        f"| true power losses (of {trials} planned) | {report.cuts} over {report.days} "
        "station days |",
        f"| visitors whose turn was cut | {mix} |",
        f"| where the cut fell | {dict(report.stages.most_common())} |",
        f"| slips out before the cut | {dict(report.outcomes.most_common())} |",
        f"| outcomes the stores recorded (all days) | {dict(report.counts)} |",
        f"| lost marks (identified slip on paper, no mark) | **{len(report.lost_marks)}** |",
        f"| voters with two ORIGINAL slips | **{len(report.double_originals)}** |",
        f"| disagreements (mark store, ledger, audit log, paper, ops) | "
        f"**{report.disagreements}** |",
        f"| identified slips reprinted as DUPLICATE after a cut | {report.duplicates} |",
        f"| restart to ready on the remounted state, p50 / p95 | "
        f"{np.percentile(restart, 50):.2f} / {np.percentile(restart, 95):.2f} s |",
        f"| wall time | {wall:.0f} s |",
    ]
    body = "\n".join(rows) + (
        "\n\nEach cut: the FUSE disk freezes, the agent and the filesystem are SIGKILLed, "
        "everything not fsynced (file contents, and directory entries whose directory was "
        "not fsynced) is dropped, the disk is mounted again and the agent restarted on it; "
        "the invariants are checked after every restart and again with central ops when "
        "each day is closed. The self-check (`tests/station/test_powerloss.py`) plants "
        "`synchronous=NORMAL` on the mark store and must see lost marks. Machine shared "
        "by ~8 engineers (2 cores): restart times are inflated accordingly.\n")
    if report.problems:
        body += "\nProblems:\n" + "\n".join(f"- {p}" for p in report.problems[:50]) + "\n"
    write_section("powerloss", "True power loss (issue 20)", body)
    print(body)
