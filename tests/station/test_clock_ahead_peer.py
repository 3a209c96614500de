"""A kiosk whose RTC is 20 minutes fast identifies a voter; the voter walks to the next kiosk.

Kiosk b is a real agent process (simulated sensor and printer on ptys); kiosk a is
its own mark store and peer sync in this process, with the same keys and
configuration the rig provisioned for it, and a wall clock 20 minutes fast. The
signed mark reaches b over real peer sync and is held apart there for its clock;
it must refuse the voter all the same: one ORIGINAL slip per voter, ever.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from nacl.signing import VerifyKey

from agent.peers import PeerSync
from agent.runtime.config import load_config
from agent.runtime.keys import load_keys
from agent.station.marks import Mark, MarkStore
from hardware_sim.rig import Rig, SimKiosk, Visit, slip_kind, wait_until

FAST_MS = 20 * 60_000
FINGER = 0  # real finger 0 is voter №1 on the simulated roll


def _audit(kiosk: SimKiosk) -> list[tuple[str, dict[str, object]]]:
    con = sqlite3.connect(f"file:{kiosk.state / 'audit.sqlite'}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT event, body FROM audit ORDER BY seq").fetchall()
    finally:
        con.close()
    return [(str(e), dict(json.loads(b)["fields"])) for e, b in rows]


def _events(kiosk: SimKiosk, name: str) -> list[dict[str, object]]:
    return [f for e, f in _audit(kiosk) if e == name]


def _manual(kiosk: SimKiosk, list_number: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.runtime.cli", "--config", str(kiosk.config),
         "manual", str(list_number)],
        check=False, capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )


def test_a_voter_identified_at_a_fast_kiosk_is_refused_at_the_next(
    ref_data: Path, tmp_path: Path
) -> None:
    with Rig(ref_data, tmp_path / "station", quiet=True, kiosks=2) as rig:
        fast, kiosk = rig.kiosks
        assert rig.roll is not None
        kiosk.start_agent()
        kiosk.command("open")
        kiosk.printer.wait_for_documents(1, timeout=30)

        cfg = load_config(fast.config)
        trusted = {k.device_id: VerifyKey(bytes.fromhex(k.verify_key)) for k in rig.roll.kiosks}
        keys = load_keys(cfg.key_dir)
        store = MarkStore(fast.state / "marks.sqlite", cfg.device_id, keys.signing, trusted,
                          wall_ms=lambda: time.time_ns() // 1_000_000 + FAST_MS)
        sync = PeerSync(cfg, keys, store, on_event=lambda _name, _fields: None)
        sync.start()
        try:
            voter = FINGER + 1
            first = store.mark_if_unmarked(voter, "identify", f"{rig.station}-{fast.device}-00001")
            assert isinstance(first, Mark)
            sync.notify_local(first)  # kiosk a printed its ORIGINAL slip
            rig.ballots.add(voter)
            wait_until(lambda: _events(kiosk, "mark-quarantined") != [], 60,
                       "kiosk b to hold kiosk a's mark apart")

            # The voter presses at kiosk b: refused, with why its "first" time is ahead.
            kind = kiosk.visit(Visit("voter №1 again", FINGER, "refused"),
                               np.random.default_rng(1))
            assert kind == "refused" and rig.differences == [], rig.differences
            slip = kiosk.printer.documents[-1].text
            assert fast.device in slip, slip
            assert f"Часы устройства {fast.device} спешат на 20 мин." in slip, slip
            assert f"{fast.device} түзмөгүнүн сааты 20 мүн. алдыда" in slip, slip
            (refused,) = _events(kiosk, "voter-refused")
            assert refused["original_kiosk"] == fast.device
            assert 19 * 60_000 < int(str(refused["ahead_ms"])) <= FAST_MS

            # The commission tries to admit the voter by hand: refused too, told why.
            manual = _manual(kiosk, voter)
            assert manual.returncode == 1, manual
            assert "Отказано" in manual.stdout and fast.device in manual.stdout
            assert f"Часы устройства {fast.device} спешат на 20 мин." in manual.stdout
            assert f"{fast.device} түзмөгүнүн сааты 20 мүн. алдыда" in manual.stdout

            assert _events(kiosk, "voter-identified") == _events(kiosk, "manual-decision") == []
            assert [e["original_kiosk"] for e in _events(kiosk, "voter-refused")
                    if "ahead_ms" in e] == [fast.device] * 2
            counts = kiosk.command("status")["counts"]
            assert isinstance(counts, dict)
            assert counts["identified"] == 0 and counts["manual"] == 0
            assert counts["refused"] == 2 and counts["slips"] == 2
            originals = [d for d in kiosk.printer.documents
                         if slip_kind(d.text) in ("identified", "manual")]
            assert originals == []

            kiosk.command("close")
            report = " ".join(kiosk.printer.wait_for_documents(4, timeout=30)[3].text.split())
            assert f"ЧАСЫ СПЕШАТ: {fast.device}: №{voter}/{first.slip_serial}" in report, report
            # Counted once on the station's merged count, as kiosk a counts it on its own.
            assert "Отмечено избирателей по участку (все киоски): 1" in report, report
        finally:
            sync.stop()
            store.close()
