"""ESC/POS codec: command frames, an incremental stream parser, and the Document encoder.

Pure: no I/O. Three layers, all byte-exact and shared by the printer service
and the simulator (``hardware_sim.escpos_sim``):

* **Frames**: one frozen dataclass per command we emit or understand, each
  with ``to_bytes()``; :class:`EscposParser` turns a byte stream (delivered in
  any chunking) back into the same frames.
* **Text**: a line is sent as text from the first code page of the printer's
  profile that encodes *every* character (KZ-1048 via ``ESC t 53`` where the
  model has it); otherwise it is rendered with a TrueType font and sent as a
  ``GS v 0`` raster. No character is ever replaced by ``?``.
* **Document**: :func:`encode_document` lays out a
  :class:`~agent.drivers.document.Document` (DUPLICATE banner for reprints,
  native ``GS ( k`` QR or a raster QR, feed, ``GS V`` cut).
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from agent.drivers.document import Align, Block, Document, QRCode, Rule, Text
from agent.drivers.printer_profiles import (
    CUT_FEED_DOTS,
    FONT_BOLD,
    FONT_REGULAR,
    QR_ECC,
    QR_MAX_BYTES,
    RASTER_BAD_BAND_MULTIPLE,
    RASTER_FONT_PX,
    RASTER_FONT_PX_LARGE,
    RASTER_LINE_DOTS,
    RASTER_LINE_DOTS_LARGE,
    PrinterProfile,
)

ESC = 0x1B
GS = 0x1D
DLE = 0x10
EOT = 0x04
LF = 0x0A

# --- errors -------------------------------------------------------------------------


class EscposError(Exception):
    """Base of the ESC/POS codec's errors (bugs and corrupt input, never device states)."""


class DocumentError(EscposError):
    """A document cannot be printed as given (control characters, non-ASCII QR, ...)."""

    def __init__(self, message: str, block_index: int) -> None:
        super().__init__(f"block {block_index}: {message}")
        self.block_index = block_index


class FontMissingError(EscposError):
    """The TrueType font needed to rasterise text is not installed."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"font {path} not found: install fonts-dejavu-core (apt) to print text "
            "this printer has no code page for"
        )
        self.path = path


class FrameError(EscposError):
    """A command frame has out-of-range fields (raised by constructors, not by the parser)."""


# --- frames -------------------------------------------------------------------------


@dataclass(frozen=True)
class Initialize:
    """``ESC @``: reset modes, clear the print buffer."""

    def to_bytes(self) -> bytes:
        return b"\x1b@"


@dataclass(frozen=True)
class SelectCodePage:
    """``ESC t n``: character code table for bytes 0x80-0xFF."""

    n: int

    def to_bytes(self) -> bytes:
        return bytes((ESC, 0x74, self.n))


@dataclass(frozen=True)
class SetAlign:
    """``ESC a n``: 0 left, 1 centre, 2 right (also accepts ASCII '0'-'2')."""

    n: int

    @property
    def align(self) -> Align:
        """The alignment as the document's enum."""
        return {0: Align.LEFT, 1: Align.CENTER, 2: Align.RIGHT, 48: Align.LEFT,
                49: Align.CENTER, 50: Align.RIGHT}.get(self.n, Align.LEFT)

    def to_bytes(self) -> bytes:
        return bytes((ESC, 0x61, self.n))


@dataclass(frozen=True)
class SetEmphasis:
    """``ESC E n``: bold on (bit 0 set) / off."""

    n: int

    def to_bytes(self) -> bytes:
        return bytes((ESC, 0x45, self.n))


@dataclass(frozen=True)
class SetPrintMode:
    """``ESC ! n``: bit 0 font B, 3 bold, 4 double height, 5 double width, 7 underline."""

    n: int

    def to_bytes(self) -> bytes:
        return bytes((ESC, 0x21, self.n))


@dataclass(frozen=True)
class SetCharSize:
    """``GS ! n``: high nibble = width multiplier - 1, low nibble = height multiplier - 1."""

    n: int

    def to_bytes(self) -> bytes:
        return bytes((GS, 0x21, self.n))


@dataclass(frozen=True)
class SimpleMode:
    """A one-parameter mode command the renderer may ignore (underline, font, reverse...).

    ``prefix`` is the two command bytes, e.g. ``ESC -`` (underline), ``ESC M``
    (font), ``GS B`` (reverse), ``ESC {`` (upside down), ``GS b`` (smoothing),
    ``ESC G`` (double strike), ``ESC 3`` (line spacing), ``ESC V`` (rotate).
    """

    prefix: bytes
    n: int

    def to_bytes(self) -> bytes:
        return self.prefix + bytes((self.n,))


@dataclass(frozen=True)
class DefaultLineSpacing:
    """``ESC 2``."""

    def to_bytes(self) -> bytes:
        return b"\x1b2"


@dataclass(frozen=True)
class LineFeed:
    """``LF``: print the line buffer and feed one line."""

    def to_bytes(self) -> bytes:
        return b"\n"


@dataclass(frozen=True)
class FeedLines:
    """``ESC d n``: print the buffer and feed ``n`` lines."""

    n: int

    def to_bytes(self) -> bytes:
        return bytes((ESC, 0x64, self.n))


@dataclass(frozen=True)
class FeedDots:
    """``ESC J n``: print the buffer and feed ``n`` dots."""

    n: int

    def to_bytes(self) -> bytes:
        return bytes((ESC, 0x4A, self.n))


@dataclass(frozen=True)
class TextBytes:
    """Printable bytes (>= 0x20) in the current code page."""

    data: bytes

    def to_bytes(self) -> bytes:
        return self.data


@dataclass(frozen=True)
class RasterImage:
    """``GS v 0 m xL xH yL yH d...``: ``width_bytes`` x 8 by ``height`` dots, MSB left, 1 black."""

    mode: int
    width_bytes: int
    height: int
    data: bytes

    def __post_init__(self) -> None:
        if not (0 <= self.mode <= 3 or 48 <= self.mode <= 51):
            raise FrameError(f"raster mode {self.mode} not in 0-3")
        if not (1 <= self.width_bytes <= 0xFFFF and 1 <= self.height <= 0xFFFF):
            raise FrameError(f"raster size {self.width_bytes}x{self.height} out of range")
        if len(self.data) != self.width_bytes * self.height:
            raise FrameError(
                f"raster data is {len(self.data)} bytes, expected "
                f"{self.width_bytes} x {self.height}"
            )

    def to_bytes(self) -> bytes:
        w, h = self.width_bytes, self.height
        return bytes((GS, 0x76, 0x30, self.mode, w & 0xFF, w >> 8, h & 0xFF, h >> 8)) + self.data

    def to_array(self) -> npt.NDArray[np.bool_]:
        """The image as a boolean array (True = black), ``height`` x ``width_bytes*8``."""
        packed = np.frombuffer(self.data, dtype=np.uint8).reshape(self.height, self.width_bytes)
        return np.unpackbits(packed, axis=1).astype(np.bool_)

    @classmethod
    def from_array(cls, dots: npt.NDArray[np.bool_]) -> RasterImage:
        """Pack a boolean image (True = black); width is padded to whole bytes."""
        packed = np.packbits(dots.astype(np.uint8), axis=1)
        return cls(0, int(packed.shape[1]), int(packed.shape[0]), packed.tobytes())


@dataclass(frozen=True)
class SymbolCommand:
    """``GS ( k pL pH cn fn params``: 2-D symbol commands (cn 49 = QR code).

    QR functions: fn 65 model, 67 module size, 69 error correction, 80 store
    data (``params`` = ``48`` + data), 81 print, 82 transmit size.
    """

    cn: int
    fn: int
    params: bytes

    def __post_init__(self) -> None:
        if len(self.params) + 2 > 0xFFFF:
            raise FrameError(f"GS ( k payload of {len(self.params)} bytes is too long")

    def to_bytes(self) -> bytes:
        n = len(self.params) + 2
        return bytes((GS, 0x28, 0x6B, n & 0xFF, n >> 8, self.cn, self.fn)) + self.params


@dataclass(frozen=True)
class Cut:
    """``GS V m`` (0/48 full, 1/49 partial) or ``GS V m n`` (65 full / 66 partial, after a feed)."""

    m: int
    feed: int | None = None

    @property
    def partial(self) -> bool:
        """Whether this is a partial cut."""
        return self.m in (1, 49, 66)

    def to_bytes(self) -> bytes:
        if self.feed is None:
            return bytes((GS, 0x56, self.m))
        return bytes((GS, 0x56, self.m, self.feed))


@dataclass(frozen=True)
class RealtimeStatus:
    """``DLE EOT n`` (n 1-4): the printer answers one status byte at once, even when busy."""

    n: int

    def __post_init__(self) -> None:
        if not 1 <= self.n <= 4:
            raise FrameError(f"DLE EOT n must be 1-4, not {self.n}")

    def to_bytes(self) -> bytes:
        return bytes((DLE, EOT, self.n))


@dataclass(frozen=True)
class TransmitStatus:
    """``GS r n`` (1 paper sensor, 2 drawer): answered when processed, i.e. after earlier data."""

    n: int

    def to_bytes(self) -> bytes:
        return bytes((GS, 0x72, self.n))


@dataclass(frozen=True)
class OtherCommand:
    """A known fixed-length command that does not affect the slip's content.

    For example ``ESC p`` (drawer kick), ``ESC c 5`` (panel keys), ``GS L`` /
    ``GS W`` (margins, print width), ``ESC $`` (absolute position).
    """

    data: bytes

    def to_bytes(self) -> bytes:
        return self.data


@dataclass(frozen=True)
class Unknown:
    """Bytes the parser does not understand (kept so the simulator can report them)."""

    data: bytes

    def to_bytes(self) -> bytes:
        return self.data


Command = (
    Initialize
    | SelectCodePage
    | SetAlign
    | SetEmphasis
    | SetPrintMode
    | SetCharSize
    | SimpleMode
    | DefaultLineSpacing
    | LineFeed
    | FeedLines
    | FeedDots
    | TextBytes
    | RasterImage
    | SymbolCommand
    | Cut
    | RealtimeStatus
    | TransmitStatus
    | OtherCommand
    | Unknown
)

#: ESC x commands with one parameter byte that only change modes.
_ESC_SIMPLE = frozenset(b"-MG{V3 URr")
#: GS x commands with one parameter byte that only change modes.
_GS_SIMPLE = frozenset(b"BbfhwHI")
#: Other known commands: parameter bytes after the two command bytes.
_ESC_OTHER = {0x70: 3, 0x63: 2, 0x24: 2, 0x5C: 2, 0x3D: 1}
_GS_OTHER = {0x4C: 2, 0x57: 2, 0x50: 2}


class EscposParser:
    """Incremental ESC/POS decoder: ``feed()`` bytes as they arrive, get whole frames back.

    Incomplete commands stay buffered until the rest arrives, so delivery
    byte-at-a-time and in one block give the same frames. Bytes it cannot
    interpret become :class:`Unknown` frames (one control byte, or the
    two-byte escape) rather than being silently dropped.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back as the start of an incomplete command."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Command]:
        """Add ``data``; return every command completed by it, in order."""
        self._buf += data
        out: list[Command] = []
        pos = 0
        buf = self._buf
        while pos < len(buf):
            parsed = _parse_one(buf, pos)
            if parsed is None:
                break
            cmd, pos = parsed
            out.append(cmd)
        del buf[:pos]
        return out


def parse_all(data: bytes) -> list[Command]:
    """Decode a complete byte string; trailing incomplete bytes become one :class:`Unknown`."""
    parser = EscposParser()
    cmds = parser.feed(data)
    if parser.pending:
        cmds.append(Unknown(bytes(data[len(data) - parser.pending :])))
    return cmds


def _parse_one(buf: bytearray, pos: int) -> tuple[Command, int] | None:
    """One command at ``buf[pos]``: (frame, next position), or None if incomplete."""
    b = buf[pos]
    avail = len(buf) - pos
    if b >= 0x20:
        end = pos
        while end < len(buf) and buf[end] >= 0x20:
            end += 1
        return TextBytes(bytes(buf[pos:end])), end
    if b == LF:
        return LineFeed(), pos + 1
    if b == 0x00:  # NUL: ignored by printers; runs of it are resync padding
        end = pos
        while end < len(buf) and buf[end] == 0:
            end += 1
        return OtherCommand(bytes(buf[pos:end])), end
    if b == 0x0D:  # CR: ignored by printers with auto line feed off; keep as Unknown
        return Unknown(b"\r"), pos + 1
    if b == DLE:
        if avail < 3:
            return None
        if buf[pos + 1] == EOT and 1 <= buf[pos + 2] <= 4:
            return RealtimeStatus(buf[pos + 2]), pos + 3
        return Unknown(bytes(buf[pos : pos + 2])), pos + 2
    if b == ESC:
        if avail < 2:
            return None
        c = buf[pos + 1]
        if c == 0x40:
            return Initialize(), pos + 2
        if c == 0x32:
            return DefaultLineSpacing(), pos + 2
        if c == 0x53:  # ESC S: standard mode (no parameter)
            return OtherCommand(b"\x1bS"), pos + 2
        if avail < 3:
            return None
        n = buf[pos + 2]
        single: dict[int, Command] = {
            0x74: SelectCodePage(n),
            0x61: SetAlign(n),
            0x45: SetEmphasis(n),
            0x21: SetPrintMode(n),
            0x64: FeedLines(n),
            0x4A: FeedDots(n),
        }
        if c in single:
            return single[c], pos + 3
        if c in _ESC_SIMPLE:
            return SimpleMode(bytes((ESC, c)), n), pos + 3
        if c in _ESC_OTHER:
            end = pos + 2 + _ESC_OTHER[c]
            return (OtherCommand(bytes(buf[pos:end])), end) if len(buf) >= end else None
        return Unknown(bytes(buf[pos : pos + 2])), pos + 2
    if b == GS:
        if avail < 3:
            return None
        c = buf[pos + 1]
        if c == 0x21:
            return SetCharSize(buf[pos + 2]), pos + 3
        if c == 0x72:
            return TransmitStatus(buf[pos + 2]), pos + 3
        if c in _GS_SIMPLE:
            return SimpleMode(bytes((GS, c)), buf[pos + 2]), pos + 3
        if c in _GS_OTHER:
            end = pos + 2 + _GS_OTHER[c]
            return (OtherCommand(bytes(buf[pos:end])), end) if len(buf) >= end else None
        if c == 0x56:
            m = buf[pos + 2]
            if m in (65, 66, 97, 98, 103, 104):
                if avail < 4:
                    return None
                return Cut(m, buf[pos + 3]), pos + 4
            return Cut(m), pos + 3
        if c == 0x76:
            if avail < 8:
                return None
            if buf[pos + 2] != 0x30:
                return Unknown(bytes(buf[pos : pos + 3])), pos + 3
            m = buf[pos + 3]
            w = buf[pos + 4] | buf[pos + 5] << 8
            h = buf[pos + 6] | buf[pos + 7] << 8
            size = w * h
            if avail < 8 + size:
                return None
            data = bytes(buf[pos + 8 : pos + 8 + size])
            try:
                return RasterImage(m, w, h, data), pos + 8 + size
            except FrameError:
                return Unknown(bytes(buf[pos : pos + 8 + size])), pos + 8 + size
        if c == 0x28:
            if avail < 5:
                return None
            fn_byte = buf[pos + 2]
            n = buf[pos + 3] | buf[pos + 4] << 8
            if avail < 5 + n:
                return None
            body = bytes(buf[pos + 5 : pos + 5 + n])
            end = pos + 5 + n
            if fn_byte == 0x6B and n >= 2:
                return SymbolCommand(body[0], body[1], body[2:]), end
            return Unknown(bytes(buf[pos:end])), end
        return Unknown(bytes(buf[pos : pos + 2])), pos + 2
    return Unknown(bytes((b,))), pos + 1


# --- text ---------------------------------------------------------------------------


def check_text(text: str, block_index: int) -> None:
    """Refuse control characters: a voter's name must not smuggle an ESC/POS command."""
    for ch in text:
        if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            raise DocumentError(f"control character U+{ord(ch):04X} in text", block_index)


def pick_code_page(text: str, profile: PrinterProfile) -> tuple[int, str, bytes] | None:
    """The first of the profile's code pages that encodes every character of ``text``.

    Returns ``(ESC t number, codec, encoded bytes)`` or None when no code page
    can carry the line (it must then be rasterised). Never lossy.
    """
    for number, codec in profile.code_pages:
        try:
            return number, codec, text.encode(codec, errors="strict")
        except UnicodeEncodeError:
            continue
    return None


@functools.lru_cache(maxsize=8)
def load_font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    """The TrueType font at ``path`` (cached); :class:`FontMissingError` if absent."""
    if not path.is_file():
        raise FontMissingError(path)
    return ImageFont.truetype(str(path), size)


def render_text_line(
    text: str, width_dots: int, *, bold: bool, large: bool, align: Align
) -> npt.NDArray[np.bool_]:
    """Draw one line of text into a ``line height x width_dots`` boolean image (True = black)."""
    font = load_font(FONT_BOLD if bold else FONT_REGULAR,
                     RASTER_FONT_PX_LARGE if large else RASTER_FONT_PX)
    height = RASTER_LINE_DOTS_LARGE if large else RASTER_LINE_DOTS
    img = Image.new("L", (width_dots, height), 255)
    draw = ImageDraw.Draw(img)
    text_w = round(draw.textlength(text, font=font))
    if align is Align.CENTER:
        x = max(0, (width_dots - text_w) // 2)
    elif align is Align.RIGHT:
        x = max(0, width_dots - text_w)
    else:
        x = 0
    ascent, descent = font.getmetrics()
    y = max(0, (height - ascent - descent) // 2)
    draw.text((x, y), text, font=font, fill=0)
    return np.asarray(img) < 128


def wrap_raster_text(text: str, width_dots: int, *, bold: bool, large: bool) -> list[str]:
    """Greedy word wrap measured in dots with the raster font (long words are split)."""
    font = load_font(FONT_BOLD if bold else FONT_REGULAR,
                     RASTER_FONT_PX_LARGE if large else RASTER_FONT_PX)
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= width_dots:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = ""
        for ch in word:
            if font.getlength(current + ch) > width_dots and current:
                lines.append(current)
                current = ""
            current += ch
    lines.append(current)
    return lines


def raster_bands(dots: npt.NDArray[np.bool_], band_rows: int) -> list[RasterImage]:
    """Split an image into ``GS v 0`` bands of at most ``band_rows`` rows.

    A band whose height is a multiple of 48 gets one blank row added: some
    printers misfeed on such bands (see PROTOCOLS.md).
    """
    bands: list[RasterImage] = []
    for top in range(0, dots.shape[0], band_rows):
        band = dots[top : top + band_rows]
        if band.shape[0] % RASTER_BAD_BAND_MULTIPLE == 0:
            band = np.vstack([band, np.zeros((1, band.shape[1]), dtype=np.bool_)])
        bands.append(RasterImage.from_array(band))
    return bands


# --- QR -----------------------------------------------------------------------------

_QR_ECC_BYTE = {"L": 48, "M": 49, "Q": 50, "H": 51}


def qr_commands(data: bytes, module_size: int, ecc: str = QR_ECC) -> list[Command]:
    """The native ``GS ( k`` sequence: model 2, module size, error correction, store, print."""
    return [
        SymbolCommand(49, 65, bytes((50, 0))),
        SymbolCommand(49, 67, bytes((module_size,))),
        SymbolCommand(49, 69, bytes((_QR_ECC_BYTE[ecc],))),
        SymbolCommand(49, 80, b"0" + data),
        SymbolCommand(49, 81, b"0"),
    ]


def qr_dots(data: bytes, module_size: int, ecc: str, width_dots: int) -> npt.NDArray[np.bool_]:
    """A QR code as a centred boolean image ``width_dots`` wide (quiet zone 4 modules)."""
    import segno

    qr = segno.make_qr(data, error=ecc.lower(), boost_error=False)
    matrix = np.array([list(row) for row in qr.matrix], dtype=np.bool_)
    matrix = np.pad(matrix, 4)
    scale = max(1, min(module_size, width_dots // matrix.shape[1]))
    big = np.kron(matrix, np.ones((scale, scale), dtype=np.bool_))
    out = np.zeros((big.shape[0], width_dots), dtype=np.bool_)
    left = max(0, (width_dots - big.shape[1]) // 2)
    out[:, left : left + big.shape[1]] = big[:, : width_dots - left]
    return out


# --- the document encoder ------------------------------------------------------------

DUPLICATE_BANNER = ("ДУБЛИКАТ", "DUPLICATE")


def _banner(footer: bool) -> tuple[Block, ...]:
    if footer:
        return (Rule(), Text(" / ".join(DUPLICATE_BANNER), Align.CENTER, bold=True))
    return (
        *(Text(t, Align.CENTER, bold=True, large=True) for t in DUPLICATE_BANNER),
        Rule(),
    )


class _Writer:
    """Accumulates frames, sending mode changes only when the mode actually changes."""

    def __init__(self, profile: PrinterProfile) -> None:
        self.profile = profile
        self.cmds: list[Command] = [Initialize()]
        self.page: int | None = None
        self.align = Align.LEFT
        self.bold = False
        self.large = False

    def set_align(self, align: Align) -> None:
        if align is not self.align:
            self.cmds.append(SetAlign((Align.LEFT, Align.CENTER, Align.RIGHT).index(align)))
            self.align = align

    def set_style(self, bold: bool, large: bool) -> None:
        if bold != self.bold:
            self.cmds.append(SetEmphasis(int(bold)))
            self.bold = bold
        if large != self.large:
            self.cmds.append(SetCharSize(0x11 if large else 0x00))
            self.large = large

    def text_line(self, number: int, encoded: bytes, align: Align, bold: bool, large: bool) -> None:
        if number != self.page:
            self.cmds.append(SelectCodePage(number))
            self.page = number
        self.set_align(align)
        self.set_style(bold, large)
        if encoded:
            self.cmds.append(TextBytes(encoded))
        self.cmds.append(LineFeed())

    def raster(self, dots: npt.NDArray[np.bool_]) -> None:
        # Blank rows above and below the ink become paper feeds: on a 9600-baud
        # serial line every raster row of a 58 mm printer costs 50 ms.
        inked = np.flatnonzero(dots.any(axis=1))
        if inked.size == 0:
            self.feed_dots(dots.shape[0])
            return
        top, bottom = int(inked[0]), int(inked[-1]) + 1
        self.feed_dots(top)
        self.set_align(Align.LEFT)  # raster images carry their own alignment
        self.cmds.extend(raster_bands(dots[top:bottom], self.profile.raster_band_rows))
        self.feed_dots(dots.shape[0] - bottom)

    def feed_dots(self, n: int) -> None:
        while n > 0:
            self.cmds.append(FeedDots(min(n, 255)))
            n -= 255


def _text_block(w: _Writer, block: Text, index: int) -> None:
    check_text(block.text, index)
    profile = w.profile
    cpl = profile.chars_per_line // (2 if block.large else 1)
    choice = pick_code_page(block.text, profile)
    if choice is not None:
        number, codec, _ = choice
        lines = textwrap.wrap(block.text, cpl, break_long_words=True) or [""]
        for line in lines:
            w.text_line(number, line.encode(codec), block.align, block.bold, block.large)
        return
    for line in wrap_raster_text(block.text, profile.dots_per_line,
                                 bold=block.bold, large=block.large):
        w.raster(render_text_line(line, profile.dots_per_line,
                                  bold=block.bold, large=block.large, align=block.align))


def _qr_block(w: _Writer, block: QRCode, index: int) -> None:
    try:
        data = block.data.encode("ascii")
    except UnicodeEncodeError:
        raise DocumentError("QR data must be ASCII", index) from None
    if not data or len(data) > QR_MAX_BYTES:
        raise DocumentError(f"QR data must be 1-{QR_MAX_BYTES} bytes, not {len(data)}", index)
    if not 1 <= block.module_size <= 16:
        raise DocumentError(f"QR module size {block.module_size} not in 1-16", index)
    if w.profile.qr_native:
        w.set_align(Align.CENTER)
        w.cmds.extend(qr_commands(data, block.module_size))
        w.cmds.append(LineFeed())
    else:
        w.raster(qr_dots(data, block.module_size, QR_ECC, w.profile.dots_per_line))


def document_commands(doc: Document, profile: PrinterProfile) -> list[Command]:
    """The frames that print ``doc`` on a printer with ``profile``, ending with the cut.

    Raises :class:`DocumentError` for text with control characters or a QR
    payload that is not 1-2331 ASCII bytes, :class:`FontMissingError` when a
    line needs rasterising and the font is not installed.
    """
    w = _Writer(profile)
    blocks: Sequence[Block] = doc.blocks
    if doc.duplicate:
        blocks = (*_banner(footer=False), *doc.blocks, *_banner(footer=True))
    for index, block in enumerate(blocks):
        if isinstance(block, Text):
            for part in block.text.split("\n"):
                _text_block(w, Text(part, block.align, block.bold, block.large), index)
        elif isinstance(block, Rule):
            w.set_style(False, False)
            w.text_line(w.page if w.page is not None else profile.code_pages[-1][0],
                        b"-" * profile.chars_per_line, Align.LEFT, False, False)
        elif isinstance(block, QRCode):
            _qr_block(w, block, index)
        else:
            if not 1 <= block.lines <= 255:
                raise DocumentError(f"feed of {block.lines} lines not in 1-255", index)
            w.cmds.append(FeedLines(block.lines))
    w.set_style(False, False)
    w.set_align(Align.LEFT)
    w.cmds.append(Cut(66 if profile.cut == "partial" else 65, CUT_FEED_DOTS))
    return w.cmds


def encode_commands(cmds: Iterable[Command]) -> bytes:
    """Concatenate frames into the byte stream sent to the printer."""
    return b"".join(c.to_bytes() for c in cmds)


def encode_document(doc: Document, profile: PrinterProfile) -> bytes:
    """The ESC/POS bytes that print ``doc`` (see :func:`document_commands`)."""
    return encode_commands(document_commands(doc, profile))


def resync_padding(profile: PrinterProfile) -> bytes:
    """NUL bytes that complete the longest command this encoder can leave half-sent.

    After a write fails midway the printer may be inside a ``GS v 0`` band or a
    ``GS ( k`` store and would swallow the next slip as image data. Sending this
    first completes such a command with blank data; outside a command printers
    ignore NUL.
    """
    band = (profile.raster_band_rows + 1) * ((profile.dots_per_line + 7) // 8) + 8
    return b"\x00" * max(band, QR_MAX_BYTES + 8)


STATUS_QUERY = b"".join(RealtimeStatus(n).to_bytes() for n in (1, 2, 3, 4))
"""The four ``DLE EOT`` queries the service sends together (answers: 4 bytes, in order)."""
