"""The sensor simulator itself: pty behaviour, virtual fingers, CLI."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import serial

from agent.drivers.sensor.grow_codec import (
    READY_BYTE,
    Confirmation,
    Instruction,
    Packet,
    PacketReader,
)
from hardware_sim.fingers import (
    FVC_DPI,
    FingerDataError,
    PressVariation,
    impressions_of,
    list_impressions,
    load_fvc,
    random_variation,
    render_press,
)
from hardware_sim.grow_sim import SCENARIOS, GrowSensorSimulator, cli_main


def transact(port: serial.Serial, pkt: Packet) -> Packet:
    port.write(pkt.to_bytes())
    reader = PacketReader()
    for _ in range(100):
        reader.feed(port.read(reader.wanted()))
        got = reader.next_packet()
        if isinstance(got, Packet):
            return got
    raise AssertionError("no reply")


def test_fvc_loading(ref_data: Path) -> None:
    root = ref_data / "fvc2002"
    for db, dpi in FVC_DPI.items():
        img, got_dpi = load_fvc(root, db, 101, 2)
        assert img.dtype == np.uint8 and img.ndim == 2 and got_dpi == dpi
    assert load_fvc(root, "DB2_B", 101, 2)[0].shape == (560, 296)
    # the repository ships impressions 2 and 3 of each finger as images
    assert list_impressions(root, "DB3_B") == [(f, i) for f in range(101, 111) for i in (2, 3)]
    assert impressions_of(root, "DB3_B", 104) == [2, 3]
    with pytest.raises(FingerDataError):
        load_fvc(root, "DB9_B", 101, 1)
    with pytest.raises(FingerDataError):
        load_fvc(root, "DB1_B", 999, 1)


def test_render_press_geometry(ref_data: Path) -> None:
    img, dpi = load_fvc(ref_data / "fvc2002", "DB2_B", 103, 2)
    out = render_press(img, dpi, PressVariation())
    assert out.shape == (288, 256) and out.dtype == np.uint8
    # Resampled 569 -> 500 dpi and centred on the finger: plenty of ridge.
    assert (out < 128).mean() > 0.15
    shifted = render_press(img, dpi, PressVariation(dx=30.0))
    assert np.array_equal(shifted[:, 60:200], out[:, 30:170]) or (
        np.abs(shifted[:, 60:200].astype(int) - out[:, 30:170].astype(int)).mean() < 2.0)


def test_pressure_and_partial_contact(ref_data: Path) -> None:
    img, dpi = load_fvc(ref_data / "fvc2002", "DB1_B", 102, 2)
    full = render_press(img, dpi, PressVariation())
    light = render_press(img, dpi, PressVariation(pressure=0.5))
    assert light.mean() > full.mean() + 20
    # Lifted towards +x: the right part is background, the left part is not.
    partial = render_press(img, dpi, PressVariation(contact=0.5, lift_dir_deg=0.0))
    assert partial[:, 150:].min() >= 250
    assert np.array_equal(partial[:, :100], full[:, :100])
    with pytest.raises(ValueError):
        PressVariation(contact=0.0)


def test_press_variation_is_seeded(ref_data: Path) -> None:
    img, dpi = load_fvc(ref_data / "fvc2002", "DB4_B", 105, 3)
    a = np.random.default_rng(5)
    b = np.random.default_rng(5)
    va, vb = random_variation(a), random_variation(b)
    assert va == vb
    assert np.array_equal(render_press(img, dpi, va, a), render_press(img, dpi, vb, b))
    assert random_variation(a) != va  # the next press differs


def test_two_presses_differ(ref_data: Path) -> None:
    img, dpi = load_fvc(ref_data / "fvc2002", "DB1_B", 101, 2)
    with GrowSensorSimulator(seed=1) as sim:
        sim.press(img, dpi)
        first = sim.finger_image
        sim.press(img, dpi)
        second = sim.finger_image
        assert first is not None and second is not None
        assert not np.array_equal(first, second)
        assert sim.presses == 2 and sim.last_variation is not None


def test_pty_behaves_like_a_tty_with_a_stable_link() -> None:
    with GrowSensorSimulator() as sim:
        first = os.path.realpath(sim.path)
        assert first.startswith("/dev/pts/")
        port = serial.Serial(sim.path, 57600, timeout=0.5)  # open() flushes the power-up 55
        reply = transact(port, Packet.command(Instruction.GET_ECHO))
        assert reply == Packet.ack(Confirmation.HANDSHAKE_OK)
        assert transact(port, Packet.command(Instruction.SOFT_RESET)) == Packet.ack(
            Confirmation.OK)
        assert port.read(1) == bytes([READY_BYTE])  # ready again after the reset
        sim.unplug()
        assert not os.path.lexists(sim.path)
        with pytest.raises(serial.SerialException):
            port.write(Packet.command(Instruction.GEN_IMG).to_bytes())
            port.read(1)
        port.close()
        sim.replug()
        assert os.path.islink(sim.path) and sim.plugged
        port = serial.Serial(sim.path, 57600, timeout=0.5)
        assert transact(port, Packet.command(Instruction.GEN_IMG)) == Packet.ack(
            Confirmation.NO_FINGER)
        port.close()


def test_wrong_address_is_ignored_and_bad_frames_answered() -> None:
    with GrowSensorSimulator() as sim:
        port = serial.Serial(sim.path, 57600, timeout=0.3)
        port.read(1)
        port.write(Packet.command(Instruction.GEN_IMG, address=0x01020304).to_bytes())
        assert port.read(12) == b""
        bad = bytearray(Packet.command(Instruction.GEN_IMG).to_bytes())
        bad[-1] ^= 1
        port.write(bytes(bad))
        reader = PacketReader()
        reader.feed(port.read(12))
        assert reader.next_packet() == Packet.ack(Confirmation.RECEIVE_ERROR)
        assert sim.protocol_errors == 1
        port.close()


def test_stop_is_prompt_even_if_the_host_never_reads(ref_data: Path) -> None:
    img, dpi = load_fvc(ref_data / "fvc2002", "DB1_B", 101, 2)
    sim = GrowSensorSimulator().start()
    port = serial.Serial(sim.path, 57600, timeout=0.1)
    sim.press(img, dpi)
    port.write(Packet.command(Instruction.GEN_IMG).to_bytes())
    port.write(Packet.command(Instruction.UP_IMAGE).to_bytes())  # 37 kB nobody reads
    sim.stop()
    assert not os.path.lexists(sim.path)
    port.close()


def test_technician_commands(ref_data: Path) -> None:
    from hardware_sim.grow_sim import handle_command

    fvc = ref_data / "fvc2002"
    with GrowSensorSimulator(seed=2) as sim:
        assert handle_command(sim, "press", None) == "press needs --fingers FVC_DIR"
        assert (handle_command(sim, "press DB3_B 104 2", fvc) or "").startswith(
            "pressed DB3_B/104_2")
        assert sim.finger_present
        assert handle_command(sim, "lift", fvc) == "lift: done" and not sim.finger_present
        assert (handle_command(sim, "press", fvc) or "").startswith("pressed DB1_B/")
        assert (handle_command(sim, "press DB9_B 1 1", fvc) or "").startswith("cannot press")
        assert handle_command(sim, "unplug", fvc) == "unplug: done" and not sim.plugged
        assert "plugged=False" in (handle_command(sim, "status", fvc) or "")
        assert handle_command(sim, "plug", fvc) == "plug: done" and sim.plugged
        assert handle_command(sim, "blip", fvc) == "blip: done"
        assert "commands:" in (handle_command(sim, "dance", fvc) or "")
        assert handle_command(sim, "quit", fvc) is None


def test_cli_lists_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--list-scenarios"]) == 0
    out = capsys.readouterr().out
    for name in ("no-finger", "bad-checksum", "garbage", "dropped-bytes", "slow", "unplug"):
        assert name in out and name in SCENARIOS


def test_cli_runs_for_a_duration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "ttySENSOR"
    assert cli_main(["--scenario", "garbage", "--link", str(link), "--duration", "0.2"]) == 0
    assert str(link) in capsys.readouterr().out
    assert not link.exists()
