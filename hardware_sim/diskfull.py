"""``kesp-sim diskfull``: the state disk fills at every growing write of a turn and a start-up.

The kiosk's state directory lives on :mod:`hardware_sim.powerfs`, which counts
the writes that grow a file (SQLite's WAL appends, new rows, temp files of an
atomic write) and, once told ``enospc N``, fails the N-th and every later one
with ENOSPC while ``statvfs`` still shows room: the disk filled between the
free-space check and a write, the case the check cannot catch.

A sweep first measures, on this machine, how many growing writes one
voter's turn and one start-up make (telemetry's own writes, acks and health
samples, fall in between: the sweep covers them too), then runs one trial per
N across that range:

* ``turn``: the disk fills at the N-th growing write after a visitor presses;
  the visitor presses again as a person would until the kiosk gives a slip or
  shows FAULT (refused for lack of room);
* ``start-up``: the agent is stopped (SIGTERM) and started again with the disk
  filling at the N-th growing write of its start; an agent that stops says
  why in one line and is started again once there is room, as systemd would.

While the disk is full the invariants are checked (no identified slip on
paper whose mark is not in the mark store, no second ORIGINAL, the agent
alive or stopped with one line and no traceback, ``kesp-agent status``
answering and saying the storage is full when the sensor shows FAULT); then
the space is freed, the kiosk must serve again by itself, print what it owes,
and every store, the paper and the audit log must agree. Every few trials,
and at the end of a day, the agent is restarted and the stores checked
whole (SQLite ``integrity_check``); the day ends with the closing report and
central ops must agree too.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.drivers.sensor.types import Guidance
from agent.runtime.control import ControlError
from hardware_sim.powerfs import PowerFs, PowerFsError
from hardware_sim.reference_data import ReferenceDataError, reference_data
from hardware_sim.rig import (
    DayOnPowerFs,
    RigError,
    Visit,
    collect,
    disagreements,
    original_slips,
    pick_visitor,
    slip_kind,
    wait_settled,
    wait_until,
)
from hardware_sim.rig import slip_list_number as list_number
from hardware_sim.voters import N_REAL
from ops.audit_watch import AuditWatch
from ops.service import OpsService

PHASES = ("turn", "start-up")
"""What the sweep covers (a ``restart`` target is a chosen site only)."""
VISITORS = ("first-time", "first-time", "repeat", "first-time", "stranger")
"""The visitor of each turn trial, in turn: identified, refused and not identified
turns write differently."""
TURN_TIMEOUT_S = 60.0
STORES = ("marks.sqlite", "ledger.sqlite", "audit.sqlite", "lifecycle.sqlite", "outbox.sqlite")


@dataclass
class DiskFullReport:
    """What the sweep did and found."""

    trials: Counter[str] = field(default_factory=Counter)
    """Trials by phase (turn, start-up)."""
    swept: dict[str, list[int]] = field(default_factory=dict)
    """The N values swept, by phase."""
    grows: dict[str, int] = field(default_factory=dict)
    """Growing writes measured for one turn and one start-up."""
    while_full: Counter[str] = field(default_factory=Counter)
    """What the kiosk did while the disk was full: 'slip' (the turn ended before
    the N-th write), 'fault' (refused to identify, FAULT shown), 'exit' (a start-up
    stopped with one line), 'ready' (a start-up got through)."""
    outcome: dict[str, str] = field(default_factory=dict)
    """What the kiosk did while full, by trial (its place and visitor); a turn's slips
    follow, e.g. ``slip:identified`` (a stranger's ``slip:not-identified`` may come
    before the disk fills: no mark is written on that path)."""
    restarts: int = 0
    days: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No invariant was broken."""
        return not self.problems


def sweep_values(total: int, stride: int = 1) -> list[int]:
    """N values from 0 to ``total`` (inclusive) every ``stride``, the last always in."""
    values = list(range(0, total + 1, max(1, stride)))
    if values[-1] != total:
        values.append(total)
    return values


class _Day(DayOnPowerFs):
    """One station's day on the filling disk."""

    def __init__(self, data: Path, out: Path, quiet: bool, report: DiskFullReport) -> None:
        super().__init__(data, out, quiet)
        self.report = report
        self.rng = np.random.default_rng(11)
        self.trial_no = 0
        self._log_seen = 0

    def __enter__(self) -> _Day:
        self.provision()
        self.kiosk.start_agent()
        self.kiosk.command("open")
        self.rig.printer.wait_for_documents(1, timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.rig.__exit__(*exc)
        self.fs.unmount()

    # --- measuring -------------------------------------------------------------------
    def measure_turn(self) -> int:
        """Growing writes of one first-time voter's turn, slip out and settled."""
        grows0 = self.fs.grows()
        self.visit_fresh("calibration")
        self._settled()
        return self.fs.grows() - grows0

    def measure_start(self) -> int:
        """Growing writes of a stop and a start, up to ready and settled."""
        self.kiosk.stop_agent()
        grows0 = self.fs.grows()
        self.kiosk.start_agent()
        self._settled()
        return self.fs.grows() - grows0

    # --- visitors --------------------------------------------------------------------
    def visitor(self, kind: str | None = None) -> tuple[str, int]:
        return pick_visitor(kind or VISITORS[self.trial_no % len(VISITORS)], self.voted,
                            self.rng)

    def visit_fresh(self, label: str) -> None:
        fresh = [f for f in range(N_REAL) if f not in self.voted]
        finger = int(self.rng.choice(fresh))
        kind = self.rig.visit(Visit(label, finger, "any"), self.rng, timeout=TURN_TIMEOUT_S)
        if kind == "identified":
            self.voted.add(finger)

    def _note_slips(self, docs0: int) -> list[str]:
        kinds = []
        for doc in self.rig.printer.documents[docs0:]:
            k = slip_kind(doc.text)
            kinds.append(k)
            n = list_number(doc.text)
            if k == "identified" and n is not None:
                self.voted.add(n - 1)
        return kinds

    # --- trials ----------------------------------------------------------------------
    def turn_trial(self, t: Target) -> None:
        """The disk fills where ``t`` says after the visitor presses.

        A first-time voter named by the target who is not recognised (a false
        non-match) takes a path that writes no mark: the site was not reached, and
        the next fresh voter comes (at most three).
        """
        for _ in range(3):
            if self._turn(t) != "slip:not-identified" or t.visitor != "first-time":
                return

    def _turn(self, t: Target) -> str:
        self.trial_no += 1
        kind, finger = self.visitor(t.visitor)
        where = f"{t} ({kind})"
        printer, sensor = self.rig.printer, self.rig.sensor
        wait_until(lambda: sensor.guidance is Guidance.READY, 60, "the sensor to invite a voter")
        docs0 = len(printer.documents)
        t.fill(self.fs)
        impressions = [int(i) for i in self.rng.permutation(self.rig.pressable(finger))]
        self.kiosk.press(finger, impressions[0])
        presses = 1
        deadline = time.monotonic() + TURN_TIMEOUT_S
        outcome = ""
        while not outcome:
            if time.monotonic() > deadline:
                self.report.problems.append(f"{where}: neither a slip nor FAULT in "
                                            f"{TURN_TIMEOUT_S:.0f}s")
                outcome = "stuck"
                break
            guidance = sensor.guidance
            if len(printer.documents) > docs0:
                outcome = "slip"
            elif guidance is Guidance.FAULT:
                outcome = "fault"
            elif guidance is Guidance.RETRY and sensor.finger_present:
                sensor.lift()
            elif guidance is Guidance.READY and not sensor.finger_present:
                self.kiosk.press(finger, impressions[presses % len(impressions)])
                presses += 1
            time.sleep(0.01)
        time.sleep(0.3)  # what the turn does after its slip, with the disk still full
        sensor.lift()
        self.report.while_full[outcome] += 1
        self.report.outcome[where] = outcome + "".join(
            f":{slip_kind(d.text)}" for d in printer.documents[docs0:])
        self.rig.say(f"{where}: {self.report.outcome[where]} while full")
        self.check(f"{where}, disk full", full=outcome == "fault")
        self.fs.enospc(None)
        self._recovered(where)
        self._settled(where)
        if not any(k in ("identified", "refused", "not-identified")
                   for k in self._note_slips(docs0)):
            # refused for lack of room: the voter waited and presses again
            got = self.rig.visit(Visit(f"{kind} again", finger, "any"), self.rng,
                                 timeout=TURN_TIMEOUT_S)
            if kind == "first-time" and got == "refused" and finger not in self.voted:
                self.report.problems.append(f"{where}: refused on the second press, "
                                            "with no identified slip of theirs on paper")
            self._note_slips(docs0)
        self._settled(where)
        self.check(f"{where}, space freed")
        self.report.trials["turn"] += 1
        return self.report.outcome[where]

    def restart_trial(self, t: Target) -> None:
        """The disk fills where ``t`` says while the operator pauses and resumes the
        station, then the kiosk is restarted before there is room."""
        self.trial_no += 1
        where = str(t)
        t.fill(self.fs)
        for command in ("pause", "resume"):
            try:
                self.kiosk.command(command)
            except ControlError as exc:
                if exc.code not in ("disk-full", "phase"):
                    self.report.problems.append(f"{where}: {command} refused with "
                                                f"{exc.code}: {exc}")
        code = self.kiosk.stop_agent()
        if code != 0:
            self.report.problems.append(f"{where}: SIGTERM on a full disk: exit {code}")
        self.report.while_full["stopped"] += 1
        self.report.outcome[where] = "stopped"
        self.rig.say(f"{where}: stopped while full")
        self.check(f"{where}, disk full", full=None)
        self.fs.enospc(None)
        self.kiosk.start_agent()
        self.report.restarts += 1
        if self.kiosk.command("status").get("phase") == "paused":
            self.kiosk.command("resume")
        self._serves_again(where)
        self.report.trials["restart"] += 1

    def startup_trial(self, t: Target) -> None:
        """The disk fills where ``t`` says during a start-up."""
        self.trial_no += 1
        where = str(t)
        code = self.kiosk.stop_agent()
        if code != 0:
            self.report.problems.append(f"{where}: the agent stopped with {code} before")
        t.fill(self.fs)
        try:
            self.kiosk.start_agent(timeout=120)
            outcome = "ready"
        except RigError:
            agent = self.kiosk.agent
            if agent is None or agent.poll() is None:
                raise
            outcome = "exit"
            if agent.returncode in {0, 78}:
                self.report.problems.append(
                    f"{where}: the agent exited with {agent.returncode} on a full disk "
                    "(0 and 78 stop systemd from starting it again)")
        self.report.while_full[outcome] += 1
        self.report.outcome[where] = outcome
        self.rig.say(f"{where}: {outcome} while full")
        log = self.check(f"{where}, disk full", full=None)
        if outcome == "exit" and "disk full" not in log:
            self.report.problems.append(f"{where}: the agent stopped without saying the "
                                        "disk is full")
        self.fs.enospc(None)
        if outcome == "exit":
            self.kiosk.start_agent()  # systemd: Restart=always
            self.report.restarts += 1
        self._serves_again(where)
        self.report.trials["start-up"] += 1

    # --- invariants ------------------------------------------------------------------
    def _serves_again(self, where: str) -> None:
        """Space freed: the kiosk invites, prints what it owed, serves the next voter."""
        self._recovered(where)
        self._settled(where)
        self.visit_fresh(f"{where}, next voter")
        self._settled(where)
        self.check(f"{where}, space freed")

    def _recovered(self, where: str) -> None:
        """The kiosk invites voters again by itself once there is room."""
        try:
            wait_until(lambda: self.rig.sensor.guidance is Guidance.READY, 60,
                       "the kiosk to invite voters again after the space was freed")
        except RigError as exc:
            self.report.problems.append(f"{where}: {exc}")

    def _settled(self, where: str = "", timeout: float = 30.0) -> None:
        """Nothing allocated, pending or being sent in the ledger; if something stays, a
        problem, and the agent is restarted (its recovery finishes it) so that the
        sweep goes on from a settled station."""
        try:
            self._wait_settled(timeout)
        except RigError as exc:
            if not where:
                raise
            self.report.problems.append(f"{where}: {exc}")
            self.kiosk.stop_agent()
            self.kiosk.start_agent()
            self.report.restarts += 1
            self._wait_settled(timeout)

    def _wait_settled(self, timeout: float) -> None:
        wait_settled(self.kiosk, timeout, "the kiosk to print what it owed")

    def _new_log(self) -> str:
        text = (self.kiosk.dir / "agent.log").read_text(errors="replace")
        new, self._log_seen = text[self._log_seen:], len(text)
        return new

    def check(self, when: str, *, full: bool | None = False,
              ops: OpsService | None = None) -> str:
        """Every invariant now; with ``full`` the kiosk must say its storage is full.
        Returns what the agent logged since the last check."""
        found: list[str] = []
        try:
            facts = collect(self.kiosk)
        except sqlite3.OperationalError:
            if full is False:
                raise
            # A reader must create the WAL index of a store the agent closed: on a full
            # disk it cannot. What matters is checked once the space is freed (a slip
            # without its mark stays one).
            facts = None
        if facts is None:
            pass
        elif full is False:
            found += disagreements(facts, ops, self.kiosk.device)
        else:  # mid-outage the stores may owe a slip or an event, never a lost mark
            lost = sorted(set(facts.copies) - facts.mark_serials)
            if lost:
                found.append(f"identified slips on paper without a mark: {lost}")
        twice = [] if facts is None else sorted(s for s, c in facts.originals.items() if c > 1)
        originals = original_slips([d.text for d in self.rig.printer.documents])
        twice += [f"voter {n}" for n, c in originals.items() if c > 1]
        if twice and not any("ORIGINAL" in p for p in found):
            found.append(f"two ORIGINAL slips: {twice}")
        agent = self.kiosk.agent
        if agent is not None and agent.poll() is None:
            try:
                status = self.kiosk.command("status")
                if full and status.get("storage") != "full":
                    found.append(f"status says storage {status.get('storage')!r} while the "
                                 "sensor shows FAULT for a full disk")
            except ControlError as exc:
                found.append(f"kesp-agent status did not answer: {exc}")
        if "Traceback" in (log := self._new_log()):
            found.append("a traceback in the agent's log: "
                         + log[log.index("Traceback"):][:600])
        self.report.problems += [f"{when}: {p}" for p in found]
        return log

    def integrity(self, when: str) -> None:
        """Restart the agent (SIGTERM, start) and check every store whole."""
        code = self.kiosk.stop_agent()
        if code != 0:
            self.report.problems.append(f"{when}: the agent stopped with {code}")
        for name in STORES:
            path = self.kiosk.state / name
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                (result,) = con.execute("PRAGMA integrity_check").fetchone()
            finally:
                con.close()
            if result != "ok":
                self.report.problems.append(f"{when}: {name} integrity_check: {result}")
        self.kiosk.start_agent()
        self.report.restarts += 1
        self._recovered(when)
        self._settled()
        self.check(f"{when}, restarted")

    def close(self) -> None:
        """Close the station; every store, the paper and central ops must agree, and ops
        must hold the kiosk's whole audit chain (an entry a full outbox refused too)."""
        before = len(self.rig.printer.documents)
        self.kiosk.command("close")
        self.rig.printer.wait_for_documents(before + 1, timeout=60)
        self.integrity(f"day {self.report.days} closed")
        self.check(f"day {self.report.days} closed", ops=self.rig.ops)
        if self.rig.ops is not None:
            self._ops_chain(self.rig.ops)

    def _ops_chain(self, ops: OpsService) -> None:
        audit = self.kiosk.state / "audit.sqlite"
        device = self.kiosk.device
        watch = AuditWatch()
        heads = [0, 0]

        def whole() -> bool:
            con = sqlite3.connect(f"file:{audit}?mode=ro", uri=True)
            try:
                heads[0] = int(con.execute("SELECT MAX(seq) FROM audit").fetchone()[0])
            finally:
                con.close()
            for n, payload in ops.store.events_after(device, watch.watermarks().get(
                    device, (0, 0))[0], 10_000):
                watch.feed(device, n, payload, ops.verifier.registry)
            heads[1] = watch.checked_through(device)
            return heads[1] >= heads[0]

        try:
            wait_until(whole, 30, "ops to hold the kiosk's whole audit chain")
        except RigError:
            problem = watch.facts.get(device)
            self.report.problems.append(
                f"day {self.report.days}: ops checked the audit chain through seq {heads[1]} "
                f"of {heads[0]}" + (f" ({problem.audit_problem})" if problem and
                                    problem.audit_problem else " (a gap)"))


@dataclass(frozen=True)
class Target:
    """One trial: the disk fills at the ``n``-th growing write (0: the first) of a path
    containing ``pattern`` (``*``: any file) in ``phase``: ``turn``, ``start-up``, or
    ``restart`` (the operator pauses and resumes, then the kiosk restarts, all before
    the space is freed); a turn's visitor is ``visitor`` (first-time, repeat,
    stranger) or the next in :data:`VISITORS`."""

    phase: str
    n: int
    pattern: str = "*"
    visitor: str | None = None
    after_syncs: bool = False
    """Full once ``n`` syncs of ``pattern`` took effect (``n`` commits of a store)
    rather than at its ``n``-th growing write."""

    def fill(self, fs: PowerFs) -> None:
        """Tell the disk when to be full."""
        if self.after_syncs:
            fs.fill(self.n, self.pattern)
        else:
            fs.enospc(self.n, self.pattern)

    def __str__(self) -> str:
        unit = "after sync" if self.after_syncs else "N="
        where = "" if self.pattern == "*" else f" of {self.pattern}"
        return f"{self.phase} {unit}{self.n}{where}"


def run_disk_full(data: Path, out: Path, *, phases: Sequence[str] = PHASES, stride: int = 1,
                  targets: Sequence[Target] | None = None, per_day: int = 24,
                  integrity_every: int = 8, quiet: bool = True,
                  stop_on_problem: bool = False) -> DiskFullReport:
    """Sweep N over every growing write of a turn and of a start-up (every ``stride``-th),
    measured first on this machine; or run exactly ``targets``. A fresh station every
    ``per_day`` trials.

    Raises :class:`~hardware_sim.powerfs.PowerFsError` where FUSE is unavailable.
    """
    PowerFs.check_available()
    report = DiskFullReport()
    plan: list[Target] = list(targets or [])
    for t in plan:
        report.swept.setdefault(t.phase, []).append(t.n)
    done = 0
    while not plan or done < len(plan):
        if out.exists():
            shutil.rmtree(out)
        report.days += 1
        with _Day(data, out, quiet, report) as day:
            if not plan:
                report.grows = {"turn": day.measure_turn(), "start-up": day.measure_start()}
                day.rig.say(f"growing writes: {report.grows}")
                for phase in phases:
                    values = sweep_values(report.grows[phase], stride)
                    report.swept[phase] = values
                    plan += [Target(phase, n) for n in values]
            for t in plan[done:done + per_day]:
                seen = len(report.problems)
                if t.phase == "turn":
                    day.turn_trial(t)
                elif t.phase == "restart":
                    day.restart_trial(t)
                else:
                    day.startup_trial(t)
                done += 1
                if integrity_every and done % integrity_every == 0:
                    day.integrity(f"after trial {done}")
                for problem in report.problems[seen:]:
                    day.rig.say(f"  BROKEN: {problem}")
                if stop_on_problem and report.problems:
                    return report
            day.close()
    return report


def summary(report: DiskFullReport) -> str:
    """One paragraph: what was swept and what was found."""
    swept = "; ".join(f"{p} N={v[0]}..{v[-1]} ({len(v)} values)" for p, v in report.swept.items())
    return (f"{sum(report.trials.values())} disk-full trials {dict(report.trials)} over "
            f"{report.days} day(s); growing writes measured {report.grows}; swept {swept}; "
            f"while full {dict(report.while_full)}; {report.restarts} restarts checked whole; "
            f"{len(report.problems)} problems")


def cli_main(argv: list[str]) -> int:
    """``kesp-sim diskfull [--stride K] [--phase turn|start-up]``."""
    p = argparse.ArgumentParser(prog="kesp-sim diskfull", description=__doc__.split("\n")[0])
    p.add_argument("--stride", type=int, default=1, help="sweep every K-th N (default 1)")
    p.add_argument("--phase", choices=PHASES, action="append",
                   help="only this phase (repeatable; default both)")
    p.add_argument("--data", type=Path, default=None,
                   help="fingerprint data folder (default: the data shipped with the package)")
    p.add_argument("--out", type=Path, default=Path("out/diskfull"))
    args = p.parse_args(argv)
    try:
        report = run_disk_full(args.data or reference_data(), args.out,
                               phases=args.phase or PHASES, stride=args.stride, quiet=False)
    except (RigError, PowerFsError, ReferenceDataError) as exc:
        print(f"DISK-FULL TEST FAILED: {exc}", file=sys.stderr)
        return 1
    for problem in report.problems:
        print(f"BROKEN: {problem}", file=sys.stderr)
    print(summary(report) + (" OK" if report.ok else " BROKEN"))
    return 0 if report.ok else 1
