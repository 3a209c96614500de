"""``kesp-sim day --sensor nb1010-replay|aes3500-replay``: the station on a recorded USB sensor.

The real pyusb driver of the NB-1010-U or AES3500 runs unchanged against a
:class:`~hardware_sim.usb_replay.ReplayBackend` that replays real USB traffic
recorded from that sensor (``hardware_sim/data/usb-recordings``). The agent runs
in this process (the replay backend is a Python object, not a device node), on
the same stores, printer simulator, broker and ops as the ordinary day.

There is one recorded finger, so the day is short and says so: the finger's
owner is enrolled (assumption: the register holds a template of that finger,
made here with our own extractor from the recorded frame, since no register
template exists for it), presents it and is identified, then comes back and is
refused. Everyone else on the roll is the ordinary demo roll.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from agent.drivers.sensor.service import open_sensor
from agent.drivers.sensor.types import Capture
from agent.match import extract, to_iso2005
from agent.roll.package import Finger, Voter
from agent.runtime.config import SensorConfig, load_config
from agent.runtime.service import Agent
from hardware_sim.rig import (
    Rig,
    RigError,
    collect,
    disagreements,
    slip_kind,
)
from hardware_sim.usb_replay import ReplayBackend, load_recording
from hardware_sim.voters import N_VOTERS

RECORDINGS = {"nb1010-replay": ("nb1010", "nb1010-usb"), "aes3500-replay": ("aes3500",
                                                                           "aes3500-usb")}


def _enrolled(recording: Path, kind: str) -> Voter:
    """The recorded finger's owner, enrolled from one capture of the recording."""
    backend = ReplayBackend(load_recording(recording), loop=True)
    sensor = open_sensor(SensorConfig(kind=kind, port="usb"), usb_backend=backend)  # type: ignore[arg-type]
    try:
        capture = sensor.wait_for_finger(10.0)
    finally:
        sensor.close()
    if not isinstance(capture, Capture):
        raise RigError(f"the recording {recording} yields no capture")
    template = to_iso2005(extract(capture.image, capture.dpi))
    return Voter(list_number=N_VOTERS + 1, name_ky="Сүйүнбаева Нургүл",
                 name_ru="Суйунбаева Нургуль", document="ID9000041",
                 fingers=(Finger(2, template),))


def run_replay_day(data: Path, out: Path, sensor: str) -> int:
    """Run the replay day; returns the exit code."""
    name, kind = RECORDINGS[sensor]
    recording = data / "usb-recordings" / name
    if not recording.is_dir():
        print(f"kesp-sim day: recording not found at {recording}", file=sys.stderr)
        return 2
    try:
        voter = _enrolled(recording, kind)
        config = SensorConfig(kind=kind, port="usb")  # type: ignore[arg-type]
        with Rig(data, out, sensor=config, enrolled=(voter,)) as rig:
            backend = ReplayBackend(load_recording(recording), loop=True)
            backend.finger_on = False
            agent = Agent(load_config(rig.config),
                          sensor=open_sensor(config, usb_backend=backend))
            result: list[int] = []
            thread = threading.Thread(target=lambda: result.append(agent.run()),
                                      name="agent", daemon=True)
            thread.start()
            rig.say(f"agent running in-process on the recorded {name} sensor (real driver, "
                    "replayed USB traffic)")
            rig.command("open")
            rig.printer.wait_for_documents(1, timeout=30)
            kinds = []
            for label in ("the recorded finger's owner", "the same voter again"):
                before = len(rig.printer.documents)
                backend.finger_on = True
                docs = rig.printer.wait_for_documents(before + 1, timeout=60)
                backend.finger_on = False
                kinds.append(slip_kind(docs[before].text))
                rig.say(f"  {label:<32} -> {kinds[-1]}")
                time.sleep(1.0)
            before = len(rig.printer.documents)
            rig.command("close")
            rig.printer.wait_for_documents(before + 1, timeout=30)
            agent.request_stop()
            thread.join(60)
            facts = collect(rig.kiosk)
            problems = disagreements(facts, rig.ops, rig.device)
            if kinds != ["identified", "refused"]:
                problems.append(f"outcomes {kinds}, expected identified then refused")
            if result != [0]:
                problems.append(f"agent ended with {result}")
    except RigError as exc:
        print(f"DEMO FAILED: {exc}", file=sys.stderr)
        return 1
    if problems:
        for p in problems:
            print(f"DISAGREEMENT: {p}", file=sys.stderr)
        return 1
    c = facts.store_counts
    print(f"DEMO OK ({name} replay): {c['identified']} identified, {c['refused']} refused, "
          f"{c['not_identified']} not identified")
    return 0
