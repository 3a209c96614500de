"""Calibration fitting (agent.match.calibration) on samples with known tails, and
Gallery.subset / scale hypotheses on real templates."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from agent.match import Matcher, load_template, scale
from agent.match import calibration as cb
from agent.match import parameters as prm


def _exponential(n: int, beta: float, seed: int) -> np.ndarray:
    """Impostor-like scores: a bulk near 0.01 with an exponential tail of slope ``beta``."""
    return 0.01 + np.random.default_rng(seed).exponential(beta, n)


def test_fit_recovers_an_exponential_tail_and_keeps_the_heaviest() -> None:
    light = _exponential(200_000, 0.003, 1)
    heavy = _exponential(100_000, 0.004, 2)
    cal = cb.fit({"light": light, "heavy": heavy})
    # The memoryless tail's mean excess is beta; the heavier condition's slope wins.
    assert cal.tail_beta == pytest.approx(0.004, rel=0.15)
    # Empirical points are the highest condition quantile, so the heavy one is not exceeded.
    for f, t in cal.points:
        assert np.mean(heavy >= t) <= f * 1.05
    assert cal.impostors == 300_000
    for f in (1e-2, 1e-4, 1e-7):
        assert cal.false_match_rate(cal.threshold(f)) == pytest.approx(f, rel=1e-6)


def test_margin_multiplies_every_promised_rate() -> None:
    imp = {"a": _exponential(100_000, 0.003, 3)}
    plain = cb.fit(imp)
    safe = cb.fit(imp, margin=10.0)
    for score in (0.02, 0.03, 0.05):
        assert safe.false_match_rate(score) == pytest.approx(
            min(1.0, 10 * plain.false_match_rate(score)))
    assert safe.threshold(1e-6) == pytest.approx(plain.threshold(1e-7))
    assert safe.false_match_rate(0.0) == 1.0
    with pytest.raises(ValueError, match="margin"):
        cb.Calibration(points=((0.1, 0.02),), tail_t0=0.02, tail_fmr0=0.001, tail_beta=0.003,
                       margin=0.5)


def test_observed_ratio_flags_a_heavier_held_out_sensor() -> None:
    cal = cb.fit({"dev": _exponential(200_000, 0.003, 4)})
    same = cb.observed_ratio(cal, _exponential(100_000, 0.003, 5))
    heavier = cb.observed_ratio(cal, _exponential(100_000, 0.005, 6))
    assert 0.7 < same < 1.4
    assert heavier > 3.0


def test_fit_refuses_too_few_scores() -> None:
    with pytest.raises(ValueError, match="resolve"):
        cb.fit({"tiny": _exponential(500, 0.003, 7)})
    with pytest.raises(ValueError, match="no impostor"):
        cb.fit({})


def test_source_round_trips() -> None:
    cal = cb.fit({"a": _exponential(100_000, 0.003, 8)}, margin=10.0)
    text = cb.source(cal)
    env: dict[str, object] = {"Calibration": cb.Calibration}
    exec(text, env)  # the block pasted into parameters.py
    back = env["CALIBRATION"]
    assert isinstance(back, cb.Calibration)
    assert back.threshold(1e-8) == pytest.approx(cal.threshold(1e-8), abs=2e-4)
    assert math.isclose(back.margin, 10.0)


@pytest.fixture
def db1(ref_data: Path) -> list:
    d = ref_data / "fvc2002" / "DB1_B"
    return [load_template((d / f"10{f}_{i}.iso").read_bytes()) for f in (1, 2, 3) for i in (1, 2)]


def test_gallery_subset_scores_like_the_whole(db1: list) -> None:
    m = Matcher(threads=1)
    g = m.gallery(db1)
    probe = m.prepare(db1[1])
    full = g.scores(probe)
    idx = np.array([4, 0, 1])
    assert np.array_equal(g.subset(idx).scores(probe), full[idx])
    assert len(g.subset(np.array([], np.int64)).scores(probe)) == 0


def test_scale_hypotheses_recover_a_stretched_register(db1: list) -> None:
    """A register template stretched by x 1.25, y 0.8 (another scanner's aspect ratio): the plain
    score falls below what a 40-voter station needs, the best over the hypotheses (mapped
    onto the plain scale) clears it; an unstretched pair keeps its plain score."""
    m = Matcher(threads=1)
    station = prm.threshold(prm.IDENTIFY_FPIR / 40)
    g = m.gallery([scale.rescaled(db1[0], 1.25, 0.8)])
    probe = db1[1]
    plain = float(g.scores(probe)[0])
    best = float(scale.scores(g, probe)[0])
    assert plain < station <= best
    straight = m.gallery([db1[0]])
    assert float(scale.scores(straight, probe)[0]) == float(straight.scores(probe)[0])
    assert scale.rescaled(probe, 1.0, 1.0) is probe
    # Without a shortlist nothing is re-scored.
    assert float(scale.scores(g, probe, shortlist=0)[0]) == plain


def test_translate_keeps_the_impostor_rarity() -> None:
    heavy = cb.fit({"a": _exponential(200_000, 0.006, 9)})
    light = cb.fit({"a": _exponential(200_000, 0.003, 10)})
    fmrs = np.array([0.5, 1e-2, 1e-4, 1e-8])
    got = cb.translate(np.array([heavy.threshold(f) for f in fmrs]), heavy, light)
    assert got == pytest.approx([light.threshold(f) for f in fmrs])


def test_vectorised_rates_equal_the_scalar_ones() -> None:
    cal = prm.CALIBRATION
    scores = np.array([-0.1, 0.0, 0.005, 0.0163, 0.018, 0.0206, 0.024, 0.02596, 0.03, 0.06, 0.5])
    assert cal.false_match_rates(scores) == pytest.approx(
        [cal.false_match_rate(float(x)) for x in scores], rel=1e-9)
    fmrs = np.array([0.9, 0.1, 0.05, 1e-2, 3e-3, 1e-3, 1e-6])
    assert cal._fitted_thresholds(fmrs) == pytest.approx(
        [cal._fitted_threshold(float(f)) for f in fmrs], rel=1e-9)
