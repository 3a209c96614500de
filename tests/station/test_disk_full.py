"""A full state disk: the station refuses to identify, says so in one line (the log,
and ``kesp-agent status`` in Kyrgyz and Russian), keeps everything it stored whole, and
resumes by itself (agent/station/storage.py); a store held busy by another process makes
a turn wait, not fail. A disk that fills at a given write of a turn or a start-up is
tests/station/test_disk_full_sweep.py.

Runs a real agent with its state on the FUSE filesystem of hardware_sim/powerfs.py,
which makes writes fail with ENOSPC on command.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from agent.drivers.sensor.types import Guidance
from hardware_sim.powerfs import PowerFs
from hardware_sim.rig import Rig, Visit, collect, disagreements, wait_until
from ops.alerts import AlertKind, device_alerts
from ops.parameters import BoardTuning, OpsTuning
from tests.cli_helpers import one_line_refusal, run_module

_LOCKER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(2.0)
con.execute("COMMIT")
"""


def _no_slip_while(rig: Rig, finger: int, seconds: float) -> None:
    before = len(rig.printer.documents)
    rig.press(finger, rig.pressable(finger)[0])
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert len(rig.printer.documents) == before, rig.printer.documents[-1].text
        time.sleep(0.05)
    rig.sensor.lift()


@contextmanager
def _open_station(ref_data: Path, tmp_path: Path,
                  rng: np.random.Generator) -> Iterator[tuple[PowerFs, Rig]]:
    """A station on the FUSE disk, opened, its first voter identified."""
    PowerFs.check_available()
    with PowerFs(tmp_path / "disk", tmp_path / "state") as fs, \
            Rig(ref_data, tmp_path / "rig", quiet=True, state_root=tmp_path / "state") as rig:
        rig.start_agent()
        rig.command("open")
        rig.printer.wait_for_documents(1, timeout=30)
        assert rig.visit(Visit("voter 1", 0, "identified"), rng) == "identified"
        yield fs, rig


def test_full_disk_stops_identification_nothing_half_written_busy_store_waits(
        ref_data: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    with _open_station(ref_data, tmp_path, rng) as (fs, rig):
        # statvfs shows less free than the reserve (the stores can still write): nobody
        # is invited, one clear line, still running, and ops hears it in the health
        fs.quota(shutil.disk_usage(rig.kiosk.state).used + 4_000_000)
        t0 = time.monotonic()
        while rig.sensor.guidance is not Guidance.FAULT:
            assert time.monotonic() - t0 < 10, "the sensor never showed the fault"
            time.sleep(0.05)
        assert rig.command("status")["storage"] == "full"
        _no_slip_while(rig, 1, 3.0)
        # the operator reads what to do, in Kyrgyz and in Russian
        said = run_module("agent.runtime.cli", "--config", rig.config, "status")
        assert said.code in (0, 3), said  # 3: a slip waits (for room, here)
        assert "Киосктун диски толуп калды" in said.out, said.out
        assert "Диск киоска заполнен" in said.out and "ничего не потеряно" in said.out
        assert rig.ops is not None, "the rig needs mosquitto (make test installs it)"
        wait_until(lambda: (AlertKind.DISK_LOW, "state disk full: nobody is identified") in {
            (a.kind, a.detail) for d in rig.ops.devices() if d.device == rig.device
            for a in device_alerts(d, time.time_ns() // 1_000_000, BoardTuning(),
                                   OpsTuning())}, 30, "ops to raise disk_low")
        fs.quota(1)  # now nothing more fits
        # an agent that is not running (it could not start): the CLI names the full disk
        assert rig.stop_agent() == 0
        line = one_line_refusal(run_module("agent.runtime.cli", "--config", rig.config,
                                           "status"), "диск киоска заполнен", code=69)
        assert "киосктун диски толуп калды" in line
        fs.quota(0)
        rig.start_agent()
        assert rig.visit(Visit("voter 2", 1, "identified"), rng) == "identified"

        # SQLite busy: another process holds the mark store's write lock during a turn
        locker = subprocess.Popen([sys.executable, "-c", _LOCKER,
                                   str(rig.kiosk.state / "marks.sqlite")],
                                  stdout=subprocess.PIPE, text=True)
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        assert rig.visit(Visit("voter 9", 8, "identified"), rng) == "identified"
        assert time.monotonic() - t0 >= 1.0  # it waited for the lock, then marked
        assert locker.wait(10) == 0
        locker.stdout.close()
        assert not disagreements(collect(rig.kiosk), None, rig.device)
        assert rig.stop_agent() == 0
        log = (rig.kiosk.dir / "agent.log").read_text()
        assert log.count("disk full under") >= 1
        assert "Traceback" not in log


def test_a_store_opened_on_a_full_disk_is_a_full_disk(tmp_path: Path) -> None:
    """SQLite says "disk I/O error" (SQLITE_IOERR_SHMOPEN), not "disk full", when it
    cannot create a store's WAL index: the agent must still know the disk is full."""
    from agent.runtime.durable import is_disk_full
    from agent.station.ledger import Ledger, LedgerError

    PowerFs.check_available()
    with PowerFs(tmp_path / "disk", tmp_path / "state") as fs:
        Ledger(tmp_path / "state" / "ledger.sqlite", "s-1", "k").close()
        fs.enospc(0)
        try:
            Ledger(tmp_path / "state" / "ledger.sqlite", "s-1", "k")
        except Exception as exc:  # which exception it is, is what is checked
            assert is_disk_full(exc), repr(exc)
            assert not isinstance(exc, LedgerError)
        else:
            raise AssertionError("the ledger opened on a full disk")
        fs.enospc(None)
        Ledger(tmp_path / "state" / "ledger.sqlite", "s-1", "k").close()
    assert not is_disk_full(OSError(5, "Input/output error"))


def test_a_close_the_disk_interrupts_prints_its_report_once_there_is_room(
        ref_data: Path, tmp_path: Path) -> None:
    from agent.runtime.control import ControlError
    from hardware_sim.rig import slip_kind, wait_settled

    with _open_station(ref_data, tmp_path, np.random.default_rng(6)) as (fs, rig):
        before = len(rig.printer.documents)
        fs.fill(1, "ledger.sqlite")  # the closing report's serial is the last that fits
        try:
            rig.command("close")
        except ControlError as exc:
            assert exc.code == "disk-full", exc
        else:
            raise AssertionError("close went through on a full disk")
        assert len(rig.printer.documents) == before  # nothing printed while full
        fs.enospc(None)
        wait_settled(rig.kiosk, 30, "the closing report to print by itself")
        kinds = [slip_kind(d.text) for d in rig.printer.documents[before:]]
        assert kinds == ["closing-report"], kinds
        assert rig.command("status")["phase"] == "closed"
        assert rig.stop_agent() == 0
        assert "Traceback" not in (rig.kiosk.dir / "agent.log").read_text()
