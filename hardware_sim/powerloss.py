"""``kesp-sim powerloss``: true power cuts along voters' turns, on a disk that forgets.

The kiosk's whole state directory lives on :mod:`hardware_sim.powerfs`, a FUSE
filesystem that keeps only what was synced. A power cut is: the filesystem
freezes (nothing more reaches the disk), the agent is SIGKILLed, everything
unsynced is dropped and the filesystem mounted again, then the agent starts on
what survived.

Each trial sends one visitor and cuts somewhere along their turn, timed by the
turn's observed progress, never by wall time from the start (a slow start-up
or a cold cache shifts the whole turn, not the cut's place in it):

* ``capture``: after the sensor took the image, while it is uploaded;
* ``match``: later in the gap between the capture and the first write of the
  outcome (that gap is measured on this machine by the uncut turns);
* ``mark``: at the mark store's sync, just before or just after it took effect;
* ``sync``: at the k-th sync of the turn (ledger, audit log, outbox...),
  before or after it took effect;
* ``print``: while the slip's bytes reach the printer;
* ``after``: right after the slip came out.

Most trials are first-time voters; repeat visitors and strangers (who press
until the kiosk gives them their not-identified slip) come in proportion.
After each cut the agent restarts on the remounted state, prints what
recovery owes, and the invariants are checked: 0 lost marks (every identified
slip on paper has its mark), 0 voters with two ORIGINAL slips, the same counts
in the mark store, the ledger, the audit log and on paper; at the end of each
day (a fresh station every few dozen trials, so first-time voters never run
out) the station is closed and central ops must agree too.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.drivers.sensor.types import Guidance
from hardware_sim.powerfs import PowerFs, PowerFsError
from hardware_sim.reference_data import ReferenceDataError, reference_data
from hardware_sim.rig import (
    DayFacts,
    DayOnPowerFs,
    RigError,
    collect,
    disagreements,
    original_slips,
    pick_visitor,
    slip_kind,
    wait_settled,
    wait_until,
)
from hardware_sim.rig import slip_list_number as list_number
from ops.service import OpsService

VISITORS = (("first-time", 0.70), ("repeat", 0.15), ("stranger", 0.15))
STAGES = (("capture", 0.15), ("match", 0.15), ("mark", 0.20), ("sync", 0.25),
          ("print", 0.15), ("after", 0.10))
TURN_TIMEOUT_S = 90.0


@dataclass
class PowerLossReport:
    """What the trials did and found."""

    cuts: int = 0
    days: int = 0
    mix: Counter[str] = field(default_factory=Counter)
    """Trials by visitor kind."""
    stages: Counter[str] = field(default_factory=Counter)
    """Cuts by where along the turn they fell."""
    outcomes: Counter[str] = field(default_factory=Counter)
    """Slips that came out before the cut, by kind and visitor (strangers must reach
    theirs)."""
    restart_s: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lost_marks: set[str] = field(default_factory=set)
    """Serials of identified slips on paper whose mark is missing."""
    double_originals: set[str] = field(default_factory=set)
    """Voters (day:list number) with two ORIGINAL identified slips, and serials printed
    twice as ORIGINAL."""
    disagreements: int = 0
    """Other disagreements between the stores, the paper, the audit log and ops."""
    duplicates: int = 0
    """Identified slips printed again as DUPLICATE after a cut (allowed)."""
    counts: Counter[str] = field(default_factory=Counter)
    """Outcomes the stores recorded, summed over the days."""

    @property
    def ok(self) -> bool:
        """No invariant was broken."""
        return not self.problems


@dataclass
class _Calibration:
    """Turn timings measured on this machine by the turns that were not cut."""

    capture_to_slip_s: list[float] = field(default_factory=lambda: [1.0])
    syncs: list[int] = field(default_factory=lambda: [6])
    """Syncs from the press until the slip is out."""
    slip_bytes: list[int] = field(default_factory=lambda: [2000])

    @staticmethod
    def seconds(values: list[float]) -> float:
        """Median of the last measurements."""
        return float(np.median(values[-50:]))

    @staticmethod
    def count(values: list[int]) -> int:
        """Median of the last counts, at least 1."""
        return max(1, round(float(np.median(values[-50:]))))


def _pick(rng: np.random.Generator, table: tuple[tuple[str, float], ...]) -> str:
    names = [n for n, _ in table]
    weights = np.asarray([w for _, w in table])
    return str(rng.choice(names, p=weights / weights.sum()))


class _Day(DayOnPowerFs):
    """One station's day on the forgetting disk."""

    def __init__(self, data: Path, out: Path, plant: str | None, quiet: bool,
                 report: PowerLossReport, rng: np.random.Generator,
                 cal: _Calibration) -> None:
        super().__init__(data, out, quiet)
        self.plant = plant
        self.report = report
        self.rng = rng
        self.cal = cal

    def __enter__(self) -> _Day:
        self.provision()
        # what an atomic write cut before its rename leaves: start-up must remove it
        self.stale = self.kiosk.state / ".gallery.cache.x7k2m9q1.partial"
        self.stale.write_bytes(bytes(64 * 1024))
        if self.plant:
            self.kiosk.program = ["-m", "hardware_sim.plants", self.plant]
        self.kiosk.start_agent()  # a day's first start is not a restart after a cut
        self.kiosk.command("open")
        self.rig.printer.wait_for_documents(1, timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.power_off()
        self.rig.__exit__(*exc)

    def power_off(self) -> None:
        """SIGKILL the agent and the filesystem together.

        A process blocked in a request the filesystem already took cannot die
        before the request ends (the kernel waits uninterruptibly for the
        answer): killing the filesystem process aborts it.
        """
        agent = self.kiosk.agent
        if agent is not None and agent.poll() is None:
            agent.kill()
        self.fs.unmount()
        if agent is not None:
            agent.wait(30)

    # --- one trial -------------------------------------------------------------------
    def visitor(self) -> tuple[str, int]:
        return pick_visitor(_pick(self.rng, VISITORS), self.voted, self.rng)

    def trial(self) -> None:
        kind, finger = self.visitor()
        stage = _pick(self.rng, STAGES)
        self.report.mix[kind] += 1
        printer, sensor, cal = self.rig.printer, self.rig.sensor, self.cal
        wait_until(lambda: sensor.guidance is Guidance.READY, 60, "the sensor to invite a voter")
        docs0 = len(printer.documents)
        bytes0 = printer.engine.bytes_received
        captures0 = sensor.captures
        syncs0 = self.fs.syncs()
        when = "before" if self.rng.random() < 0.5 else "after"
        if stage == "mark":
            self.fs.arm(1, "marks.sqlite", when)
        elif stage == "sync":
            self.fs.arm(int(self.rng.integers(1, cal.count(cal.syncs) + 1)), "*", when)
        gap = cal.seconds(cal.capture_to_slip_s)
        delay = {"capture": self.rng.uniform(0.0, 0.4 * gap),
                 "match": self.rng.uniform(0.4 * gap, 0.9 * gap)}.get(stage)
        print_cut = int(self.rng.integers(1, cal.count(cal.slip_bytes) + 1))
        impressions = [int(i) for i in self.rng.permutation(self.rig.pressable(finger))]
        self.kiosk.press(finger, impressions[0])
        presses, t_capture, t_slip = 1, None, None
        deadline = time.monotonic() + TURN_TIMEOUT_S
        where = stage
        while not self.fs.frozen.is_set():
            now = time.monotonic()
            if now > deadline:
                raise RigError(f"the {kind} visitor's turn did not end in "
                               f"{TURN_TIMEOUT_S:.0f}s (stage {stage})")
            if t_capture is None and sensor.captures > captures0:
                t_capture = now
            if delay is not None and t_capture is not None and now - t_capture >= delay:
                self.fs.freeze()
                break
            if stage == "print" and printer.engine.bytes_received - bytes0 >= print_cut:
                self.fs.freeze()
                break
            if t_slip is None and len(printer.documents) > docs0:
                t_slip = now
                if t_capture is not None:
                    cal.capture_to_slip_s.append(now - t_capture)
                cal.slip_bytes.append(printer.engine.bytes_received - bytes0)
                if not self.fs.frozen.is_set():
                    cal.syncs.append(self.fs.syncs() - syncs0)
            if t_slip is not None and (stage != "sync" or now - t_slip > 1.0):
                # the turn ended before the planned point: cut right after it
                where = "after"
                self.fs.freeze()
                break
            guidance = sensor.guidance
            if guidance is Guidance.RETRY and sensor.finger_present:
                sensor.lift()
            elif guidance is Guidance.READY and not sensor.finger_present and t_slip is None:
                self.kiosk.press(finger, impressions[presses % len(impressions)])
                presses += 1
            time.sleep(0.005)
        self.power_off()
        for doc in printer.documents[docs0:]:
            k = slip_kind(doc.text)
            self.report.outcomes[f"{k} ({kind})"] += 1
            n = list_number(doc.text)
            if k == "identified" and n is not None:
                self.voted.add(n - 1)
        self.report.cuts += 1
        self.report.stages[where] += 1
        self.power_on()
        self.check(f"after cut {self.report.cuts} ({kind}, {where})")

    def power_on(self) -> None:
        """Mount what survived, restart the agent, let it print what recovery owes."""
        self.fs.cuts += 1
        self.fs.mount()
        self.rig.sensor.lift()
        self.report.restart_s.append(self.kiosk.start_agent())
        self._wait_printed()

    def _wait_printed(self, timeout: float = 30.0) -> None:
        """Recovery prints what it owes (pending and interrupted slips) in the loop."""
        wait_settled(self.kiosk, timeout, "the recovered agent to print what it owed")

    def check(self, when: str, ops: OpsService | None = None) -> DayFacts:
        """Every invariant, now; problems are added to the report."""
        facts = collect(self.kiosk)
        found = disagreements(facts, ops, self.kiosk.device)
        if self.stale.exists():
            found.append(f"the stale temp file {self.stale.name} is still there")
        lost = set(facts.copies) - facts.mark_serials
        self.report.lost_marks |= {f"{self.report.days}:{s}" for s in lost}
        originals = original_slips([d.text for d in self.rig.printer.documents])
        twice = {f"{self.report.days}:voter {n}" for n, c in originals.items() if c > 1}
        twice |= {f"{self.report.days}:{s}" for s, c in facts.originals.items() if c > 1}
        if twice - self.report.double_originals:
            found.append(f"voters with two ORIGINAL slips: {sorted(twice)}")
        self.report.double_originals |= twice
        self.report.disagreements += sum(
            1 for p in found if "unmarked" not in p and "ORIGINAL" not in p)
        self.report.problems += [f"{when}: {p}" for p in found]
        return facts

    def close(self) -> None:
        """Close the station, then every store, the paper and central ops must agree."""
        before = len(self.rig.printer.documents)
        self.kiosk.command("close")
        self.rig.printer.wait_for_documents(before + 1, timeout=60)
        code = self.kiosk.stop_agent()
        if code != 0:
            self.report.problems.append(f"day {self.report.days}: agent exited with {code}")
        facts = self.check(f"day {self.report.days} closed", self.rig.ops)
        self.report.counts.update(facts.store_counts)
        self.report.duplicates += sum(n - facts.originals[s] for s, n in facts.copies.items())


def run_power_losses(data: Path, out: Path, trials: int, *, seed: int = 1,
                     per_day: int = 30, plant: str | None = None, quiet: bool = True,
                     stop_on_problem: bool = False,
                     budget_s: float | None = None) -> PowerLossReport:
    """Run ``trials`` true power cuts (``per_day`` per fresh station) and check the invariants.

    With ``budget_s``, no new day starts after that many seconds (the report
    says how many cuts were done). Raises :class:`~hardware_sim.powerfs.PowerFsError`
    where FUSE is unavailable.
    """
    t0 = time.monotonic()
    PowerFs.check_available()
    report = PowerLossReport()
    rng = np.random.default_rng(seed)
    cal = _Calibration()
    left = trials
    while left > 0 and (budget_s is None or time.monotonic() - t0 < budget_s):
        if out.exists():
            shutil.rmtree(out)
        report.days += 1
        with _Day(data, out, plant, quiet, report, rng, cal) as day:
            for _ in range(min(per_day, left)):
                day.trial()
                left -= 1
                if stop_on_problem and report.problems:
                    return report
            day.close()
        if stop_on_problem and report.problems:
            break
    return report


def summary(report: PowerLossReport) -> str:
    """One paragraph: the cuts, the mix, the invariants, restart times."""
    restart = np.asarray(report.restart_s or [0.0])
    return (f"{report.cuts} power cuts over {report.days} day(s); visitors "
            f"{dict(report.mix)}; cut at {dict(report.stages)}; slips out before the cut "
            f"{dict(report.outcomes)}; stores recorded {dict(report.counts)}; "
            f"{report.duplicates} DUPLICATE reprints; restart to ready p50 "
            f"{np.percentile(restart, 50):.2f}s p95 {np.percentile(restart, 95):.2f}s; "
            f"{len(report.lost_marks)} lost marks, {len(report.double_originals)} double "
            f"ORIGINALs, {report.disagreements} disagreements")


def cli_main(argv: list[str]) -> int:
    """``kesp-sim powerloss [--trials N] [--seed S] [--plant sync-normal-marks]``."""
    p = argparse.ArgumentParser(prog="kesp-sim powerloss", description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--per-day", type=int, default=30)
    p.add_argument("--plant", choices=("sync-normal-marks",), default=None)
    p.add_argument("--data", type=Path, default=None,
                   help="fingerprint data folder (default: the data shipped with the package)")
    p.add_argument("--out", type=Path, default=Path("out/powerloss"))
    args = p.parse_args(argv)
    try:
        report = run_power_losses(args.data or reference_data(), args.out, args.trials,
                                  seed=args.seed, per_day=args.per_day, plant=args.plant,
                                  quiet=False)
    except (RigError, PowerFsError, ReferenceDataError) as exc:
        print(f"POWER-LOSS TEST FAILED: {exc}", file=sys.stderr)
        return 1
    for problem in report.problems:
        print(f"BROKEN: {problem}", file=sys.stderr)
    print(summary(report) + (" OK" if report.ok else " BROKEN"))
    return 0 if report.ok else 1
