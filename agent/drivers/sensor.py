"""The fingerprint-sensor service the station application talks to.

Whatever the hardware (a ZhianTec/Grow UART module, a USB area sensor), the
station sees one small :class:`FingerprintSensor` protocol: wait for a finger and
get a raw grey image, wait for the finger to lift, show guidance on the LED ring,
ask for the status, close. Expected outcomes are values (:class:`NoFinger`, a
``False`` from :meth:`FingerprintSensor.wait_for_lift`); faults are exceptions of
the :class:`SensorError` hierarchy. Device status is the closed
:class:`SensorStatus`, computed from raw replies in one pure function,
:func:`map_status`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from agent.drivers.sensor_parameters import SensorTimings

if TYPE_CHECKING:
    from agent.runtime.config import SensorConfig

log = logging.getLogger(__name__)

__all__ = [
    "Capture", "ChecksumError", "DeviceRefusedError", "FingerprintSensor", "FrameLengthError",
    "Guidance", "NoFinger", "ProtocolError", "Reconnecting", "SensorBusyError",
    "SensorDisconnected", "SensorError", "SensorState", "SensorStatus", "SensorTimeoutError",
    "SensorTimings", "UnexpectedPacketError", "UnknownConfirmationError", "UsbTransferError",
    "map_status", "open_sensor",
]


class Guidance(Enum):
    """What the voter should be told; each sensor maps it to its LED ring (or nothing)."""

    READY = "ready"  # place your finger
    CAPTURING = "capturing"  # keep still
    ACCEPTED = "accepted"  # done, lift and go on
    RETRY = "retry"  # lift and place again
    REFUSED = "refused"  # not identified / already identified
    FAULT = "fault"  # device problem, call the operator


@dataclass(frozen=True)
class Capture:
    """A raw grey image as the extractor consumes it (0 = black ridge, 255 = white)."""

    image: NDArray[np.uint8]
    dpi: int

    def __post_init__(self) -> None:
        if self.image.dtype != np.uint8 or self.image.ndim != 2:
            raise ValueError(f"image must be 2-D uint8, got {self.image.dtype} {self.image.shape}")
        if self.dpi <= 0:
            raise ValueError(f"dpi must be positive, got {self.dpi}")


@dataclass(frozen=True)
class NoFinger:
    """No finger was placed before the timeout (an ordinary outcome, not an error)."""


class SensorState(Enum):
    """Closed set of states the application acts on."""

    READY = "ready"
    BUSY = "busy"
    DISCONNECTED = "disconnected"
    FAULT = "fault"


@dataclass(frozen=True)
class SensorStatus:
    """The state plus the last raw confirmation code (None when there was no reply)."""

    state: SensorState
    last_code: int | None = None
    detail: str = ""


# --- errors -----------------------------------------------------------------


class SensorError(Exception):
    """Base of every fingerprint-sensor fault."""


class SensorDisconnected(SensorError):  # noqa: N818 - name fixed by the station API
    """The device is gone (port vanished, USB ENODEV) and could not be reopened."""


class SensorTimeoutError(SensorError):
    """The device did not answer in time (absent, wrong baud rate, stalled transfer)."""


class SensorBusyError(SensorError):
    """The device is held by someone else (USB EBUSY, port locked)."""


class ProtocolError(SensorError):
    """Bytes that do not form a valid frame; ``frame`` holds the offending bytes."""

    def __init__(self, message: str, frame: bytes = b"") -> None:
        super().__init__(f"{message} [{frame[:48].hex(' ')}{'...' if len(frame) > 48 else ''}]")
        self.frame = frame


class ChecksumError(ProtocolError):
    """The frame checksum does not match its content."""

    def __init__(self, frame: bytes, expected: int, received: int) -> None:
        super().__init__(f"checksum {received:#06x}, computed {expected:#06x}", frame)
        self.expected = expected
        self.received = received


class FrameLengthError(ProtocolError):
    """A length field outside what the protocol allows (oversize, too short)."""


class UnexpectedPacketError(ProtocolError):
    """A well-formed packet of a kind not expected here (e.g. data where an ack was due)."""


class UnknownConfirmationError(ProtocolError):
    """An acknowledge carrying a confirmation code the protocol does not define."""

    def __init__(self, code: int, frame: bytes) -> None:
        super().__init__(f"unknown confirmation code {code:#04x}", frame)
        self.code = code


class DeviceRefusedError(SensorError):
    """The device answered a command with a failure code (wrong password, bad register...)."""

    def __init__(self, command: str, code: int, meaning: str) -> None:
        super().__init__(f"{command}: device replied {code:#04x} ({meaning})")
        self.command = command
        self.code = code


class UsbTransferError(SensorError):
    """A USB transfer failed with ``errno`` (EPIPE stall, EIO, ...)."""

    def __init__(self, message: str, errno_: int | None) -> None:
        super().__init__(message)
        self.errno = errno_


# --- status mapping -----------------------------------------------------------

STATUS_BUSY_BIT = 0x0001  # Grow status register bit 0: the module is executing a command


def map_status(
    confirmation: int | None, status_register: int = 0, fault: SensorError | None = None
) -> SensorStatus:
    """Map one raw observation of a sensor to its :class:`SensorStatus`.

    ``confirmation`` is the confirmation code of the last status query (None when
    the device did not reply), ``status_register`` the Grow ReadSysPara status
    word (USB sensors pass 0), ``fault`` the error the query raised, if any. This
    is the only place where raw replies become a state.
    """
    if isinstance(fault, SensorDisconnected):
        return SensorStatus(SensorState.DISCONNECTED, confirmation, str(fault))
    if isinstance(fault, SensorBusyError):
        return SensorStatus(SensorState.BUSY, confirmation, str(fault))
    if fault is not None:
        return SensorStatus(SensorState.FAULT, confirmation, str(fault))
    if confirmation is None:
        return SensorStatus(SensorState.DISCONNECTED, None, "no reply")
    if confirmation != 0:
        detail = f"status query failed: {confirmation:#04x}"
        return SensorStatus(SensorState.FAULT, confirmation, detail)
    if status_register & STATUS_BUSY_BIT:
        return SensorStatus(SensorState.BUSY, confirmation, "module busy")
    return SensorStatus(SensorState.READY, confirmation)


# --- reconnecting ----------------------------------------------------------------

T = TypeVar("T")
D = TypeVar("D")


class Reconnecting(Generic[D]):
    """Holds the current device handle and reopens it after a disconnect.

    ``connect`` opens a fresh handle (raising :class:`SensorDisconnected` while
    the device is absent), ``drop`` releases one. :meth:`run` retries an
    operation across reconnects until a deadline; the drivers of both sensor
    families share this so that they recover from a pulled cable the same way.
    """

    def __init__(self, connect: Callable[[], D], drop: Callable[[D], None],
                 timings: SensorTimings,
                 transient: tuple[type[SensorError], ...] = ()) -> None:
        self._connect = connect
        self._drop = drop
        self.timings = timings
        self.transient: tuple[type[SensorError], ...] = (
            SensorDisconnected, SensorTimeoutError, *transient)
        self.handle: D | None = None
        self.reconnects = 0
        self.last_fault: SensorError | None = None
        # The station loop captures while the telemetry thread asks for the
        # status: one conversation with the device at a time.
        self.lock = threading.RLock()

    def get(self) -> D:
        """The open handle, connecting first if there is none."""
        with self.lock:
            if self.handle is None:
                self.handle = self._connect()
                self.last_fault = None  # a fresh handle: earlier faults are history
            return self.handle

    def drop(self) -> None:
        """Release the handle (it will be reopened on next use)."""
        with self.lock:
            if self.handle is not None:
                handle, self.handle = self.handle, None
                self._drop(handle)

    def last_status(self) -> SensorStatus:
        """The status the last operation left behind (no device traffic)."""
        if self.last_fault is not None:
            return map_status(None, fault=self.last_fault)
        return map_status(0) if self.handle is not None else map_status(None)

    def status_of(self, query: Callable[[], SensorStatus], wait_s: float) -> SensorStatus:
        """Run ``query`` unless another thread holds the device for longer than ``wait_s``;
        then report :meth:`last_status` instead of queueing behind a capture."""
        if not self.lock.acquire(timeout=wait_s):
            return self.last_status()
        try:
            return query()
        finally:
            self.lock.release()

    def run(self, op: Callable[[D], T], deadline: float) -> T:
        """Run ``op`` on the handle, reopening after transient faults until ``deadline``."""
        with self.lock:
            return self._run_locked(op, deadline)

    def _run_locked(self, op: Callable[[D], T], deadline: float) -> T:
        while True:
            try:
                result = op(self.get())
                self.last_fault = None
                return result
            except self.transient as exc:
                # A timeout after retries usually means a replug reset the
                # device (another speed, lost state): reopening starts afresh.
                self.last_fault = exc
                self.drop()
                if time.monotonic() + self.timings.reconnect_interval_s >= deadline:
                    if isinstance(exc, SensorDisconnected):
                        raise
                    raise SensorDisconnected(f"sensor unavailable: {exc}") from exc
                log.warning("sensor lost (%s); reopening", exc)
                time.sleep(self.timings.reconnect_interval_s)
                self.reconnects += 1


# --- the service ---------------------------------------------------------------


class FingerprintSensor(Protocol):
    """What the station application needs from any fingerprint sensor."""

    def wait_for_finger(self, timeout_s: float) -> Capture | NoFinger:
        """Wait until a finger is on the sensor and return its image, or NoFinger."""
        ...

    def wait_for_lift(self, timeout_s: float) -> bool:
        """True once the sensor reports no finger, False if it stayed until the timeout."""
        ...

    def guide(self, guidance: Guidance) -> None:
        """Show ``guidance`` to the voter (LED ring); a no-op on sensors without LEDs."""
        ...

    def status(self) -> SensorStatus:
        """Query the device; never raises (faults become a status)."""
        ...

    def close(self) -> None:
        """Release the device."""
        ...


def open_sensor(cfg: SensorConfig, timings: SensorTimings | None = None,
                usb_backend: object = None) -> FingerprintSensor:
    """Open the sensor ``cfg`` describes ("grow-serial", "nb1010-usb", "aes3500-usb").

    ``usb_backend`` is a pyusb backend for the USB kinds (None: libusb); the
    demo passes ``hardware_sim.usb_replay.ReplayBackend`` to run on recordings.

    Raises :class:`SensorDisconnected` when the device is absent and
    :class:`SensorError` subclasses for other faults found while opening.
    """
    t = timings or SensorTimings()
    if cfg.kind == "grow-serial":
        from agent.drivers.grow import GrowSensor

        return GrowSensor.open(cfg.port, baud=cfg.baud, password=cfg.password,
                               address=cfg.address, timings=t)
    if cfg.kind == "nb1010-usb":
        from agent.drivers.usb_sensors import Nb1010Driver, UsbSensor

        return UsbSensor.open(Nb1010Driver, timings=t, backend=usb_backend)
    if cfg.kind == "aes3500-usb":
        from agent.drivers.usb_sensors import Aes3500Driver, UsbSensor

        return UsbSensor.open(Aes3500Driver, timings=t, backend=usb_backend)
    raise ValueError(f"unknown sensor kind {cfg.kind!r}")
