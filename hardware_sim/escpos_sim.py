"""A simulated ESC/POS receipt printer: the device side of the byte protocol, with faults.

The simulator decodes the stream with the production parser
(:class:`agent.drivers.printer.escpos.EscposParser`) and the same profile tables the
encoder uses (code pages, status layout), answers ``DLE EOT`` at once and
``GS r`` in order, and renders every slip (everything up to a cut) to
``NNNN.png`` plus ``NNNN.txt`` (the decoded text; raster images appear as
``[raster WxH]``, QR codes as ``[QR data]``).

Transports: a real pty (:class:`EscposPrinterSimulator`; the agent opens
``.path`` with pyserial, a symlink that survives unplug/replug) and a pyusb
backend (:class:`EscposUsbSimulator`; its ``backend`` goes to
``usb.core.find``). Faults: a finite paper roll (near end, then out, possibly
mid-slip; the printer holds the rest of the slip until
:meth:`~EscposPrinterSimulator.load_paper`, as real printers do), cover open,
offline, slow or stalled reading, unplug, garbled status replies.
"""

from __future__ import annotations

import argparse
import collections
import errno
import logging
import os
import select
import sys
import threading
import time
from collections.abc import Iterator, MutableSequence, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import numpy.typing as npt
import usb.backend
from PIL import Image, ImageDraw

from agent.drivers.printer import escpos as e
from agent.drivers.printer.document import Align
from agent.drivers.printer.profiles import (
    FONT_MONO,
    FONT_MONO_BOLD,
    FONT_REGULAR,
    PROFILES,
    SIMULATOR_DEFAULT_PROFILE,
    PrinterProfile,
    get_profile,
)
from agent.drivers.printer.render import load_font
from agent.drivers.printer.status import encode_status
from hardware_sim.link import PtyLink
from hardware_sim.usb_bus import string_descriptor

log = logging.getLogger(__name__)

#: Thermal heads print 8 dots per mm (203 dpi).
DOTS_PER_MM = 8
#: Font A cell and the default line pitch (ESC 2).
CELL_W, CELL_H, DEFAULT_LINE_DOTS = 12, 24, 30
#: The near-end sensor trips when this much paper is left on the roll.
DEFAULT_NEAR_END_MM = 300.0


# --- scenarios ----------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A named fault set-up a technician (or a test) can rehearse."""

    name: str
    description: str
    #: Paper left on the roll in mm (None: endless).
    paper_mm: float | None = None
    near_end_mm: float = DEFAULT_NEAR_END_MM
    cover_open: bool = False
    offline: bool = False
    #: Throughput of the simulated printer's input (None: as fast as the pty).
    bytes_per_s: float | None = None
    #: Stop reading input after this many bytes (the host's writes then block).
    stall_after_bytes: int | None = None
    #: Unplug (close the pty) after this many slips.
    unplug_after_slips: int | None = None
    #: Answer DLE EOT with 0x00 (seen on some USB printers).
    garbage_status: bool = False
    #: Leave this many ``DLE EOT 1-4`` status queries unanswered after each slip
    #: (a reply lost or late on a loaded kiosk, as a Pi under matching load sees it).
    silent_status_after_slip: int = 0


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("normal", "endless paper, everything works"),
        Scenario("paper-near-end", "200 mm left: near-end sensor already tripped",
                 paper_mm=200.0),
        Scenario("paper-out", "no paper loaded", paper_mm=0.0),
        Scenario("paper-out-mid-slip", "30 mm left: the first slip runs out halfway",
                 paper_mm=30.0),
        Scenario("cover-open", "cover open", cover_open=True),
        Scenario("offline", "printer offline (feed button held / paused)", offline=True),
        Scenario("slow", "prints at 9600 baud (960 bytes/s)", bytes_per_s=960.0),
        Scenario("stall", "stops reading after 100 bytes", stall_after_bytes=100),
        Scenario("unplug-after-first", "unplugged after the first slip",
                 unplug_after_slips=1),
        Scenario("garbage-status", "answers DLE EOT with 0x00", garbage_status=True),
        Scenario("late-status", "the first two status queries after each slip go unanswered",
                 silent_status_after_slip=2),
    )
}


# --- decoded slips ------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatedSlip:
    """One slip the simulator printed (everything up to a cut)."""

    index: int
    text: str
    png: Path
    txt: Path
    #: The paper ran out while this slip was printing.
    interrupted: bool
    partial_cut: bool
    #: Commands the printer did not understand (bytes, hex).
    unknown: tuple[str, ...]


@dataclass
class _Style:
    code_page: int = 0
    align: Align = Align.LEFT
    bold: bool = False
    width: int = 1
    height: int = 1
    line_dots: int = DEFAULT_LINE_DOTS

    def reset(self) -> None:
        self.code_page, self.align, self.bold = 0, Align.LEFT, False
        self.width, self.height, self.line_dots = 1, 1, DEFAULT_LINE_DOTS


@dataclass
class _Page:
    rows: list[npt.NDArray[np.bool_]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    interrupted: bool = False
    unknown: list[str] = field(default_factory=list)


#: Glyphs too wide for a cell, drawn from the proportional font and narrowed to fit.
_NARROWED = frozenset("№")


class _Glyphs:
    """Draws code-page text in 12 x 24 dot cells with a monospaced TrueType font."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, bool, int, int], npt.NDArray[np.bool_]] = {}

    def cell(self, ch: str, bold: bool, w: int, h: int) -> npt.NDArray[np.bool_]:
        key = (ch, bold, w, h)
        got = self._cache.get(key)
        if got is None:
            font = load_font(FONT_MONO_BOLD if bold else FONT_MONO, 20)
            if ch in _NARROWED:
                # № has no room in a 12-dot cell: drawn from DejaVu Sans and narrowed,
                # in one weight (as printer ROM fonts do); bold mono made it a blob.
                font = load_font(FONT_REGULAR, 20)
            natural = max(CELL_W, round(font.getlength(ch)))
            img = Image.new("L", (natural, CELL_H), 255)
            ImageDraw.Draw(img).text((0, 1), ch, font=font, fill=0)
            if natural > CELL_W:  # drawn at its own width, then narrowed to the cell
                img = img.resize((CELL_W, CELL_H), Image.Resampling.LANCZOS)
            if (w, h) != (1, 1):
                img = img.resize((CELL_W * w, CELL_H * h), Image.Resampling.NEAREST)
            got = np.asarray(img) < 128
            self._cache[key] = got
        return got


class PrinterEngine:
    """The printer's logic with no I/O: bytes in, reply bytes out, slips on disk.

    Real-time commands (``DLE EOT``) are answered when parsed; everything else
    is queued and executed while the printer can print (paper, cover closed,
    online), which is how a held slip resumes after :meth:`load_paper`.
    Thread-safe.
    """

    def __init__(self, out_dir: Path, profile: PrinterProfile, scenario: Scenario) -> None:
        self.out_dir = out_dir
        self.profile = profile
        self.scenario = scenario
        self._lock = threading.Condition()
        self._parser = e.EscposParser()
        self._queue: collections.deque[e.Command] = collections.deque()
        self._outbox = bytearray()
        self._style = _Style()
        self._page = _Page()
        self._line: list[tuple[str, bool, int, int]] = []
        self._glyphs = _Glyphs()
        self._qr_module = 3
        self._qr_ecc = "L"
        self._qr_data = b""
        self.paper_dots: int | None = (
            None if scenario.paper_mm is None else int(scenario.paper_mm * DOTS_PER_MM)
        )
        self.cover_open = scenario.cover_open
        self.offline = scenario.offline
        self.slips: list[SimulatedSlip] = []
        self.bytes_received = 0
        self._silent_replies = 0  # DLE EOT replies still to swallow after a slip
        out_dir.mkdir(parents=True, exist_ok=True)

    # -- conditions
    @property
    def paper_out(self) -> bool:
        """No paper under the head."""
        return self.paper_dots is not None and self.paper_dots <= 0

    @property
    def paper_near_end(self) -> bool:
        """The near-end sensor has tripped."""
        return self.paper_dots is not None and (
            self.paper_dots <= self.scenario.near_end_mm * DOTS_PER_MM
        )

    @property
    def can_print(self) -> bool:
        """Paper in, cover closed, online."""
        return not (self.paper_out or self.cover_open or self.offline)

    def load_paper(self, mm: float | None = None) -> None:
        """Put in a new roll (``mm`` long; None: endless) and resume a held slip."""
        with self._lock:
            self.paper_dots = None if mm is None else int(mm * DOTS_PER_MM)
            self._run()

    def set_cover(self, is_open: bool) -> None:
        """Open or close the cover (closing resumes printing)."""
        with self._lock:
            self.cover_open = is_open
            self._run()

    def set_offline(self, offline: bool) -> None:
        """Take the printer off line or back on line."""
        with self._lock:
            self.offline = offline
            self._run()

    # -- the byte interface
    def receive(self, data: bytes) -> None:
        """Accept bytes from the host."""
        with self._lock:
            self.bytes_received += len(data)
            for cmd in self._parser.feed(data):
                if isinstance(cmd, e.RealtimeStatus):
                    if self._silent_replies:
                        self._silent_replies -= 1
                        continue
                    self._outbox += self._status_byte(cmd.n)
                else:
                    self._queue.append(cmd)
            self._run()

    def take_output(self, limit: int | None = None) -> bytes:
        """Up to ``limit`` reply bytes waiting for the host (removed from the outbox)."""
        with self._lock:
            n = len(self._outbox) if limit is None else limit
            out = bytes(self._outbox[:n])
            del self._outbox[:n]
            return out

    def status_bytes(self) -> bytes:
        """The four DLE EOT replies for the current condition."""
        with self._lock:
            return b"".join(self._status_byte(n) for n in (1, 2, 3, 4))

    def _status_byte(self, n: int) -> bytes:
        if self.scenario.garbage_status:
            return b"\x00"
        raw = encode_status(
            self.profile.status,
            offline=self.offline,
            cover_open=self.cover_open,
            paper_near_end=self.paper_near_end,
            paper_end=self.paper_out,
        )
        return raw[n - 1 : n]

    def wait_for_slips(self, n: int, timeout: float) -> list[SimulatedSlip]:
        """Block until ``n`` slips exist (or ``timeout``); return them all."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.slips) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            return list(self.slips)

    # -- execution
    def _run(self) -> None:
        while self._queue and self.can_print:
            cmd = self._queue[0]
            if not self._execute(cmd):
                self._page.interrupted = True
                self._page.text.append("[paper out]")
                return
            self._queue.popleft()

    def _feed_rows(self, rows: npt.NDArray[np.bool_]) -> bool:
        """Put rows on paper; False (nothing printed) if the roll ends before they fit."""
        if self.paper_dots is not None:
            if rows.shape[0] > self.paper_dots:
                self.paper_dots = 0
                return False
            self.paper_dots -= rows.shape[0]
        self._page.rows.append(rows)
        return True

    def _blank(self, n: int) -> npt.NDArray[np.bool_]:
        return np.zeros((n, self.profile.dots_per_line), dtype=np.bool_)

    def _place(self, img: npt.NDArray[np.bool_], align: Align) -> npt.NDArray[np.bool_]:
        width = self.profile.dots_per_line
        img = img[:, :width]
        out = self._blank(img.shape[0])
        free = width - img.shape[1]
        left = free // 2 if align is Align.CENTER else free if align is Align.RIGHT else 0
        out[:, left : left + img.shape[1]] = img
        return out

    def _execute(self, cmd: e.Command) -> bool:
        st = self._style
        if isinstance(cmd, e.Initialize):
            st.reset()
        elif isinstance(cmd, e.SelectCodePage):
            st.code_page = cmd.n
            if self.profile.codec_for(cmd.n) is None:
                self._page.unknown.append(f"ESC t {cmd.n} (no such code page)")
        elif isinstance(cmd, e.SetAlign):
            st.align = cmd.align
        elif isinstance(cmd, e.SetEmphasis):
            st.bold = bool(cmd.n & 1)
        elif isinstance(cmd, e.SetPrintMode):
            st.bold = bool(cmd.n & 0x08)
            st.height = 2 if cmd.n & 0x10 else 1
            st.width = 2 if cmd.n & 0x20 else 1
        elif isinstance(cmd, e.SetCharSize):
            st.width = min(8, (cmd.n >> 4) + 1)
            st.height = min(8, (cmd.n & 0x0F) + 1)
        elif isinstance(cmd, e.SimpleMode):
            if cmd.prefix == b"\x1b3":
                st.line_dots = max(cmd.n, 1)
        elif isinstance(cmd, e.DefaultLineSpacing):
            st.line_dots = DEFAULT_LINE_DOTS
        elif isinstance(cmd, e.TextBytes):
            codec = self.profile.codec_for(st.code_page) or "cp437"
            text = cmd.data.decode(codec, errors="replace")
            self._line.extend((ch, st.bold, st.width, st.height) for ch in text)
        elif isinstance(cmd, e.LineFeed):
            return self._print_line(feed=True)
        elif isinstance(cmd, e.FeedLines):
            lines = cmd.n
            if self._line:
                if not self._print_line(feed=True):
                    return False
                lines -= 1
            return lines <= 0 or self._feed_blank(st.line_dots * lines, lines)
        elif isinstance(cmd, e.FeedDots):
            if self._line and not self._print_line(feed=False):
                return False
            return self._feed_rows(self._blank(cmd.n))
        elif isinstance(cmd, e.RasterImage):
            img = cmd.to_array()
            if cmd.mode in (1, 3, 49, 51):
                img = np.repeat(img, 2, axis=1)
            if cmd.mode in (2, 3, 50, 51):
                img = np.repeat(img, 2, axis=0)
            if not self._feed_rows(self._place(img, st.align)):
                return False
            self._note_raster(img.shape[1], img.shape[0])
        elif isinstance(cmd, e.SymbolCommand):
            return self._symbol(cmd)
        elif isinstance(cmd, e.Cut):
            if self._line and not self._print_line(feed=True):
                return False
            if cmd.feed is not None and cmd.feed and not self._feed_rows(self._blank(cmd.feed)):
                # The cut feed ran off the end of the roll: cut what there is.
                self.paper_dots = 0
            self._finish(cmd.partial)
        elif isinstance(cmd, e.TransmitStatus):
            self._outbox += self._paper_sensor_byte()
        elif isinstance(cmd, e.Unknown):
            self._page.unknown.append(cmd.data.hex(" "))
        return True

    def _paper_sensor_byte(self) -> bytes:
        """``GS r 1`` reply: bits 0-1 near end, bits 2-3 paper end, bit 4 clear."""
        value = (0x03 if self.paper_near_end else 0) | (0x0C if self.paper_out else 0)
        return bytes((value,))

    def _feed_blank(self, dots: int, lines: int) -> bool:
        if not self._feed_rows(self._blank(dots)):
            return False
        self._page.text.extend([""] * lines)
        return True

    def _note_raster(self, w: int, h: int) -> None:
        text = self._page.text
        if text and text[-1].startswith("[raster ") and text[-1].endswith("]"):
            pw, ph = text[-1][8:-1].split("x")
            text[-1] = f"[raster {max(int(pw), w)}x{int(ph) + h}]"
        else:
            text.append(f"[raster {w}x{h}]")

    def _print_line(self, feed: bool) -> bool:
        st = self._style
        line = self._line
        height = max([CELL_H * h for _, _, _, h in line], default=CELL_H)
        # Line spacing below the font height still prints whole glyphs (no overlap here).
        pitch = max(height, height + st.line_dots - CELL_H) if feed else height
        width = sum(CELL_W * w for _, _, w, _ in line)
        img = np.zeros((pitch, max(width, 1)), dtype=np.bool_)
        x = 0
        for ch, bold, w, h in line:
            cell = self._glyphs.cell(ch, bold, w, h)
            top = height - cell.shape[0]
            img[top : top + cell.shape[0], x : x + cell.shape[1]] = cell
            x += cell.shape[1]
        if not self._feed_rows(self._place(img, st.align)):
            return False
        self._page.text.append("".join(ch for ch, _, _, _ in line).rstrip())
        self._line = []
        return True

    def _symbol(self, cmd: e.SymbolCommand) -> bool:
        if cmd.cn != 49:
            self._page.unknown.append(f"GS ( k cn={cmd.cn} fn={cmd.fn}")
            return True
        if cmd.fn == 67 and cmd.params:
            self._qr_module = max(1, min(16, cmd.params[0]))
        elif cmd.fn == 69 and cmd.params:
            self._qr_ecc = {48: "L", 49: "M", 50: "Q", 51: "H"}.get(cmd.params[0], "L")
        elif cmd.fn == 80 and cmd.params[:1] == b"0":
            self._qr_data = cmd.params[1:]
        elif cmd.fn == 81:
            if not self._qr_data:
                self._page.unknown.append("QR print with no stored data")
                return True
            import segno

            try:
                qr = segno.make_qr(self._qr_data, error=self._qr_ecc.lower(),
                                   boost_error=False)
            except segno.DataOverflowError:
                # A real printer prints nothing for a symbol that does not fit.
                self._page.unknown.append(f"QR of {len(self._qr_data)} bytes does not fit")
                return True
            matrix = np.array([list(row) for row in qr.matrix], dtype=np.bool_)
            big = np.kron(matrix, np.ones((self._qr_module, self._qr_module), dtype=np.bool_))
            if not self._feed_rows(self._place(big, self._style.align)):
                return False
            self._page.text.append(f"[QR {self._qr_data.decode('latin-1')}]")
        return True

    def _finish(self, partial: bool) -> None:
        page = self._page
        index = len(self.slips) + 1
        rows = page.rows or [self._blank(1)]
        dots = np.vstack(rows)
        png = self.out_dir / f"{index:04d}.png"
        txt = self.out_dir / f"{index:04d}.txt"
        Image.fromarray(np.where(dots, 0, 255).astype(np.uint8), mode="L").save(png)
        text = "\n".join(page.text).strip("\n")
        txt.write_text(text + "\n", encoding="utf-8")
        slip = SimulatedSlip(index, text, png, txt, page.interrupted, partial, tuple(page.unknown))
        self.slips.append(slip)
        log.info("slip %04d printed (%d dots%s)", index, dots.shape[0],
                 ", interrupted" if page.interrupted else "")
        self._page = _Page()
        self._silent_replies = 4 * self.scenario.silent_status_after_slip
        self._lock.notify_all()


# --- transports ---------------------------------------------------------------------


class _Controls:
    """Fault controls and results shared by the pty and USB simulators."""

    engine: PrinterEngine

    def load_paper(self, mm: float | None = None) -> None:
        """A new roll (``mm`` long; None: endless); a held slip resumes."""
        self.engine.load_paper(mm)

    def open_cover(self) -> None:
        """Open the cover."""
        self.engine.set_cover(True)

    def close_cover(self) -> None:
        """Close the cover; a held slip resumes."""
        self.engine.set_cover(False)

    def set_offline(self, offline: bool) -> None:
        """Take the printer off / on line."""
        self.engine.set_offline(offline)

    @property
    def documents(self) -> list[SimulatedSlip]:
        """Slips printed so far."""
        return list(self.engine.slips)

    def wait_for_documents(self, n: int, timeout: float = 10.0) -> list[SimulatedSlip]:
        """Block until ``n`` slips are printed (or ``timeout``); return them all."""
        return self.engine.wait_for_slips(n, timeout)



class EscposPrinterSimulator(_Controls):
    """The simulated printer on a real pty; open :attr:`path` with pyserial.

    ``paper_mm`` overrides the scenario's roll length (mm left; None keeps the
    scenario's). :attr:`path` is a symlink in ``out_dir`` to the current pty, so
    it stays valid across :meth:`unplug` / :meth:`plug`. Usable as a context
    manager; :meth:`start` / :meth:`stop` otherwise.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        profile: str = SIMULATOR_DEFAULT_PROFILE,
        paper_mm: float | None = None,
        scenario: str | Scenario = "normal",
    ) -> None:
        self.out_dir = Path(out_dir)
        self.engine = _engine(out_dir, profile, paper_mm, scenario)
        self._link = PtyLink(self.out_dir / "printer.tty")
        self._thread: threading.Thread | None = None
        self._running = False
        self._stalled = False
        self._stall_after = self.engine.scenario.stall_after_bytes
        self._fd_lock = threading.Lock()

    # -- lifecycle
    def start(self) -> EscposPrinterSimulator:
        """Create the pty and start serving it."""
        self.plug()
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="escpos-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and remove the pty."""
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.unplug()

    def __enter__(self) -> EscposPrinterSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults and recovery
    def unplug(self) -> None:
        """Pull the cable: close the pty; the host's reads and writes fail."""
        with self._fd_lock:
            self._link.unplug()

    def plug(self) -> None:
        """Plug the printer (back) in: a fresh pty behind the same :attr:`path`."""
        with self._fd_lock:
            self._link.plug()

    @property
    def path(self) -> Path:
        """The symlink in ``out_dir`` the host opens; it survives unplug/plug."""
        return self._link.path

    def stall(self, stalled: bool = True) -> None:
        """Stop (or resume) reading input: the host's writes block, queries go unanswered.

        Resuming also ends the "stall" scenario's automatic stall.
        """
        self._stalled = stalled
        if not stalled:
            self._stall_after = None

    def stall_after(self, more_bytes: int) -> None:
        """Hang (as :meth:`stall`) once ``more_bytes`` more bytes have arrived: mid-slip."""
        self._stall_after = self.engine.bytes_received + more_bytes

    # -- serving
    def _serve(self) -> None:
        sc = self.engine.scenario
        while self._running:
            master = self._link.master
            if master is None:
                time.sleep(0.02)
                continue
            stall_after = self._stall_after
            if self._stalled or (
                stall_after is not None and self.engine.bytes_received >= stall_after
            ):
                time.sleep(0.02)
                continue
            try:
                ready, _, _ = select.select([master], [], [], 0.02)
                data = b""
                if ready:
                    limit = 4096
                    if sc.bytes_per_s is not None:
                        limit = max(1, int(sc.bytes_per_s * 0.02))
                    if stall_after is not None:
                        limit = min(limit, stall_after - self.engine.bytes_received)
                    data = os.read(master, limit)
                if data:
                    slips_before = len(self.engine.slips)
                    self.engine.receive(data)
                    if sc.bytes_per_s is not None:
                        time.sleep(len(data) / sc.bytes_per_s)
                    if (
                        sc.unplug_after_slips is not None
                        and slips_before < sc.unplug_after_slips <= len(self.engine.slips)
                    ):
                        self.unplug()
                        continue
                out = self.engine.take_output()
                if out:
                    os.write(master, out)
            except OSError as exc:
                if not self._link.plugged:  # unplugged underneath us
                    continue
                log.warning("printer simulator I/O error: %s", exc)
                time.sleep(0.02)


# --- the pyusb backend --------------------------------------------------------------

#: pid.codes test ids: the simulator must never be mistaken for a real model.
SIM_USB_ID = (0x1209, 0x0001)
_EP_OUT, _EP_IN, _MAX_PACKET = 0x01, 0x82, 64
_LIBUSB_TIMEOUT, _LIBUSB_NO_DEVICE, _LIBUSB_BUSY, _LIBUSB_PIPE = -7, -4, -6, -9
_I_MANUFACTURER, _I_PRODUCT = 1, 2


def _usb_error(message: str, code: int, err: int) -> Exception:
    import usb.core

    cls = usb.core.USBTimeoutError if err == errno.ETIMEDOUT else usb.core.USBError
    exc: Exception = cls(message, code, err)
    return exc


class EscposUsbBackend(usb.backend.IBackend):  # type: ignore[misc]  # pyusb ships no types
    """A pyusb backend (``usb.core.find(backend=...)``) presenting one printer-class device.

    One configuration, interface 0 of class 7 (printer), bulk OUT 0x01 and bulk
    IN 0x82; the kernel's ``usblp`` is "attached" until the driver detaches it
    (claiming before that fails with EBUSY, as on a real kiosk). Bytes written
    go to the shared :class:`PrinterEngine`; replies come back on bulk IN.
    Faults: unplugged (ENODEV), stalled (ETIMEDOUT on write and read).
    Overrides what pyusb's core calls for a bulk device; the rest of
    ``IBackend`` raises ``NotImplementedError`` as in pyusb.
    """

    def __init__(self, engine: PrinterEngine, usb_id: tuple[int, int] = SIM_USB_ID) -> None:
        self.engine = engine
        self.usb_id = usb_id
        #: String descriptors (index -> text): what ``lsusb -v`` would show.
        self.strings = {_I_MANUFACTURER: "KESP",
                        _I_PRODUCT: f"ESC/POS printer simulator ({engine.profile.name})"}
        self.plugged = True
        self.stalled_after: int | None = engine.scenario.stall_after_bytes
        self.kernel_driver_active = True
        self.configuration = 0
        self.claimed = False
        self.writes: list[int] = []  # sizes of bulk OUT transfers, to check chunking
        self.halts_cleared: list[int] = []
        #: ``(after_bytes, errno)``: the first bulk OUT transfer that would pass
        #: ``after_bytes`` fails with ``errno`` (ENODEV also unplugs the device).
        self.write_error: tuple[int, int] | None = None

    # enumeration and descriptors
    def enumerate_devices(self) -> Iterator[str]:
        if self.plugged:
            yield "escpos-sim"

    def get_device_descriptor(self, dev: object) -> SimpleNamespace:
        return SimpleNamespace(
            bLength=18, bDescriptorType=1, bcdUSB=0x0200, bDeviceClass=0, bDeviceSubClass=0,
            bDeviceProtocol=0, bMaxPacketSize0=64, idVendor=self.usb_id[0],
            idProduct=self.usb_id[1], bcdDevice=0x0100, iManufacturer=_I_MANUFACTURER,
            iProduct=_I_PRODUCT,
            iSerialNumber=0, bNumConfigurations=1, address=2, bus=1, port_number=1,
            port_numbers=(1,), speed=2,
        )

    def get_configuration_descriptor(self, dev: object, config: int) -> SimpleNamespace:
        return SimpleNamespace(
            bLength=9, bDescriptorType=2, wTotalLength=32, bNumInterfaces=1,
            bConfigurationValue=1, iConfiguration=0, bmAttributes=0xC0, bMaxPower=50,
            extra_descriptors=[],
        )

    def get_interface_descriptor(self, dev: object, intf: int, alt: int,
                                 config: int) -> SimpleNamespace:
        if intf != 0 or alt != 0:
            raise IndexError(intf)
        return SimpleNamespace(
            bLength=9, bDescriptorType=4, bInterfaceNumber=0, bAlternateSetting=0,
            bNumEndpoints=2, bInterfaceClass=7, bInterfaceSubClass=1, bInterfaceProtocol=2,
            iInterface=0, extra_descriptors=[],
        )

    def get_endpoint_descriptor(self, dev: object, ep: int, intf: int, alt: int,
                                config: int) -> SimpleNamespace:
        if ep > 1:
            raise IndexError(ep)
        return SimpleNamespace(
            bLength=7, bDescriptorType=5, bEndpointAddress=(_EP_OUT, _EP_IN)[ep],
            bmAttributes=2, wMaxPacketSize=_MAX_PACKET, bInterval=0, bRefresh=0,
            bSynchAddress=0, extra_descriptors=[],
        )

    # device handle
    def _check(self) -> None:
        if not self.plugged:
            raise _usb_error("No such device (it may have been disconnected)",
                             _LIBUSB_NO_DEVICE, errno.ENODEV)

    def open_device(self, dev: object) -> str:
        self._check()
        return "handle"

    def close_device(self, handle: object) -> None:
        self.claimed = False

    def get_parent(self, dev: object) -> None:
        return None

    def set_configuration(self, handle: object, value: int) -> None:
        self._check()
        self.configuration = value

    def get_configuration(self, handle: object) -> int:
        self._check()
        return self.configuration

    def set_interface_altsetting(self, handle: object, intf: int, alt: int) -> None:
        self._check()

    def is_kernel_driver_active(self, handle: object, intf: int) -> bool:
        self._check()
        return self.kernel_driver_active

    def detach_kernel_driver(self, handle: object, intf: int) -> None:
        self._check()
        self.kernel_driver_active = False

    def attach_kernel_driver(self, handle: object, intf: int) -> None:
        self.kernel_driver_active = True

    def claim_interface(self, handle: object, intf: int) -> None:
        self._check()
        if self.kernel_driver_active:
            raise _usb_error("Resource busy (usblp holds the interface)", _LIBUSB_BUSY,
                             errno.EBUSY)
        self.claimed = True

    def release_interface(self, handle: object, intf: int) -> None:
        self.claimed = False

    def clear_halt(self, handle: object, ep: int) -> None:
        self._check()
        self.halts_cleared.append(ep)

    def reset_device(self, handle: object) -> None:
        self._check()

    # transfers
    def _stalled(self) -> bool:
        limit = self.stalled_after
        return limit is not None and self.engine.bytes_received >= limit

    def bulk_write(self, handle: object, ep: int, intf: int, data: Sequence[int],
                   timeout: int) -> int:
        self._check()
        if ep != _EP_OUT or not self.claimed:
            raise _usb_error("Pipe error", _LIBUSB_PIPE, errno.EPIPE)
        payload = bytes(data)
        injected = self.write_error
        if injected is not None and self.engine.bytes_received + len(payload) > injected[0]:
            self.write_error = None
            after, err = injected
            if err == errno.ENODEV:
                # Pulled mid-transfer: the part before the cut reached the printer.
                self.engine.receive(payload[: max(0, after - self.engine.bytes_received)])
                self.plugged = False
                raise _usb_error("No such device (it may have been disconnected)",
                                 _LIBUSB_NO_DEVICE, err)
            raise _usb_error(os.strerror(err), _LIBUSB_PIPE, err)
        limit = self.stalled_after
        if limit is not None:
            room = max(0, limit - self.engine.bytes_received)
            if room < len(payload):
                self.engine.receive(payload[:room])
                time.sleep(timeout / 1000)
                raise _usb_error("Operation timed out", _LIBUSB_TIMEOUT, errno.ETIMEDOUT)
        rate = self.engine.scenario.bytes_per_s
        if rate is not None:
            time.sleep(min(len(payload) / rate, timeout / 1000))
        self.writes.append(len(payload))
        self.engine.receive(payload)
        return len(payload)

    def bulk_read(self, handle: object, ep: int, intf: int, buff: MutableSequence[int],
                  timeout: int) -> int:
        self._check()
        if ep != _EP_IN or not self.claimed:
            raise _usb_error("Pipe error", _LIBUSB_PIPE, errno.EPIPE)
        deadline = time.monotonic() + timeout / 1000
        while True:
            out = b"" if self._stalled() else self.engine.take_output(len(buff))
            if out:
                for i, byte in enumerate(out):
                    buff[i] = byte
                return len(out)
            if time.monotonic() >= deadline:
                raise _usb_error("Operation timed out", _LIBUSB_TIMEOUT, errno.ETIMEDOUT)
            time.sleep(0.005)

    def ctrl_transfer(self, handle: object, bm_request_type: int, b_request: int,
                      w_value: int, w_index: int, data: MutableSequence[int],
                      timeout: int) -> int:
        self._check()
        answered = string_descriptor(bm_request_type, b_request, w_value, self.strings, data)
        if answered is not None:
            return answered
        # GET_DEVICE_ID and friends are not used by the driver; refuse like a stall.
        raise _usb_error("Pipe error", _LIBUSB_PIPE, errno.EPIPE)


class EscposUsbSimulator(_Controls):
    """The simulated printer as a pyusb device: pass :attr:`backend` to the driver.

    Same engine, scenarios and controls as :class:`EscposPrinterSimulator`;
    :attr:`port` is the ``usb:VVVV:PPPP`` string for ``PrinterConfig.port``
    (``usb_id`` another model's ids; :class:`hardware_sim.usb_bus.UsbBus` puts
    it on one bus with other devices).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        profile: str = SIMULATOR_DEFAULT_PROFILE,
        paper_mm: float | None = None,
        scenario: str | Scenario = "normal",
        usb_id: tuple[int, int] = SIM_USB_ID,
    ) -> None:
        self.engine = _engine(out_dir, profile, paper_mm, scenario)
        self.backend = EscposUsbBackend(self.engine, usb_id)
        vid, pid = self.backend.usb_id
        self.port = f"usb:{vid:04x}:{pid:04x}"

    def unplug(self) -> None:
        """Pull the cable: every transfer fails with ENODEV; the device disappears."""
        self.backend.plugged = False

    def plug(self) -> None:
        """Plug back in: re-enumerates with ``usblp`` attached again."""
        self.backend.plugged = True
        self.backend.kernel_driver_active = True
        self.backend.configuration = 0
        self.backend.claimed = False

    def stall(self, stalled: bool = True) -> None:
        """Stop (or resume) accepting data: bulk transfers time out (ETIMEDOUT)."""
        self.backend.stalled_after = self.engine.bytes_received if stalled else None


def _engine(out_dir: str | os.PathLike[str], profile: str, paper_mm: float | None,
            scenario: str | Scenario) -> PrinterEngine:
    sc = scenario if isinstance(scenario, Scenario) else _scenario(scenario)
    if paper_mm is not None:
        sc = replace(sc, paper_mm=paper_mm)
    return PrinterEngine(Path(out_dir), get_profile(profile), sc)


def _scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(
            f"unknown printer scenario {name!r} (known: {', '.join(SCENARIOS)})"
        ) from None


# --- kesp-sim printer ----------------------------------------------------------------

_CONSOLE_HELP = """commands: load-paper [mm] | open-cover | close-cover | offline | online |
          unplug | plug | stall | resume | status | quit"""


def cli_main(argv: list[str]) -> int:
    """``kesp-sim printer``: run the simulator until EOF/quit, taking fault commands on stdin."""
    ap = argparse.ArgumentParser(prog="kesp-sim printer", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="printer-out", help="directory for NNNN.png / NNNN.txt")
    ap.add_argument("--profile", default=SIMULATOR_DEFAULT_PROFILE, choices=sorted(PROFILES))
    ap.add_argument("--scenario", default="normal", choices=list(SCENARIOS))
    ap.add_argument("--paper-mm", type=float, default=None, help="paper left on the roll")
    ap.add_argument("--list-scenarios", action="store_true")
    args = ap.parse_args(argv)
    if args.list_scenarios:
        for s in SCENARIOS.values():
            print(f"{s.name:<20} {s.description}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with EscposPrinterSimulator(args.out, args.profile, args.paper_mm, args.scenario) as sim:
        print(f"printer on {sim.path} (profile {args.profile}, scenario {args.scenario})")
        print(_CONSOLE_HELP, flush=True)
        for line in sys.stdin:
            if not _console(sim, line.split()):
                break
    return 0


def _console(sim: EscposPrinterSimulator, words: list[str]) -> bool:
    if not words:
        return True
    cmd, rest = words[0], words[1:]
    if cmd == "quit":
        return False
    if cmd == "load-paper":
        sim.load_paper(float(rest[0]) if rest else None)
    elif cmd in ("open-cover", "close-cover"):
        sim.engine.set_cover(cmd == "open-cover")
    elif cmd in ("offline", "online"):
        sim.set_offline(cmd == "offline")
    elif cmd == "unplug":
        sim.unplug()
    elif cmd == "plug":
        sim.plug()
    elif cmd in ("stall", "resume"):
        sim.stall(cmd == "stall")
    elif cmd != "status":
        print(_CONSOLE_HELP)
        return True
    eng = sim.engine
    print(f"paper_out={eng.paper_out} near_end={eng.paper_near_end} cover_open={eng.cover_open} "
          f"offline={eng.offline} slips={len(eng.slips)}", flush=True)
    return True
