"""``kesp-sim day`` (``make demo``): a whole simulated polling-station day, end to end.

Nothing is mocked. The day:

1. provisions a station like the CEC and a technician would: a CEC key, the
   kiosk's own keys and configuration, a signed and encrypted roll of 40
   voters enrolled with real FVC2002 ISO templates (the register's
   templates), the kiosk registered with central ops;
2. starts a private mosquitto (if installed), the simulated Grow sensor and
   ESC/POS printer on real ptys, central ops' verifier, and the agent itself
   as a separate process (``kesp-agent run``), exactly as systemd would;
3. opens the station (zero report), sends the visitors: voters pressing
   *other* impressions of their enrolled finger, repeat visits, people not on
   the list, a voter verified by ID document, a commission's manual decision;
   each virtual voter reacts to the sensor's LED ring like a person would;
4. closes the station (closing report), stops the agent and checks that the
   mark store, the slips on paper and what central ops verified agree.

It ends with ``DEMO OK: ...`` and exit 0, or says what disagrees and exits 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nacl.signing import SigningKey

from agent.config import (
    AgentConfig,
    BrokerConfig,
    PrinterConfig,
    SensorConfig,
    atomic_write,
    save_config,
)
from agent.control import ControlError, request
from agent.drivers.sensor import Guidance
from agent.keys import generate_keys
from agent.rollpackage import Finger, Kiosk, Roll, Voter, build_package
from hardware_sim.escpos_sim import EscposPrinterSimulator, SimulatedSlip
from hardware_sim.fingers import load_fvc
from hardware_sim.grow_sim import GrowSensorSimulator
from hardware_sim.mosquitto import BrokerUnavailable, PrivateMosquitto, free_port

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("KESP_SHARED_DATA", REPO.parent / "shared" / "data"))
DBS = ("DB1_B", "DB2_B", "DB3_B", "DB4_B")

SURNAMES = (  # (Kyrgyz, Russian) spellings
    ("Асанов", "Асанов"), ("Үсөнбаев", "Усенбаев"), ("Төлөгөнов", "Тологонов"),
    ("Жээнбеков", "Жээнбеков"), ("Өмүрбеков", "Омурбеков"), ("Сыдыков", "Сыдыков"),
    ("Бөкөнбаев", "Боконбаев"), ("Мамытов", "Мамытов"), ("Түгөлбаев", "Тюгельбаев"),
    ("Керимбеков", "Керимбеков"),
)
MALE = (("Үмөт", "Умот"), ("Бакыт", "Бакыт"), ("Нурлан", "Нурлан"), ("Эрмек", "Эрмек"))
FEMALE = (("Гүлнара", "Гульнара"), ("Айгүл", "Айгуль"), ("Жаңыл", "Жаныл"),
          ("Бүбүсара", "Бюбюсара"))

N_VOTERS = 40
N_REAL = 34  # voters enrolled with a real FVC finger; FVC fingers 34..39 are strangers


def fvc_finger(index: int) -> tuple[str, int]:
    """FVC (set, finger id) of the ``index``-th of the 40 real fingers."""
    return DBS[index // 10], 101 + index % 10


def iso_bytes(data: Path, index: int, impression: int) -> bytes:
    """The register's ISO template of a real finger."""
    db, finger = fvc_finger(index)
    return (data / "fvc2002" / db / f"{finger}_{impression}.iso").read_bytes()


def synthetic_iso(rng: np.random.Generator) -> bytes:
    """An ISO 19794-2:2005 record with plausible random minutiae (voters who never come)."""
    from provisioning.synthetic import iso_template

    n = int(rng.integers(25, 45))
    minutiae = np.stack([rng.integers(20, 280, n), rng.integers(20, 380, n),
                         rng.integers(0, 256, n), rng.integers(1, 3, n)], axis=1)
    return iso_template(2, minutiae)


def make_roll(data: Path, station: str, district: str, kiosk: Kiosk) -> Roll:
    """The demo station's roll: 40 voters, names in Kyrgyz and Russian."""
    rng = np.random.default_rng(2026)
    voters = []
    for i in range(N_VOTERS):
        sur_ky, sur_ru = SURNAMES[i % len(SURNAMES)]
        female = i % 2 == 1
        first_ky, first_ru = (FEMALE if female else MALE)[(i // 2) % 4]
        suffix = "а" if female else ""
        fingers = (Finger(2, iso_bytes(data, i, 1)) if i < N_REAL
                   else Finger(2, synthetic_iso(rng)),)
        voters.append(Voter(
            list_number=i + 1,
            name_ky=f"{sur_ky}{suffix} {first_ky}",
            name_ru=f"{sur_ru}{suffix} {first_ru}",
            document=f"ID{1_000_000 + 7919 * (i + 1):07d}",
            fingers=fingers,
        ))
    return Roll(election_id="kg-2026-demo", station_id=station, district=district,
                roll_version=1, created="2026-11-27T06:00:00Z", kiosks=(kiosk,),
                voters=tuple(voters))


@dataclass(frozen=True)
class Visit:
    """One person at the kiosk: which real finger they press, and how they are selected."""

    label: str
    finger: int  # index into the 40 real FVC fingers
    expect: str  # "identified" | "refused" | "not-identified"
    document: str = ""  # typed by the operator before the press
    manual: int = 0  # list number the commission admits after a not-identified slip


def plan(roll: Roll) -> list[Visit]:
    """The day's visitors (deterministic)."""
    visits = [Visit(f"voter {i + 1}", i, "identified") for i in range(0, 28)]
    visits.insert(5, Visit("voter 30 with ID card", 29, "identified",
                           document=roll.voters[29].document))
    for i in (2, 11, 20):  # come back, at the same kiosk
        visits.insert(12 + i // 2, Visit(f"voter {i + 1} again", i, "refused"))
    for j in range(34, 38):
        visits.append(Visit(f"stranger {j - 33}", j, "not-identified"))
    visits.append(Visit("voter 31 with a cut finger", 38, "not-identified", manual=31))
    visits.append(Visit("voter 30 again", 29, "refused"))
    return visits


class DemoError(RuntimeError):
    """The day could not be run; the message says what to do."""


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")


class Day:
    """The running simulated day (see module docstring)."""

    def __init__(self, data: Path, out: Path, *, verbose: bool) -> None:
        self.data = data
        self.out = out
        self.verbose = verbose
        self.station, self.district, self.device = "s-0001", "osh-city", "kiosk-0001-a"
        self.broker: PrivateMosquitto | None = None
        self.agent: subprocess.Popen[bytes] | None = None

    def say(self, text: str) -> None:
        """Narrate the day."""
        print(text, flush=True)

    # ------------------------------------------------------------ provisioning

    def provision(self, broker_url: str) -> tuple[Path, Roll]:
        """CEC key, device keys and config, roll package installed, kiosk registered."""
        from ops.registry import register_device

        keys_dir = self.out / "kiosk" / "keys"
        state = self.out / "kiosk" / "state"
        cec = SigningKey.generate()
        keys = generate_keys(keys_dir)
        atomic_write(keys_dir / "cec.pub", bytes(cec.verify_key).hex().encode() + b"\n", 0o644)
        cfg = AgentConfig(
            device_id=self.device, station_id=self.station, district=self.district,
            state_dir=str(state), key_dir=str(keys_dir),
            sensor=SensorConfig(kind="grow-serial", port=str(self.out / "dev" / "ttySENSOR")),
            printer=PrinterConfig(kind="escpos-serial",
                                  port=str(self.out / "slips" / "printer.tty"),
                                  profile="epson-tm-t20iii"),
            broker=BrokerConfig(url=broker_url),
            control_socket=str(self.out / "kiosk" / "run" / "agent.sock"),
            health_interval_s=5.0,
        )
        config = self.out / "kiosk" / "agent.json"
        save_config(cfg, config)
        kiosk = Kiosk(self.device, keys.verify_key_hex, keys.box_public_hex)
        roll = make_roll(self.data, self.station, self.district, kiosk)
        package = build_package(roll, cec)
        atomic_write(state / "roll.pkg", package)
        register_device(self.out / "ops" / "registry.json", self.device, self.station,
                        self.district, keys.verify_key_hex)
        self.say(f"provisioned station {self.station} ({self.district}): {len(roll.voters)} "
                 f"voters, package {len(package) // 1024} KiB signed by the CEC, "
                 f"encrypted to {self.device}")
        return config, roll

    # ------------------------------------------------------------------- agent

    def start_agent(self, config: Path) -> None:
        """Run ``kesp-agent run`` as its own process, as systemd would."""
        log = (self.out / "agent.log").open("wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "--config", str(config), "run"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        sock = self.out / "kiosk" / "run" / "agent.sock"
        t0 = time.monotonic()

        def ready() -> bool:
            if self.agent is not None and self.agent.poll() is not None:
                raise DemoError(f"the agent exited with {self.agent.returncode}; see "
                                  f"{self.out / 'agent.log'}")
            try:
                request(sock, "status", timeout_s=2)
            except ControlError:
                return False
            return True

        _wait(ready, 180, "the agent to become ready")
        self.say(f"agent ready in {time.monotonic() - t0:.1f}s (process start to control socket)")

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


def _slip_kind(text: str) -> str:
    for marker, kind in (("НУЛЕВОЙ ОТЧЕТ", "zero-report"), ("ИТОГОВЫЙ ОТЧЕТ", "closing-report"),
                         ("ИДЕНТИФИКАЦИЯ ПРОЙДЕНА", "identified"),
                         ("УЖЕ ИДЕНТИФИЦИРОВАН", "refused"),
                         ("НЕ ИДЕНТИФИЦИРОВАН", "not-identified")):
        if marker in text:
            return kind
    return "unknown"


def run_day(data: Path, out: Path, *, verbose: bool = False) -> int:
    """Run the day; returns the process exit code."""
    if not (data / "fvc2002" / "DB1_B").is_dir():
        print(f"kesp-sim day: fingerprint data not found at {data}; set KESP_SHARED_DATA",
              file=sys.stderr)
        return 2
    if out.exists():
        shutil.rmtree(out)
    (out / "dev").mkdir(parents=True)
    day = Day(data, out, verbose=verbose)
    try:
        day.broker = PrivateMosquitto(workdir=out / "mosquitto")
        (out / "mosquitto").mkdir()
        day.broker.start()
        broker_url = day.broker.url
        day.say(f"private mosquitto on {broker_url}")
    except BrokerUnavailable as exc:
        day.broker = None
        broker_url = f"mqtt://127.0.0.1:{free_port()}"
        day.say(f"no broker ({exc}): telemetry stays in the kiosk's outbox, ops sees nothing")
    try:
        return _run(day, broker_url)
    except DemoError as exc:
        print(f"DEMO FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if day.agent is not None and day.agent.poll() is None:
            day.agent.kill()
        if day.broker is not None:
            day.broker.close()


def _run(day: Day, broker_url: str) -> int:
    from ops.service import OpsService

    config, roll = day.provision(broker_url)
    ops = OpsService(broker_url, day.out / "ops" / "registry.json", day.out / "ops" / "ops.sqlite")
    if day.broker is not None:
        ops.start()
    sensor = GrowSensorSimulator(link=day.out / "dev" / "ttySENSOR", seed=7)
    printer = EscposPrinterSimulator(day.out / "slips", profile="epson-tm-t20iii")
    with sensor, printer:
        day.start_agent(config)
        sock = day.out / "kiosk" / "run" / "agent.sock"
        request(sock, "open")
        printer.wait_for_documents(1, timeout=30)
        day.say("station opened: zero report printed")
        rng = np.random.default_rng(11)
        for visit in plan(roll):
            _visit(day, sock, sensor, printer, visit, rng)
        result = request(sock, "close")
        printer.wait_for_documents(len(printer.documents) + 1 if not result.get(
            "closing_report_printed") else len(printer.documents), timeout=30)
        day.say(f"station closed: closing report {result.get('closing_report')}")
        code = day.stop_agent()
        day.say(f"agent stopped (exit {code})")
        documents = list(printer.documents)
    return _check(day, ops, documents, code)


def _visit(day: Day, sock: Path, sensor: GrowSensorSimulator,
           printer: EscposPrinterSimulator, visit: Visit, rng: np.random.Generator) -> None:
    db, finger = fvc_finger(visit.finger)
    before = len(printer.documents)
    if visit.document:
        request(sock, "document", visit.document)
    impressions = [int(i) for i in rng.permutation(np.arange(2, 9))]
    sensor.press(*load_fvc(day.data / "fvc2002", db, finger, impressions[0]))
    presses = 1
    deadline = time.monotonic() + 60
    while len(printer.documents) <= before:
        if time.monotonic() > deadline:
            raise DemoError(f"no slip for {visit.label} after 60s")
        if sensor.guidance is Guidance.RETRY and sensor.finger_present:
            sensor.lift()
            time.sleep(0.3)
            sensor.press(*load_fvc(day.data / "fvc2002", db, finger,
                                   impressions[presses % len(impressions)]))
            presses += 1
        time.sleep(0.02)
    sensor.lift()
    doc = printer.documents[-1]
    kind = _slip_kind(doc.text)
    mark = "ok" if kind == visit.expect else f"EXPECTED {visit.expect}"
    day.say(f"  {visit.label:<28} {presses} press(es) -> {kind:<15} {mark}")
    if visit.manual:
        before = len(printer.documents)
        request(sock, "manual", str(visit.manual))
        printer.wait_for_documents(before + 1, timeout=30)
        day.say(f"  {'commission admits №' + str(visit.manual):<28} manual decision -> "
                f"{_slip_kind(printer.documents[-1].text)}")
    time.sleep(0.1)


def _check(day: Day, ops: object, documents: Sequence[SimulatedSlip], agent_exit: int) -> int:
    from ops.service import OpsService

    assert isinstance(ops, OpsService)
    state = day.out / "kiosk" / "state"
    con = sqlite3.connect(f"file:{state / 'marks.sqlite'}?mode=ro", uri=True)
    methods = Counter(m for (m,) in con.execute("SELECT method FROM marks"))
    con.close()
    con = sqlite3.connect(f"file:{state / 'ledger.sqlite'}?mode=ro", uri=True)
    ledger = Counter(k for (k,) in con.execute("SELECT kind FROM slips WHERE state != 'void'"))
    con.close()
    kinds = Counter(_slip_kind(d.text) for d in documents)
    marked = sum(methods.values())
    store = {"identified": marked, "refused": ledger["refused"],
             "not_identified": ledger["not-identified"]}
    paper = {"identified": kinds["identified"], "refused": kinds["refused"],
             "not_identified": kinds["not-identified"]}
    problems = []
    if agent_exit != 0:
        problems.append(f"agent exited with {agent_exit}")
    if store != paper:
        problems.append(f"roll store {store} != slips on paper {paper}")
    if kinds["zero-report"] != 1 or kinds["closing-report"] != 1:
        problems.append(f"reports printed: {dict(kinds)}")
    verified = 0
    if day.broker is not None:
        expected = {"identified": methods["verify"] + methods["identify"]
                    + methods["identify-2f"], "manual": methods["manual"],
                    "refused": store["refused"], "not_identified": store["not_identified"]}
        try:
            _wait(lambda: ops.device_turnout(day.device) == expected, 30,
                  "ops to see the final turnout")
        except DemoError:
            problems.append(f"ops turnout {ops.device_turnout(day.device)} != kiosk {expected}")
        stats = ops.stats()
        verified = stats.verified
        if stats.rejected:
            problems.append(f"ops rejected messages: {stats.rejected}")
        print(ops.render_watch())
        ops.stop()
    slips = paper["identified"] + paper["refused"] + paper["not_identified"]
    day.say(f"methods: {dict(methods)}; slips and reports under {day.out / 'slips'}")
    if problems:
        for p in problems:
            print(f"DISAGREEMENT: {p}", file=sys.stderr)
        return 1
    print(f"DEMO OK: {store['identified']} identified, {store['refused']} refused, "
          f"{store['not_identified']} not identified, {slips} slips, "
          f"{verified} telemetry messages verified")
    return 0


def cli_main(argv: list[str]) -> int:
    """``kesp-sim day [--data DIR] [--out DIR]``."""
    p = argparse.ArgumentParser(prog="kesp-sim day", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="shared fingerprint data (default %(default)s)")
    p.add_argument("--out", type=Path, default=Path("out/demo"),
                   help="where the kiosk state, slips and logs go (default %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    return run_day(args.data, args.out, verbose=args.verbose)
