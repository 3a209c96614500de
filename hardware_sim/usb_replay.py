"""Replay recorded USB traffic to the real drivers through a pyusb backend.

The recordings (``hardware_sim/data/usb-recordings/<sensor>/``) are umockdev files:
``device`` (sysfs attributes and the raw descriptors) and ``capture.ioctl``
(the usbdevfs URBs a mature driver stack exchanged with the real sensor).
:class:`ReplayBackend` is a ``usb.backend.IBackend``: ``usb.core.find(...,
backend=ReplayBackend(rec))`` yields a device with the recorded descriptors,
and the unchanged drivers of :mod:`agent.drivers.sensor.usb` talk to it.

Matching rules: OUT transfers must equal the recorded ones, in order; an IN
transfer returns the next recorded IN of that endpoint, with the recorded
buffer length, once every OUT recorded before it has been sent (a driver may
read later than the recording did, never earlier). Anything else raises
:class:`ReplayMismatchError`, which is not a USB error, so no driver can
mistake it for a device fault and retry it away.

Faults (:class:`Fault`) inject EBUSY, ETIMEDOUT, EPIPE, ENODEV or an unplug at
a given transfer, to test recovery; a reopened device replays from the start.

``kesp-sim replay-capture <dir> --out frame.png [--normalize libfprint]`` runs
a driver over a recording and writes the frame: the raw one the extractor
consumes, or the one libfprint would have saved (the conformance check).
"""

from __future__ import annotations

import argparse
import array
import errno
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import usb.backend
import usb.core
from numpy.typing import NDArray
from PIL import Image

from agent.drivers.sensor.parameters import SensorTimings
from agent.drivers.sensor.usb import Aes3500Driver, Nb1010Driver
from agent.drivers.transport import find_usb
from hardware_sim.usb_bus import string_descriptor

URB_BULK = 3
DRIVERS: dict[tuple[int, int], type[Nb1010Driver] | type[Aes3500Driver]] = {
    (d.MODEL.vendor, d.MODEL.product): d for d in (Nb1010Driver, Aes3500Driver)
}


class RecordingError(ValueError):
    """A recording folder or file is missing or malformed."""


class ReplayMismatchError(RuntimeError):
    """The driver did something the recording does not contain."""


class ReplayExhaustedError(ReplayMismatchError):
    """The driver asked for more traffic than was recorded."""


@dataclass(frozen=True)
class Urb:
    """One recorded bulk URB."""

    line: int
    endpoint: int
    status: int
    buffer_length: int
    actual_length: int
    data: bytes

    @property
    def is_in(self) -> bool:
        """Device-to-host (endpoint address with bit 7 set)."""
        return bool(self.endpoint & 0x80)


@dataclass(frozen=True)
class Recording:
    """A parsed umockdev recording of one device."""

    name: str
    dev_path: str
    descriptors: bytes
    urbs: tuple[Urb, ...]
    configuration: int = 0  # bConfigurationValue when recorded (0 = unconfigured)
    #: The device's sysfs ``manufacturer`` and ``product`` strings ("" when not recorded).
    manufacturer: str = ""
    product_name: str = ""

    @property
    def vendor(self) -> int:
        """idVendor from the device descriptor."""
        return int.from_bytes(self.descriptors[8:10], "little")

    @property
    def product(self) -> int:
        """idProduct from the device descriptor."""
        return int.from_bytes(self.descriptors[10:12], "little")


def load_recording(folder: str | Path) -> Recording:
    """Parse ``device`` and ``capture.ioctl`` of a recording folder."""
    d = Path(folder)
    try:
        ioctl = (d / "capture.ioctl").read_text(encoding="ascii").splitlines()
        device = (d / "device").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise RecordingError(f"{d}: {exc}") from exc
    dev_path = ""
    urbs: list[Urb] = []
    for no, raw in enumerate(ioctl, 1):
        parts = raw.split()
        if not parts:
            continue
        if parts[0] == "@DEV":
            dev_path = parts[1]
        elif parts[0] == "USBDEVFS_REAPURBNDELAY":
            if len(parts) not in (9, 10):
                raise RecordingError(f"{d}/capture.ioctl:{no}: {len(parts)} fields")
            urb_type, ep, status, _flags, buflen, actual = (int(x) for x in parts[2:8])
            if urb_type != URB_BULK:
                raise RecordingError(f"{d}/capture.ioctl:{no}: URB type {urb_type} not bulk")
            data = bytes.fromhex(parts[9]) if len(parts) == 10 else b""
            if len(data) not in (actual, buflen):
                raise RecordingError(f"{d}/capture.ioctl:{no}: {len(data)} data bytes, "
                                     f"actual length {actual}")
            urbs.append(Urb(no, ep, status, buflen, actual, data))
    if not dev_path:
        raise RecordingError(f"{d}/capture.ioctl: no @DEV line")
    key = "N: " + dev_path.removeprefix("/dev/") + "="
    desc = next((ln[len(key):] for ln in device if ln.startswith(key)), None)
    if desc is None:
        raise RecordingError(f"{d}/device: no descriptors for {dev_path}")
    # The device's own attribute block is the first one (parents follow).
    first_block = device[: next((i for i, ln in enumerate(device) if i and ln.startswith("P:")),
                                len(device))]
    attrs = dict(ln[3:].split("=", 1) for ln in first_block
                 if ln.startswith("A: ") and "=" in ln)
    config = int(attrs.get("bConfigurationValue") or 0)
    return Recording(d.name, dev_path, bytes.fromhex(desc.strip()), tuple(urbs), config,
                     attrs.get("manufacturer", ""), attrs.get("product", ""))


# --- descriptors ----------------------------------------------------------------


def _parse_descriptors(raw: bytes) -> tuple[SimpleNamespace, list[SimpleNamespace]]:
    """Device descriptor and its configurations (with interfaces and endpoints)."""
    if len(raw) < 18 or raw[1] != 1:
        raise RecordingError("descriptors do not start with a device descriptor")
    dd = raw[:18]
    dev = SimpleNamespace(
        bLength=dd[0], bDescriptorType=dd[1], bcdUSB=int.from_bytes(dd[2:4], "little"),
        bDeviceClass=dd[4], bDeviceSubClass=dd[5], bDeviceProtocol=dd[6],
        bMaxPacketSize0=dd[7], idVendor=int.from_bytes(dd[8:10], "little"),
        idProduct=int.from_bytes(dd[10:12], "little"),
        bcdDevice=int.from_bytes(dd[12:14], "little"), iManufacturer=dd[14], iProduct=dd[15],
        iSerialNumber=dd[16], bNumConfigurations=dd[17], address=None, bus=None,
        port_number=None, port_numbers=None, speed=None)
    configs: list[SimpleNamespace] = []
    i = 18
    while i + 2 <= len(raw):
        length, kind = raw[i], raw[i + 1]
        if length < 2 or i + length > len(raw):
            raise RecordingError(f"bad descriptor length {length} at offset {i}")
        b = raw[i : i + length]
        if kind == 2:
            configs.append(SimpleNamespace(
                bLength=b[0], bDescriptorType=b[1], wTotalLength=int.from_bytes(b[2:4], "little"),
                bNumInterfaces=b[4], bConfigurationValue=b[5], iConfiguration=b[6],
                bmAttributes=b[7], bMaxPower=b[8], extra_descriptors=[], interfaces=[]))
        elif kind == 4 and configs:
            configs[-1].interfaces.append(SimpleNamespace(
                bLength=b[0], bDescriptorType=b[1], bInterfaceNumber=b[2], bAlternateSetting=b[3],
                bNumEndpoints=b[4], bInterfaceClass=b[5], bInterfaceSubClass=b[6],
                bInterfaceProtocol=b[7], iInterface=b[8], extra_descriptors=[], endpoints=[]))
        elif kind == 5 and configs and configs[-1].interfaces:
            configs[-1].interfaces[-1].endpoints.append(SimpleNamespace(
                bLength=b[0], bDescriptorType=b[1], bEndpointAddress=b[2], bmAttributes=b[3],
                wMaxPacketSize=int.from_bytes(b[4:6], "little"), bInterval=b[6], bRefresh=0,
                bSynchAddress=0, extra_descriptors=[]))
        i += length
    if not configs:
        raise RecordingError("no configuration descriptor")
    return dev, configs


# --- faults ----------------------------------------------------------------------

FaultKind = Literal["EBUSY", "ETIMEDOUT", "EPIPE", "ENODEV", "unplug", "short-read"]


@dataclass(frozen=True)
class Fault:
    """Fail the ``at``-th bulk transfer of the backend's life (0-based) with ``kind``.

    ``EBUSY`` fails the interface claim instead (``at`` counts claims). ``ENODEV``
    and ``unplug`` make the device vanish for ``gone_s`` seconds; ``unplug``
    models a cable pulled mid-transfer (the transfer fails, later ones too).
    ``short-read`` delivers half of an IN transfer's recorded bytes.
    """

    kind: FaultKind
    at: int = 0
    gone_s: float = 0.2


@dataclass
class _Session:
    consumed: list[bool] = field(default_factory=list)


class ReplayBackend(usb.backend.IBackend):  # type: ignore[misc]
    """A pyusb backend presenting one recorded device and replaying its traffic."""

    def __init__(self, recording: Recording, faults: tuple[Fault, ...] = (),
                 loop: bool = False) -> None:
        self.recording = recording
        self.faults = faults
        self.loop = loop
        # Device-side presence for the demo and tests: when False, the transfer
        # that reveals the finger (NB-1010 detection level, AES3500 image) is
        # answered as an empty sensor would. Not recorded traffic: simulated.
        self.finger_on = True
        self._dev_desc, self._configs = _parse_descriptors(recording.descriptors)
        bus, addr = recording.dev_path.rsplit("/", 2)[-2:]
        self._dev_desc.bus, self._dev_desc.address = int(bus), int(addr)
        self._lock = threading.Lock()
        self._session = self._new_session()
        self._gone_until = 0.0
        self._config_value = recording.configuration  # as the kernel left it
        self.transfers = 0
        self.claims = 0
        self.opens = 0
        self.passes = 0
        self.halts_cleared: list[int] = []
        self.configurations_set: list[int] = []  # SET_CONFIGURATION requests seen

    def _new_session(self) -> _Session:
        return _Session([False] * len(self.recording.urbs))

    # --- presence ---------------------------------------------------------------

    @property
    def present(self) -> bool:
        """Whether the device is plugged in now."""
        return time.monotonic() >= self._gone_until

    def unplug(self, for_s: float = 3600.0) -> None:
        """Pull the device for ``for_s`` seconds."""
        self._gone_until = time.monotonic() + for_s

    def replug(self) -> None:
        """Plug the device back now."""
        self._gone_until = 0.0

    def _check_present(self) -> None:
        if not self.present:
            raise usb.core.USBError("No such device (it may have been disconnected)",
                                    errno=errno.ENODEV)

    # --- IBackend: enumeration and descriptors -------------------------------------

    def enumerate_devices(self) -> Any:
        if self.present:
            yield self.recording.dev_path

    def get_device_descriptor(self, dev: Any) -> Any:
        return self._dev_desc

    def get_configuration_descriptor(self, dev: Any, config: int) -> Any:
        return self._configs[config]

    def _interface(self, intf: int, alt: int, config: int) -> Any:
        # Alternate settings follow their interface in the descriptors; pyusb asks
        # for alt 0, 1, ... until IndexError (iterating a configuration does).
        number = self._configs[config].interfaces[intf].bInterfaceNumber
        alts = [i for i in self._configs[config].interfaces if i.bInterfaceNumber == number]
        return alts[alt]

    def get_interface_descriptor(self, dev: Any, intf: int, alt: int, config: int) -> Any:
        return self._interface(intf, alt, config)

    def get_endpoint_descriptor(self, dev: Any, ep: int, intf: int, alt: int, config: int) -> Any:
        return self._interface(intf, alt, config).endpoints[ep]

    # --- IBackend: handles -------------------------------------------------------------

    def open_device(self, dev: Any) -> Any:
        self._check_present()
        with self._lock:
            self.opens += 1
            self._session = self._new_session()  # a reopened device starts afresh
        return SimpleNamespace(session=self._session)

    def close_device(self, dev_handle: Any) -> None:
        pass

    def set_configuration(self, dev_handle: Any, config_value: int) -> None:
        self._check_present()
        self._config_value = config_value
        self.configurations_set.append(config_value)

    def get_configuration(self, dev_handle: Any) -> int:
        self._check_present()
        return self._config_value

    def set_interface_altsetting(self, dev_handle: Any, intf: int, altsetting: int) -> None:
        self._check_present()

    def claim_interface(self, dev_handle: Any, intf: int) -> None:
        self._check_present()
        n = self.claims
        self.claims += 1
        for f in self.faults:
            if f.kind == "EBUSY" and f.at == n:
                raise usb.core.USBError("Resource busy", errno=errno.EBUSY)

    def release_interface(self, dev_handle: Any, intf: int) -> None:
        pass

    def clear_halt(self, dev_handle: Any, ep: int) -> None:
        self._check_present()
        self.halts_cleared.append(ep)

    def reset_device(self, dev_handle: Any) -> None:
        self._check_present()

    def is_kernel_driver_active(self, dev_handle: Any, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: Any, intf: int) -> None:
        pass

    def attach_kernel_driver(self, dev_handle: Any, intf: int) -> None:
        pass

    def ctrl_transfer(self, dev_handle: Any, bmRequestType: int, bRequest: int, wValue: int,
                      wIndex: int, data: Any, timeout: int) -> int:
        self._check_present()
        # String descriptors are answered from the recorded sysfs attributes (what
        # the kernel read from the device); they are not part of the capture traffic.
        strings = {i: text for i, text in ((self._dev_desc.iManufacturer,
                                            self.recording.manufacturer),
                                           (self._dev_desc.iProduct,
                                            self.recording.product_name)) if i and text}
        answered = string_descriptor(bmRequestType, bRequest, wValue, strings, data)
        if answered is not None:
            return answered
        raise ReplayMismatchError(
            f"control transfer {bmRequestType:#04x}/{bRequest:#04x} is not in the recording")

    # --- IBackend: bulk -----------------------------------------------------------------

    def _inject(self) -> bool:
        """Raise the fault planned for this transfer; True when it is a short read."""
        n = self.transfers
        self.transfers += 1
        for f in self.faults:
            if f.at != n or f.kind == "EBUSY":
                continue
            if f.kind == "short-read":
                return True
            if f.kind == "ETIMEDOUT":
                raise usb.core.USBTimeoutError("Operation timed out", errno=errno.ETIMEDOUT)
            if f.kind == "EPIPE":
                raise usb.core.USBError("Pipe error", errno=errno.EPIPE)
            self.unplug(f.gone_s)
            self._check_present()
        return False

    def _next(self, session: _Session, want_in: bool, ep: int) -> int:
        urbs = self.recording.urbs
        if all(session.consumed) and self.loop:
            session.consumed = [False] * len(urbs)
            self.passes += 1
        for i, u in enumerate(urbs):
            if session.consumed[i]:
                continue
            if want_in:
                if not u.is_in:
                    raise ReplayMismatchError(
                        f"driver reads endpoint {ep:#04x} before sending the OUT of line "
                        f"{u.line} ({u.data[:8].hex()})")
                if u.endpoint == ep:
                    return i
            elif not u.is_in:
                return i
        raise ReplayExhaustedError(
            f"recording {self.recording.name} has no more {'IN' if want_in else 'OUT'} "
            f"transfers on endpoint {ep:#04x}")

    def bulk_write(self, dev_handle: Any, ep: int, intf: int, data: Any, timeout: int) -> int:
        self._check_present()
        self._inject()
        sent = bytes(data)
        with self._lock:
            session = dev_handle.session
            i = self._next(session, False, ep)
            u = self.recording.urbs[i]
            first = next(x for x in self.recording.urbs if not x.is_in)
            if self.loop and (u.endpoint, u.data) != (ep, sent) and (first.endpoint,
                                                                   first.data) == (ep, sent):
                # In a loop the driver may start its sequence over at any point
                # (e.g. polling "finger?" again while the finger stays).
                session.consumed = [False] * len(session.consumed)
                i = self._next(session, False, ep)
                u = self.recording.urbs[i]
            if u.endpoint != ep or u.data != sent:
                raise ReplayMismatchError(
                    f"driver wrote {sent[:16].hex()} ({len(sent)} bytes) to {ep:#04x}; "
                    f"line {u.line} expects {u.data[:16].hex()} ({len(u.data)} bytes) "
                    f"to {u.endpoint:#04x}")
            session.consumed[i] = True
        if u.status:
            raise usb.core.USBError("recorded failure", errno=-u.status)
        return len(sent)

    def bulk_read(self, dev_handle: Any, ep: int, intf: int, buff: Any, timeout: int) -> int:
        self._check_present()
        short = self._inject()
        with self._lock:
            session = dev_handle.session
            i = self._next(session, True, ep)
            u = self.recording.urbs[i]
            if len(buff) != u.buffer_length:
                raise ReplayMismatchError(
                    f"driver reads {len(buff)} bytes from {ep:#04x}; line {u.line} "
                    f"recorded a {u.buffer_length}-byte transfer")
            session.consumed[i] = True
            data = u.data[: u.actual_length]
            if not self.finger_on:
                blank = self._no_finger(i)
                if blank is not None:
                    # The sensor saw nothing: the driver will poll again from
                    # the top of its sequence, so the replay starts over too.
                    data = blank
                    session.consumed = [False] * len(session.consumed)
        if u.status:
            raise usb.core.USBError("recorded failure", errno=-u.status)
        if short:
            data = data[: len(data) // 2]  # the bus delivered only part of the transfer
        buff[: len(data)] = array.array("B", data)
        return len(data)

    def _no_finger(self, i: int) -> bytes | None:
        """The answer an empty sensor gives instead of recorded IN ``i``, if ``i`` is the
        transfer that reveals the finger (None otherwise)."""
        urbs = self.recording.urbs
        u = urbs[i]
        key = (self.recording.vendor, self.recording.product)
        if key == (Nb1010Driver.MODEL.vendor, Nb1010Driver.MODEL.product):
            if i > 0 and urbs[i - 1].data == Nb1010Driver.CHECK_FINGER:
                level = Nb1010Driver.DETECT_LEVEL_BYTE
                return u.data[:level] + b"\x00" + u.data[level + 1 : u.actual_length]
        elif (key == (Aes3500Driver.MODEL.vendor, Aes3500Driver.MODEL.product)
              and u.buffer_length == Aes3500Driver.READ_LEN):
            out = bytearray(u.data[: u.actual_length])
            step = Aes3500Driver.MODEL.width * Aes3500Driver.FRAME_ROWS // 2 + 1
            for f in range(Aes3500Driver.FRAMES):
                out[f * step + 1 : (f + 1) * step] = bytes(step - 1)  # a flat field
            return bytes(out)
        return None

    def intr_read(self, dev_handle: Any, ep: int, intf: int, buff: Any, timeout: int) -> int:
        raise ReplayMismatchError(f"interrupt read on {ep:#04x} is not in the recording")

    def intr_write(self, dev_handle: Any, ep: int, intf: int, data: Any, timeout: int) -> int:
        raise ReplayMismatchError(f"interrupt write on {ep:#04x} is not in the recording")

    # --- checks ----------------------------------------------------------------------

    @property
    def remaining(self) -> int:
        """Recorded transfers the current session has not replayed yet."""
        return self._session.consumed.count(False)

    def assert_complete(self) -> None:
        """Raise :class:`ReplayMismatchError` unless every recorded transfer was replayed."""
        left = [u for u, done in zip(self.recording.urbs, self._session.consumed, strict=True)
                if not done]
        if left:
            raise ReplayMismatchError(
                f"{len(left)} recorded transfers never happened, first at line {left[0].line}")


# --- libfprint's normalisation (conformance only) -----------------------------------------


def pixman_upscale2(img: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """x2 bilinear upscale exactly as pixman does it for an a8 image (libfprint's resize).

    Destination pixel centres map to source (x + 0.5) / 2 - 0.5; weights are
    quantised to 7 bits, widened to 8, and the weighted sum is truncated
    (>> 16). Samples outside the image are 0 (repeat NONE).
    """
    h, w = img.shape
    padded = np.zeros((h + 2, w + 2), dtype=np.int64)
    padded[1:-1, 1:-1] = img

    def axis(n: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        x = np.arange(2 * n, dtype=np.int64)
        pos = ((2 * x + 1) << 16) // 4 - (1 << 15)  # 16.16 fixed point, minus half a pixel
        return pos >> 16, ((pos >> 9) & 0x7F) << 1

    iy, wy = axis(h)
    ix, wx = axis(w)
    r0, r1 = iy[:, None] + 1, iy[:, None] + 2
    c0, c1 = ix[None, :] + 1, ix[None, :] + 2
    dx, dy = wx[None, :], wy[:, None]
    acc = (padded[r0, c0] * (256 - dx) * (256 - dy) + padded[r0, c1] * dx * (256 - dy)
           + padded[r1, c0] * (256 - dx) * dy + padded[r1, c1] * dx * dy)
    out: NDArray[np.uint8] = (acc >> 16).astype(np.uint8)
    return out


def libfprint_image(driver: type[Nb1010Driver] | type[Aes3500Driver],
                    raw: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The image libfprint saves for a raw sensor frame.

    NB-1010: the frame itself. AES3500: x2 pixman upscale, then libfprint's
    standardisation of the image flags (colours inverted, both flips).
    """
    if driver is Nb1010Driver:
        return raw.copy()
    up = pixman_upscale2(raw)
    return np.ascontiguousarray(255 - up[::-1, ::-1])


def replay_frame(folder: str | Path) -> tuple[type[Nb1010Driver] | type[Aes3500Driver],
                                              NDArray[np.uint8], ReplayBackend]:
    """Run the matching driver over a recording; return it, the raw frame and the backend."""
    rec = load_recording(folder)
    driver = DRIVERS.get((rec.vendor, rec.product))
    if driver is None:
        raise RecordingError(f"no driver for USB id {rec.vendor:04x}:{rec.product:04x}")
    backend = ReplayBackend(rec)
    drv = driver(find_usb(rec.vendor, rec.product, backend), SensorTimings())
    drv.open()
    try:
        if not drv.finger_present():
            raise ReplayMismatchError("the recording shows no finger")
        raw = drv.read_frame()
    finally:
        drv.close()
    backend.assert_complete()
    return driver, raw, backend


def cli_main(argv: list[str]) -> int:
    """``kesp-sim replay-capture <dir> --out frame.png [--normalize libfprint]``."""
    ap = argparse.ArgumentParser(prog="kesp-sim replay-capture",
                                 description="replay a recorded USB sensor capture")
    ap.add_argument("recording", type=Path, help="folder with device and capture.ioctl")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--normalize", choices=["libfprint"],
                    help="write what libfprint would save instead of the raw frame")
    args = ap.parse_args(argv)
    try:
        driver, raw, _ = replay_frame(args.recording)
    except (RecordingError, ReplayMismatchError) as exc:
        print(f"kesp-sim replay-capture: {exc}", file=sys.stderr)
        return 1
    if args.normalize == "libfprint":
        img = libfprint_image(driver, raw)
        # libfprint's test harness saves RGB with three equal channels.
        Image.fromarray(np.repeat(img[:, :, None], 3, axis=2)).save(args.out)
    else:
        cap = driver.to_capture(raw)
        Image.fromarray(cap.image).save(args.out, dpi=(cap.dpi, cap.dpi))
    print(f"{driver.MODEL.name}: {raw.shape[1]}x{raw.shape[0]} frame -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))
