"""ESC/POS codec: byte vectors, parser round trips, text code-page choice, raster fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.drivers.printer import escpos as e
from agent.drivers.printer.document import Align, Document, Feed, QRCode, Rule, Text
from agent.drivers.printer.encoder import document_commands, encode_document
from agent.drivers.printer.errors import DocumentError, FontMissingError, FrameError
from agent.drivers.printer.profiles import get_profile
from agent.drivers.printer.qr import qr_dots
from agent.drivers.printer.render import layout_raster, load_font, raster_bands, render_text_line
from hardware_sim.escpos_sim import PrinterEngine, Scenario

EPSON = get_profile("epson-tm-t20iii")
GENERIC = get_profile("generic-58")
KYRGYZ = "ҢңӨөҮү"


def _decode(data: bytes, tmp_path: Path, profile_name: str = "epson-tm-t20iii") -> list[str]:
    """Run bytes through the simulator's engine; return the text of each slip."""
    engine = PrinterEngine(tmp_path, get_profile(profile_name), Scenario("t", "test"))
    engine.receive(data)
    return [s.text for s in engine.slips]


# --- frames: byte vectors ------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "wire"),
    [
        (e.Initialize(), b"\x1b\x40"),
        (e.SelectCodePage(53), b"\x1b\x74\x35"),
        (e.SetAlign(1), b"\x1b\x61\x01"),
        (e.SetEmphasis(1), b"\x1b\x45\x01"),
        (e.SetCharSize(0x11), b"\x1d\x21\x11"),
        (e.FeedLines(3), b"\x1b\x64\x03"),
        (e.Cut(66, 48), b"\x1d\x56\x42\x30"),
        (e.Cut(0), b"\x1d\x56\x00"),
        (e.RealtimeStatus(4), b"\x10\x04\x04"),
        (e.TransmitStatus(1), b"\x1d\x72\x01"),
        (e.RasterImage(0, 2, 1, b"\x80\x01"), b"\x1d\x76\x30\x00\x02\x00\x01\x00\x80\x01"),
        (e.SymbolCommand(49, 80, b"0AB"), b"\x1d\x28\x6b\x05\x00\x31\x50\x30AB"),
        (e.SymbolCommand(49, 81, b"0"), b"\x1d\x28\x6b\x03\x00\x31\x51\x30"),
        (e.SymbolCommand(49, 69, b"\x31"), b"\x1d\x28\x6b\x03\x00\x31\x45\x31"),
    ],
)
def test_frame_bytes_and_parse_back(frame: e.Command, wire: bytes) -> None:
    assert frame.to_bytes() == wire
    assert e.parse_all(wire) == [frame]


def test_status_query_is_four_dle_eot() -> None:
    expected = bytes.fromhex("100401 100402 100403 100404")
    assert expected == e.STATUS_QUERY


def test_kz1048_positions_of_kyrgyz_letters() -> None:
    # PROTOCOLS.md: Ң BD, ң BE, Ө A5, ө B4, Ү AF, ү BF.
    assert KYRGYZ.encode("kz1048") == bytes.fromhex("bd be a5 b4 af bf")
    for codec in ("cp866", "cp1251", "cp437"):
        with pytest.raises(UnicodeEncodeError):
            KYRGYZ.encode(codec)


def test_frame_constructors_refuse_bad_fields() -> None:
    with pytest.raises(FrameError):
        e.RasterImage(0, 2, 2, b"\x00")  # 2 x 2 needs 4 bytes
    with pytest.raises(FrameError):
        e.RasterImage(7, 1, 1, b"\x00")
    with pytest.raises(FrameError):
        e.RealtimeStatus(5)


def test_raster_array_round_trip() -> None:
    dots = np.zeros((3, 16), dtype=np.bool_)
    dots[0, 0] = dots[1, 9] = dots[2, 15] = True
    img = e.RasterImage.from_array(dots)
    assert img.width_bytes == 2 and img.height == 3
    assert img.data == bytes([0x80, 0x00, 0x00, 0x40, 0x00, 0x01])
    assert np.array_equal(img.to_array(), dots)


# --- parser ---------------------------------------------------------------------------


def test_parser_holds_incomplete_commands() -> None:
    p = e.EscposParser()
    assert p.feed(b"\x1d\x76\x30\x00\x01\x00\x02") == []
    assert p.pending == 7
    assert p.feed(b"\x00\xff") == []
    assert p.feed(b"\x0f") == [e.RasterImage(0, 1, 2, b"\xff\x0f")]
    assert p.pending == 0


def test_parser_unknown_bytes_are_reported_not_dropped() -> None:
    cmds = e.parse_all(b"\x1bzA\x07\x10\x05\x01")
    assert cmds == [e.Unknown(b"\x1bz"), e.TextBytes(b"A"), e.Unknown(b"\x07"),
                    e.Unknown(b"\x10\x05"), e.Unknown(b"\x01")]


def test_parser_knows_commands_it_ignores() -> None:
    # Drawer kick, margins, standard mode: parsed whole, so their parameters are
    # never mistaken for text.
    cmds = e.parse_all(b"\x1bp\x00\x19\xfa\x1dL\x10\x00\x1bSA")
    assert cmds == [e.OtherCommand(b"\x1bp\x00\x19\xfa"), e.OtherCommand(b"\x1dL\x10\x00"),
                    e.OtherCommand(b"\x1bS"), e.TextBytes(b"A")]


def test_parse_all_reports_truncated_tail() -> None:
    assert e.parse_all(b"ok\x1d\x28\x6b\x05\x00\x31") == [
        e.TextBytes(b"ok"), e.Unknown(b"\x1d\x28\x6b\x05\x00\x31")
    ]


def _slip(duplicate: bool = False) -> Document:
    return Document(
        "slip",
        "0042",
        (
            Text("Шайлоочунун чеги", Align.CENTER, bold=True, large=True),
            Rule(),
            Text("Аты-жөнү: Өмүрбек Үсөнов"),
            Text("Участок 1234, Бишкек", Align.RIGHT),
            QRCode("KESP:0042:ab12"),
            Feed(2),
        ),
        duplicate,
    )


@pytest.mark.parametrize("profile", ["epson-tm-t20iii", "generic-58", "citizen-ct-s310ii"])
def test_encoded_document_parses_back_identically_in_any_chunking(profile: str) -> None:
    prof = get_profile(profile)
    cmds = document_commands(_slip(), prof)
    wire = e.encode_commands(cmds)
    assert e.parse_all(wire) == cmds
    p = e.EscposParser()
    one_by_one = [c for i in range(len(wire)) for c in p.feed(wire[i : i + 1])]
    # Text runs have no delimiter, so chunking may split them; nothing else may differ.
    assert _merge_text(one_by_one) == cmds
    # A document a code page cannot carry is all raster (one typeface): no text run to split.
    has_text = any(isinstance(c, e.TextBytes) for c in cmds)
    assert len(one_by_one) > len(cmds) if has_text else len(one_by_one) == len(cmds)


def _merge_text(cmds: list[e.Command]) -> list[e.Command]:
    out: list[e.Command] = []
    for c in cmds:
        if isinstance(c, e.TextBytes) and out and isinstance(out[-1], e.TextBytes):
            out[-1] = e.TextBytes(out[-1].data + c.data)
        else:
            out.append(c)
    return out


# --- text encoding --------------------------------------------------------------------


def test_kyrgyz_text_uses_kz1048_on_epson(tmp_path: Path) -> None:
    cmds = document_commands(_slip(), EPSON)
    wire = e.encode_commands(cmds)
    assert wire.startswith(b"\x1b@")
    assert b"\x1bt\x35" in wire
    assert "Өмүрбек Үсөнов".encode("kz1048") in wire
    assert all(b"?" not in c.data for c in cmds if isinstance(c, e.TextBytes))
    assert b"\x1dv0" not in wire  # no raster needed
    assert b"\x1d(k" in wire  # native QR
    assert wire.endswith(b"\x1dVB0")
    [text] = _decode(wire, tmp_path)
    assert "Аты-жөнү: Өмүрбек Үсөнов" in text.splitlines()
    assert "[QR KESP:0042:ab12]" in text.splitlines()


def test_kyrgyz_text_is_rasterised_without_kz1048(tmp_path: Path) -> None:
    cmds = document_commands(_slip(), GENERIC)
    wire = e.encode_commands(cmds)
    assert b"\x1bt\x35" not in wire
    assert not any(isinstance(c, e.TextBytes) for c in cmds)
    # One typeface per slip: a Kyrgyz line the printer cannot carry makes every line a
    # raster in DejaVu Sans, the Russian-only ones too (no CP866 text mixed in).
    assert "Участок 1234, Бишкек".encode("cp866") not in wire
    assert b"\x1bt\x11" not in wire
    assert not any(isinstance(c, e.SymbolCommand) for c in cmds)
    rasters = [c for c in cmds if isinstance(c, e.RasterImage)]
    assert rasters and all(c.width_bytes * 8 == GENERIC.dots_per_line for c in rasters)
    [text] = _decode(wire, tmp_path, "generic-58")
    lines = text.splitlines()
    assert "Участок 1234, Бишкек" not in lines
    # heading, rule, text lines and QR: consecutive rasters, read back as one image
    assert lines and all(line.startswith("[raster 384x") for line in lines if line), lines


def test_raster_text_has_ink_where_the_letters_are() -> None:
    dots = render_text_line("Ңң", 384, bold=False, large=False, align=Align.LEFT)
    assert dots.shape == (30, 384)
    cols = np.flatnonzero(dots.any(axis=0))
    assert 0 <= cols[0] < 5 and 20 < cols[-1] < 60  # two glyphs at the left edge
    centred = render_text_line("Ңң", 384, bold=False, large=False, align=Align.CENTER)
    ccols = np.flatnonzero(centred.any(axis=0))
    assert abs((ccols[0] + ccols[-1]) / 2 - 192) < 6


def test_long_lines_wrap_to_the_profile_width(tmp_path: Path) -> None:
    words = "Кыргыз Республикасынын Борбордук шайлоо комиссиясы " * 3
    doc = Document("slip", "1", (Text(words.strip()),))
    [text] = _decode(encode_document(doc, EPSON), tmp_path)
    lines = text.splitlines()
    assert len(lines) >= 3 and all(len(line) <= EPSON.chars_per_line for line in lines)
    assert " ".join(lines) == words.strip()
    _px, raster_lines = layout_raster(words.strip(), 384, bold=False, large=False)
    assert len(raster_lines) >= 4 and " ".join(raster_lines) == words.strip()


def test_duplicate_banner_only_on_reprints(tmp_path: Path) -> None:
    [original] = _decode(encode_document(_slip(), EPSON), tmp_path / "a")
    [reprint] = _decode(encode_document(_slip(duplicate=True), EPSON), tmp_path / "b")
    assert "ДУБЛИКАТ" not in original and "DUPLICATE" not in original
    lines = reprint.splitlines()
    assert lines[:2] == ["ДУБЛИКАТ", "DUPLICATE"]
    assert lines[-1] == "ДУБЛИКАТ / DUPLICATE"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (Text("Иван\x1bV\x42"), "control character U\\+001B"),
        (Text("tab\there"), "control character U\\+0009"),
        (QRCode("Өмүр"), "QR data must be ASCII"),
        (QRCode(""), "QR data must be 1-"),
        (QRCode("x", module_size=0), "module size 0"),
        (Feed(0), "feed of 0 lines"),
    ],
)
def test_bad_documents_are_refused_with_the_block_index(block: Text | QRCode | Feed,
                                                        message: str) -> None:
    doc = Document("slip", "1", (Text("ok"), block))
    with pytest.raises(DocumentError, match=message) as info:
        encode_document(doc, EPSON)
    assert info.value.block_index == 1


def test_missing_font_is_named() -> None:
    with pytest.raises(FontMissingError, match=r"nonexistent\.ttf.*fonts-dejavu-core"):
        load_font(Path("/nonexistent.ttf"), 20)


def test_raster_bands_avoid_heights_that_are_multiples_of_48() -> None:
    bands = raster_bands(np.ones((96, 16), dtype=np.bool_), 64)
    assert [b.height for b in bands] == [64, 32]
    assert [b.height for b in raster_bands(np.ones((48, 16), dtype=np.bool_), 64)] == [49]


def test_qr_raster_fallback_decodes_to_the_segno_matrix() -> None:
    import segno

    dots = qr_dots(b"KESP:1", 3, "M", 384)
    matrix = np.array([list(r) for r in segno.make_qr(b"KESP:1", error="m",
                                                      boost_error=False).matrix], dtype=bool)
    rows = np.flatnonzero(dots.any(axis=1))
    cols = np.flatnonzero(dots.any(axis=0))
    crop = dots[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    assert np.array_equal(crop[::3, ::3], matrix)


_ALPHABET = "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВЕЁЖЯ" + KYRGYZ + "abcXYZ0189 .,:;-№"


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=_ALPHABET, min_size=1, max_size=48))
def test_any_kyrgyz_russian_line_round_trips_through_the_simulator(line: str) -> None:
    import tempfile

    line = " ".join(line.split()) or "x"
    with tempfile.TemporaryDirectory() as tmp:
        [text] = _decode(encode_document(Document("t", "1", (Text(line),)), EPSON), Path(tmp))
    assert text == line


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(1, 40), max_size=20))
def test_parser_never_loses_or_invents_bytes(data: bytes, cuts: list[int]) -> None:
    # Every frame re-encodes to exactly the bytes it came from, whatever the
    # input and however it is chunked: garbage is kept as Unknown, never dropped.
    assert e.encode_commands(e.parse_all(data)) == data
    p = e.EscposParser()
    out: list[e.Command] = []
    pos = 0
    for n in cuts:
        out += p.feed(data[pos : pos + n])
        pos += n
    out += p.feed(data[pos:])
    assert e.encode_commands(out) + data[len(data) - p.pending :] == data


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([
    b"\x1b@", b"\x1bt\x35", b"\x1bt\x63", b"\x1d!\xff", b"\x1ba\x07", b"abc\xbd",
    b"\n", b"\x1bd\x02", b"\x1dV\x42\x10", b"\x1dV\x00", b"\x1d(k\x03\x001C\x10",
    b"\x1d(k\x03\x001Q0", b"\x1d(k\x05\x001P0AB", b"\x1dv0\x03\x01\x00\x02\x00\xf0\x0f",
    b"\x10\x04\x02", b"\x1dr\x01", b"\x1b\xff", b"\x00", b"\x1b3\x00",
]), max_size=40))
def test_simulator_survives_any_command_sequence(parts: list[bytes]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        engine = PrinterEngine(Path(tmp), EPSON, Scenario("t", "test", paper_mm=20.0))
        engine.receive(b"".join(parts))
        engine.load_paper()
        for slip in engine.slips:
            assert slip.png.is_file() and slip.txt.is_file()
