"""The one module that opens serial and USB devices, and the narrow interfaces to them.

Every device the agent drives is opened here: the sensors' serial ports and
USB interfaces, the printer's serial and USB links, the document reader's port
or evdev node. A device that is not there is no reason to stop: the services
above reopen it (:mod:`agent.drivers.sensor.supervised`). Above this module no
driver imports pyserial or pyusb to open anything. (The module is longer than most because
that one job spans three kinds of device; the codecs and services stay out.)

Narrow hardware interfaces: only the pyserial / pyusb calls our drivers make.

Drivers depend on these :class:`typing.Protocol` types, never on ``serial.Serial``
or ``usb.core.Device`` directly, so that a simulator (a pty, a replaying pyusb
backend) or a different library can stand in without inheritance. Keep them
small: every method added here is one more thing each fake must implement.

The openers return the real pyserial / pyusb objects typed as the protocol, and
translate "device absent" into :class:`TransportUnavailableError` so callers can retry
a reconnect without importing pyserial or pyusb exception types.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import termios
import time
from collections.abc import Sequence
from typing import Any, BinaryIO, Protocol

from agent.drivers.usb_ids import HUB_CLASS, PRINTER_CLASS, UsbSeen, describe, plausible, role_of
from agent.runtime.config import ConfigError

log = logging.getLogger(__name__)


class TransportUnavailableError(OSError):
    """The device node or USB device is not there (unplugged, wrong path, no permission)."""


class UsbDeviceMissingError(TransportUnavailableError):
    """The wanted USB device is not attached.

    ``seen`` is every non-hub device the bus showed (for the caller to judge),
    ``instead`` one clause naming the plausible other device(s) and what to do
    ("" when there is none); ``str()`` is the whole line.
    """

    def __init__(self, message: str, seen: tuple[UsbSeen, ...] = (), instead: str = "") -> None:
        super().__init__(errno.ENODEV, f"{message}; {instead}" if instead else message)
        self.seen = seen
        self.instead = instead


class UsbWrongDeviceError(UsbDeviceMissingError):
    """The wanted device is absent and another device that plausibly stands in for it is
    there (another printer, the sensor at the printer's id): a configuration or a swap fixes it."""


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

    Raises :class:`UsbDeviceMissingError` (with what the bus holds instead) when no
    such device is attached.
    """
    import usb.core

    try:
        dev = usb.core.find(idVendor=vendor, idProduct=product, backend=backend)
    except usb.core.NoBackendError as exc:
        raise TransportUnavailableError(errno.ENODEV, "libusb is not installed") from exc
    if dev is None:
        raise UsbDeviceMissingError(f"no USB device {vendor:04x}:{product:04x}",
                                    list_usb(backend))
    found: UsbDevice = dev
    return found


def list_usb(backend: Any = None) -> tuple[UsbSeen, ...]:
    """Every device on the bus but hubs: ids, classes, and for the devices that may be a
    kiosk's sensor or printer (:func:`~agent.drivers.usb_ids.role_of`) the product string.

    Called only when the wanted device is missing. Reading a product string opens the
    device; one that refuses (no permission, a stall) is listed without it.
    """
    import usb.core
    import usb.util

    try:
        devices = list(usb.core.find(find_all=True, backend=backend))
    except (usb.core.USBError, usb.core.NoBackendError):
        return ()
    seen: list[UsbSeen] = []
    for dev in devices:
        try:
            classes = [int(dev.bDeviceClass)]
            classes += [int(intf.bInterfaceClass) for cfg in dev for intf in cfg]
        except (usb.core.USBError, NotImplementedError):
            classes = [int(dev.bDeviceClass)]
        if HUB_CLASS in classes:
            continue
        item = UsbSeen(int(dev.idVendor), int(dev.idProduct), tuple(dict.fromkeys(classes)))
        if role_of(item) is not None and dev.iProduct:
            name = ""
            with contextlib.suppress(usb.core.USBError, NotImplementedError, ValueError):
                name = usb.util.get_string(dev, dev.iProduct) or ""
            with contextlib.suppress(usb.core.USBError, NotImplementedError):
                usb.util.dispose_resources(dev)
            item = UsbSeen(item.vendor, item.product, item.classes, name)
        seen.append(item)
    return tuple(seen)


def usb_errno(exc: BaseException) -> int | None:
    """The errno a pyusb ``USBError`` carries (``USBTimeoutError`` -> ETIMEDOUT), else None."""
    import usb.core

    if isinstance(exc, usb.core.USBTimeoutError):
        return errno.ETIMEDOUT
    if isinstance(exc, usb.core.USBError):
        code = exc.errno
        return int(code) if code is not None else None
    return None


def claim_usb_interface(dev: UsbDevice, interface: int) -> None:
    """Take ``interface`` from any kernel driver, configure the device if needed, claim it.

    pyusb's ``USBError`` propagates (callers map its errno to their own faults).
    """
    import usb.core
    import usb.util

    try:
        if dev.is_kernel_driver_active(interface):
            dev.detach_kernel_driver(interface)
    except NotImplementedError:
        pass  # backends without kernel drivers (replay, Windows)
    try:
        dev.get_active_configuration()
    except usb.core.USBError:
        # Only an unconfigured device gets SET_CONFIGURATION: on a
        # configured one it is a needless reset of the device state
        # (and libfprint, whose traffic the sensor drivers follow, never sends it).
        dev.set_configuration()
    usb.util.claim_interface(dev, interface)


def release_usb(dev: UsbDevice, interface: int) -> None:
    """Release everything pyusb holds for the device (best effort: it may be gone)."""
    import usb.core
    import usb.util

    with contextlib.suppress(usb.core.USBError, NotImplementedError):
        usb.util.release_interface(dev, interface)
    with contextlib.suppress(usb.core.USBError, NotImplementedError):
        usb.util.dispose_resources(dev)


#: ``EVIOCGRAB``: _IOW('E', 0x90, int), exclusive access to an input device.
_EVIOCGRAB = 0x40044590


def open_evdev(path: str, *, grab: bool = True) -> BinaryIO:
    """Open an evdev node (``/dev/input/eventN`` or its udev symlink), unbuffered.

    With ``grab`` the device is taken exclusively (``EVIOCGRAB``) so its
    keystrokes reach no console or other program. Raises
    :class:`TransportUnavailableError` when it cannot be opened or grabbed.
    """
    try:
        fh = open(path, "rb", buffering=0)  # noqa: SIM115 - owned by the caller
    except OSError as exc:
        raise TransportUnavailableError(errno.ENODEV, f"cannot open {path}: {exc}") from exc
    if grab:
        try:
            fcntl.ioctl(fh.fileno(), _EVIOCGRAB, 1)
        except OSError as exc:
            fh.close()
            raise TransportUnavailableError(
                exc.errno or errno.EIO, f"cannot grab {path}: {exc}"
            ) from exc
    return fh


# --- printer links --------------------------------------------------------------------------


class LinkError(OSError):
    """A transfer failed. ``accepted`` is how many bytes of the failed write left the
    kiosk (None: unknown, e.g. a USB timeout, which pyusb does not report)."""

    def __init__(self, code: int, message: str, accepted: int | None = 0) -> None:
        super().__init__(code, message)
        self.accepted = accepted


class PrinterLink(Protocol):
    """A byte pipe to the printer: the only I/O the service does."""

    def write(self, data: bytes, timeout_s: float) -> int:
        """Send ``data``; return the bytes accepted before ``timeout_s`` (all of them on
        success). Raises :class:`LinkError` when the device fails or vanishes."""
        ...

    def read(self, size: int, timeout_s: float) -> bytes:
        """Up to ``size`` bytes, fewer (possibly none) when ``timeout_s`` passes."""
        ...

    def discard_input(self) -> None:
        """Drop stale received bytes."""
        ...

    def close(self) -> None:
        """Release the device (idempotent)."""
        ...


class SerialLink:
    """A serial port (``/dev/ttyUSB0``, ``/dev/serial0``, a pty) opened with pyserial.

    Writes go straight to the file descriptor with ``select`` so the number of
    bytes that really left is known when a write times out (pyserial's own
    write raises without saying how much it sent).
    """

    def __init__(self, port: str, baud: int) -> None:
        import serial

        try:
            self._ser = serial.Serial(port=port, baudrate=baud, timeout=0, write_timeout=None)
        except (serial.SerialException, OSError) as exc:
            raise TransportUnavailableError(errno.ENODEV, f"cannot open {port}: {exc}") from exc
        self._fd: int = self._ser.fileno()
        self.port = port

    def write(self, data: bytes, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        view = memoryview(data)
        sent = 0
        while sent < len(data):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return sent
            try:
                _, ready, _ = select.select([], [self._fd], [], remaining)
                if not ready:
                    return sent
                sent += os.write(self._fd, view[sent:])
            except BlockingIOError:
                continue
            except (OSError, ValueError) as exc:
                code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
                raise LinkError(code, f"write to {self.port} failed: {exc}", sent) from exc
        return sent

    def read(self, size: int, timeout_s: float) -> bytes:
        # select + os.read rather than pyserial's read: setting ``Serial.timeout``
        # re-applies the termios settings on every call.
        # A reader woken after its deadline (a loaded CPU) still takes what has
        # arrived: the last select has timeout 0, it is not skipped.
        deadline = time.monotonic() + timeout_s
        out = b""
        while len(out) < size:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                ready, _, _ = select.select([self._fd], [], [], remaining)
                if not ready:
                    break
                got = os.read(self._fd, size - len(out))
            except BlockingIOError:
                continue
            except (OSError, ValueError) as exc:
                code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
                raise LinkError(code, f"read from {self.port} failed: {exc}") from exc
            if not got:  # readable but empty: the device went away
                raise LinkError(errno.ENODEV, f"{self.port} disconnected")
            out += got
        return out

    def discard_input(self) -> None:
        import serial

        try:
            self._ser.reset_input_buffer()
        except (serial.SerialException, OSError, termios.error) as exc:
            # pyserial lets tcflush's termios.error (not an OSError) through: seen as
            # EIO on a port whose device vanished while it was open.
            raise LinkError(errno.EIO, f"flush of {self.port} failed: {exc}") from exc

    def close(self) -> None:
        try:
            self._ser.close()
        except OSError:
            log.debug("closing %s failed", self.port, exc_info=True)


class UsbLink:
    """A USB printer-class interface over pyusb: bulk OUT / bulk IN endpoints.

    Opening detaches the kernel's ``usblp`` driver from the interface, selects
    the configuration, claims the interface and takes the endpoints from the
    descriptors. ``port`` is ``usb`` (first printer-class device, or one of
    the ids in ``usb_ids``, the printer profile's) or ``usb:VVVV:PPPP``.
    """

    PRINTER_CLASS = PRINTER_CLASS

    def __init__(self, port: str, usb_ids: Sequence[tuple[int, int]] = (),
                 backend: Any = None) -> None:
        import usb.core
        import usb.util

        self.port = port
        dev = self._find(port, usb_ids, backend)
        try:
            cfg = dev.get_active_configuration()
        except usb.core.USBError:
            cfg = None
        try:
            if cfg is None:
                dev.set_configuration()
                cfg = dev.get_active_configuration()
            intf = usb.util.find_descriptor(
                cfg, custom_match=lambda i: i.bInterfaceClass == self.PRINTER_CLASS
            ) or cfg[(0, 0)]
            number = int(intf.bInterfaceNumber)
            try:
                if dev.is_kernel_driver_active(number):
                    dev.detach_kernel_driver(number)
            except NotImplementedError:  # backends without kernel drivers (simulator)
                pass
            usb.util.claim_interface(dev, number)
        except usb.core.USBError as exc:
            code = usb_errno(exc) or errno.EIO
            raise TransportUnavailableError(code, f"cannot claim {port}: {exc}") from exc

        def bulk(direction: int) -> Any:
            return usb.util.find_descriptor(
                intf,
                custom_match=lambda e: usb.util.endpoint_direction(e.bEndpointAddress) == direction
                and usb.util.endpoint_type(e.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK,
            )

        ep_out, ep_in = bulk(usb.util.ENDPOINT_OUT), bulk(usb.util.ENDPOINT_IN)
        if ep_out is None:
            raise TransportUnavailableError(errno.ENODEV, f"{port}: no bulk OUT endpoint")
        self._dev = dev
        self._interface = number
        self._out = int(ep_out.bEndpointAddress)
        self._in = int(ep_in.bEndpointAddress) if ep_in is not None else None
        self._in_size = int(ep_in.wMaxPacketSize) if ep_in is not None else 64
        self._pending = b""

    @classmethod
    def _find(cls, port: str, usb_ids: Sequence[tuple[int, int]], backend: Any) -> Any:
        import usb.core

        wanted: list[tuple[int, int]] = []
        if port.startswith("usb:"):
            try:
                vid_s, pid_s = port[4:].split(":")
                wanted = [(int(vid_s, 16), int(pid_s, 16))]
            except ValueError:
                raise ConfigError(f"{port!r} is not usb or usb:VVVV:PPPP",
                                  field="printer.port") from None
        elif port != "usb":
            raise ConfigError(f"{port!r} is not usb or usb:VVVV:PPPP", field="printer.port")
        else:
            wanted = list(usb_ids)

        def match(dev: Any) -> bool:
            if wanted:
                return (int(dev.idVendor), int(dev.idProduct)) in wanted
            return any(
                intf.bInterfaceClass == cls.PRINTER_CLASS for c in dev for intf in c
            )

        try:
            dev = usb.core.find(custom_match=match, backend=backend)
        except usb.core.NoBackendError as exc:
            raise TransportUnavailableError(errno.ENODEV, f"no libusb: {exc}") from exc
        if dev is None:
            raise cls._missing(port, list_usb(backend))
        if not any(intf.bInterfaceClass == cls.PRINTER_CLASS for c in dev for intf in c):
            this = UsbSeen(int(dev.idVendor), int(dev.idProduct))
            if role_of(this) == "fingerprint-sensor":
                # The sensor's id configured as the printer: claiming it and sending
                # ESC/POS would only end in "no reply"; say what it is instead.
                raise cls._missing(port, list_usb(backend), configured=describe(this))
        return dev

    @staticmethod
    def _missing(port: str, seen: tuple[UsbSeen, ...],
                 configured: str = "") -> UsbDeviceMissingError:
        """Why ``port`` found no printer, naming what is plugged instead (one line)."""
        message = (f"printer.port {port} names the {configured}, not a printer" if configured
                   else f"no USB printer for {port}")
        printers = plausible(seen, "printer")
        if printers:
            other = printers[0]
            if configured:
                return UsbWrongDeviceError(
                    message, seen, f"{describe(other)} is on USB: set printer.port to "
                    f'"usb:{other.ident}"')
            return UsbWrongDeviceError(
                message, seen,
                f"{describe(other)} is plugged instead: set printer.port to "
                f'"usb:{other.ident}" if it is the kiosk\'s printer, else plug '
                "the configured printer")
        if configured:
            return UsbWrongDeviceError(
                message, seen, "no printer on USB: plug the receipt printer and set "
                'printer.port to "usb"')
        sensors = plausible(seen, "fingerprint-sensor")
        if sensors:
            found = ", ".join(describe(s) for s in sensors)
            return UsbDeviceMissingError(
                message, seen, f"only {found} on USB: plug the receipt printer "
                "(the agent waits for it)")
        return UsbDeviceMissingError(message, seen)

    def write(self, data: bytes, timeout_s: float) -> int:
        import usb.core

        try:
            n = int(self._dev.write(self._out, data, timeout=max(1, int(timeout_s * 1000))))
        except usb.core.USBError as exc:
            code = usb_errno(exc) or errno.EIO
            # A timed-out bulk transfer may have moved part of the data; pyusb
            # does not say how much, so the caller must assume "some".
            accepted = None if code == errno.ETIMEDOUT else 0
            if code == errno.EPIPE:
                self._clear_halt()
            raise LinkError(code, f"bulk OUT on {self.port} failed: {exc}", accepted) from exc
        return n

    def read(self, size: int, timeout_s: float) -> bytes:
        import usb.core

        if self._in is None:
            return b""
        deadline = time.monotonic() + timeout_s
        out = self._pending
        tried = False
        while len(out) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and tried:  # at least one transfer, however late we woke
                break
            tried = True
            try:
                got = bytes(self._dev.read(self._in, self._in_size,
                                           timeout=max(1, int(remaining * 1000))))
            except usb.core.USBTimeoutError:
                break
            except usb.core.USBError as exc:
                code = usb_errno(exc) or errno.EIO
                raise LinkError(code, f"bulk IN on {self.port} failed: {exc}") from exc
            out += got
            if not got:
                time.sleep(min(0.01, max(0.0, remaining)))
        self._pending = out[size:]
        return out[:size]

    def discard_input(self) -> None:
        self._pending = b""
        while self.read(self._in_size, 0.01):
            pass
        self._pending = b""

    def _clear_halt(self) -> None:
        import usb.core

        try:
            self._dev.clear_halt(self._out)
        except usb.core.USBError:
            log.debug("clear_halt on %s failed", self.port, exc_info=True)

    def close(self) -> None:
        import usb.core
        import usb.util

        try:
            usb.util.release_interface(self._dev, self._interface)
            usb.util.dispose_resources(self._dev)
        except usb.core.USBError:
            log.debug("releasing %s failed", self.port, exc_info=True)
