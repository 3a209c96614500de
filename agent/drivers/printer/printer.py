"""The receipt-printer service the station application calls: status, print, close.

Layers: a byte link (:class:`~agent.drivers.transport.PrinterLink`: pyserial
or pyusb, opened by :mod:`agent.drivers.transport`) -> the pure ESC/POS
encoder (:mod:`.encoder`) and status decoder (:mod:`.status`) ->
:class:`ReceiptPrinter`.

Every slip is bracketed by status reads. What happened is a value, never an
exception: :class:`~.status.Printed`, :class:`~.status.NotPrinted` (no byte
left the kiosk: the application may print the *original* again) or
:class:`~.status.Uncertain` (bytes were sent but the printer did not confirm
the slip: an original may exist, so the application prints a DUPLICATE).
Exceptions are for bugs and bad input only
(:class:`~agent.drivers.printer.errors.DocumentError`, ...). A failed status
read drops the link and reopens it (the vxsuite recovery pattern), so an
unplugged and re-plugged printer comes back without restarting the agent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.drivers.printer.document import Document
from agent.drivers.printer.encoder import encode_document, resync_padding
from agent.drivers.printer.errors import StatusReplyError
from agent.drivers.printer.escpos import STATUS_QUERY, TransmitStatus
from agent.drivers.printer.profiles import (
    DEFAULT_TIMINGS,
    PrinterProfile,
    PrinterTimings,
    get_profile,
)
from agent.drivers.printer.status import (
    NotPrinted,
    Printed,
    PrinterState,
    PrinterStatus,
    PrintOutcome,
    Uncertain,
    decode_status,
)
from agent.drivers.probe import grow_answers
from agent.drivers.transport import (
    LinkError,
    PrinterLink,
    SerialLink,
    TransportUnavailableError,
    UsbDeviceMissingError,
    UsbLink,
    UsbWrongDeviceError,
)
from agent.runtime.config import ConfigError, PrinterConfig

__all__ = ["ReceiptPrinter", "open_printer"]

log = logging.getLogger(__name__)

_BARRIER = TransmitStatus(1).to_bytes()
#: Bits that are always 0 in a ``GS r 1`` reply (4 and 7 fixed, 5-6 reserved).
_GS_R_FIXED_MASK = 0xF0

# --- the service --------------------------------------------------------------------


class ReceiptPrinter:
    """An ESC/POS receipt printer: ``status()``, ``print_document()``, ``close()``.

    Thread-safe (one lock around each operation). ``opener`` (re)opens the link;
    it may raise :class:`TransportUnavailableError` while the printer is absent.
    ``identify`` names another device answering at the printer's port (the
    status is then WRONG_DEVICE); it runs only where nothing has answered
    ``DLE EOT`` since the port appeared, once until the port vanishes.
    """

    def __init__(
        self,
        opener: Callable[[], PrinterLink],
        profile: PrinterProfile,
        timings: PrinterTimings = DEFAULT_TIMINGS,
        identify: Callable[[], str] | None = None,
    ) -> None:
        self._opener = opener
        #: Asked once per silence (the link opens, nothing answers DLE EOT) what
        #: answers there instead: one line with the fix, or "" (nothing known).
        self._identify = identify
        self._silence: str | None = None
        #: A printer answered at this port since it (re)appeared: a later silence is
        #: that printer's (a lost reply, power), never probed with another protocol.
        self._answered = False
        self.profile = profile
        self.timings = timings
        self._link: PrinterLink | None = None
        self._lock = threading.Lock()
        self._last_key: tuple[PrinterState, str] | None = None
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
        silent = False
        for attempt in range(2):
            if attempt:
                time.sleep(self.timings.reopen_delay_s)
            silent = False
            try:
                link = self._ensure_link()
            except UsbDeviceMissingError as exc:
                # The line without "[Errno 19]": it is read by the technician.
                state = (PrinterState.WRONG_DEVICE if isinstance(exc, UsbWrongDeviceError)
                         else PrinterState.DISCONNECTED)
                failure = PrinterStatus(state, None, exc.strerror or str(exc), exc.instead)
                continue
            except TransportUnavailableError as exc:
                failure = PrinterStatus(PrinterState.DISCONNECTED, None, str(exc))
                # The port vanished: whatever is plugged next is new.
                self._silence, self._answered = None, False
                continue
            try:
                link.discard_input()
                raw = self._query(link)
                status = decode_status(raw, self.profile.status)
            except LinkError as exc:
                failure = PrinterStatus(PrinterState.DISCONNECTED, None, str(exc))
            except _NoReplyError as exc:
                failure = PrinterStatus(PrinterState.DISCONNECTED, None, str(exc))
                silent = True
            except StatusReplyError as exc:
                failure = PrinterStatus(PrinterState.ERROR, None, str(exc))
            else:
                self._silence, self._answered = None, True
                self._note(status)
                return status
            log.info("printer status read failed (%s); reopening", failure.detail)
            self._drop_link()
        if silent and not self._answered and self._identify is not None:
            if self._silence is None:
                self._silence = self._identify()  # the link is dropped: the port is free
            if self._silence:
                failure = PrinterStatus(PrinterState.WRONG_DEVICE, None, self._silence,
                                        self._silence)
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
        # What is plugged instead counts as a change (another device swapped in).
        key = (status.state, status.instead)
        if key != self._last_key:
            log.info("printer %s%s", status.state.value,
                     f" ({status.detail})" if status.detail else "")
            self._last_key = key

    # -- printing
    def print_document(self, doc: Document) -> PrintOutcome:
        """Print ``doc`` with status checks before and after; see the module docstring.

        Raises :class:`~agent.drivers.printer.errors.DocumentError` or
        :class:`~agent.drivers.printer.errors.FontMissingError` (before any I/O) for a
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
        for _ in range(self.timings.status_rereads):
            # No answer is not an answer: before calling the slip uncertain (a
            # DUPLICATE for the voter), ask again. A printer that reports a
            # condition (paper out, cover open) is believed at once.
            if after.printable or after.flags is not None:
                break
            log.info("no status after the slip (%s); reading it again", after.detail)
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
    """Up to ``size`` bytes within ``timeout_s``. Past the deadline one more read with
    timeout 0 takes what has arrived: on a loaded CPU the reader may wake late, after
    the reply is already waiting (seen as "no reply to DLE EOT" and a spurious DUPLICATE).
    """
    deadline = time.monotonic() + timeout_s
    out = b""
    while len(out) < size:
        remaining = max(0.0, deadline - time.monotonic())
        got = link.read(size - len(out), remaining)
        out += got
        if not got and remaining <= 0:
            break
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
    identify: Callable[[], str] | None = None
    if cfg.kind == "escpos-serial":
        def opener() -> PrinterLink:
            return SerialLink(cfg.port, cfg.baud)

        def identify() -> str:
            if grow_answers(cfg.port) is None:
                return ""
            return (f"a fingerprint sensor answers at {cfg.port} (Grow module), not a "
                    "printer; printer.port must name the printer's port: are the "
                    "sensor's and the printer's cables (USB ports) swapped?")
    elif cfg.kind == "escpos-usb":
        if cfg.port != "usb" and not cfg.port.startswith("usb:"):
            raise ConfigError(f"{cfg.port!r} is not usb or usb:VVVV:PPPP", field="printer.port")

        def opener() -> PrinterLink:
            return UsbLink(cfg.port, profile.usb_ids, usb_backend)
    else:
        raise ConfigError(f"unknown printer kind {cfg.kind!r}", field="printer.kind")
    return ReceiptPrinter(opener, profile, timings, identify)
