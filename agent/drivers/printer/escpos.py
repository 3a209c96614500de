"""ESC/POS frame codec: one frozen dataclass per command, and an incremental stream parser.

Pure: no I/O. Byte-exact and shared by the printer service and the simulator
(``hardware_sim.escpos_sim``): each frame has ``to_bytes()``;
:class:`EscposParser` turns a byte stream (delivered in any chunking) back into
the same frames. What goes into a slip is decided above this module: text
(:mod:`.render`), QR codes (:mod:`.qr`), the whole document (:mod:`.encoder`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.drivers.printer.document import Align
from agent.drivers.printer.errors import FrameError

ESC = 0x1B
GS = 0x1D
DLE = 0x10
EOT = 0x04
LF = 0x0A


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


def encode_commands(cmds: Iterable[Command]) -> bytes:
    """Concatenate frames into the byte stream sent to the printer."""
    return b"".join(c.to_bytes() for c in cmds)


STATUS_QUERY = b"".join(RealtimeStatus(n).to_bytes() for n in (1, 2, 3, 4))
"""The four ``DLE EOT`` queries the service sends together (answers: 4 bytes, in order)."""
