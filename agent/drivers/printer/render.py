"""Text on a slip: pick a code page that carries the text, or rasterise it; wrap it.

Text is sent from the first code page of the printer's profile that encodes
*every* character (KZ-1048 via ``ESC t 53`` where the model has it); otherwise
it is rendered with a TrueType font (DejaVu Sans) and sent as ``GS v 0``
raster bands. No character is ever replaced by ``?``. The encoder decides per
document, so one slip is printed in one typeface.

Lines break only between words. A word wider than the paper first makes the
font smaller (raster) or drops double size (code page); only a word that fits
at no size is hyphenated, at a syllable boundary (:func:`hyphen_points`, the
Russian and Kyrgyz rule of thumb: never a lone letter, never before ь/ъ/й).
Pure: no device I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
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
    RASTER_FONT_PX_MIN,
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


def line_dots(px: int, large: bool) -> int:
    """Height of a rasterised line of font size ``px`` (pitch scaled from the nominal size)."""
    nominal_px, nominal_dots = ((RASTER_FONT_PX_LARGE, RASTER_LINE_DOTS_LARGE) if large
                                else (RASTER_FONT_PX, RASTER_LINE_DOTS))
    return max(1, round(nominal_dots * px / nominal_px))


def raster_font(bold: bool, px: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (bold or regular) at ``px`` pixels."""
    return load_font(FONT_BOLD if bold else FONT_REGULAR, px)


def render_text_line(
    text: str, width_dots: int, *, bold: bool, large: bool, align: Align, px: int | None = None
) -> npt.NDArray[np.bool_]:
    """Draw one line of text into a ``line height x width_dots`` boolean image (True = black).

    ``px`` is the font size chosen by :func:`layout_raster` (default: the nominal size).
    """
    size = px or (RASTER_FONT_PX_LARGE if large else RASTER_FONT_PX)
    font = raster_font(bold, size)
    height = line_dots(size, large)
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


_VOWELS = frozenset("аеёиоуыэюяөүАЕЁИОУЫЭЮЯӨҮaeiouyAEIOUY")
_NO_BREAK_BEFORE = frozenset("ьъйЬЪЙ")


def hyphen_points(word: str) -> list[int]:
    """Where ``word`` may be hyphenated (indices; the hyphen goes before ``word[i]``).

    A break needs a vowel on both sides of it, at least two letters on each
    side, and is placed before the last consonant of a consonant run (``ИДЕН-
    ТИФИ-КА-ЦИЯ-ДАН``); never between two vowels, never before ь, ъ or й, never inside
    digits or after punctuation.
    """
    points = []
    for i in range(2, len(word) - 1):
        left, right = word[:i], word[i:]
        if not (any(c in _VOWELS for c in left) and any(c in _VOWELS for c in right)):
            continue
        if not (word[i - 1].isalpha() and word[i].isalpha()) or word[i] in _NO_BREAK_BEFORE:
            continue
        if len(right) < 2:
            continue
        cur_v = word[i] in _VOWELS
        nxt_v = i + 1 < len(word) and word[i + 1] in _VOWELS
        if not cur_v and nxt_v:
            points.append(i)
    return points


def wrap_words(text: str, fits: Callable[[str], bool], *, hyphenate: bool) -> list[str] | None:
    """Greedy wrap between words; None when a word fits on no line and ``hyphenate`` is off.

    With ``hyphenate`` a too-long word is split at the last :func:`hyphen_points`
    position that fits, with a hyphen; a word with no such point is cut where it
    must be (only a string with no syllables, e.g. a long number, gets there).
    """
    lines: list[str] = []
    current = ""
    words = text.split(" ")
    while words:
        word = words.pop(0)
        candidate = f"{current} {word}" if current else word
        if fits(candidate):
            current = candidate
            continue
        if current:
            lines.append(current)
            current = ""
            if fits(word):
                current = word
                continue
        if not hyphenate:
            return None
        head, tail = _split_word(word, fits)
        lines.append(head)
        words.insert(0, tail)
    lines.append(current)
    return lines


def _split_word(word: str, fits: Callable[[str], bool]) -> tuple[str, str]:
    for i in reversed(hyphen_points(word)):
        if fits(word[:i] + "-"):
            return word[:i] + "-", word[i:]
    cut = max(1, next((i for i in range(len(word), 0, -1) if fits(word[:i])), 1))
    return word[:cut], word[cut:]


def layout_raster(text: str, width_dots: int, *, bold: bool, large: bool) -> tuple[int, list[str]]:
    """Font size and lines for ``text`` rasterised across ``width_dots``.

    The nominal size if every word fits a line; otherwise the largest smaller
    size (down to ``RASTER_FONT_PX_MIN``) at which every word fits; otherwise
    the smallest size with hyphenation.
    """
    top = RASTER_FONT_PX_LARGE if large else RASTER_FONT_PX
    for px in range(top, RASTER_FONT_PX_MIN - 1, -1):
        lines = wrap_words(text, _fits(raster_font(bold, px), width_dots), hyphenate=False)
        if lines is not None:
            return px, lines
    fits = _fits(raster_font(bold, RASTER_FONT_PX_MIN), width_dots)
    return RASTER_FONT_PX_MIN, wrap_words(text, fits, hyphenate=True) or [""]


def _fits(font: ImageFont.FreeTypeFont, width_dots: int) -> Callable[[str], bool]:
    return lambda s: font.getlength(s) <= width_dots


def layout_cells(text: str, chars_per_line: int, *, large: bool) -> tuple[bool, list[str]]:
    """Size (double or not) and lines for code-page ``text`` in fixed character cells.

    Double size is kept only when every word fits a line at double size.
    """
    if large:
        lines = wrap_words(text, lambda s: len(s) <= chars_per_line // 2, hyphenate=False)
        if lines is not None:
            return True, lines
    return False, wrap_words(text, lambda s: len(s) <= chars_per_line, hyphenate=True) or [""]


def rule_dots(width_dots: int) -> npt.NDArray[np.bool_]:
    """A separator drawn as raster (a raster slip has no code-page dashes)."""
    dots = np.zeros((12, width_dots), dtype=np.bool_)
    dots[5:7, :] = True
    return dots


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
