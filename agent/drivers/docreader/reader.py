"""ID-document readers: MRZ lines from a serial reader or a keyboard-wedge reader.

Two kinds of reader are in the field:

* **Serial** (RS-232, or USB CDC-ACM / a USB-serial bridge: ``/dev/ttyACM0``,
  ``/dev/ttyUSB0``): the reader sends each MRZ line as ASCII terminated by
  CR, LF or CR LF, sometimes wrapped in STX/ETX, sometimes the whole zone as
  one line. :class:`SerialDocumentReader`.
* **Keyboard wedge** (USB HID): the reader "types" each line and presses
  Enter. Assumption: a udev rule gives the reader a stable name
  (``/dev/input/by-id/usb-<vendor>_<model>-event-kbd`` or a ``SYMLINK+=``
  such as ``/dev/kesp-docreader``) and the agent reads its evdev node
  *exclusively* (``EVIOCGRAB``) so the keystrokes never reach a console or
  another program. :class:`EvdevDecoder` turns raw ``struct input_event``
  records into text (US layout: ``<`` is Shift+comma, the usual wedge
  setting); :class:`KeyboardDocumentReader` reads any text stream (the
  decoded evdev stream, a pipe from another decoder, or a file in tests).

Both feed :class:`MrzAssembler`, a pure line assembler (no I/O) that is robust
to garbage, partial lines and missing lines: it recognises each line's role
(TD1 line 1 has a document code and digits, line 2 starts with a date, line 3
is names; TD3 line 1 starts with ``P`` and has no digits) so that a document
read half-way never shifts the next one. Outcomes are values: a parsed zone
(:class:`MrzRead`) or a rejected read (:class:`MrzRejected`, the voter
presents the document again). A reader that disappears raises
:class:`agent.drivers.transport.TransportUnavailableError`.
"""

from __future__ import annotations

import datetime as _dt
import errno
import logging
import re
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import BinaryIO, Literal, TextIO

from agent.drivers.docreader.mrz import MRZ, TD1_LINE, TD3_LINE, MRZError, MrzFormat, parse_mrz
from agent.drivers.transport import SerialPort, TransportUnavailableError, open_evdev, open_serial

__all__ = [
    "EvdevDecoder",
    "EvdevDocumentReader",
    "KeyboardDocumentReader",
    "MrzAssembler",
    "MrzRead",
    "MrzRejected",
    "ReadOutcome",
    "ReaderStatus",
    "SerialDocumentReader",
]

log = logging.getLogger(__name__)

# Longest run of bytes without a terminator we keep; anything longer is noise.
MAX_LINE = 256
# A serial reader sends a whole zone within a few ms; a pending block older
# than this with no new bytes is incomplete.
IDLE_FLUSH_S = 0.3

_CONTROL = re.compile(r"[\x00-\x1f\x7f ]+")
_TD1_LINE1 = re.compile(r"^[ACI][A-Z0-9<][A-Z<]{3}")
_TD3_LINE1 = re.compile(r"^P[A-Z0-9<][A-Z<]{3}[A-Z<]*$")
_MRZ_CHARS = re.compile(r"^[A-Z0-9<]+$")


class ReaderStatus(Enum):
    """Closed status of a document reader (logged on change)."""

    READY = "ready"
    UNPLUGGED = "unplugged"


@dataclass(frozen=True)
class MrzRead:
    """A zone that passed every check."""

    mrz: MRZ

    @property
    def format(self) -> MrzFormat:
        """``td1`` or ``td3``."""
        return self.mrz.format


@dataclass(frozen=True)
class MrzRejected:
    """A read that did not yield a valid zone; ``problem`` is an audit-safe token."""

    format: MrzFormat | Literal["unknown"]
    problem: str
    message: str


ReadOutcome = MrzRead | MrzRejected


def _fmt_of(length: int) -> MrzFormat:
    return "td1" if length == TD1_LINE else "td3"


def _lines_needed(fmt: MrzFormat) -> int:
    return 3 if fmt == "td1" else 2


def _is_first_line(line: str) -> bool:
    if len(line) == TD1_LINE:
        return bool(_TD1_LINE1.match(line)) and any(c.isdigit() for c in line)
    return bool(_TD3_LINE1.match(line))


class MrzAssembler:
    """Turns reader text into :data:`ReadOutcome` values; pure, no I/O, no clock.

    Feed text as it arrives (any chunking); call :meth:`flush` when the reader
    has been idle, so that a document read only partly is reported.
    """

    def __init__(self, *, today: _dt.date | None = None) -> None:
        self._today = today
        self._partial = ""
        self._pending: list[str] = []
        self._orphaned: MrzFormat | None = None
        #: Lines discarded as noise (not MRZ-shaped), for diagnostics.
        self.garbage_lines = 0

    @property
    def pending(self) -> bool:
        """Whether a document is partly assembled (or unterminated text is buffered)."""
        return bool(self._pending or self._partial or self._orphaned)

    def feed(self, text: str) -> list[ReadOutcome]:
        """Add received text; return the outcomes completed by it."""
        out: list[ReadOutcome] = []
        parts = re.split(r"[\r\n\x03]", self._partial + text)
        self._partial = parts.pop()
        if len(self._partial) > MAX_LINE:
            self._partial = ""
            self.garbage_lines += 1
            out += self._break()
        for raw in parts:
            out += self._line(raw)
        return out

    def flush(self) -> list[ReadOutcome]:
        """End of a burst: an unterminated last line is taken as a line, then what is
        still incomplete is reported as rejected."""
        out: list[ReadOutcome] = []
        if self._partial:
            raw, self._partial = self._partial, ""
            out += self._line(raw)
        return out + self._break()

    def _break(self) -> list[ReadOutcome]:
        """Report (and drop) whatever is incomplete."""
        out: list[ReadOutcome] = []
        if self._pending:
            fmt = _fmt_of(len(self._pending[0]))
            n = len(self._pending) + 1
            out.append(MrzRejected(fmt, f"line{n}.missing", f"MRZ line {n} was not received"))
            self._pending = []
        if self._orphaned is not None:
            out.append(MrzRejected(self._orphaned, "line1.missing", "MRZ line 1 was not received"))
            self._orphaned = None
        return out

    def _line(self, raw: str) -> list[ReadOutcome]:
        line = _CONTROL.sub("", raw)
        if not line:
            return []
        if _MRZ_CHARS.match(line) and len(line) in (3 * TD1_LINE, 2 * TD3_LINE):
            # The whole zone sent as one line.
            width = TD1_LINE if len(line) == 3 * TD1_LINE else TD3_LINE
            out: list[ReadOutcome] = []
            for i in range(0, len(line), width):
                out += self._line(line[i : i + width])
            return out
        if len(line) not in (TD1_LINE, TD3_LINE) or not _MRZ_CHARS.match(line):
            self.garbage_lines += 1
            return self._break()
        out = []
        if self._pending and len(self._pending[0]) != len(line):
            out += self._break()
        if self._orphaned is not None and (
            _is_first_line(line) or _fmt_of(len(line)) != self._orphaned
        ):
            out += self._break()
        if _is_first_line(line):
            out += self._break()
            self._pending = [line]
        elif self._pending:
            self._pending.append(line)
        else:
            # A continuation line without its first line: remember, report once.
            self._orphaned = _fmt_of(len(line))
            return out
        fmt = _fmt_of(len(line))
        if len(self._pending) == _lines_needed(fmt):
            lines, self._pending = self._pending, []
            out.append(self._parse(lines, fmt))
        return out

    def _parse(self, lines: list[str], fmt: MrzFormat) -> ReadOutcome:
        try:
            return MrzRead(parse_mrz(lines, today=self._today))
        except MRZError as exc:
            return MrzRejected(exc.format or fmt, exc.code, str(exc))


class SerialDocumentReader:
    """A document reader on a serial port (see the module docstring)."""

    def __init__(
        self,
        port: SerialPort,
        *,
        idle_flush_s: float = IDLE_FLUSH_S,
        today: _dt.date | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._port = port
        self._port.timeout = 0.05  # short reads so idle gaps and deadlines are noticed
        self._assembler = MrzAssembler(today=today)
        self._queue: deque[ReadOutcome] = deque()
        self._idle = idle_flush_s
        self._clock = clock
        self._last_rx = clock()
        self.status = ReaderStatus.READY

    @classmethod
    def open(
        cls,
        path: str,
        baudrate: int = 9600,
        *,
        idle_flush_s: float = IDLE_FLUSH_S,
        today: _dt.date | None = None,
    ) -> SerialDocumentReader:
        """Open the reader at ``path`` (8N1, no flow control)."""
        return cls(open_serial(path, baudrate, 0.05), idle_flush_s=idle_flush_s, today=today)

    @property
    def garbage_lines(self) -> int:
        """Lines discarded as noise so far."""
        return self._assembler.garbage_lines

    def read(self, timeout: float) -> ReadOutcome | None:
        """The next outcome, or None if nothing complete arrived within ``timeout`` seconds."""
        deadline = self._clock() + timeout
        while not self._queue:
            try:
                chunk = self._port.read(256)
            except OSError as exc:  # pyserial's SerialException is an OSError
                self.status = ReaderStatus.UNPLUGGED
                raise TransportUnavailableError(errno.ENODEV, f"document reader: {exc}") from exc
            now = self._clock()
            if chunk:
                self._last_rx = now
                self._queue.extend(self._assembler.feed(chunk.decode("ascii", "replace")))
            elif self._assembler.pending and now - self._last_rx >= self._idle:
                self._queue.extend(self._assembler.flush())
            if not self._queue and now >= deadline:
                return None
        return self._queue.popleft()

    def close(self) -> None:
        """Release the port."""
        self._port.close()


class KeyboardDocumentReader:
    """A keyboard-wedge reader seen as a text stream (one MRZ line per typed line).

    Lower case is folded to upper case (a wedge typing with Caps Lock on).
    Reading blocks on the stream; an incomplete document is reported when the
    next document starts or at end of stream.
    """

    def __init__(self, stream: TextIO, *, today: _dt.date | None = None) -> None:
        self._stream = stream
        self._assembler = MrzAssembler(today=today)
        self._queue: deque[ReadOutcome] = deque()

    def read(self) -> ReadOutcome | None:
        """The next outcome; None at end of stream."""
        while not self._queue:
            line = self._stream.readline()
            if not line:
                self._queue.extend(self._assembler.flush())
                if not self._queue:
                    return None
                break
            self._queue.extend(self._assembler.feed(line.upper()))
        return self._queue.popleft()

    def __iter__(self) -> Iterator[ReadOutcome]:
        while (outcome := self.read()) is not None:
            yield outcome


# ------------------------------------------------------------------- evdev

_EVENT = struct.Struct("@llHHi")  # struct input_event: timeval, type, code, value
_EV_KEY = 1
_KEY_LEFTSHIFT, _KEY_RIGHTSHIFT, _KEY_CAPSLOCK = 42, 54, 58
_KEY_ENTER, _KEY_KPENTER = 28, 96
# linux/input-event-codes.h, US layout: code -> (plain, shifted)
_KEYMAP: dict[int, tuple[str, str]] = {
    **{2 + i: (d, s) for i, (d, s) in enumerate(zip("1234567890", "!@#$%^&*()", strict=True))},
    **{16 + i: (c.lower(), c) for i, c in enumerate("QWERTYUIOP")},
    **{30 + i: (c.lower(), c) for i, c in enumerate("ASDFGHJKL")},
    **{44 + i: (c.lower(), c) for i, c in enumerate("ZXCVBNM")},
    51: (",", "<"),
    52: (".", ">"),
    57: (" ", " "),
    12: ("-", "_"),
}


class EvdevDecoder:
    """Decodes ``struct input_event`` records of a keyboard-wedge reader into text.

    Key presses and auto-repeats produce characters, Enter produces ``\\n``,
    Shift and Caps Lock are tracked; unmapped keys produce ``?`` so the line
    they land in is rejected instead of silently shortened.
    """

    def __init__(self) -> None:
        self._buf = b""
        self._shift: set[int] = set()
        self._caps = False

    def feed(self, data: bytes) -> str:
        """Add raw event bytes (any chunking); return the text they type."""
        self._buf += data
        out: list[str] = []
        n = len(self._buf) // _EVENT.size * _EVENT.size
        for _sec, _usec, etype, code, value in _EVENT.iter_unpack(self._buf[:n]):
            if etype != _EV_KEY:
                continue
            if code in (_KEY_LEFTSHIFT, _KEY_RIGHTSHIFT):
                if value:
                    self._shift.add(code)
                else:
                    self._shift.discard(code)
                continue
            if value == 0:
                continue
            if code == _KEY_CAPSLOCK:
                self._caps = not self._caps if value == 1 else self._caps
            elif code in (_KEY_ENTER, _KEY_KPENTER):
                out.append("\n")
            elif code in _KEYMAP:
                plain, shifted = _KEYMAP[code]
                shift = bool(self._shift)
                if plain.isalpha() and self._caps:
                    shift = not shift
                out.append(shifted if shift else plain)
            else:
                out.append("?")
        self._buf = self._buf[n:]
        return "".join(out)


class EvdevDocumentReader:
    """A keyboard-wedge reader read from its evdev node (or any stream of input events)."""

    def __init__(self, stream: BinaryIO, *, today: _dt.date | None = None) -> None:
        self._stream = stream
        self._decoder = EvdevDecoder()
        self._assembler = MrzAssembler(today=today)
        self._queue: deque[ReadOutcome] = deque()

    @classmethod
    def open(
        cls, path: str, *, grab: bool = True, today: _dt.date | None = None
    ) -> EvdevDocumentReader:
        """Open ``/dev/input/eventN`` (via its udev symlink), grabbing it exclusively."""
        fh = open_evdev(path, grab=grab)
        return cls(fh, today=today)

    def read(self) -> ReadOutcome | None:
        """The next outcome; None when the device or stream ends."""
        while not self._queue:
            data = self._stream.read(_EVENT.size * 64)
            if not data:
                self._queue.extend(self._assembler.flush())
                if not self._queue:
                    return None
                break
            text = self._decoder.feed(data).upper()
            self._queue.extend(self._assembler.feed(text))
        return self._queue.popleft()

    def close(self) -> None:
        """Release the device (ends the grab)."""
        self._stream.close()
