"""The agent refuses to start on a bad roll, with one clear line (exit 78).

A missing device is not a reason to refuse: tests/station/test_devices.py.

Each case provisions a real kiosk directory (keys, config, a real CEC-signed
package) and runs the real ``kesp-agent run`` process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from agent.roll.package import Kiosk, build_package
from agent.runtime.durable import atomic_write
from agent.runtime.keys import generate_keys
from agent.station.lifecycle import Command, Lifecycle, RollPin
from hardware_sim.rig import Rig
from hardware_sim.voters import make_roll

EX_CONFIG = 78


@pytest.fixture
def rig(ref_data: Path, tmp_path: Path) -> Rig:
    rig = Rig(ref_data, tmp_path / "station", quiet=True)
    (rig.kiosk.dir / "slips").mkdir(parents=True, exist_ok=True)
    rig.roll = rig.provision("mqtt://127.0.0.1:9")
    return rig


def _run_agent(rig: Rig, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.runtime.cli", "--config", str(rig.config), "run"],
        check=False, capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ),
    )


def _roll_path(rig: Rig) -> Path:
    return rig.kiosk.state / "roll.pkg"


def _expect_refusal(rig: Rig, *needles: str) -> None:
    result = _run_agent(rig)
    assert result.returncode == EX_CONFIG, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    for needle in needles:
        assert needle in last, last


def test_altered_byte_in_the_roll_is_refused(rig: Rig) -> None:
    data = bytearray(_roll_path(rig).read_bytes())
    data[len(data) // 2] ^= 0x01
    _roll_path(rig).write_bytes(bytes(data))
    _expect_refusal(rig, "refused", "signature")


def test_roll_signed_by_another_key_is_refused(rig: Rig, ref_data: Path) -> None:
    assert rig.roll is not None
    _roll_path(rig).write_bytes(build_package(rig.roll, SigningKey.generate()))
    _expect_refusal(rig, "refused", "signer")


def test_roll_for_another_kiosk_is_refused(rig: Rig, ref_data: Path, tmp_path: Path) -> None:
    other = generate_keys(tmp_path / "other-keys")
    cec_hex = (rig.kiosk.dir / "keys" / "cec.pub").read_text().strip()
    cec = SigningKey.generate()
    atomic_write(rig.kiosk.dir / "keys" / "cec.pub",
                 bytes(cec.verify_key).hex().encode(), 0o644)
    assert cec_hex != bytes(cec.verify_key).hex()
    roll = make_roll(ref_data, rig.station, rig.district,
                     (Kiosk("kiosk-0009-z", other.verify_key_hex, other.box_public_hex),))
    _roll_path(rig).write_bytes(build_package(roll, cec))
    _expect_refusal(rig, "refused", "not")


def test_missing_roll_says_how_to_install_one(rig: Rig) -> None:
    _roll_path(rig).unlink()
    _expect_refusal(rig, "no roll installed", "install-roll")


def test_agent_leaves_no_state_behind_when_refusing(rig: Rig) -> None:
    _roll_path(rig).unlink()
    state = rig.kiosk.state
    before = sorted(p.name for p in state.iterdir())
    assert _run_agent(rig).returncode == EX_CONFIG
    assert sorted(p.name for p in state.iterdir()) == before


@pytest.mark.parametrize("newer, election, needle", [
    (1, None, "older than"),
    (0, "another-election", "for election"),
    (0, None, "not the package"),
])
def test_roll_rolled_back_or_from_another_election_is_refused(
    rig: Rig, newer: int, election: str | None, needle: str
) -> None:
    """Opened with roll v(N+1), or of another election: the installed v(N) is refused."""
    assert rig.roll is not None
    lifecycle = Lifecycle(rig.kiosk.state / "lifecycle.sqlite")
    lifecycle.apply(Command.INSTALL)
    lifecycle.pin_roll(RollPin(election or rig.roll.election_id, rig.roll.roll_version + newer,
                               "0" * 64 if newer == 0 and election is None else "x"))
    lifecycle.apply(Command.OPEN)
    lifecycle.close()
    _expect_refusal(rig, needle, "reinstall the roll package")
