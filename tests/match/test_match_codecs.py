"""Template codecs: known byte vectors, round trips, malformed input."""

from __future__ import annotations

import contextlib
import math
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.match.codecs import detect_format, load_template, load_templates, to_ansi378, to_iso2005
from agent.match.template import MinutiaType, Template, TemplateError
from hardware_sim.fuzz import mutate


def iso2005(minutiae: list[tuple[int, int, int, int, int]], *, width: int = 300, height: int = 400,
            res: int = 197, ext: bytes = b"\x00\x00", views: int = 1) -> bytes:
    """Hand-built ISO 19794-2:2005 record: minutiae are (type, x, y, angle code, quality)."""
    view = bytes((3, 0, 60, len(minutiae)))
    for kind, x, y, a, q in minutiae:
        view += ((kind << 14) | x).to_bytes(2, "big") + y.to_bytes(2, "big") + bytes((a, q))
    view += ext
    body = view * views
    total = 24 + len(body)
    return (b"FMR\x00 20\x00" + total.to_bytes(4, "big") + b"\x00\x00"
            + width.to_bytes(2, "big") + height.to_bytes(2, "big")
            + res.to_bytes(2, "big") + res.to_bytes(2, "big") + bytes((views, 0)) + body)


def iso2011(minutiae: list[tuple[int, int, int, int]], *, size: int = 6, res: int = 197,
            quality_blocks: int = 1, cert: bool = False) -> bytes:
    """Hand-built ISO 19794-2:2011 record with one representation."""
    rep = bytes(9) + b"\x00" + b"\x00\x01" + b"\x00\x02"
    rep += bytes((quality_blocks,)) + bytes((77, 0, 1, 0, 2)) * quality_blocks
    if cert:
        rep += b"\x01" + b"\x00\x01\x02"
    rep += bytes((2, 0)) + res.to_bytes(2, "big") + res.to_bytes(2, "big") + b"\x00"
    rep += (300).to_bytes(2, "big") + (400).to_bytes(2, "big")
    rep += bytes(((size << 4) | 0, len(minutiae)))
    for kind, x, y, a in minutiae:
        rep += ((kind << 14) | x).to_bytes(2, "big") + y.to_bytes(2, "big") + bytes((a,))
        if size == 6:
            rep += b"\xfe"
    rep += b"\x00\x00"
    rep = (4 + len(rep)).to_bytes(4, "big") + rep
    total = 15 + len(rep)
    return (b"FMR\x00030\x00" + total.to_bytes(4, "big") + (1).to_bytes(2, "big")
            + bytes((1 if cert else 0,)) + rep)


def test_known_iso2005_vector() -> None:
    data = iso2005([(1, 10, 20, 64, 80), (2, 299, 399, 0, 0)])
    assert detect_format(data) == "iso2005"
    t = load_template(data)
    assert (t.width, t.height, t.quality, t.finger_position) == (300, 400, 60, 3)
    assert t.x.tolist() == [10.0, 299.0]
    assert t.y.tolist() == [20.0, 399.0]
    assert t.angle[0] == pytest.approx(math.pi / 2)
    assert t.kind.tolist() == [MinutiaType.RIDGE_ENDING, MinutiaType.BIFURCATION]
    assert t.minutia_quality.tolist() == [80, 0]
    assert to_iso2005(t) == data


def test_real_fvc_template(ref_data: Path) -> None:
    raw = (ref_data / "fvc2002" / "DB1_B" / "101_1.iso").read_bytes()
    t = load_template(raw)
    assert len(t) == 25
    # First minutia bytes 80 a5 00 30 6b 00: bifurcation at (165, 48), 107 * 360/256 degrees.
    assert (t.kind[0], t.x[0], t.y[0]) == (MinutiaType.BIFURCATION, 165.0, 48.0)
    assert math.degrees(float(t.angle[0])) == pytest.approx(107 * 360 / 256, abs=1e-4)
    assert to_iso2005(t) == raw


def test_every_fvc_template_round_trips(ref_data: Path) -> None:
    files = sorted((ref_data / "fvc2002").glob("DB*_B/*.iso"))
    assert len(files) == 320
    for f in files:
        raw = f.read_bytes()
        t = load_template(raw)
        assert to_iso2005(t) == raw
        back = load_template(to_ansi378(t))
        np.testing.assert_array_equal(back.x, t.x)
        np.testing.assert_array_equal(back.y, t.y)
        # ANSI keeps 2-degree steps, ISO 1.40625-degree steps.
        diff = np.angle(np.exp(1j * (back.angle.astype(np.float64) - t.angle)))
        assert np.abs(diff).max() <= math.radians(1.0) + 1e-6


def test_resolution_is_normalised_to_500_dpi() -> None:
    # 569 dpi ~ 224 px/cm (FVC2002 DB2): coordinates shrink by 197/224.
    t = load_template(iso2005([(1, 224, 112, 0, 0)], width=300, height=400, res=224))
    assert t.x[0] == pytest.approx(197.0)
    assert t.y[0] == pytest.approx(98.5)
    assert t.width == round(300 * 197 / 224)


def test_multiple_views() -> None:
    data = iso2005([(1, 5, 6, 7, 8)], views=2)
    assert len(load_templates(data)) == 2


def test_iso2011_reads_both_minutia_sizes() -> None:
    for size in (5, 6):
        for cert in (False, True):
            data = iso2011([(1, 100, 200, 128), (2, 5, 6, 0)], size=size, cert=cert)
            assert detect_format(data) == "iso2011"
            t = load_template(data)
            assert t.x.tolist() == [100.0, 5.0]
            assert t.angle[0] == pytest.approx(math.pi)
            assert t.minutia_quality.tolist() == [0, 0]  # 254 = not reported
            assert t.quality == 77
            assert t.finger_position == 2


def test_ansi378_known_vector_and_long_form() -> None:
    t = Template.from_arrays([10, 20], [30, 40], [0.0, math.pi], width=300, height=400,
                             kind=[1, 2], minutia_quality=[50, 60], quality=40)
    short = to_ansi378(t, product_id=0x00330102)
    assert detect_format(short) == "ansi378"
    assert int.from_bytes(short[8:10], "big") == len(short)
    assert short[10:14] == b"\x00\x33\x01\x02"
    assert short[26 + 4 + 6 + 4] == 90  # 2nd minutia: pi = 180 degrees = code 90 (2-degree units)
    # The 4-byte length form (2-byte field 0) is read too.
    long = short[:8] + b"\x00\x00" + (len(short) + 4).to_bytes(4, "big") + short[10:]
    assert load_template(long).x.tolist() == [10.0, 20.0]


def test_extended_data_both_length_conventions() -> None:
    counted = b"\x00\x0a" + b"\x01\x00\x00\x0a" + b"\xaa" * 6
    uncounted = b"\x00\x0a" + b"\x01\x00\x00\x06" + b"\xaa" * 6
    for ext in (counted, uncounted):
        assert len(load_template(iso2005([(1, 1, 1, 1, 1)], ext=ext))) == 1
    bad = b"\x00\x0a" + b"\x01\x00\x00\x20" + b"\xaa" * 6
    with pytest.raises(TemplateError) as err:
        load_template(iso2005([(1, 1, 1, 1, 1)], ext=bad))
    assert err.value.field == "extended data block length"


@pytest.mark.parametrize(
    ("mutate", "field", "offset"),
    [
        (lambda b: b"FMX\x00" + b[4:], "format identifier", 0),
        (lambda b: b[:4] + b" 21\x00" + b[8:], "version", 4),
        (lambda b: b[:8] + (len(b) + 1).to_bytes(4, "big") + b[12:], "record length", 8),
        (lambda b: b[:14] + b"\x00\x00" + b[16:], "image width", 14),
        (lambda b: b[:18] + b"\x00\x00" + b[20:], "x resolution", 18),
        (lambda b: b[:22] + b"\x00" + b[23:], "number of finger views", 22),
        (lambda b: b[:24] + b"\x0b" + b[25:], "finger position", 24),
        (lambda b: b[:26] + b"\x65" + b[27:], "finger quality", 26),
        (lambda b: b[:27] + b"\x05" + b[28:], "number of minutiae", 28),
        (lambda b: b[:28] + b"\xc0" + b[29:], "minutia 0 type", 28),
        (lambda b: b[:28] + b"\x41\x2c" + b[30:], "minutia 0 x", 28),
        (lambda b: b[:30] + b"\x01\x90" + b[32:], "minutia 0 y", 30),
        (lambda b: b[:33] + b"\x65" + b[34:], "minutia 0 quality", 33),
    ],
)
def test_malformed_fields_are_named(mutate: object, field: str, offset: int) -> None:
    good = iso2005([(1, 10, 20, 30, 40)])
    bad = mutate(good)  # type: ignore[operator]
    with pytest.raises(TemplateError) as err:
        load_template(bad)
    assert err.value.field == field
    assert err.value.offset == offset


def test_ansi_angle_out_of_range() -> None:
    t = Template.from_arrays([10], [20], [0.0], width=300, height=400)
    data = bytearray(to_ansi378(t))
    data[26 + 4 + 4] = 180
    with pytest.raises(TemplateError) as err:
        load_template(bytes(data))
    assert err.value.field == "minutia 0 angle"


def test_every_truncation_is_a_template_error() -> None:
    for data in (iso2005([(1, 10, 20, 30, 40)] * 3), iso2011([(1, 10, 20, 30)] * 3)):
        for n in range(len(data)):
            with pytest.raises(TemplateError):
                load_template(data[:n])


def test_huge_counts_do_not_allocate_or_hang() -> None:
    data = bytearray(iso2011([(1, 10, 20, 30)]))
    data[15:19] = (0xFFFFFFF0).to_bytes(4, "big")  # representation length lie
    with pytest.raises(TemplateError):
        load_template(bytes(data))
    data = bytearray(iso2005([(1, 10, 20, 30, 40)]))
    data[22] = 255  # 255 views announced, one present
    with pytest.raises(TemplateError):
        load_template(bytes(data))


def test_non_bytes_input() -> None:
    with pytest.raises(TemplateError):
        load_template("FMR")  # type: ignore[arg-type]


def test_fuzz_slice(ref_data: Path) -> None:
    """A fast slice of the 1,000,000-mutation fuzz (``python -m benchmarks fuzz``)."""
    seeds = [
        (ref_data / "fvc2002" / "DB2_B" / "101_1.iso").read_bytes(),
        iso2011([(1, 10, 20, 30)] * 4),
        to_ansi378(load_template((ref_data / "fvc2002" / "DB3_B" / "105_3.iso").read_bytes())),
    ]
    rng = random.Random(1234)
    for _ in range(3000):
        data = mutate(rng, rng.choice(seeds))
        # Accepted or TemplateError are both fine; anything else fails the test.
        with contextlib.suppress(TemplateError):
            load_template(data)


minutia = st.tuples(
    st.integers(0, 2), st.integers(0, 299), st.integers(0, 399), st.integers(0, 255),
    st.integers(0, 100),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(minutia, max_size=60), st.integers(0, 100), st.integers(0, 10))
def test_iso2005_round_trip(ms: list[tuple[int, int, int, int, int]], quality: int,
                            position: int) -> None:
    t = Template.from_arrays(
        [m[1] for m in ms], [m[2] for m in ms], [m[3] * 2 * math.pi / 256 for m in ms],
        kind=[m[0] for m in ms], minutia_quality=[m[4] for m in ms], width=300, height=400,
        quality=quality, finger_position=position,
    )
    data = to_iso2005(t)
    back = load_template(data)
    assert to_iso2005(back) == data
    np.testing.assert_array_equal(back.x, t.x)
    np.testing.assert_array_equal(back.kind, t.kind)
    assert (back.quality, back.finger_position) == (quality, position)


@settings(max_examples=200, deadline=None)
@given(st.lists(minutia, max_size=60))
def test_ansi378_round_trip(ms: list[tuple[int, int, int, int, int]]) -> None:
    t = Template.from_arrays(
        [m[1] for m in ms], [m[2] for m in ms], [math.radians(2 * (m[3] % 180)) for m in ms],
        kind=[m[0] for m in ms], minutia_quality=[m[4] for m in ms], width=300, height=400,
    )
    data = to_ansi378(t)
    back = load_template(data)
    assert to_ansi378(back) == data
    np.testing.assert_array_equal(back.y, t.y)
    np.testing.assert_array_equal(back.minutia_quality, t.minutia_quality)


def test_writer_rejects_what_it_cannot_encode() -> None:
    t = Template.from_arrays([400], [20], [0.0], width=300, height=400)
    with pytest.raises(TemplateError):
        to_iso2005(t)
    many = Template.from_arrays([1] * 256, [1] * 256, [0.0] * 256, width=300, height=400)
    with pytest.raises(TemplateError):
        to_ansi378(many)
