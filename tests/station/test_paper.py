"""The commission's paper, laid out and printed for 58 and 80 mm, checked against the rules.

Rules: no line wider than the paper, no word broken except by hyphenation at a
syllable boundary, one typeface per document, a legible № in every weight, a
distinct heading for a manual admission, local time with its zone, names from
the roll, signature lines and labelled counts on the reports.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from agent.drivers.printer import escpos as e
from agent.drivers.printer.document import Align, Document, QRCode, Text
from agent.drivers.printer.encoder import document_commands
from agent.drivers.printer.profiles import PrinterProfile, get_profile
from agent.drivers.printer.render import (
    hyphen_points,
    layout_cells,
    layout_raster,
    pick_code_page,
    raster_font,
    render_text_line,
)
from agent.roll.package import NAME_MAX_BYTES
from agent.station.slips import identified_slip
from hardware_sim.escpos_sim import _Glyphs
from hardware_sim.paper import AT, PLACE, VOTER, render, sample_documents

PROFILES = ["generic-58", "epson-tm-t20iii", "citizen-ct-s310ii"]


def _raster_mode(doc: Document, profile: PrinterProfile) -> bool:
    return any(isinstance(b, Text) and pick_code_page(b.text, profile) is None
               for b in doc.blocks)


def _laid_out(doc: Document, profile: PrinterProfile) -> list[tuple[Text, list[str], int]]:
    """Each text block with its printed lines and the width each line takes (dots)."""
    raster = _raster_mode(doc, profile)
    dots_per_char = profile.dots_per_line // profile.chars_per_line
    out = []
    for b in doc.blocks:
        if not isinstance(b, Text):
            continue
        if raster:
            px, lines = layout_raster(b.text, profile.dots_per_line, bold=b.bold, large=b.large)
            font = raster_font(b.bold, px)
            widths = [round(font.getlength(line)) for line in lines]
        else:
            large, lines = layout_cells(b.text, profile.chars_per_line, large=b.large)
            widths = [len(line) * dots_per_char * (2 if large else 1) for line in lines]
        out.append((b, lines, max(widths)))
    return out


def _whole_words(source: str, lines: list[str]) -> None:
    """The lines are the source's words in order; a split word only at a hyphen point."""
    words = source.split(" ")
    pieces = " ".join(lines).split(" ")
    rebuilt: list[str] = []
    parts: list[str] = []
    for piece in pieces:
        if piece.endswith("-") and (parts or piece not in words):
            parts.append(piece[:-1])  # a fragment of a hyphenated word
            continue
        if parts:
            word = "".join(parts) + piece
            cuts = np.cumsum([len(p) for p in parts]).tolist()
            assert all(c in hyphen_points(word) for c in cuts), (parts, piece)
            rebuilt.append(word)
            parts = []
        else:
            rebuilt.append(piece)
    assert rebuilt == words, (lines, source)


@pytest.mark.parametrize("profile_name", PROFILES)
def test_no_line_wider_than_the_paper_and_no_broken_word(profile_name: str) -> None:
    profile = get_profile(profile_name)
    for name, doc in sample_documents().items():
        for block, lines, width in _laid_out(doc, profile):
            assert width <= profile.dots_per_line, (name, profile_name, lines)
            _whole_words(block.text, lines)


def _longest(words: str) -> str:
    """The longest prefix of ``words`` (whole words) a roll package's name field holds."""
    name = ""
    for word in words.split():
        if len(f"{name} {word}".encode()) > NAME_MAX_BYTES:
            return name
        name = f"{name} {word}".strip()
    raise AssertionError("not enough words")


@pytest.mark.parametrize("profile_name", PROFILES)
def test_the_longest_names_a_roll_holds_print_whole_on_every_paper(profile_name: str) -> None:
    """``cec build --stations`` refuses no name for its length below the package's limit."""
    place = replace(PLACE, station_name=_longest(
        "Ош шаары, Ленин району, Курманжан Датка атындагы № 5 орто мектеп / г. Ош, Ленинский "
        "район, средняя общеобразовательная школа № 5 имени Курманжан Датки, актовый зал"),
        district_name=_longest("Ош шаардык шайлоо округу, Түндүк-Чыгыш бөлүгү / " * 5))
    assert len(place.station_name.encode()) > NAME_MAX_BYTES - 20
    doc = identified_slip(serial="s-0001-kiosk-0001-a-00017", place=place, voter=VOTER,
                          method="identify", at=AT)
    profile = get_profile(profile_name)
    laid_out = _laid_out(doc, profile)
    for block, lines, width in laid_out:
        assert width <= profile.dots_per_line, (profile_name, lines)
        _whole_words(block.text, lines)
    assert place.station_name in " ".join(" ".join(lines) for _, lines, _ in laid_out)


@pytest.mark.parametrize("profile_name", PROFILES)
def test_one_typeface_per_document(profile_name: str) -> None:
    profile = get_profile(profile_name)
    for name, doc in sample_documents().items():
        cmds = document_commands(doc, profile)
        rasters = sum(isinstance(c, e.RasterImage) for c in cmds)
        if _raster_mode(doc, profile):
            assert not any(isinstance(c, e.TextBytes) for c in cmds), name  # all DejaVu Sans
        else:
            # Every text line in the printer's font; a raster only for a QR it cannot draw.
            qr_rasters = 0 if profile.qr_native else sum(
                isinstance(b, QRCode) for b in doc.blocks)
            assert rasters == qr_rasters and any(isinstance(c, e.TextBytes) for c in cmds), name


def test_a_word_too_long_for_58mm_shrinks_the_font_before_any_hyphen() -> None:
    px, lines = layout_raster("ИДЕНТИФИКАЦИЯДАН ӨТТҮ", 384, bold=True, large=True)
    assert lines == ["ИДЕНТИФИКАЦИЯДАН", "ӨТТҮ"] and px < 40
    px, lines = layout_raster("ИДЕНТИФИКАЦИЯЛАНБАГАНДАРДЫН", 200, bold=True, large=False)
    assert px == 18 and all(line.endswith("-") for line in lines[:-1])
    assert "".join(line.rstrip("-") for line in lines) == "ИДЕНТИФИКАЦИЯЛАНБАГАНДАРДЫН"
    _whole_words("ИДЕНТИФИКАЦИЯЛАНБАГАНДАРДЫН", lines)
    assert 13 in hyphen_points("ИДЕНТИФИКАЦИЯДАН")  # ИДЕНТИФИКАЦИЯ-ДАН
    assert 12 not in hyphen_points("ИДЕНТИФИКАЦИЯДАН")  # never ИДЕНТИФИКАЦИ-ЯДАН
    assert not any(i in hyphen_points("подъезд") for i in (3, 4))  # not before ъ, no lone "д"


def _components(ink: npt.NDArray[np.bool_]) -> int:
    """Connected ink components (4-neighbour)."""
    seen = np.zeros_like(ink)
    count = 0
    for y, x in zip(*np.nonzero(ink), strict=True):
        if seen[y, x]:
            continue
        count += 1
        stack = [(y, x)]
        while stack:
            cy, cx = stack.pop()
            if not (0 <= cy < ink.shape[0] and 0 <= cx < ink.shape[1]):
                continue
            if seen[cy, cx] or not ink[cy, cx]:
                continue
            seen[cy, cx] = True
            stack += [(cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)]
    return count


@pytest.mark.parametrize("bold", [False, True])
def test_number_sign_is_legible_in_every_weight(bold: bool) -> None:
    # N, the raised o and its bar stay apart: not one blob.
    raster = render_text_line("№", 64, bold=bold, large=False, align=Align.LEFT)
    assert _components(raster) >= 3
    large = render_text_line("№", 96, bold=bold, large=True, align=Align.LEFT)
    assert _components(large) >= 3
    cell = _Glyphs().cell("№", bold, 1, 1)  # the simulated printer's own font
    assert _components(cell) >= 2


def test_slips_say_what_happened_where_and_when() -> None:
    docs = {name: doc.plain_text() for name, doc in sample_documents().items()}
    assert "ДОПУЩЕН ПО РЕШЕНИЮ КОМИССИИ" in docs["slip-manual"]
    assert "ИДЕНТИФИКАЦИЯ ПРОЙДЕНА" not in docs["slip-manual"]
    assert "ИДЕНТИФИКАЦИЯ ПРОЙДЕНА" in docs["slip-identified"]
    for text in docs.values():
        assert PLACE.station_name in text and PLACE.district_name in text
        assert "08:41:07 (UTC+6)" in text
    for report in ("report-zero", "report-closing"):
        text = docs[report]
        assert "Asia/Bishkek" in text and "Председатель:" in text and "Секретарь:" in text
        assert text.count("_" * 24) == 4
        assert "Идентифицировано избирателей: 27" in text
    assert "Отмечено избирателей по участку (все киоски): 41" in docs["report-closing"]


@pytest.mark.parametrize("profile_name", ["generic-58", "epson-tm-t20iii"])
def test_printed_paper_fits_the_roll(profile_name: str, tmp_path: Path) -> None:
    from PIL import Image

    profile = get_profile(profile_name)
    for name, doc in sample_documents().items():
        png = render(doc, profile_name, tmp_path / f"{name}.png")
        with Image.open(png) as img:
            assert img.width == profile.dots_per_line, name
            assert (np.asarray(img.convert("L")) < 128).any(), name
