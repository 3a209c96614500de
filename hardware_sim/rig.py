"""The test rig: a simulated polling station around real agent processes.

:class:`Rig` provisions a station like the CEC and a technician would (a CEC
key, each kiosk's own keys and configuration, a signed and encrypted roll of
40 voters enrolled with real FVC2002 ISO templates, the kiosks registered with
central ops), starts a private mosquitto (if installed), central ops'
verifier, and per kiosk (:class:`SimKiosk`) the simulated Grow sensor and
ESC/POS printer on real ptys; each kiosk's agent runs as its own process
(``kesp-agent run``), exactly as systemd would, and can be stopped, killed
(a power cut) and started again.

A :class:`Visit` is one person at a kiosk, reacting to the sensor's LED ring
like a person would. After the day, :func:`collect` reads a kiosk's stores and
the paper it printed into :class:`DayFacts`, and :func:`disagreements` lists
every way the stores, the paper, the audit log and central ops disagree.

The voters and their real fingers come from :mod:`hardware_sim.voters`.
Used by the tests, the power-loss harness (:mod:`hardware_sim.powerloss`) and the
demo (:mod:`hardware_sim.demo`); nothing here is mocked.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nacl.signing import SigningKey

from agent.drivers.sensor.types import Guidance
from agent.roll.package import Kiosk, Roll, Voter, build_package
from agent.runtime.config import (
    AgentConfig,
    BrokerConfig,
    PrinterConfig,
    SensorConfig,
    save_config,
)
from agent.runtime.control import ControlError, request
from agent.runtime.durable import atomic_write
from agent.runtime.keys import generate_keys
from hardware_sim.escpos_sim import EscposPrinterSimulator
from hardware_sim.fingers import impressions_of, load_fvc
from hardware_sim.grow_sim import GrowSensorSimulator
from hardware_sim.mosquitto import BrokerUnavailable, PrivateMosquitto, free_port
from hardware_sim.powerfs import PowerFs
from hardware_sim.voters import N_REAL, fvc_finger, make_roll
from ops.registry import register_device
from ops.service import OpsService


@dataclass(frozen=True)
class Visit:
    """One person at the kiosk: which real finger they press, and how they are selected."""

    label: str
    finger: int  # index into the 40 real FVC fingers
    expect: str  # "identified" | "refused" | "not-identified"
    document: str = ""  # typed by the operator before the press
    manual: int = 0  # list number the commission admits after a not-identified slip


class RigError(RuntimeError):
    """The rig could not run the station; the message says what to do."""


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms; :class:`RigError` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RigError(f"timed out after {timeout:.0f}s waiting for {what}")


def slip_kind(text: str) -> str:
    """What a printed document is, from its (Russian) title, however it was wrapped."""
    text = " ".join(text.split())
    for marker, kind in (("НУЛЕВОЙ ОТЧЕТ", "zero-report"), ("ИТОГОВЫЙ ОТЧЕТ", "closing-report"),
                         ("ИДЕНТИФИКАЦИЯ ПРОЙДЕНА", "identified"),
                         # a commission's admission counts with the identified (a ballot)
                         ("ДОПУЩЕН ПО РЕШЕНИЮ КОМИССИИ", "identified"),
                         ("УЖЕ ИДЕНТИФИЦИРОВАН", "refused"),
                         ("НЕ ИДЕНТИФИЦИРОВАН", "not-identified")):
        if marker in text:
            return kind
    return "unknown"


def slip_serial(text: str) -> str:
    """The serial printed on a slip or report ("" if none)."""
    for line in text.splitlines():
        for label in ("Чек №:", "Отчет №:"):
            if label in line:
                return line.split(label, 1)[1].strip()
    return ""


def slip_list_number(text: str) -> int | None:
    """The voter's list number printed on an identified or refusal slip."""
    for line in text.splitlines():
        if "№ в списке:" in line:
            return int(line.rsplit(":", 1)[1])
    return None


def is_duplicate(text: str) -> bool:
    """Whether the document carries the DUPLICATE banner."""
    return "DUPLICATE" in text or "ДУБЛИКАТ" in text


@dataclass(frozen=True)
class Difference:
    """An outcome other than the plan's, with why it happened and whether that is allowed."""

    label: str
    expected: str
    got: str
    allowed: bool
    why: str
    wrong_voter: bool = False


def judge(visit: Visit, kind: str, named: int | None, ballots: set[int]) -> Difference | None:
    """Compare a visit's slip with the plan; None when it is what the plan expects.

    ``ballots`` are the list numbers that already got an admission slip. Allowed:
    a genuine voter not identified (a false non-match: the commission decides), a
    repeat visitor not recognised (no ballot either way), a repeat visitor whose
    first visit was not identified getting their first slip. Never allowed: a
    slip naming another voter, a second ballot, a voter refused who had none.
    """
    def diff(allowed: bool, why: str, wrong: bool = False) -> Difference:
        return Difference(visit.label, visit.expect, kind, allowed, why, wrong)

    own = visit.finger + 1 if visit.finger < N_REAL else None
    if named is not None and own is None:
        return diff(False, f"{visit.label} (not on the list) got a slip for voter №{named}", True)
    if named is not None and own is not None and named != own:
        return diff(False, f"{visit.label} got a slip for voter №{named}", True)
    expect = visit.expect
    if expect in ("any", kind):
        return None
    if expect == "refused" and own is not None and own not in ballots:
        if kind == "identified":
            return diff(True, "the first visit was not identified, so this is the voter's "
                              "first slip")
        if kind == "not-identified":
            return diff(True, "not identified on either visit: the commission decides")
    if kind == "not-identified" and expect == "identified":
        return diff(True, "a false non-match: the voter goes to the commission, which decides "
                          "(kesp-agent manual)")
    if kind == "not-identified" and expect == "refused":
        return diff(True, "a repeat visitor not recognised: no ballot either way; the "
                          "commission checks the paper list")
    if kind == "identified" and expect == "refused":
        return diff(False, "a voter who already had a slip got a second one")
    if kind == "refused" and expect == "identified":
        return diff(False, "a voter with no slip yet was refused")
    return diff(False, f"expected {expect}, got {kind}")


class SimKiosk:
    """One simulated kiosk: its own sensor and printer simulators, state and agent process."""

    def __init__(self, rig: Rig, letter: str, seed: int) -> None:
        self.rig = rig
        self.device = f"kiosk-0001-{letter}"
        self.dir = rig.out / f"kiosk-{letter}"
        self.sock = self.dir / "run" / "agent.sock"
        self.config = self.dir / "agent.json"
        self.sensor = GrowSensorSimulator(link=self.dir / "ttySENSOR", seed=seed)
        self.printer = EscposPrinterSimulator(self.dir / "slips", profile="epson-tm-t20iii")
        self.peer_port = free_port()
        self.agent: subprocess.Popen[bytes] | None = None
        self.program = ["-m", "agent.runtime.cli"]
        """How the agent is started (``python`` + this): a harness may plant a bug."""

    @property
    def state(self) -> Path:
        """The agent's state directory (under the rig's state root when it has one)."""
        if self.rig.state_root is not None:
            return self.rig.state_root / f"kiosk-{self.device[-1]}"
        return self.dir / "state"

    def start_agent(self, timeout: float = 900.0) -> float:
        """Run ``kesp-agent run`` as its own process, as systemd would; seconds to ready."""
        log = (self.dir / "agent.log").open("ab")
        self.agent = subprocess.Popen(
            [sys.executable, *self.program, "--config", str(self.config), "run"],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        log.close()
        t0 = time.monotonic()
        agent = self.agent

        def ready() -> bool:
            if agent.poll() is not None:
                raise RigError(f"the agent of {self.device} exited with {agent.returncode}; "
                                f"see {self.dir / 'agent.log'}")
            try:
                request(self.sock, "status", timeout_s=2)
            except ControlError:
                return False
            return True

        wait_until(ready, timeout, f"the agent of {self.device} to become ready")
        return time.monotonic() - t0

    def stop_agent(self) -> int:
        """SIGTERM, as systemd stops it; returns the exit code."""
        if self.agent is None:
            return 0
        self.agent.send_signal(signal.SIGTERM)
        try:
            return self.agent.wait(60)
        except subprocess.TimeoutExpired:
            self.agent.kill()
            return self.agent.wait(10)

    def kill_agent(self) -> None:
        """SIGKILL: the battery died."""
        if self.agent is not None and self.agent.poll() is None:
            self.agent.kill()
            self.agent.wait(10)

    def command(self, name: str, arg: str = "") -> dict[str, object]:
        """An operator command to the running agent."""
        return request(self.sock, name, arg)

    def press(self, finger: int, impression: int) -> None:
        """Put real finger ``finger`` (0..39), impression ``impression`` on the sensor.

        The press (placement, pressure, noise) is drawn from the rig's seed and the
        finger and impression alone, so the same press looks the same in every run.
        """
        db, fid = fvc_finger(finger)
        rng = np.random.default_rng([self.rig.seed, finger, impression])
        self.sensor.press(*load_fvc(self.rig.data / "fvc2002", db, fid, impression), rng=rng)

    def visit(self, visit: Visit, rng: np.random.Generator, timeout: float = 60.0) -> str:
        """One visitor, reacting to the LED like a person; returns the slip kind printed."""
        wait_until(lambda: self.sensor.guidance is Guidance.READY, timeout,
              "the sensor to invite the next voter")
        before = len(self.printer.documents)
        if visit.document:
            self.command("document", visit.document)
        impressions = [int(i) for i in rng.permutation(self.rig.pressable(visit.finger))]
        self.press(visit.finger, impressions[0])
        presses = 1
        deadline = time.monotonic() + timeout
        while len(self.printer.documents) <= before:
            if time.monotonic() > deadline:
                self.sensor.lift()
                raise RigError(f"no slip for {visit.label} after {timeout:.0f}s")
            guidance = self.sensor.guidance
            if guidance is Guidance.RETRY and self.sensor.finger_present:
                self.sensor.lift()  # asked to press again: lift, wait for the blue light
            elif guidance is Guidance.READY and not self.sensor.finger_present:
                self.press(visit.finger, impressions[presses % len(impressions)])
                presses += 1
            time.sleep(0.02)
        self.sensor.lift()
        text = self.printer.documents[before].text
        kind = slip_kind(text)
        named = slip_list_number(text)
        diff = judge(visit, kind, named, self.rig.ballots)
        if kind == "identified" and named is not None:
            self.rig.ballots.add(named)
        if diff is None:
            mark = "ok"
        else:
            self.rig.differences.append(diff)
            if diff.wrong_voter:
                self.rig.wrong.append(diff.why)
            mark = ("allowed: " if diff.allowed else "NOT ALLOWED: ") + diff.why
        where = f" at {self.device}" if len(self.rig.kiosks) > 1 else ""
        self.rig.say(f"  {visit.label + where:<40} {presses} press(es) -> {kind:<15} {mark}")
        if visit.manual:
            before = len(self.printer.documents)
            self.command("manual", str(visit.manual))
            self.printer.wait_for_documents(before + 1, timeout=30)
            self.rig.ballots.add(visit.manual)
            self.rig.say(f"  {'commission admits №' + str(visit.manual):<40} manual decision"
                         f" -> {slip_kind(self.printer.documents[-1].text)}")
        return kind


class Rig:
    """A simulated polling station: broker, central ops and one or more kiosks.

    Provisioning happens in :meth:`__enter__`; each kiosk's agent is started
    with :meth:`SimKiosk.start_agent` and may be stopped (SIGTERM) or killed
    (SIGKILL, a power cut) and started again any number of times. With one
    kiosk, ``rig.sensor``, ``rig.printer``, ``rig.start_agent()``... are that
    kiosk's.
    """

    def __init__(self, data: Path, out: Path, *, quiet: bool = False,
                 extra_voters: int = 0, kiosks: int = 1,
                 sensor: SensorConfig | None = None,
                 enrolled: tuple[Voter, ...] = (), seed: int = 7,
                 state_root: Path | None = None) -> None:
        self.data = data
        #: Seeds every simulated press and the sensors' own streams: same seed, same day.
        self.seed = seed
        self.out = out
        self.state_root = state_root
        """Where the kiosks' state directories live (default: in ``out``); the
        power-loss harness puts them on its FUSE filesystem."""
        self.quiet = quiet
        self.extra_voters = extra_voters
        self.sensor_config = sensor
        self.enrolled = enrolled
        self.station, self.district = "s-0001", "osh-city"
        self.broker: PrivateMosquitto | None = None
        self.ops: OpsService | None = None
        self.kiosks = [SimKiosk(self, "abcdefgh"[i], seed=seed + i) for i in range(kiosks)]
        self.roll: Roll | None = None
        self.wrong: list[str] = []
        """Visitors who were given another voter's slip (a false match)."""
        self.differences: list[Difference] = []
        """Every outcome that differed from the plan, judged (see :func:`judge`)."""
        self.ballots: set[int] = set()
        """List numbers that got an admission slip (identified or manual) so far."""
        self._pressable: dict[int, list[int]] = {}

    def pressable(self, finger: int) -> list[int]:
        """Impressions of real finger ``finger`` a visitor may press: every image in
        the data but impression 1, whose register template enrolled the voter."""
        if finger not in self._pressable:
            db, fid = fvc_finger(finger)
            found = [i for i in impressions_of(self.data / "fvc2002", db, fid) if i != 1]
            if not found:
                raise RigError(f"no image of {db} finger {fid} other than impression 1 "
                               f"under {self.data / 'fvc2002'}")
            self._pressable[finger] = found
        return self._pressable[finger]

    # single-kiosk conveniences
    @property
    def kiosk(self) -> SimKiosk:
        """The first (or only) kiosk."""
        return self.kiosks[0]

    @property
    def device(self) -> str:
        """Device id of the first kiosk."""
        return self.kiosk.device

    @property
    def sensor(self) -> GrowSensorSimulator:
        """Sensor simulator of the first kiosk."""
        return self.kiosk.sensor

    @property
    def printer(self) -> EscposPrinterSimulator:
        """Printer simulator of the first kiosk."""
        return self.kiosk.printer

    @property
    def agent(self) -> subprocess.Popen[bytes] | None:
        """Agent process of the first kiosk."""
        return self.kiosk.agent

    @property
    def config(self) -> Path:
        """Configuration file of the first kiosk."""
        return self.kiosk.config

    def start_agent(self, timeout: float = 900.0) -> float:
        """Start the first kiosk's agent."""
        return self.kiosk.start_agent(timeout)

    def stop_agent(self) -> int:
        """Stop the first kiosk's agent."""
        return self.kiosk.stop_agent()

    def kill_agent(self) -> None:
        """Power-cut the first kiosk."""
        self.kiosk.kill_agent()

    def command(self, name: str, arg: str = "") -> dict[str, object]:
        """An operator command to the first kiosk."""
        return self.kiosk.command(name, arg)

    def press(self, finger: int, impression: int) -> None:
        """Press a finger on the first kiosk's sensor."""
        self.kiosk.press(finger, impression)

    def visit(self, visit: Visit, rng: np.random.Generator, timeout: float = 60.0) -> str:
        """A visitor at the first kiosk."""
        return self.kiosk.visit(visit, rng, timeout)

    def say(self, text: str) -> None:
        """Narrate."""
        if not self.quiet:
            print(text, flush=True)

    def __enter__(self) -> Rig:
        if self.out.exists():
            shutil.rmtree(self.out)
        (self.out / "mosquitto").mkdir(parents=True)
        for k in self.kiosks:
            (k.dir / "slips").mkdir(parents=True)
        try:
            self.broker = PrivateMosquitto(workdir=self.out / "mosquitto")
            self.broker.start()
            broker_url = self.broker.url
            self.say(f"private mosquitto on {broker_url}")
        except BrokerUnavailable as exc:
            self.broker = None
            broker_url = f"mqtt://127.0.0.1:{free_port()}"
            self.say(f"no broker ({exc}): telemetry stays in the kiosks' outboxes, "
                     "ops sees nothing")
        self.roll = self.provision(broker_url)
        if self.broker is not None:
            self.ops = OpsService(broker_url, self.out / "ops" / "registry.json",
                                  str(self.out / "ops" / "ops.sqlite"))
            self.ops.start()
        for k in self.kiosks:
            k.sensor.start()
            k.printer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for k in self.kiosks:
            k.kill_agent()
            k.sensor.stop()
            k.printer.stop()
        if self.ops is not None:
            self.ops.stop()
        if self.broker is not None:
            self.broker.close()

    def provision(self, broker_url: str) -> Roll:
        """CEC key, each kiosk's keys and config, the roll package installed, kiosks registered."""
        cec = SigningKey.generate()
        entries = []
        for k in self.kiosks:
            keys = generate_keys(k.dir / "keys")
            atomic_write(k.dir / "keys" / "cec.pub",
                         bytes(cec.verify_key).hex().encode() + b"\n", 0o644)
            peers = tuple(f"127.0.0.1:{o.peer_port}" for o in self.kiosks if o is not k)
            cfg = AgentConfig(
                device_id=k.device, station_id=self.station, district=self.district,
                state_dir=str(k.state), key_dir=str(k.dir / "keys"),
                sensor=self.sensor_config or SensorConfig(kind="grow-serial",
                                                          port=str(k.sensor.path)),
                printer=PrinterConfig(kind="escpos-serial", port=str(k.printer.path),
                                      profile="epson-tm-t20iii"),
                broker=BrokerConfig(url=broker_url),
                control_socket=str(k.sock),
                health_interval_s=5.0,
                peers=peers,
                peer_listen=f"127.0.0.1:{k.peer_port}",
            )
            save_config(cfg, k.config)
            entries.append(Kiosk(k.device, keys.verify_key_hex, keys.box_public_hex))
            register_device(self.out / "ops" / "registry.json", k.device, self.station,
                            self.district, keys.verify_key_hex)
        roll = make_roll(self.data, self.station, self.district, tuple(entries),
                         self.extra_voters, self.enrolled)
        package = build_package(roll, cec)
        for k in self.kiosks:
            atomic_write(k.state / "roll.pkg", package)
        self.say(f"provisioned station {self.station} ({self.district}): {len(roll.voters)} "
                 f"voters, package {len(package) // 1024} KiB signed by the CEC, encrypted "
                 f"to {', '.join(k.device for k in self.kiosks)}")
        return roll


@dataclass(frozen=True)
class DayFacts:
    """What the kiosk's stores, the paper and central ops say after the day."""

    methods: Counter[str]
    ledger: Counter[str]
    paper: Counter[str]
    audit: Counter[str]
    mark_serials: frozenset[str]
    originals: Counter[str]
    """ORIGINAL copies on paper per slip serial, every kind (must never exceed 1)."""
    copies: Counter[str]
    """Copies on paper (ORIGINAL or DUPLICATE) per identified slip's serial."""

    @property
    def store_counts(self) -> dict[str, int]:
        """Outcome counts from the mark store and the ledger."""
        return {"identified": sum(self.methods.values()), "refused": self.ledger["refused"],
                "not_identified": self.ledger["not-identified"]}

    @property
    def turnout(self) -> dict[str, int]:
        """The cumulative turnout the kiosk must have reported."""
        return {"identified": sum(v for k, v in self.methods.items() if k != "manual"),
                "manual": self.methods["manual"], "refused": self.ledger["refused"],
                "not_identified": self.ledger["not-identified"]}


_VOTER_SLIP_KINDS = ("identified", "refused", "not-identified")


def collect(kiosk: SimKiosk) -> DayFacts:
    """Read one kiosk's stores (read-only) and the paper it printed."""
    state = kiosk.state

    def rows(db: str, sql: str) -> list[tuple[str, ...]]:
        con = sqlite3.connect(f"file:{state / db}?mode=ro", uri=True)
        try:
            return [tuple(r) for r in con.execute(sql)]
        finally:
            con.close()

    marks = rows("marks.sqlite",
                 f"SELECT method, slip_serial FROM marks WHERE kiosk = '{kiosk.device}'")
    paper, originals, copies = read_paper([d.text for d in kiosk.printer.documents])
    return DayFacts(
        methods=Counter(m for m, _ in marks),
        ledger=Counter(k for (k,) in rows("ledger.sqlite",
                                          "SELECT kind FROM slips WHERE state != 'void'")),
        paper=paper,
        audit=Counter(e for (e,) in rows("audit.sqlite", "SELECT event FROM audit")),
        mark_serials=frozenset(s for _, s in marks),
        originals=originals,
        copies=copies,
    )


def read_paper(texts: list[str]) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """What the printed documents say: (kinds on paper, ORIGINALs per serial, identified
    copies per serial).

    A voter slip counts once per serial whether its original or a DUPLICATE reached
    the paper: a power cut in the middle of an original leaves no whole original, and
    the recovered agent must then print it marked DUPLICATE (it cannot know how much
    came out). Reports count as printed originals.
    """
    kinds = [(t, slip_kind(t)) for t in texts]
    slips = [(t, k) for t, k in kinds if k in _VOTER_SLIP_KINDS]
    kind_of = {slip_serial(t): k for t, k in slips}
    paper = Counter(kind_of.values()) + Counter(
        k for t, k in kinds if k not in _VOTER_SLIP_KINDS and not is_duplicate(t))
    originals = Counter(slip_serial(t) for t, _ in slips if not is_duplicate(t))
    copies = Counter(slip_serial(t) for t, k in slips if k == "identified")
    return paper, originals, copies


def ops_turnout(ops: OpsService, device: str) -> dict[str, int]:
    """The cumulative turnout central ops verified for ``device``."""
    counts = ops.turnout().by_device.get(device)
    if counts is None:
        return {}
    return {"identified": counts.identified, "manual": counts.manual,
            "refused": counts.refused, "not_identified": counts.not_identified}


def disagreements(facts: DayFacts, ops: OpsService | None, device: str) -> list[str]:
    """Every way the stores, the paper, the audit log and ops disagree (empty when all agree)."""
    problems = []
    store = facts.store_counts
    paper = {"identified": facts.paper["identified"], "refused": facts.paper["refused"],
             "not_identified": facts.paper["not-identified"]}
    if store != paper:
        problems.append(f"roll store {store} != slips on paper {paper}")
    audit = {"identified": facts.audit["voter-identified"] + facts.audit["manual-decision"],
             "refused": facts.audit["voter-refused"],
             "not_identified": facts.audit["voter-not-identified"]}
    if store != audit:
        problems.append(f"roll store {store} != audit log {audit}")
    twice = [s for s, n in facts.originals.items() if n > 1]
    if twice:
        problems.append(f"slips printed twice as ORIGINAL: {twice}")
    unmarked = sorted(set(facts.copies) - facts.mark_serials)
    if unmarked:
        problems.append(f"identified slips for unmarked voters: {unmarked}")
    unprinted = sorted(facts.mark_serials - set(facts.copies))
    if unprinted:
        problems.append(f"marks whose slip never printed: {unprinted}")
    if ops is not None:
        try:
            wait_until(lambda: ops_turnout(ops, device) == facts.turnout, 30,
                  "ops to see the final turnout")
        except RigError:
            problems.append(f"ops turnout {ops_turnout(ops, device)} != kiosk {facts.turnout}")
        # A message republished after a power cut (sent, but the PUBACK never reached
        # the outbox) is counted once by ops and refused as "duplicate": that is the
        # dedup working. Any other refusal is a real disagreement.
        rejected = {r: n for r, n in ops.stats().rejected.items() if r != "duplicate"}
        if rejected:
            problems.append(f"ops rejected messages: {rejected}")
    return problems


class DayOnPowerFs:
    """A one-kiosk station whose state directory lives on :mod:`hardware_sim.powerfs`:
    the day of the power-loss and the disk-full harnesses (which add the trials)."""

    def __init__(self, data: Path, out: Path, quiet: bool) -> None:
        self.fs = PowerFs(out / "disk", out / "state")
        self.rig = Rig(data, out / "rig", quiet=quiet, state_root=out / "state")
        self.voted: set[int] = set()
        """Fingers whose identified slip came out (the harness's own view)."""

    @property
    def kiosk(self) -> SimKiosk:
        """The station's kiosk."""
        return self.rig.kiosk

    def provision(self) -> None:
        """Mount the disk, provision the station and start its simulators (no agent yet)."""
        self.fs.mount()
        try:
            self.rig.__enter__()
        except BaseException:
            self.fs.unmount()
            raise


def pick_visitor(kind: str, voted: set[int], rng: np.random.Generator) -> tuple[str, int]:
    """A visitor of ``kind`` (first-time, repeat, stranger) and their real finger, given
    the fingers already ``voted``: a repeat with nobody voted yet comes first-time, a
    first-time with every voter voted comes as a repeat."""
    fresh = [f for f in range(N_REAL) if f not in voted]
    if kind == "repeat" and not voted:
        kind = "first-time"
    if kind == "first-time" and not fresh:
        kind = "repeat"
    if kind == "first-time":
        return kind, int(rng.choice(fresh))
    if kind == "repeat":
        return kind, int(rng.choice(sorted(voted)))
    return kind, int(rng.integers(N_REAL, 40))


def wait_settled(kiosk: SimKiosk, timeout: float, what: str) -> None:
    """Wait until the kiosk's ledger holds no slip allocated, pending or being sent
    (recovery and the loop printed what they owed); :class:`RigError` naming ``what``."""
    ledger = kiosk.state / "ledger.sqlite"

    def settled() -> bool:
        con = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
        try:
            (n,) = con.execute("SELECT COUNT(*) FROM slips WHERE state IN "
                               "('allocated', 'pending', 'sending')").fetchone()
        finally:
            con.close()
        return int(n) == 0

    wait_until(settled, timeout, what)


def original_slips(texts: list[str]) -> Counter[int]:
    """ORIGINAL identified slips on paper per voter's list number (must never exceed 1)."""
    originals: Counter[int] = Counter()
    for text in texts:
        n = slip_list_number(text)
        if slip_kind(text) == "identified" and not is_duplicate(text) and n:
            originals[n] += 1
    return originals


def merged_marks(kiosk: SimKiosk) -> set[tuple[str, int, int]]:
    """(kiosk, origin_seq, voter) of every mark a kiosk holds, its own and its peers'."""
    con = sqlite3.connect(f"file:{kiosk.state / 'marks.sqlite'}?mode=ro", uri=True)
    try:
        return {(str(k), int(n), int(v))
                for k, n, v in con.execute("SELECT kiosk, origin_seq, voter FROM marks")}
    finally:
        con.close()
