"""The receipt-printer service the station application calls: status, print, close.

Layers: a byte link (:class:`PrinterLink`: pyserial or pyusb behind a narrow
protocol) -> the pure ESC/POS codec (:mod:`agent.drivers.escpos`) and status
decoder (:mod:`agent.drivers.printer_status`) -> :class:`ReceiptPrinter`.

Every slip is bracketed by status reads. What happened is a value, never an
exception: :class:`Printed`, :class:`NotPrinted` (no byte left the kiosk: the
application may print the *original* again) or :class:`Uncertain` (bytes were
sent but the printer did not confirm the slip: an original may exist, so the
application prints a DUPLICATE). Exceptions are for bugs and bad input only
(:class:`~agent.drivers.escpos.DocumentError`, ...). A failed status read
drops the link and reopens it (the vxsuite recovery pattern), so an unplugged
and re-plugged printer comes back without restarting the agent.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.drivers.document import Document
from agent.drivers.escpos import (
    STATUS_QUERY,
    TransmitStatus,
    encode_document,
    resync_padding,
)
from agent.drivers.printer_profiles import (
    DEFAULT_TIMINGS,
    PrinterProfile,
    PrinterTimings,
    get_profile,
)
from agent.drivers.printer_status import (
    PrinterState,
    PrinterStatus,
    StatusReplyError,
    decode_status,
)
from agent.drivers.transport import TransportUnavailableError, usb_errno
from agent.runtime.config import ConfigError, PrinterConfig

__all__ = [
    "LinkError",
    "NotPrinted",
    "PrintOutcome",
    "Printed",
    "PrinterLink",
    "PrinterState",
    "PrinterStatus",
    "ReceiptPrinter",
    "SerialLink",
    "Uncertain",
    "UsbLink",
    "open_printer",
]

log = logging.getLogger(__name__)

_BARRIER = TransmitStatus(1).to_bytes()
#: Bits that are always 0 in a ``GS r 1`` reply (4 and 7 fixed, 5-6 reserved).
_GS_R_FIXED_MASK = 0xF0


# --- outcomes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Printed:
    """The printer processed the whole slip, cut included, and is still healthy."""

    status_after: PrinterStatus


@dataclass(frozen=True)
class NotPrinted:
    """Nothing was sent (printer not ready, or unreachable): safe to retry as the ORIGINAL."""

    status: PrinterStatus


@dataclass(frozen=True)
class Uncertain:
    """Bytes were sent but the slip was not confirmed: reprint only as a DUPLICATE."""

    status: PrinterStatus
    detail: str = ""


PrintOutcome = Printed | NotPrinted | Uncertain


# --- links --------------------------------------------------------------------------


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
        deadline = time.monotonic() + timeout_s
        out = b""
        while len(out) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
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
        except (serial.SerialException, OSError) as exc:
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
    the profile's known ids) or ``usb:VVVV:PPPP``.
    """

    PRINTER_CLASS = 7

    def __init__(self, port: str, profile: PrinterProfile, backend: Any = None) -> None:
        import usb.core
        import usb.util

        self.port = port
        dev = self._find(port, profile, backend)
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
    def _find(cls, port: str, profile: PrinterProfile, backend: Any) -> Any:
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
            wanted = list(profile.usb_ids)

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
            raise TransportUnavailableError(errno.ENODEV, f"no USB printer for {port}")
        return dev

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
        while len(out) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
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


# --- the service --------------------------------------------------------------------


class ReceiptPrinter:
    """An ESC/POS receipt printer: ``status()``, ``print_document()``, ``close()``.

    Thread-safe (one lock around each operation). ``opener`` (re)opens the link;
    it may raise :class:`TransportUnavailableError` while the printer is absent.
    """

    def __init__(
        self,
        opener: Callable[[], PrinterLink],
        profile: PrinterProfile,
        timings: PrinterTimings = DEFAULT_TIMINGS,
    ) -> None:
        self._opener = opener
        self.profile = profile
        self.timings = timings
        self._link: PrinterLink | None = None
        self._lock = threading.Lock()
        self._last_state: PrinterState | None = None
        #: A write failed midway: the printer may be inside a command.
        self._resync = False

    # -- link management
    def _ensure_link(self) -> PrinterLink:
        if self._link is None:
            self._link = self._opener()
        return self._link

    def _drop_link(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

    # -- status
    def status(self) -> PrinterStatus:
        """Query ``DLE EOT 1-4`` and return the printer's state (never raises for device faults)."""
        with self._lock:
            return self._status()

    def _status(self) -> PrinterStatus:
        failure = PrinterStatus(PrinterState.DISCONNECTED, None, "not opened")
        for attempt in range(2):
            if attempt:
                time.sleep(self.timings.reopen_delay_s)
            try:
                link = self._ensure_link()
            except TransportUnavailableError as exc:
                failure = PrinterStatus(PrinterState.DISCONNECTED, None, str(exc))
                continue
            try:
                link.discard_input()
                raw = self._query(link)
                status = decode_status(raw, self.profile.status)
            except LinkError as exc:
                failure = PrinterStatus(PrinterState.DISCONNECTED, None, str(exc))
            except _NoReplyError as exc:
                failure = PrinterStatus(PrinterState.DISCONNECTED, None, str(exc))
            except StatusReplyError as exc:
                failure = PrinterStatus(PrinterState.ERROR, None, str(exc))
            else:
                self._note(status)
                return status
            log.info("printer status read failed (%s); reopening", failure.detail)
            self._drop_link()
        self._note(failure)
        return failure

    def _query(self, link: PrinterLink) -> bytes:
        timeout = self.timings.status_timeout_s
        if self._resync:
            # Complete a half-sent command first, or the query is read as its data.
            _, failure = self._send(link, resync_padding(self.profile))
            if failure is not None:
                raise _NoReplyError(f"resync padding not accepted: {failure}")
            self._resync = False
        if link.write(STATUS_QUERY, timeout) != len(STATUS_QUERY):
            raise _NoReplyError("status query not accepted")
        raw = _read_exact(link, 4, timeout)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("DLE EOT 1-4 -> %s", raw.hex(" "))
        if len(raw) < 4:
            raise _NoReplyError(f"no reply to DLE EOT (got {len(raw)} of 4 bytes)")
        return raw

    def _note(self, status: PrinterStatus) -> None:
        # Log on change only: a printer polled every minute must not flood the log.
        if status.state is not self._last_state:
            log.info("printer %s%s", status.state.value,
                     f" ({status.detail})" if status.detail else "")
            self._last_state = status.state

    # -- printing
    def print_document(self, doc: Document) -> PrintOutcome:
        """Print ``doc`` with status checks before and after; see the module docstring.

        Raises :class:`~agent.drivers.escpos.DocumentError` or
        :class:`~agent.drivers.escpos.FontMissingError` (before any I/O) for a
        document that cannot be encoded.
        """
        data = encode_document(doc, self.profile)
        with self._lock:
            before = self._status()
            if not before.printable or self._link is None:
                return NotPrinted(before)
            link = self._link
            sent, failure = self._send(link, data)
            if failure is not None:
                self._drop_link()
                if sent == 0:
                    return NotPrinted(self._status())
                self._resync = True
                return Uncertain(self._status(), failure)
            return self._confirm(link, len(data))

    def _send(self, link: PrinterLink, data: bytes) -> tuple[int | None, str | None]:
        """Write ``data`` in profile-sized chunks: (bytes known sent or None, failure or None)."""
        chunk = self.profile.write_chunk
        sent = 0
        for start in range(0, len(data), chunk):
            piece = data[start : start + chunk]
            try:
                n = link.write(piece, self.timings.write_timeout_s)
            except LinkError as exc:
                if exc.accepted is None:
                    return None, str(exc)
                return sent + exc.accepted, str(exc)
            sent += n
            if n < len(piece):
                return sent, f"write stalled after {sent} of {len(data)} bytes"
        return sent, None

    def _confirm(self, link: PrinterLink, size: int) -> PrintOutcome:
        """Wait until the printer has processed the slip, then read the status after it."""
        if self.profile.transmit_status:
            budget = self.timings.print_timeout_s + self.timings.print_timeout_per_kib_s * (
                size / 1024
            )
            problem = self._await_barrier(link, budget)
            if problem is not None:
                self._drop_link()
                return Uncertain(self._status(), problem)
        after = self._status()
        if after.printable:
            return Printed(after)
        return Uncertain(after, "printer not ready after the slip")

    def _await_barrier(self, link: PrinterLink, budget_s: float) -> str | None:
        """Send ``GS r 1`` and wait for its reply, polling ``DLE EOT`` meanwhile.

        ``GS r`` is answered only once everything before it (the slip and its
        cut) has been processed; ``DLE EOT`` is answered at once. The replies
        are told apart by bit 4 (always 1 in DLE EOT replies; a ``GS r 1``
        reply has bits 4-7 clear). Returns None when confirmed, else why not.
        """
        deadline = time.monotonic() + budget_s
        try:
            if link.write(_BARRIER, self.timings.write_timeout_s) != len(_BARRIER):
                return "could not send the end-of-slip query"
            status_bytes = b""
            outstanding = 0  # DLE EOT reply bytes asked for and not yet received
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "printer did not confirm the slip in time"
                got = link.read(1, min(self.timings.barrier_poll_s, remaining))
                if got and got[0] & _GS_R_FIXED_MASK == 0:
                    # Confirmed. Collect replies to polls still in flight so they
                    # cannot be mistaken for the answer to the next status query.
                    if outstanding:
                        _read_exact(link, outstanding, self.timings.status_timeout_s)
                    return None
                if got and got[0] & 0x10:
                    status_bytes += got
                    outstanding -= 1
                    if len(status_bytes) == 4:
                        st = decode_status(status_bytes, self.profile.status)
                        status_bytes = b""
                        if not st.printable:
                            return f"printer stopped mid-slip: {st.state.value}"
                    continue
                if got:
                    log.debug("ignoring stray byte %02x while waiting for the slip", got[0])
                    continue
                if outstanding == 0:
                    link.write(STATUS_QUERY, self.timings.write_timeout_s)
                    outstanding = 4
        except (LinkError, StatusReplyError) as exc:
            return f"link failed while printing: {exc}"

    def close(self) -> None:
        """Release the device."""
        with self._lock:
            self._drop_link()

    def __enter__(self) -> ReceiptPrinter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _NoReplyError(Exception):
    """Internal: the printer did not answer a status query in time."""


def _read_exact(link: PrinterLink, size: int, timeout_s: float) -> bytes:
    deadline = time.monotonic() + timeout_s
    out = b""
    while len(out) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        out += link.read(size - len(out), remaining)
    return out


def open_printer(
    cfg: PrinterConfig,
    *,
    timings: PrinterTimings = DEFAULT_TIMINGS,
    usb_backend: Any = None,
) -> ReceiptPrinter:
    """A :class:`ReceiptPrinter` for ``cfg`` (kinds ``escpos-serial`` and ``escpos-usb``).

    The device is opened lazily: an absent printer gives a service whose
    ``status()`` is DISCONNECTED until it appears. An unknown profile or a
    malformed USB port raises :class:`~agent.runtime.config.ConfigError`.
    ``usb_backend`` is a pyusb backend (the simulator's, in tests).
    """
    profile = get_profile(cfg.profile)
    opener: Callable[[], PrinterLink]
    if cfg.kind == "escpos-serial":
        def opener() -> PrinterLink:
            return SerialLink(cfg.port, cfg.baud)
    elif cfg.kind == "escpos-usb":
        if cfg.port != "usb" and not cfg.port.startswith("usb:"):
            raise ConfigError(f"{cfg.port!r} is not usb or usb:VVVV:PPPP", field="printer.port")

        def opener() -> PrinterLink:
            return UsbLink(cfg.port, profile, usb_backend)
    else:
        raise ConfigError(f"unknown printer kind {cfg.kind!r}", field="printer.kind")
    return ReceiptPrinter(opener, profile, timings)
