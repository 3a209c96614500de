"""Narrow hardware interfaces: only the pyserial / pyusb calls our drivers make.

Drivers depend on these :class:`typing.Protocol` types, never on ``serial.Serial``
or ``usb.core.Device`` directly, so that a simulator (a pty, a replaying pyusb
backend) or a different library can stand in without inheritance. Keep them
small: every method added here is one more thing each fake must implement.

The openers return the real pyserial / pyusb objects typed as the protocol, and
translate "device absent" into :class:`TransportUnavailableError` so callers can retry
a reconnect without importing pyserial or pyusb exception types.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any, Protocol


class TransportUnavailableError(OSError):
    """The device node or USB device is not there (unplugged, wrong path, no permission)."""


class SerialPort(Protocol):
    """The subset of ``serial.Serial`` the drivers use."""

    @property
    def baudrate(self) -> int: ...

    @baudrate.setter
    def baudrate(self, value: int) -> None: ...

    @property
    def timeout(self) -> float | None: ...

    @timeout.setter
    def timeout(self, value: float | None) -> None: ...

    def write(self, data: bytes, /) -> int | None:
        """Write all of ``data`` (pyserial blocks until it is queued)."""
        ...

    def read(self, size: int = 1, /) -> bytes:
        """Read up to ``size`` bytes, returning fewer on timeout."""
        ...

    def reset_input_buffer(self) -> None:
        """Discard bytes received but not yet read (stale replies, line noise)."""
        ...

    def close(self) -> None:
        """Release the port."""
        ...


class UsbDevice(Protocol):
    """The subset of ``usb.core.Device`` the drivers use (bulk endpoints only)."""

    idVendor: int  # noqa: N815 - pyusb's attribute names
    idProduct: int  # noqa: N815

    def set_configuration(self, configuration: int | None = None) -> None:
        """Select a configuration (default: the first)."""
        ...

    def get_active_configuration(self) -> object:
        """The active configuration (raises ``usb.core.USBError`` when unconfigured)."""
        ...

    def is_kernel_driver_active(self, interface: int) -> bool:
        """Whether a kernel driver (usblp, ...) holds ``interface``."""
        ...

    def detach_kernel_driver(self, interface: int) -> None:
        """Take ``interface`` away from the kernel driver."""
        ...

    def write(self, endpoint: int, data: bytes, timeout: int | None = None) -> int:
        """Bulk OUT transfer; returns bytes written. ``timeout`` in milliseconds."""
        ...

    def read(self, endpoint: int, size_or_buffer: int, timeout: int | None = None) -> Sequence[int]:
        """Bulk IN transfer of at most ``size_or_buffer`` bytes (an ``array('B')``)."""
        ...

    def clear_halt(self, ep: int) -> None:
        """Clear a stall (EPIPE) on endpoint ``ep``."""
        ...


def open_serial(port: str, baudrate: int, timeout_s: float) -> SerialPort:
    """Open ``port`` (``/dev/ttyUSB0``, a pty path, ...) 8N1 without flow control.

    Raises :class:`TransportUnavailableError` when the port cannot be opened.
    """
    import serial

    try:
        ser: SerialPort = serial.Serial(
            port=port, baudrate=baudrate, timeout=timeout_s, write_timeout=max(timeout_s, 1.0)
        )
    except (serial.SerialException, OSError) as exc:
        raise TransportUnavailableError(errno.ENODEV, f"cannot open {port}: {exc}") from exc
    return ser


def find_usb(vendor: int, product: int, backend: Any = None) -> UsbDevice:
    """The first USB device with ``vendor:product``; ``backend`` is a pyusb backend or None.

    Raises :class:`TransportUnavailableError` when no such device is attached.
    """
    import usb.core

    try:
        dev = usb.core.find(idVendor=vendor, idProduct=product, backend=backend)
    except usb.core.NoBackendError as exc:
        raise TransportUnavailableError(errno.ENODEV, "libusb is not installed") from exc
    if dev is None:
        raise TransportUnavailableError(errno.ENODEV, f"no USB device {vendor:04x}:{product:04x}")
    found: UsbDevice = dev
    return found


def usb_errno(exc: BaseException) -> int | None:
    """The errno a pyusb ``USBError`` carries (``USBTimeoutError`` -> ETIMEDOUT), else None."""
    import usb.core

    if isinstance(exc, usb.core.USBTimeoutError):
        return errno.ETIMEDOUT
    if isinstance(exc, usb.core.USBError):
        code = exc.errno
        return int(code) if code is not None else None
    return None
