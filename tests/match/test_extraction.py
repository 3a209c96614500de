"""The public extraction API: synthetic minutiae, bad input, real images, transparency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agent.match import Matcher, MinutiaType, Template, extract
from agent.match.codecs import load_template
from agent.match.extraction import (
    QUALITY_THRESHOLD,
    ImageError,
    RecordingSink,
    show_extraction,
)
from agent.match.extraction import parameters as prm


def phase_minutia(n: int = 160, period: float = 9.0, sign: int = 1) -> np.ndarray:
    """Parallel ridges with one phase singularity at the centre: exactly one minutia.

    ``cos(2 pi y / T + sign * atan2(y - c, x - c))`` winds by one period around
    the centre, so one more line runs on its right (sign +1: a dark ridge, so
    a ridge ending) or on its left (sign -1: a light valley, so a bifurcation).
    """
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    c = n / 2 + 0.5
    f = np.cos(2 * np.pi * y / period + sign * np.arctan2(y - c, x - c))
    out: np.ndarray = np.clip(128 - 100 * f, 0, 255).astype(np.uint8)
    return out


def straight(n: int = 160, period: float = 9.0, angle_deg: float = 25.0) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    t = np.radians(angle_deg)
    f = np.cos(2 * np.pi * (-x * np.sin(t) + y * np.cos(t)) / period)
    out: np.ndarray = np.clip(128 - 100 * f, 0, 255).astype(np.uint8)
    return out


def iso_dir_error(angle: float, expected: float) -> float:
    return abs((angle - expected + np.pi) % (2 * np.pi) - np.pi)


@pytest.mark.parametrize("angle", [0.0, 25.0, 90.0, 140.0])
def test_straight_ridge_field_has_no_minutiae(angle: float) -> None:
    t = extract(straight(angle_deg=angle))
    assert isinstance(t, Template)
    assert len(t) == 0
    assert (t.width, t.height) == (160, 160)


@pytest.mark.parametrize(
    ("sign", "inverted", "kind", "iso_angle"),
    [
        # ISO (and the SecuGen register): an ending points into its ridge,
        # a bifurcation away from its stem, counter-clockwise with y up.
        (1, False, MinutiaType.RIDGE_ENDING, 0.0),
        (-1, False, MinutiaType.BIFURCATION, np.pi),
        # Inverting the image swaps ending and bifurcation at the same place
        # and with the same direction (ridge/valley duality).
        (1, True, MinutiaType.BIFURCATION, 0.0),
        (-1, True, MinutiaType.RIDGE_ENDING, np.pi),
    ],
)
def test_single_minutia_found_at_the_right_place_and_angle(
    sign: int, inverted: bool, kind: MinutiaType, iso_angle: float
) -> None:
    img = phase_minutia(sign=sign)
    t = extract(255 - img if inverted else img)
    assert len(t) == 1
    assert abs(float(t.x[0]) - 80.5) <= 4 and abs(float(t.y[0]) - 80.5) <= 4
    assert t.kind[0] == kind
    assert np.degrees(iso_dir_error(float(t.angle[0]), iso_angle)) < 15
    assert 1 <= t.minutia_quality[0] <= 100


def test_rotated_minutia_turns_its_angle_counter_clockwise() -> None:
    # Rotating the picture 90 degrees counter-clockwise (as seen) must add pi/2
    # to the ISO angle: this pins the y-down / counter-clockwise convention.
    img = phase_minutia(sign=1)
    t0 = extract(img)
    t1 = extract(np.ascontiguousarray(np.rot90(img)))
    assert len(t0) == len(t1) == 1
    assert np.degrees(iso_dir_error(float(t1.angle[0]), float(t0.angle[0]) + np.pi / 2)) < 15


@pytest.mark.parametrize(
    ("image", "dpi", "reason"),
    [
        ([[1, 2], [3, 4]], 500, "type"),
        (np.zeros((100, 100), np.float32), 500, "dtype"),
        (np.zeros((100, 100), np.uint16), 500, "dtype"),
        (np.zeros((100, 100, 3), np.uint8), 500, "ndim"),
        (np.zeros(10_000, np.uint8), 500, "ndim"),
        (np.zeros((32, 300), np.uint8), 500, "size"),
        (np.zeros((0, 0), np.uint8), 500, "size"),
        (np.zeros((3000, 100), np.uint8), 500, "size"),
        (np.zeros((1500, 1500), np.uint8), 500, "size"),
        (np.zeros((70, 70), np.uint8), 1000, "size"),
        (np.zeros((100, 100), np.uint8), 100, "dpi"),
        (np.zeros((100, 100), np.uint8), 5000, "dpi"),
        (np.zeros((100, 100), np.uint8), 500.0, "dpi"),
        (np.zeros((100, 100), np.uint8), True, "dpi"),
    ],
)
def test_what_is_not_an_image_raises_image_error(image: object, dpi: object, reason: str) -> None:
    with pytest.raises(ImageError) as err:
        extract(image, dpi=dpi)  # type: ignore[arg-type]
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "image",
    [
        np.full((288, 256), 255, np.uint8),
        np.zeros((288, 256), np.uint8),
        np.full((288, 256), 128, np.uint8),
        np.tile(np.array([0, 255], np.uint8), (288, 128)),  # vertical stripes of 1 px
    ],
    ids=["white", "black", "grey", "pixel-stripes"],
)
def test_no_finger_gives_quality_zero_and_no_minutiae(image: np.ndarray) -> None:
    t = extract(image)
    assert t.quality == 0
    assert len(t) == 0


def test_sensor_noise_is_not_a_finger() -> None:
    noise = np.random.default_rng(3).integers(0, 256, (288, 256), dtype=np.uint8)
    t = extract(noise)
    assert t.quality < QUALITY_THRESHOLD


def test_non_contiguous_view_is_accepted(ref_data: Path) -> None:
    img = read(ref_data / "fvc2002" / "DB1_B" / "101_2.png")
    view = np.asfortranarray(img)
    t1, t2 = extract(img), extract(view)
    np.testing.assert_array_equal(t1.x, t2.x)


def read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), np.uint8)


TEST_DATA = Path(__file__).resolve().parents[1] / "data" / "fvc2002"
FVC_DPI = {"DB1_B": 500, "DB2_B": 569, "DB3_B": 500, "DB4_B": 500}


@pytest.mark.parametrize("db", list(FVC_DPI))
def test_real_images_agree_with_the_register_templates(ref_data: Path, db: str) -> None:
    # Our minutiae, laid over the SecuGen template of the same image (mapped to
    # native geometry as the data README says), mostly sit on one of its
    # minutiae with the same direction: positions, axes and angles agree.
    sizes = {"DB1_B": (388, 374), "DB2_B": (296, 560), "DB3_B": (300, 300), "DB4_B": (288, 384)}
    w, h = sizes[db]
    dpi = FVC_DPI[db]
    t = extract(read(ref_data / "fvc2002" / db / "102_3.png"), dpi=dpi)
    iso = load_template((ref_data / "fvc2002" / db / "102_3.iso").read_bytes())
    sx, sy = w / 300 * 500 / dpi, h / 400 * 500 / dpi
    ix, iy = iso.x * sx, iso.y * sy
    ia = np.arctan2(np.sin(iso.angle) * sy, np.cos(iso.angle) * sx)
    assert t.quality >= QUALITY_THRESHOLD
    assert len(t) >= 12
    hits = 0
    for x, y, a in zip(t.x, t.y, t.angle, strict=True):
        d = np.hypot(ix - x, iy - y)
        da = np.abs((ia - a + np.pi) % (2 * np.pi) - np.pi)
        hits += bool(((d < 8) & (da < np.pi / 6)).any())
    assert hits / len(t) > 0.6


@pytest.mark.parametrize(("db", "gen_min"), [("DB1_B", 0.2), ("DB2_B", 0.3)])
def test_score_band_on_real_pairs(ref_data: Path, db: str, gen_min: float) -> None:
    # impression 1 of two fingers is a test-only fixture (tests/data/README.md)
    folders = (TEST_DATA / db, ref_data / "fvc2002" / db, TEST_DATA / db)
    dpi = FVC_DPI[db]
    a, b, other = (extract(read(d / f), dpi=dpi)
                   for d, f in zip(folders, ("101_1.png", "101_2.png", "102_1.png"), strict=True))
    m = Matcher()
    assert m.compare(a, b) >= gen_min
    assert m.compare(a, other) <= 0.05
    assert m.compare(b, other) <= 0.05


def test_small_sensor_frames(ref_data: Path) -> None:
    usb = ref_data / "usb-recordings"
    nb = extract(read(usb / "nb1010" / "capture.png"), dpi=385)
    assert (nb.width, nb.height) == (332, 234)
    assert nb.quality > 0 and len(nb) > 5
    # libfprint's AES3500 picture is the 128 x 128 / 500 dpi frame enlarged x2.
    aes = extract(read(usb / "aes3500" / "capture.png"), dpi=1000)
    assert (aes.width, aes.height) == (128, 128)
    assert aes.quality > 0


def test_grow_uart_image_with_16_grey_levels(ref_data: Path) -> None:
    # The Grow/ZhianTec module sends 4-bit pixels over UART: 256 x 288, 16 levels.
    img = read(ref_data / "fvc2002" / "DB1_B" / "103_2.png")[40:328, 60:316]
    four_bit = (img >> 4) * 17
    full, coarse = extract(img), extract(four_bit.astype(np.uint8))
    assert (coarse.width, coarse.height) == (256, 288)
    assert coarse.quality >= QUALITY_THRESHOLD
    assert Matcher().compare(full, coarse) > 0.3


def test_quality_drops_with_noise_and_blur(ref_data: Path) -> None:
    img = read(ref_data / "fvc2002" / "DB2_B" / "104_2.png")
    good = extract(img, dpi=569).quality
    rng = np.random.default_rng(5)
    noisy = np.clip(img + rng.normal(0, 90, img.shape), 0, 255).astype(np.uint8)
    bad = extract(noisy, dpi=569).quality
    assert good >= QUALITY_THRESHOLD > bad


def test_sink_records_every_stage_in_order(ref_data: Path) -> None:
    sink = RecordingSink()
    t = extract(read(ref_data / "fvc2002" / "DB3_B" / "101_2.png"), sink=sink)
    assert list(sink.stages)[:8] == [
        "resampled", "normalised", "segmentation", "orientation", "frequency", "quality",
        "enhanced", "binary",
    ]
    assert sink.stages["template"] is t
    assert len(sink.stages["candidates"]) >= len(t)  # type: ignore[arg-type]


def test_show_extraction_writes_a_png(ref_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    t = show_extraction(ref_data / "fvc2002" / "DB2_B" / "101_2.png", out, dpi=569)
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.size == (2 * t.width, 2 * t.height)
    # A blank image still draws (mask empty, no minutiae).
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 120), 255, np.uint8)).save(blank)
    assert len(show_extraction(blank, tmp_path / "b.png")) == 0


def test_template_limits() -> None:
    t = extract(phase_minutia())
    assert len(t) <= prm.MAX_MINUTIAE
    assert 0 <= t.quality <= 100
    assert t.source_format == "extracted"


def test_extraction_writes_out_as_iso_2005_with_real_qualities(ref_data: Path) -> None:
    from agent.match.codecs import to_iso2005

    t = extract(read(ref_data / "fvc2002" / "DB4_B" / "106_2.png"))
    back = load_template(to_iso2005(t))
    assert len(back) == len(t) and back.quality == t.quality > 0
    np.testing.assert_array_equal(back.minutia_quality, t.minutia_quality)
    assert (t.minutia_quality >= 1).all() and len(np.unique(t.minutia_quality)) > 3
    np.testing.assert_array_equal(back.kind, t.kind)
    np.testing.assert_allclose(back.x, t.x, atol=0.5)
    np.testing.assert_allclose(back.y, t.y, atol=0.5)
    err = np.abs((back.angle - t.angle + np.pi) % (2 * np.pi) - np.pi)
    assert err.max() <= np.pi / 128 + 1e-6
