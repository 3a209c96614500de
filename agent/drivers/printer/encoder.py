"""The document encoder: a :class:`~agent.drivers.printer.document.Document` to ESC/POS bytes.

Pure: no I/O. :func:`encode_document` lays out a document for one printer
profile: a DUPLICATE banner for reprints, each text line from a code page or
rasterised (:mod:`.render`), native ``GS ( k`` QR or a raster QR (:mod:`.qr`),
feed, ``GS V`` cut; mode changes are sent only when the mode changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from agent.drivers.printer.document import Align, Block, Document, QRCode, Rule, Text
from agent.drivers.printer.errors import DocumentError
from agent.drivers.printer.escpos import (
    Command,
    Cut,
    FeedDots,
    FeedLines,
    Initialize,
    LineFeed,
    SelectCodePage,
    SetAlign,
    SetCharSize,
    SetEmphasis,
    TextBytes,
    encode_commands,
)
from agent.drivers.printer.profiles import CUT_FEED_DOTS, QR_ECC, QR_MAX_BYTES, PrinterProfile
from agent.drivers.printer.qr import qr_commands, qr_dots
from agent.drivers.printer.render import (
    check_text,
    layout_cells,
    layout_raster,
    pick_code_page,
    raster_bands,
    render_text_line,
    rule_dots,
)

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

    def __init__(self, profile: PrinterProfile, raster_text: bool = False) -> None:
        self.profile = profile
        #: Every text line rasterised (one typeface for the whole document).
        self.raster_text = raster_text
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
    choice = None if w.raster_text else pick_code_page(block.text, profile)
    if choice is not None:
        number, codec, _ = choice
        large, lines = layout_cells(block.text, profile.chars_per_line, large=block.large)
        for line in lines:
            w.text_line(number, line.encode(codec), block.align, block.bold, large)
        return
    px, lines = layout_raster(block.text, profile.dots_per_line, bold=block.bold,
                              large=block.large)
    for line in lines:
        w.raster(render_text_line(line, profile.dots_per_line, bold=block.bold,
                                  large=block.large, align=block.align, px=px))


def _needs_raster(blocks: Sequence[Block], profile: PrinterProfile) -> bool:
    """True when some text line has a letter no code page of the printer carries."""
    return any(isinstance(b, Text) and b.text and pick_code_page(b.text, profile) is None
               for b in blocks)


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
    blocks: Sequence[Block] = doc.blocks
    if doc.duplicate:
        blocks = (*_banner(footer=False), *doc.blocks, *_banner(footer=True))
    w = _Writer(profile, raster_text=_needs_raster(blocks, profile))
    for index, block in enumerate(blocks):
        if isinstance(block, Text):
            for part in block.text.split("\n"):
                _text_block(w, Text(part, block.align, block.bold, block.large), index)
        elif isinstance(block, Rule) and w.raster_text:
            w.raster(rule_dots(profile.dots_per_line))
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
