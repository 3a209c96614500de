"""USB area fingerprint sensors: Next Biometrics NB-1010-U and AuthenTec AES3500.

Both are driven over bulk endpoints with pyusb, no vendor SDK. The command
sequences are those seen in real recorded traffic (``hardware_sim/data/usb-recordings``,
from libfprint's test data): the tests replay that traffic through
:mod:`hardware_sim.usb_replay`, a pyusb backend, so this code runs unchanged
against what the real devices sent.

Each driver produces a *raw frame* in sensor order (what came over the wire,
assembled) and turns it into a :class:`~agent.drivers.sensor.types.Capture` with
only lossless fixes (polarity, orientation). Interpolation to another
resolution is the extractor's business, not the driver's.

USB faults map to the sensor error hierarchy: ENODEV/ENOENT/ESHUTDOWN ->
:class:`SensorDisconnected`, EBUSY -> :class:`SensorBusyError`,
ETIMEDOUT -> :class:`SensorTimeoutError`, EPIPE (stall, the halt is cleared)
and others -> :class:`UsbTransferError`; :class:`UsbSensor` reopens the device
after any of them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, Protocol

import numpy as np
from numpy.typing import NDArray

from agent.drivers.sensor.parameters import (
    AES3500_FINGER_STD,
    NB1010_DETECT_THRESHOLD,
    NB1010_SETTLE_S,
    SensorTimings,
)
from agent.drivers.sensor.reconnecting import Reconnecting
from agent.drivers.sensor.types import (
    Capture,
    FrameLengthError,
    Guidance,
    NoFinger,
    ProtocolError,
    SensorBusyError,
    SensorDisconnected,
    SensorError,
    SensorStatus,
    SensorTimeoutError,
    UsbTransferError,
    WrongSensorError,
    map_status,
)
from agent.drivers.transport import (
    TransportUnavailableError,
    UsbDevice,
    UsbDeviceMissingError,
    claim_usb_interface,
    find_usb,
    release_usb,
    usb_errno,
)
from agent.drivers.usb_ids import SENSOR_MODELS, UsbSeen, describe, plausible

log = logging.getLogger(__name__)

_GONE = {errno.ENODEV, errno.ENOENT, errno.ESHUTDOWN}
_BUSY = {errno.EBUSY}


@dataclass(frozen=True)
class UsbSensorModel:
    """What identifies a sensor model and the frames it delivers."""

    name: str
    vendor: int
    product: int
    width: int
    height: int
    dpi: int


def usb_fault(exc: BaseException, what: str) -> SensorError:
    """The sensor error a pyusb exception stands for (see the module docstring)."""
    code = usb_errno(exc)
    msg = f"{what}: {exc}"
    if code in _GONE:
        return SensorDisconnected(msg)
    if code in _BUSY:
        return SensorBusyError(msg)
    if code == errno.ETIMEDOUT:
        return SensorTimeoutError(msg)
    if code == errno.EACCES:
        msg += " (no permission on the USB device node: see the udev rule for group kesp)"
    return UsbTransferError(msg, code)


class UsbSensorDriver(Protocol):
    """One open USB sensor: finger detection and frame capture."""

    MODEL: ClassVar[UsbSensorModel]

    def open(self) -> None:
        """Configure the device and claim its interface."""
        ...

    def finger_present(self) -> bool:
        """Whether a finger is on the sensor now."""
        ...

    def read_frame(self) -> NDArray[np.uint8]:
        """Capture one raw frame in sensor order (height x width)."""
        ...

    def to_capture(self, frame: NDArray[np.uint8]) -> Capture:
        """The frame as the extractor consumes it (lossless fixes only)."""
        ...

    def close(self) -> None:
        """Release the interface and the device handle."""
        ...


class _BulkDevice:
    """Bulk transfers on one claimed interface, with errors mapped to SensorError."""

    EP_OUT: ClassVar[int]
    EP_IN: ClassVar[int]
    INTERFACE: ClassVar[int] = 0

    def __init__(self, dev: UsbDevice, timings: SensorTimings | None = None) -> None:
        self.dev = dev
        self.timings = timings or SensorTimings()

    def open(self) -> None:
        """Select the configuration, take the interface from any kernel driver, claim it."""
        try:
            claim_usb_interface(self.dev, self.INTERFACE)
        except Exception as exc:
            if usb_errno(exc) is None:
                raise
            raise usb_fault(exc, "open") from exc

    def close(self) -> None:
        """Release everything pyusb holds for the device (best effort: it may be gone)."""
        release_usb(self.dev, self.INTERFACE)

    def send(self, data: bytes) -> None:
        """One bulk OUT transfer, all of ``data`` or an error."""
        try:
            n = self.dev.write(self.EP_OUT, data, self.timings.usb_timeout_ms)
        except Exception as exc:
            self._raise(exc, f"write {data[:4].hex()}", self.EP_OUT)
        if n != len(data):
            raise UsbTransferError(f"short write: {n} of {len(data)} bytes", None)

    def recv(self, size: int, exact: bool = True) -> bytes:
        """One bulk IN transfer of ``size`` bytes (short reads refused when ``exact``)."""
        try:
            got = bytes(self.dev.read(self.EP_IN, size, self.timings.usb_timeout_ms))
        except Exception as exc:
            self._raise(exc, f"read {size}", self.EP_IN)
        if exact and len(got) != size:
            raise FrameLengthError(f"short read: {len(got)} of {size} bytes", got[:64])
        return got

    def _raise(self, exc: Exception, what: str, ep: int) -> NoReturn:
        code = usb_errno(exc)
        if code is None:
            raise exc
        if code == errno.EPIPE:
            # A stalled endpoint stays stalled until the host clears it.
            with contextlib.suppress(Exception):
                self.dev.clear_halt(ep)
        raise usb_fault(exc, what) from exc


class Nb1010Driver(_BulkDevice):
    """Next Biometrics NB-1010-U (298d:1010): 256 x 180 at 385 dpi, 8 bits per pixel.

    Protocol (bulk OUT 0x02, bulk IN 0x83): a finger-check command answered by
    16 bytes whose byte 12 is the detection level; a pre-capture and a capture
    command (16-byte answers); then 90 partials of 540 bytes, each a 25-byte
    header and two scan lines of 256 pixels.
    """

    MODEL: ClassVar[UsbSensorModel] = UsbSensorModel("NB-1010-U", 0x298D, 0x1010, 256, 180, 385)
    EP_OUT = 0x02
    EP_IN = 0x83
    CHECK_FINGER = bytes.fromhex("8038010008000000")
    PRE_CAPTURE = bytes.fromhex("800D03000C00000000040000")
    CAPTURE = bytes.fromhex("80120400200000000200000000000000000000000000000000000000" "20000000")
    REPLY_LEN = 16
    PARTIAL_LEN = 540
    PARTIAL_HEADER_LEN = 25
    LINES_PER_PARTIAL = 2
    PARTIAL_MAGIC = bytes.fromhex("8021")
    DETECT_LEVEL_BYTE = 12

    def finger_present(self) -> bool:
        """Ask for the detection level."""
        self.send(self.CHECK_FINGER)
        reply = self.recv(self.REPLY_LEN)
        return reply[self.DETECT_LEVEL_BYTE] > NB1010_DETECT_THRESHOLD

    def read_frame(self) -> NDArray[np.uint8]:
        """Run pre-capture and capture, then assemble the 90 partials."""
        m = self.MODEL
        self.send(self.PRE_CAPTURE)
        self.recv(self.REPLY_LEN)
        self.send(self.CAPTURE)
        self.recv(self.REPLY_LEN)
        time.sleep(NB1010_SETTLE_S)
        frame = np.empty((m.height, m.width), dtype=np.uint8)
        n_partials = m.height // self.LINES_PER_PARTIAL
        payload = self.LINES_PER_PARTIAL * m.width
        for i in range(n_partials):
            part = self.recv(self.PARTIAL_LEN)
            if part[:2] != self.PARTIAL_MAGIC:
                raise ProtocolError(f"partial {i} does not start with 80 21", part[:32])
            # Byte 16 numbers the partial (1, 3, 5, ...): a lost transfer shows here.
            if part[16] != (2 * i + 1) & 0xFF:
                raise ProtocolError(f"partial {i} carries sequence {part[16]}", part[:32])
            lines = part[self.PARTIAL_HEADER_LEN : self.PARTIAL_HEADER_LEN + payload]
            row = i * self.LINES_PER_PARTIAL
            frame[row : row + self.LINES_PER_PARTIAL] = np.frombuffer(lines, np.uint8).reshape(
                self.LINES_PER_PARTIAL, m.width)
        return frame

    @classmethod
    def to_capture(cls, frame: NDArray[np.uint8]) -> Capture:
        """The NB-1010 frame is already upright with dark ridges."""
        return Capture(frame.copy(), cls.MODEL.dpi)


class Aes3500Driver(_BulkDevice):
    """AuthenTec AES3500 (08ff:5731): 128 x 128 at 250 dpi, 4 bits per pixel.

    Protocol (bulk OUT 0x02, bulk IN 0x81): register writes as (register,
    value) byte pairs, then one 8,329-byte read holding 8 frames of 16 rows
    (a header byte 0xE0+i, then 1,024 bytes, column by column, two rows per
    byte with the low nibble first) and a trailing register dump. The sensor
    delivers the image inverted (ridges bright) and rotated by 180 degrees.
    """

    MODEL: ClassVar[UsbSensorModel] = UsbSensorModel("AES3500", 0x08FF, 0x5731, 128, 128, 250)
    EP_OUT = 0x02
    EP_IN = 0x81
    FRAMES = 8
    FRAME_ROWS = 16
    READ_LEN = 0x2089
    # Register writes, one bulk transfer each, as recorded: master reset,
    # scan reset, buffering off, the scan set-up block, then "start scan".
    INIT = tuple(bytes.fromhex(h) for h in (
        "8001", "8000", "81008000", "8002", "8004", "8100",
        "80008100820483138407853D86038701880289028A338B338C0F8D048E238F07",
        "9000911C9208930094079500961F9704982899009A0B9B009C009D099E539F6B",
        "80008100", "8104",
    ))

    def __init__(self, dev: UsbDevice, timings: SensorTimings | None = None) -> None:
        super().__init__(dev, timings)
        self._pending: NDArray[np.uint8] | None = None

    def read_frame(self) -> NDArray[np.uint8]:
        """Program a scan and assemble the 8 frames into 128 x 128 (sensor order)."""
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        for regs in self.INIT:
            self.send(regs)
        return self.assemble(self.recv(self.READ_LEN))

    @classmethod
    def assemble(cls, data: bytes) -> NDArray[np.uint8]:
        """Assemble the raw read: 4-bit pixels expanded to 0..255 (x 17)."""
        w = cls.MODEL.width
        frame_bytes = w * cls.FRAME_ROWS // 2
        if len(data) < cls.FRAMES * (frame_bytes + 1):
            raise FrameLengthError(f"image read of {len(data)} bytes", data[:32])
        out = np.empty((cls.FRAMES * cls.FRAME_ROWS, w), dtype=np.uint8)
        for i in range(cls.FRAMES):
            start = i * (frame_bytes + 1)
            if data[start] & 0xF0 != 0xE0:
                raise ProtocolError(f"frame {i} header {data[start]:#04x}", data[start:start + 8])
            cols = np.frombuffer(data, np.uint8, frame_bytes, start + 1)
            cols = cols.reshape(w, cls.FRAME_ROWS // 2)  # column by column
            block = out[i * cls.FRAME_ROWS : (i + 1) * cls.FRAME_ROWS]
            block[0::2] = (cols & 0x0F).T * 17
            block[1::2] = (cols >> 4).T * 17
        return out

    def finger_present(self) -> bool:
        """Scan and look for ridges (the AES3500 has no separate detection command).

        A frame with a finger is kept for the :meth:`read_frame` that follows,
        so a capture costs one scan, not two.
        """
        self._pending = None  # always a fresh scan: a kept frame may be seconds old
        frame = self.read_frame()
        present = float(frame.std()) > AES3500_FINGER_STD
        self._pending = frame if present else None
        return present

    @classmethod
    def to_capture(cls, frame: NDArray[np.uint8]) -> Capture:
        """Invert and rotate by 180 degrees: both lossless."""
        return Capture(np.ascontiguousarray(255 - frame[::-1, ::-1]), cls.MODEL.dpi)


class UsbSensor:
    """:class:`~agent.drivers.sensor.service.FingerprintSensor` on a USB sensor (reopened
    after faults).

    ``backend`` is a pyusb backend (None: libusb); tests and the demo pass the
    replay backend of :mod:`hardware_sim.usb_replay`.
    """

    def __init__(self, driver: type[Nb1010Driver] | type[Aes3500Driver],
                 timings: SensorTimings | None = None, backend: Any = None) -> None:
        self.driver_type = driver
        self.model = driver.MODEL
        self.timings = timings or SensorTimings()
        self.backend = backend
        self._link: Reconnecting[UsbSensorDriver] = Reconnecting(
            self._connect, lambda d: d.close(), self.timings,
            # A short or garbled transfer means data was lost on the bus: the
            # capture sequence is started again on a freshly opened device.
            transient=(UsbTransferError, SensorBusyError, ProtocolError))

    @classmethod
    def open(cls, driver: type[Nb1010Driver] | type[Aes3500Driver],
             timings: SensorTimings | None = None, backend: Any = None) -> UsbSensor:
        """Find, configure and claim the sensor; raise SensorDisconnected if absent."""
        sensor = cls(driver, timings, backend)
        sensor._link.get()
        return sensor

    def _connect(self) -> UsbSensorDriver:
        try:
            dev = find_usb(self.model.vendor, self.model.product, self.backend)
        except UsbDeviceMissingError as exc:
            raise self._missing(exc.seen, str(exc)) from exc
        except TransportUnavailableError as exc:
            raise SensorDisconnected(str(exc)) from exc
        drv = self.driver_type(dev, self.timings)
        try:
            drv.open()
        except BaseException:
            drv.close()
            raise
        return drv

    def _missing(self, seen: tuple[UsbSeen, ...], plain: str) -> SensorDisconnected:
        """The sensor is not on the bus: name what is there instead and what to do.

        Another fingerprint sensor is a wrong device (the configuration or the
        delivery is wrong); a printer alone is the kiosk's own printer more
        often than not, so the sensor is only missing, with the printer named.
        """
        m = self.model
        expected = f"{m.name} {m.vendor:04x}:{m.product:04x} not found"
        sensors = plausible(seen, "fingerprint-sensor")
        if sensors:
            other = sensors[0]
            known = SENSOR_MODELS.get((other.vendor, other.product))
            fix = (f'set sensor.kind to "{known[1]}" if it is the kiosk\'s sensor, else plug '
                   f"the {m.name}" if known is not None
                   else f"the agent has no driver for it: plug the {m.name}")
            return WrongSensorError(expected, f"{describe(other)} is plugged instead: {fix}")
        printers = plausible(seen, "printer")
        if printers:
            found = ", ".join(describe(p) for p in printers)
            return SensorDisconnected(expected, f"only {found} on USB: plug the fingerprint "
                                                "sensor (the agent waits for it)")
        return SensorDisconnected(plain)

    @property
    def reconnects(self) -> int:
        """How many times the device was reopened after a fault."""
        return self._link.reconnects

    def wait_for_finger(self, timeout_s: float) -> Capture | NoFinger:
        """Poll the sensor until a finger is on it, then capture a frame."""
        deadline = time.monotonic() + timeout_s

        def poll(d: UsbSensorDriver) -> Capture | None:
            return d.to_capture(d.read_frame()) if d.finger_present() else None

        while True:
            got = self._link.run(poll, deadline)
            if got is not None:
                return got
            if time.monotonic() >= deadline:
                return NoFinger()
            time.sleep(self.timings.poll_interval_s)

    def wait_for_lift(self, timeout_s: float) -> bool:
        """Poll until no finger is detected."""
        deadline = time.monotonic() + timeout_s
        while True:
            if not self._link.run(lambda d: d.finger_present(), deadline):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.timings.poll_interval_s)

    def guide(self, guidance: Guidance) -> None:
        """These sensors have no LEDs: guidance is shown by the station screen only."""

    def status(self) -> SensorStatus:
        """From the outcome of the last operation; opening is attempted when closed.

        No traffic is generated for a status query: on these sensors every
        command is part of a capture sequence.
        """

        def query() -> SensorStatus:
            if self._link.handle is None:
                try:
                    self._link.get()
                except SensorError as exc:
                    return map_status(None, fault=exc)
            return self._link.last_status()

        return self._link.status_of(query, self.timings.status_wait_s)

    def close(self) -> None:
        """Release the device."""
        self._link.drop()

    def __enter__(self) -> UsbSensor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
