"""``kesp-sim crash``: power-cut the agent at random moments of a simulated day.

Each trial sends one visitor (a voter, a repeat visit or a stranger), waits a
random time into their turn (capture, extraction, matching, the mark, the
slip being printed...) and SIGKILLs the agent, as a dead battery would. The
agent is started again, recovers, and the day goes on. At the end the station
is closed and the harness checks, over everything the kiosk wrote and printed
and everything central ops verified:

* 0 lost marks: every identified slip on paper has its mark;
* 0 voters with two ORIGINAL slips (reprints carry the DUPLICATE banner);
* 0 identified slips for unmarked voters, and every mark's slip printed;
* the same counts in the mark store, the ledger, the audit log and at ops.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hardware_sim.reference_data import ReferenceDataError, reference_data
from hardware_sim.rig import Rig, RigError, Visit, collect, disagreements
from hardware_sim.voters import N_REAL


@dataclass
class CrashReport:
    """What the trials did and found."""

    trials: int = 0
    kills: int = 0
    restart_s: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    ops_duplicates: int = 0

    @property
    def ok(self) -> bool:
        """No invariant was broken."""
        return not self.problems


def _visitor(rng: np.random.Generator, trial: int) -> Visit:
    roll = rng.random()
    if roll < 0.15:
        return Visit(f"stranger (trial {trial})", int(rng.integers(N_REAL, 40)), "not-identified")
    finger = int(rng.integers(0, N_REAL))
    return Visit(f"voter {finger + 1} (trial {trial})", finger, "any")


def run_trials(data: Path, out: Path, trials: int, seed: int = 1,
               max_delay_s: float = 2.5, quiet: bool = True) -> CrashReport:
    """Run ``trials`` kill/restart cycles and check the invariants."""
    report = CrashReport()
    rng = np.random.default_rng(seed)
    with Rig(data, out, quiet=quiet) as rig:
        report.restart_s.append(rig.start_agent())
        rig.command("open")
        rig.printer.wait_for_documents(1, timeout=30)
        for trial in range(1, trials + 1):
            report.trials = trial
            visit = _visitor(rng, trial)
            rig.press(visit.finger, int(rng.choice(rig.pressable(visit.finger))))
            time.sleep(float(rng.uniform(0.0, max_delay_s)))
            rig.kill_agent()
            report.kills += 1
            rig.sensor.lift()
            report.restart_s.append(rig.start_agent())
            # the recovered agent prints what was pending before serving anyone
            time.sleep(0.2)
        before = len(rig.printer.documents)
        rig.command("close")
        rig.printer.wait_for_documents(before + 1, timeout=60)
        code = rig.stop_agent()
        if code != 0:
            report.problems.append(f"agent exited with {code} at the end")
        facts = collect(rig.kiosk)
        report.problems += disagreements(facts, rig.ops, rig.device)
        report.counts = facts.store_counts
        report.duplicates = sum(n - facts.originals[s] for s, n in facts.copies.items())
        if rig.ops is not None:
            report.ops_duplicates = int(rig.ops.stats().rejected.get("duplicate", 0))
    return report


def cli_main(argv: list[str]) -> int:
    """``kesp-sim crash [--trials N] [--seed S]``."""
    p = argparse.ArgumentParser(prog="kesp-sim crash", description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data", type=Path, default=None,
                   help="fingerprint data folder (default: the data shipped with the package)")
    p.add_argument("--out", type=Path, default=Path("out/crash"))
    args = p.parse_args(argv)
    try:
        report = run_trials(args.data or reference_data(), args.out, args.trials, args.seed,
                            quiet=False)
    except (RigError, ReferenceDataError) as exc:
        print(f"CRASH TEST FAILED: {exc}", file=sys.stderr)
        return 1
    for problem in report.problems:
        print(f"BROKEN: {problem}", file=sys.stderr)
    restart = sorted(report.restart_s)
    print(f"{report.kills} power cuts, counts {report.counts}, {report.duplicates} duplicates, "
          f"restart median {restart[len(restart) // 2]:.2f}s, "
          f"{'OK' if report.ok else 'BROKEN'}")
    return 0 if report.ok else 1
