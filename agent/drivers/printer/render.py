"""Text on a slip: pick a code page that carries a whole line, or rasterise it.

A line is sent as text from the first code page of the printer's profile that
encodes *every* character (KZ-1048 via ``ESC t 53`` where the model has it);
otherwise it is rendered with a TrueType font and sent as ``GS v 0`` raster
bands. No character is ever replaced by ``?``. Pure: no device I/O.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from agent.drivers.printer.document import Align
from agent.drivers.printer.errors import DocumentError, FontMissingError
from agent.drivers.printer.escpos import RasterImage
from agent.drivers.printer.profiles import (
    FONT_BOLD,
    FONT_REGULAR,
    RASTER_BAD_BAND_MULTIPLE,
    RASTER_FONT_PX,
    RASTER_FONT_PX_LARGE,
    RASTER_LINE_DOTS,
    RASTER_LINE_DOTS_LARGE,
    PrinterProfile,
)


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
