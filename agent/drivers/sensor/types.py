"""The fingerprint sensors' closed types: guidance, captures, status, errors.

The bottom of :mod:`agent.drivers.sensor`: everything above (the pure Grow
codec, the device drivers, the service) imports from here and nothing here
imports from them. Expected outcomes are values (:class:`NoFinger`); faults are
exceptions of the :class:`SensorError` hierarchy. Device status is the closed
:class:`SensorStatus`, computed from raw replies in one pure function,
:func:`map_status`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Capture", "ChecksumError", "DeviceRefusedError", "FrameLengthError", "Guidance",
    "NoFinger", "ProtocolError", "SensorBusyError", "SensorDisconnected", "SensorError",
    "SensorState", "SensorStatus", "SensorTimeoutError", "UnexpectedPacketError",
    "UnknownConfirmationError", "UsbTransferError", "WrongSensorError", "map_status",
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
    #: The sensor is absent and another device answers in its place: another USB
    #: sensor model (``sensor.kind`` or the device is wrong), or a receipt printer
    #: at the serial ``sensor.port`` (cables swapped).
    WRONG_DEVICE = "wrong-device"
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
    """The device is gone (port vanished, USB ENODEV) and could not be reopened.

    ``instead`` names what is plugged in its place and what to do, when a
    plausible other device is there ("" otherwise); ``str()`` includes it.
    """

    def __init__(self, message: str = "", instead: str = "") -> None:
        super().__init__(f"{message}; {instead}" if instead else message)
        self.instead = instead


class WrongSensorError(SensorDisconnected):
    """The configured sensor is absent and another device answers in its place
    (another USB sensor model, a receipt printer at the serial port)."""


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
    if isinstance(fault, WrongSensorError):
        return SensorStatus(SensorState.WRONG_DEVICE, confirmation, str(fault))
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
