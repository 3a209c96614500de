"""Devices come and go during the day; the agent stays up and resumes by itself.

Real agent process (``kesp-agent run``), simulated Grow sensor and ESC/POS
printer on real ptys, a document reader configured but never plugged in.
The agent retries an absent device at most every ``device_retry_max_s``; the
tests set 1 s (the production default is 5 s): the behaviour is the same,
only the wait between the cable coming back and its use is shorter. The
absences themselves are real time: 5 s / 6 s in the default suite, the
field's 30 s / 60 s in the ``slow`` variant.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.drivers.sensor.types import Guidance
from agent.runtime.config import load_config, save_config
from agent.runtime.control import ControlError
from hardware_sim.link import PtyLink
from hardware_sim.rig import Rig, Visit, is_duplicate, slip_kind, slip_serial
from ops.alerts import AlertKind, device_alerts
from ops.parameters import BoardTuning, OpsTuning


def _until(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def rig(ref_data: Path, tmp_path: Path) -> Iterator[Rig]:
    with Rig(ref_data, tmp_path / "station", quiet=True) as rig:
        cfg = load_config(rig.config)
        save_config(dataclasses.replace(cfg, device_retry_max_s=1.0,
                                        document_reader=str(tmp_path / "ttyDOCREADER")),
                    rig.config)
        yield rig


def _devices(rig: Rig) -> dict[str, dict[str, str]]:
    status = rig.command("status")
    devices = status["devices"]
    assert isinstance(devices, dict)
    return devices


def _audit_states(rig: Rig, event: str) -> list[str]:
    con = sqlite3.connect(f"file:{rig.kiosk.state / 'audit.sqlite'}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT body FROM audit WHERE event = ? ORDER BY seq",
                           (event,)).fetchall()
    finally:
        con.close()
    return [json.loads(r[0])["fields"]["status"] for r in rows]


def _ops_alerts(rig: Rig) -> set[tuple[AlertKind, str]]:
    """Central ops' current alerts for the kiosk, as (kind, detail)."""
    assert rig.ops is not None, "the rig needs mosquitto (make test installs it)"
    now = time.time_ns() // 1_000_000
    return {(a.kind, a.detail) for d in rig.ops.devices() if d.device == rig.device
            for a in device_alerts(d, now, BoardTuning(), OpsTuning())}


def _marks(rig: Rig) -> list[int]:
    con = sqlite3.connect(f"file:{rig.kiosk.state / 'marks.sqlite'}?mode=ro", uri=True)
    try:
        return [int(r[0]) for r in con.execute("SELECT voter FROM marks")]
    finally:
        con.close()


@pytest.mark.parametrize("absent_s,unplugged_s", [
    pytest.param(5.0, 6.0, id="short"),
    pytest.param(30.0, 60.0, id="field-figures", marks=pytest.mark.slow),
])
def test_sensor_absent_at_power_on_then_unplugged_mid_day(rig: Rig, absent_s: float,
                                                          unplugged_s: float) -> None:
    rng = np.random.default_rng(3)
    rig.sensor.unplug()  # the kiosk is powered on before its sensor is plugged in
    t0 = time.monotonic()
    rig.start_agent()
    sensor = _devices(rig)["sensor"]
    assert sensor["state"] == "disconnected"
    assert str(rig.sensor.path) in sensor["detail"] and "cable" in sensor["detail"]
    rig.command("open")
    rig.printer.wait_for_documents(1, timeout=30)  # the zero report: the printer is there
    time.sleep(max(0.0, absent_s - (time.monotonic() - t0)))
    assert rig.agent is not None and rig.agent.poll() is None
    assert _marks(rig) == []
    rig.sensor.replug()
    assert rig.visit(Visit("first voter", 0, "identified"), rng) == "identified"
    assert _devices(rig)["sensor"]["state"] == "ready"

    rig.sensor.unplug()  # mid-day: the cable is pulled for a while
    assert _until(lambda: _devices(rig)["sensor"]["state"] == "disconnected")
    assert _until(lambda: (AlertKind.SENSOR_MISSING, "sensor disconnected")
                  in _ops_alerts(rig))  # ops sees it
    time.sleep(unplugged_s)
    assert rig.agent.poll() is None
    rig.sensor.replug()
    assert rig.visit(Visit("second voter", 1, "identified"), rng) == "identified"
    assert sorted(_marks(rig)) == [1, 2]

    # the document reader was never plugged in: named, waited on, voters served anyway
    reader = _devices(rig)["document_reader"]
    assert reader["state"] == "unplugged" and "document reader" in reader["detail"]
    assert _audit_states(rig, "sensor-status-changed") == [
        "disconnected", "ready", "disconnected", "ready"]
    assert _audit_states(rig, "document-reader-status-changed") == ["unplugged"]
    assert rig.stop_agent() == 0


def test_printer_unplugged_mid_slip_never_gives_two_originals(rig: Rig) -> None:
    rng = np.random.default_rng(4)
    rig.start_agent()
    rig.command("open")
    rig.printer.wait_for_documents(1, timeout=30)
    received = rig.printer.engine.bytes_received
    rig.printer.stall_after(1500)  # the printer takes the slip's first 1.5 KB, then hangs
    rig.press(2, 2)
    assert _until(lambda: rig.printer.engine.bytes_received >= received + 1500, 60)
    rig.printer.unplug()  # ... and its cable is pulled mid-slip
    rig.sensor.lift()
    assert _until(lambda: _devices(rig)["printer"]["state"] == "disconnected")
    assert "cable" in _devices(rig)["printer"]["detail"]
    assert _until(lambda: rig.sensor.guidance is Guidance.FAULT)  # no voter while no slip path
    time.sleep(3)
    rig.printer.stall(False)
    rig.printer.plug()
    assert _until(lambda: any(slip_kind(d.text) == "identified" for d in rig.printer.documents),
                  60)
    assert _until(lambda: rig.command("status")["pending_slips"] == [], 30)
    slips = [d for d in rig.printer.documents if slip_kind(d.text) == "identified"]
    assert len({slip_serial(d.text) for d in slips}) == 1
    originals = [d for d in slips if not is_duplicate(d.text)]
    assert len(originals) <= 1 and len(slips) - len(originals) <= 1
    assert _marks(rig) == [3]
    # the voter after the replug is served normally
    assert rig.visit(Visit("next voter", 3, "identified"), rng) == "identified"
    assert rig.agent is not None and rig.agent.poll() is None


def test_wrong_device_at_the_sensor_port_is_named_and_the_agent_stays(rig: Rig,
                                                                     tmp_path: Path) -> None:
    # sensor.port names a tty that exists but has another (silent) device behind it
    other = PtyLink(tmp_path / "ttyOTHER")
    other.plug()
    try:
        cfg = load_config(rig.config)
        save_config(dataclasses.replace(
            cfg, sensor=dataclasses.replace(cfg.sensor, port=str(other.path),
                                            reply_timeout_s=0.2)), rig.config)
        rig.start_agent()
        rig.command("open")
        assert _until(lambda: _devices(rig)["sensor"]["state"] == "fault", 60)
        detail = _devices(rig)["sensor"]["detail"]
        assert str(other.path) in detail and "sensor.port" in detail, detail
        assert rig.agent is not None and rig.agent.poll() is None
        assert _marks(rig) == []
        assert len(rig.printer.documents) == 1  # the zero report, nothing else
        assert rig.stop_agent() == 0
    finally:
        other.close()


def test_printer_answering_garbage_is_named_and_nothing_is_marked(rig: Rig) -> None:
    normal = rig.printer.engine.scenario
    rig.printer.engine.scenario = dataclasses.replace(normal, garbage_status=True)
    rig.start_agent()
    assert _until(lambda: _devices(rig)["printer"]["state"] == "error")
    assert "printer.port" in _devices(rig)["printer"]["detail"]
    with pytest.raises(ControlError, match="printer"):
        rig.command("open")  # the zero report cannot be printed: the station stays closed
    rig.press(4, 2)
    time.sleep(1.0)
    rig.sensor.lift()
    assert _marks(rig) == [] and rig.printer.documents == []
    rig.printer.engine.scenario = normal  # the right printer is connected
    rig.command("open")
    assert len(rig.printer.wait_for_documents(1, timeout=30)) == 1
    assert _devices(rig)["printer"]["state"] == "ready"
    time.sleep(1.0)
    assert len(rig.printer.documents) == 1  # one zero report, not one per attempt
    assert rig.agent is not None and rig.agent.poll() is None
