"""Each extraction stage on small synthetic patterns with a known answer."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from agent.match.extraction import parameters as prm
from agent.match.extraction.binarisation import binarise
from agent.match.extraction.enhancement import enhance, gabor_bank
from agent.match.extraction.frequency import ridge_period
from agent.match.extraction.minutiae import STOP_BRANCH, STOP_ENDING, Candidates, detect
from agent.match.extraction.normalisation import normalise
from agent.match.extraction.orientation import (
    OrientationField,
    block_tensors,
    orientation_field,
)
from agent.match.extraction.pruning import border_rule, break_rule, cluster_rule, topology_rules
from agent.match.extraction.resampling import to_standard_resolution
from agent.match.extraction.segmentation import SegmentationMask, segment
from agent.match.extraction.thinning import thin
from agent.match.template import MinutiaType


def ridges(n: int = 128, period: float = 9.0, angle_deg: float = 0.0) -> np.ndarray:
    """Straight dark ridges running at ``angle_deg`` (image coordinates, y down)."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    t = np.radians(angle_deg)
    across = -x * np.sin(t) + y * np.cos(t)
    out: np.ndarray = np.clip(128 - 100 * np.cos(2 * np.pi * across / period), 0, 255)
    return out.astype(np.uint8)


def field_of(
    img: np.ndarray,
) -> tuple[np.ndarray, SegmentationMask, OrientationField]:
    f = img.astype(np.float32)
    norm = normalise(f)
    tensors = block_tensors(norm)
    mask = segment(f, tensors)
    return norm, mask, orientation_field(tensors, mask.blocks)


def test_normalisation_makes_ridges_positive_with_unit_spread() -> None:
    img = ridges()
    norm = normalise(img.astype(np.float32))
    inner = norm[16:-16, 16:-16]
    assert abs(float(inner.mean())) < 0.1
    assert 0.8 < float(inner.std()) < 1.6
    dark = img[16:-16, 16:-16] < 60
    assert (inner[dark] > 0.5).all()


@pytest.mark.parametrize("angle", [0.0, 30.0, 75.0, 120.0, 165.0])
def test_orientation_follows_straight_ridges(angle: float) -> None:
    _, mask, field = field_of(ridges(angle_deg=angle))
    assert mask.blocks.mean() > 0.8
    inner = field.angle[2:-2, 2:-2]
    diff = np.abs((inner - np.radians(angle) + np.pi / 2) % np.pi - np.pi / 2)
    assert np.degrees(diff.max()) < 3.0
    assert field.coherence[mask.blocks].mean() > 0.95


@pytest.mark.parametrize("period", [6.0, 9.0, 12.0])
def test_frequency_measures_the_ridge_period(period: float) -> None:
    norm, mask, field = field_of(ridges(period=period, angle_deg=20.0))
    rp = ridge_period(norm, field, mask.blocks)
    assert rp.measured[mask.blocks].mean() > 0.8
    assert abs(rp.median - period) < 0.3


def test_resampling_brings_1000_dpi_ridges_to_the_500_dpi_period() -> None:
    img = ridges(n=256, period=18.0, angle_deg=40.0)
    out, scale = to_standard_resolution(img, 1000)
    assert scale == 0.5 and out.shape == (128, 128)
    norm, mask, field = field_of(np.clip(out, 0, 255).astype(np.uint8))
    assert abs(ridge_period(norm, field, mask.blocks).median - 9.0) < 0.4


def test_gabor_bank_is_zero_mean_and_point_symmetric() -> None:
    bank, periods = gabor_bank()
    assert bank.shape[:2] == (prm.GABOR_ANGLES, len(periods))
    assert np.abs(bank.sum(axis=(2, 3))).max() < 1e-5
    np.testing.assert_allclose(bank, bank[:, :, ::-1, ::-1], atol=1e-7)


def test_enhancement_restores_ridges_under_noise() -> None:
    rng = np.random.default_rng(1)
    clean = ridges(angle_deg=50.0)
    noisy = np.clip(clean.astype(np.float64) + rng.normal(0, 70, clean.shape), 0, 255)
    norm, mask, field = field_of(noisy.astype(np.uint8))
    rp = ridge_period(norm, field, mask.blocks)
    enhanced = enhance(norm, field, rp, mask.pixels)
    truth = clean < 128
    inner = (slice(16, -16), slice(16, -16))
    agree = ((enhanced > 0) == truth)[inner].mean()
    raw_agree = ((norm > 0) == truth)[inner].mean()
    assert agree > 0.95 > raw_agree


def test_binarisation_drops_specks_and_fills_pores() -> None:
    enhanced = np.full((60, 60), -1.0, np.float32)
    enhanced[10:20, 5:55] = 1.0  # a ridge
    enhanced[14:16, 30:32] = -1.0  # a pore inside it
    enhanced[40:42, 40:42] = 1.0  # a speck of dust
    mask = np.ones((60, 60), np.bool_)
    b = binarise(enhanced, mask)
    assert b[10:20, 5:55].all()
    assert not b[40:42, 40:42].any()
    assert not b[30:38].any()


def neighbours(skel: np.ndarray, y: int, x: int) -> int:
    return int(skel[y - 1 : y + 2, x - 1 : x + 2].sum()) - 1


def test_thinning_gives_one_pixel_lines_that_keep_their_ends() -> None:
    b = np.zeros((40, 80), np.bool_)
    b[15:22, 10:70] = True  # 7 px thick bar
    skel = thin(b)
    ys, xs = np.nonzero(skel)
    assert len(set(ys.tolist())) <= 2
    assert xs.min() <= 14 and xs.max() >= 65
    degrees = [neighbours(skel, int(y), int(x)) for y, x in zip(ys, xs, strict=True)]
    assert degrees.count(1) == 2
    assert set(degrees) <= {1, 2}


def test_thinning_keeps_a_two_pixel_diagonal() -> None:
    b = np.zeros((40, 40), np.bool_)
    for i in range(5, 35):
        b[i, i] = b[i, i + 1] = True
    skel = thin(b)
    assert skel.sum() >= 25
    ys, xs = np.nonzero(skel)
    degrees = [neighbours(skel, int(y), int(x)) for y, x in zip(ys, xs, strict=True)]
    assert degrees.count(1) == 2


def draw(shape: tuple[int, int], *paths: list[tuple[int, int]]) -> np.ndarray:
    s = np.zeros(shape, np.bool_)
    for path in paths:
        for (y0, x0), (y1, x1) in itertools.pairwise(path):
            n = max(abs(y1 - y0), abs(x1 - x0))
            for k in range(n + 1):
                s[round(y0 + (y1 - y0) * k / n), round(x0 + (x1 - x0) * k / n)] = True
    return s


def test_detection_finds_the_t_junction_and_the_three_endings() -> None:
    # A 4-connected T junction: its pixel's neighbours touch each other
    # diagonally, which once hid it from the detector.
    skel = draw((80, 80), [(20, 10), (20, 70)], [(20, 40), (60, 40)])
    c = detect(skel, np.ones_like(skel))
    bif = c.kind == MinutiaType.BIFURCATION
    assert bif.sum() == 1
    assert (int(c.y[bif][0]), int(c.x[bif][0])) == (20, 40)
    ends = sorted(zip(c.y[~bif].tolist(), c.x[~bif].tolist(), strict=True))
    assert ends == [(20, 10), (20, 70), (60, 40)]


def test_bifurcation_points_into_its_stem_and_endings_out_of_their_ridge() -> None:
    # A Y: branches up-left and up-right, stem straight down.
    skel = draw((90, 80), [(10, 15), (40, 40)], [(10, 65), (40, 40)], [(40, 40), (80, 40)])
    c = detect(skel, np.ones_like(skel))
    bif = c.kind == MinutiaType.BIFURCATION
    assert bif.sum() == 1
    assert abs(float(c.angle[bif][0]) - np.pi / 2) < 0.1  # down the image
    stem_end = (c.kind == MinutiaType.RIDGE_ENDING) & (c.y == 80)
    assert abs(float(c.angle[stem_end][0]) - np.pi / 2) < 0.1  # towards the free end


def test_detection_traces_spurs_to_their_junction() -> None:
    skel = draw((80, 100), [(40, 5), (40, 95)], [(40, 50), (34, 56)])
    c = detect(skel, np.ones_like(skel))
    spur = (c.kind == MinutiaType.RIDGE_ENDING) & (c.y == 34)
    assert spur.sum() == 1
    assert c.stop_reason[spur][0] == STOP_BRANCH
    assert c.stop_steps[spur][0] <= 7
    keep = topology_rules(c)
    assert not keep[spur].any()
    assert not keep[c.kind == MinutiaType.BIFURCATION].any()
    assert keep[(c.kind == MinutiaType.RIDGE_ENDING) & (c.y == 40)].all()


def test_short_fragment_loses_both_ends() -> None:
    skel = draw((60, 60), [(30, 20), (30, 27)])
    c = detect(skel, np.ones_like(skel))
    assert len(c) == 2 and (c.stop_reason == STOP_ENDING).all()
    assert not topology_rules(c).any()


def candidates(rows: list[tuple[int, int, int, float]]) -> Candidates:
    n = len(rows)
    a = np.array(rows, np.float64).reshape(n, 4)
    return Candidates(
        x=a[:, 0].astype(np.int64),
        y=a[:, 1].astype(np.int64),
        kind=a[:, 2].astype(np.uint8),
        angle=a[:, 3],
        stop_reason=np.zeros(n, np.int64),
        stop_steps=np.full(n, 100, np.int64),
        stop_x=a[:, 0].astype(np.int64),
        stop_y=a[:, 1].astype(np.int64),
    )


def test_break_rule_joins_facing_endings_only() -> None:
    c = candidates([
        (50, 50, 1, 0.0), (60, 50, 1, np.pi),  # facing across a 10 px gap: a break
        (50, 90, 1, 0.0), (60, 90, 1, 0.0),  # parallel: two real endings
    ])
    assert break_rule(c).tolist() == [False, False, True, True]


def test_border_rule_uses_distance_to_the_background() -> None:
    mask = np.zeros((100, 100), np.bool_)
    mask[20:80, 20:80] = True
    c = candidates([(50, 50, 1, 0.0), (23, 50, 2, 0.0), (50, 77, 1, 0.0), (2, 2, 1, 0.0)])
    assert border_rule(c, mask).tolist() == [True, False, False, False]


def test_cluster_rule_removes_crowds() -> None:
    crowd = [(50 + dx, 50 + dy, 1, 0.0) for dx in (0, 5, 10) for dy in (0, 5)]
    c = candidates([*crowd, (120, 120, 2, 1.0)])
    keep = cluster_rule(c)
    assert not keep[:6].any() and keep[6]
