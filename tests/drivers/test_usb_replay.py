"""Replay backend and conformance: real drivers over real recorded USB traffic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import usb.core
import usb.util
from PIL import Image

from agent.drivers.sensor.parameters import SensorTimings
from agent.drivers.sensor.usb import Aes3500Driver, Nb1010Driver
from agent.drivers.transport import find_usb
from hardware_sim.usb_replay import (
    RecordingError,
    ReplayBackend,
    ReplayExhaustedError,
    ReplayMismatchError,
    cli_main,
    libfprint_image,
    load_recording,
    pixman_upscale2,
    replay_frame,
)

T = SensorTimings()


@pytest.fixture(params=["nb1010", "aes3500"])
def recording_dir(request: pytest.FixtureRequest, ref_data: Path) -> Path:
    return ref_data / "usb-recordings" / str(request.param)


@pytest.fixture
def nb1010(ref_data: Path) -> Path:
    return ref_data / "usb-recordings" / "nb1010"


def reference(recording: Path) -> np.ndarray:
    return np.asarray(Image.open(recording / "capture.png"))


def test_conformance_normalized_is_pixel_identical(recording_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "frame.png"
    assert cli_main([str(recording_dir), "--out", str(out), "--normalize", "libfprint"]) == 0
    got, ref = np.asarray(Image.open(out)), reference(recording_dir)
    assert got.shape == ref.shape
    assert np.array_equal(got, ref)


def test_raw_frame_is_what_the_extractor_gets(recording_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "raw.png"
    assert cli_main([str(recording_dir), "--out", str(out)]) == 0
    raw_png = np.asarray(Image.open(out))
    driver, raw, backend = replay_frame(recording_dir)
    assert backend.remaining == 0
    m = driver.MODEL
    assert raw.shape == (m.height, m.width) and raw_png.shape == raw.shape
    assert np.array_equal(raw_png, driver.to_capture(raw).image)
    assert np.array_equal(libfprint_image(driver, raw), reference(recording_dir)[:, :, 0])


def test_raw_frames_are_not_upscaled(ref_data: Path) -> None:
    _, raw, _ = replay_frame(ref_data / "usb-recordings" / "aes3500")
    assert raw.shape == (128, 128)
    assert set(np.unique(raw) % 17) == {0}  # 4-bit samples, nothing interpolated
    cap = Aes3500Driver.to_capture(raw)
    assert cap.dpi == 250 and cap.image[0, 0] == 255 - raw[-1, -1]


def test_pixman_upscale_vector() -> None:
    # Row weights are 0.75 (the other 0.25 samples the zero border);
    # columns 0.25/0.75 pairs: e.g. x=1 -> 0.75*0 + 0.25*255 -> 0.75 * 63.75.
    out = pixman_upscale2(np.array([[0, 255]], dtype=np.uint8))
    assert out.shape == (2, 4)
    assert out.tolist() == [[0, 47, 143, 143], [0, 47, 143, 143]]
    flat = pixman_upscale2(np.full((4, 4), 200, dtype=np.uint8))
    assert flat[2:6, 2:6].tolist() == [[200] * 4] * 4  # interior unchanged
    assert flat[0, 0] == 200 * 3 * 3 // 16  # corner: 0.75 x 0.75 of the pixel


def test_recording_parse(nb1010: Path) -> None:
    rec = load_recording(nb1010)
    assert (rec.vendor, rec.product) == (0x298D, 0x1010)
    assert len(rec.urbs) == 96
    assert sum(u.is_in for u in rec.urbs) == 93
    assert rec.urbs[0].data == Nb1010Driver.CHECK_FINGER


def test_descriptors_reach_pyusb(nb1010: Path) -> None:
    backend = ReplayBackend(load_recording(nb1010))
    dev = usb.core.find(idVendor=0x298D, idProduct=0x1010, backend=backend)
    assert dev is not None and dev.bus == 1 and dev.address == 3
    cfg = dev[0]
    eps = {e.bEndpointAddress: usb.util.endpoint_type(e.bmAttributes) for e in cfg[(0, 0)]}
    assert eps == {0x81: usb.util.ENDPOINT_TYPE_INTR, 0x02: usb.util.ENDPOINT_TYPE_BULK,
                   0x83: usb.util.ENDPOINT_TYPE_BULK}


def test_configuration_is_set_only_when_the_device_has_none(nb1010: Path) -> None:
    import dataclasses

    rec = load_recording(nb1010)
    assert rec.configuration == 1  # the kernel had configured it, as usual
    configured = ReplayBackend(rec)
    open_driver(configured).close()
    assert configured.configurations_set == []  # as in libfprint's traffic
    fresh = ReplayBackend(dataclasses.replace(rec, configuration=0))
    open_driver(fresh).close()
    assert fresh.configurations_set == [1]


def test_recording_errors(tmp_path: Path, nb1010: Path) -> None:
    with pytest.raises(RecordingError):
        load_recording(tmp_path)
    (tmp_path / "device").write_text((nb1010 / "device").read_text())
    (tmp_path / "capture.ioctl").write_text("@DEV /dev/bus/usb/001/003\n"
                                           "USBDEVFS_REAPURBNDELAY 0 1 2 0 0 2 2 0 8001\n")
    with pytest.raises(RecordingError, match="not bulk"):
        load_recording(tmp_path)
    assert cli_main([str(tmp_path), "--out", str(tmp_path / "x.png")]) == 1


def open_driver(backend: ReplayBackend, cls: type[Nb1010Driver] = Nb1010Driver) -> Nb1010Driver:
    m = cls.MODEL
    drv = cls(find_usb(m.vendor, m.product, backend), T)
    drv.open()
    return drv


def test_unexpected_command_fails_loudly(nb1010: Path) -> None:
    class WrongCommand(Nb1010Driver):
        CHECK_FINGER = bytes.fromhex("8038010008000001")

    drv = open_driver(ReplayBackend(load_recording(nb1010)), WrongCommand)
    with pytest.raises(ReplayMismatchError, match="expects 8038010008000000"):
        drv.finger_present()


def test_reading_before_sending_fails_loudly(nb1010: Path) -> None:
    drv = open_driver(ReplayBackend(load_recording(nb1010)))
    with pytest.raises(ReplayMismatchError, match="before sending"):
        drv.recv(16)


def test_wrong_transfer_size_fails_loudly(nb1010: Path) -> None:
    drv = open_driver(ReplayBackend(load_recording(nb1010)))
    drv.send(Nb1010Driver.CHECK_FINGER)
    with pytest.raises(ReplayMismatchError, match="16-byte"):
        drv.recv(64)


def test_strict_replay_ends_and_loop_replay_repeats(nb1010: Path) -> None:
    rec = load_recording(nb1010)
    strict = ReplayBackend(rec)
    drv = open_driver(strict)
    assert drv.finger_present()
    first = drv.read_frame()
    strict.assert_complete()
    with pytest.raises(ReplayExhaustedError):
        drv.finger_present()

    looping = ReplayBackend(rec, loop=True)
    drv = open_driver(looping)
    for _ in range(2):
        assert drv.finger_present()
        assert np.array_equal(drv.read_frame(), first)
    assert looping.passes == 1


def test_incomplete_replay_is_reported(nb1010: Path) -> None:
    backend = ReplayBackend(load_recording(nb1010))
    drv = open_driver(backend)
    drv.finger_present()
    with pytest.raises(ReplayMismatchError, match="never happened"):
        backend.assert_complete()


def test_control_transfers_are_not_in_the_recording(nb1010: Path) -> None:
    backend = ReplayBackend(load_recording(nb1010))
    dev = usb.core.find(idVendor=0x298D, idProduct=0x1010, backend=backend)
    assert dev is not None
    with pytest.raises(ReplayMismatchError):
        dev.ctrl_transfer(0x80, 6, 0x0100, 0, 18)
