"""Crash consistency under repeated power cuts (issue 7), with the agent's restart time.

``KESP_CRASH_TRIALS`` sets the number of SIGKILLs (default 1000, the issue's
figure; each trial costs one agent restart, about 3-6 s on this machine).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from benchmarks.results import write_section
from hardware_sim.crash import run_trials
from hardware_sim.reference_data import reference_data


def main() -> None:
    """Run the trials and write the RESULTS.md section."""
    trials = int(os.environ.get("KESP_CRASH_TRIALS", "1000"))
    t0 = time.monotonic()
    report = run_trials(reference_data(), Path("out/bench-crash"), trials, seed=2026)
    wall = time.monotonic() - t0
    restart = np.asarray(report.restart_s[1:]) if len(report.restart_s) > 1 else np.zeros(1)
    rows = [
        "| figure | value |",
        "|---|---|",
        f"| power cuts (SIGKILL at a random moment of a voter's turn) | {report.kills} |",
        f"| outcomes recorded | {report.counts} |",
        f"| identified slips printed again as DUPLICATE after a cut | {report.duplicates} |",
        f"| broken invariants | **{len(report.problems)}** |",
        f"| republished messages ops counted once (refused as duplicate) | "
        f"{report.ops_duplicates} |",
        f"| restart to ready, p50 / p95 | {np.percentile(restart, 50):.2f} / "
        f"{np.percentile(restart, 95):.2f} s |",
        f"| wall time | {wall:.0f} s |",
    ]
    body = "\n".join(rows) + "\n\nInvariants checked after the last trial: no identified " \
        "slip without its mark, no voter with two ORIGINAL slips, every mark's slip on paper, " \
        "equal counts in the mark store, the ledger, the audit log and at central ops.\n"
    if report.problems:
        body += "\nProblems:\n" + "\n".join(f"- {p}" for p in report.problems) + "\n"
    write_section("crash", "Crash consistency (power cuts)", body)
    print(body)
