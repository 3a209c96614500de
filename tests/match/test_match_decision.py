"""Thresholds, verification, identification and two-finger fusion on real FVC2002 fingers.

The rule is issue 23's: calibrated across sensors with a margin, scores best
over the scale hypotheses on the shortlist, and no fusion of two fingers that
are each unconvincing alone.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from agent.match import Matcher, Template, load_template, scale
from agent.match import parameters as prm
from agent.match.calibration import Calibration
from agent.match.decision import (
    Outcome,
    decide,
    decide_fused,
    identify,
    identify_fused,
    verify,
)
from agent.match.evaluation import load_set


@pytest.fixture(scope="module")
def fingers(ref_data: Path) -> list[list[Template]]:
    """40 real fingers (DB1..DB4_B), 8 impressions each (the vendor ISO templates)."""
    out = []
    for db in ("DB1_B", "DB2_B", "DB3_B", "DB4_B"):
        s = load_set(ref_data / "fvc2002" / db)
        if len(s) != 80:
            pytest.fail(f"{ref_data / 'fvc2002' / db} holds {len(s)} ISO templates; "
                        "these tests need all 80 (10 fingers x 8 impressions)")
        out += [[s[(f, i)] for i in range(1, 9)] for f in range(10)]
    return out


def test_threshold_is_monotonic_and_inverts() -> None:
    fmrs = [0.2, 1e-1, 3e-2, 1e-2, 1e-3, 1e-4, 1e-5, 1e-7, 1e-9]
    ts = [prm.threshold(f) for f in fmrs]
    assert ts == sorted(ts)
    for f in fmrs:
        assert prm.false_match_rate(prm.threshold(f)) == pytest.approx(f, rel=1e-6)
    # A score of 0 is no evidence at all (p-values feed the fusion rule).
    assert prm.false_match_rate(0.0) == 1.0
    with pytest.raises(ValueError, match="fmr"):
        prm.threshold(0.0)


def test_verify_accepts_mates_and_rejects_others(fingers: list[list[Template]]) -> None:
    m = Matcher()
    # A voter with 5 enrolled fingers (impression 1 of fingers 0..4 of DB1).
    enrolled = [fingers[f][0] for f in range(5)]
    accepted = [verify(m, fingers[2][j], enrolled) for j in range(1, 8)]
    assert sum(v.accepted for v in accepted) >= 5
    assert all(v.finger == 2 for v in accepted if v.accepted)
    rejected = [verify(m, fingers[f][j], enrolled) for f in range(10, 40, 3) for j in (1, 4)]
    assert not any(v.accepted for v in rejected)
    none = verify(m, fingers[0][1], [])
    assert (none.accepted, none.finger) == (False, -1)


@pytest.fixture(scope="module")
def station(fingers: list[list[Template]]) -> tuple[Matcher, object, np.ndarray]:
    """20 voters, each enrolled with two fingers (impression 1)."""
    m = Matcher()
    gal, owners = [], []
    for v in range(20):
        for f in (2 * v, 2 * v + 1):
            gal.append(fingers[f][0])
            owners.append(v)
    return m, m.gallery(gal), np.asarray(owners)


def test_identify_outcomes(fingers: list[list[Template]], station: tuple) -> None:
    _, g, owners = station
    outcomes = {o: 0 for o in Outcome}
    for v in range(20):
        for j in range(1, 8):
            r = identify(g, fingers[2 * v][j], owners)
            outcomes[r.outcome] += 1
            if r.outcome is Outcome.MATCH:
                assert r.voter == v  # never a wrong voter
                assert r.p_value <= r.bound
    assert outcomes[Outcome.MATCH] >= 0.75 * 140
    assert outcomes[Outcome.NEED_SECOND_FINGER] >= 1
    assert outcomes[Outcome.NO_MATCH] == 0


def test_unknown_person_is_never_matched(fingers: list[list[Template]], station: tuple) -> None:
    owners = station[2]
    # A station of voters 0..9 (fingers 0..19); fingers 20..39 are enrolled nowhere.
    keep = owners < 10
    m = Matcher()
    small = m.gallery([t for t, k in zip([fingers[f][0] for f in range(40)], keep, strict=True)
                       if k])
    own = owners[keep]
    for f in range(20, 40, 2):
        for j in (1, 5):
            single = identify(small, fingers[f][j], own)
            assert single.outcome is not Outcome.MATCH
            fused = identify_fused(small, fingers[f][j], fingers[f + 1][j], own)
            assert fused.outcome is Outcome.NO_MATCH


def test_fusion_only_with_two_convincing_fingers(fingers: list[list[Template]],
                                                station: tuple) -> None:
    """Second-finger cases: a fused MATCH is the right voter, with both fingers over the floor."""
    _, g, owners = station
    floor = prm.threshold(prm.FUSION_FINGER_FMR)
    asked = 0
    for v in range(20):
        for j in range(1, 8):
            r = identify(g, fingers[2 * v][j], owners)
            if r.outcome is Outcome.NEED_SECOND_FINGER:
                asked += 1
                s1 = scale.scores(g, fingers[2 * v][j])
                s2 = scale.scores(g, fingers[2 * v + 1][j])
                f = decide_fused(s1, s2, owners)
                assert f.outcome in (Outcome.MATCH, Outcome.NO_MATCH)
                if f.outcome is Outcome.MATCH:
                    assert f.voter == v
                    mine = owners == v
                    assert s1[mine].max() >= floor and s2[mine].max() >= floor
    # Rescues are rare on this mixed 20-voter station (the synthetic test below shows
    # two convincing fingers fusing); what must hold is checked for every one above.
    assert asked > 0


def test_identify_edge_cases(fingers: list[list[Template]], station: tuple) -> None:
    m, g, owners = station
    with pytest.raises(ValueError, match="owners"):
        identify(g, fingers[0][1], owners[:-1])
    empty = m.gallery([])
    assert identify(empty, fingers[0][1], np.zeros(0, np.int64)).outcome is Outcome.NO_MATCH
    blank = Template.from_arrays([], [], [], width=300, height=400)
    assert identify(g, blank, owners).outcome is Outcome.NO_MATCH


def test_decisions_from_kept_scores_equal_the_searches(fingers: list[list[Template]],
                                                      station: tuple) -> None:
    """The station keeps a press's scores and fuses them later: same decisions."""
    _, g, owners = station
    for v in (0, 7, 13):
        p1, p2 = fingers[2 * v][3], fingers[2 * v + 1][3]
        s1, s2 = scale.scores(g, p1), scale.scores(g, p2)
        assert decide(s1, owners) == identify(g, p1, owners)
        assert decide_fused(s1, s2, owners) == identify_fused(g, p1, p2, owners)


def test_fusion_assigns_two_different_templates() -> None:
    """When both presses' best is the same template, the other finger must carry evidence."""
    owners = np.array([0, 0, 1, 1])
    strong = prm.threshold(1e-7)
    # Voter 0: both presses best on template 0 and nothing elsewhere: one finger's
    # evidence, counted once, cannot be fused into a match.
    s1 = np.array([strong, 0.0, 0.0, 0.0], np.float32)
    s2 = np.array([strong, 0.0, 0.0, 0.0], np.float32)
    lone = decide_fused(s1, s2, owners)
    assert lone.outcome is Outcome.NO_MATCH
    # Same evidence on two different templates of voter 0: a match.
    s2b = np.array([0.0, strong, 0.0, 0.0], np.float32)
    pair = decide_fused(s1, s2b, owners)
    assert (pair.outcome, pair.voter) == (Outcome.MATCH, 0)
    with pytest.raises(ValueError, match="owners"):
        decide_fused(s1, s2, owners[:-1])


STATION_BOUND = prm.IDENTIFY_FPIR / 5_610
"""Per-voter bound of the largest station (5,610 voters) at the default FPIR."""


PRE_ISSUE_23 = Calibration(
    points=((0.1, 0.01613), (0.01, 0.02057), (0.001, 0.02624), (0.0001, 0.03253)),
    tail_t0=0.02624, tail_fmr0=0.001, tail_beta=0.00325,
)
"""The calibration shipped before issue 23: pooled ISO impostors, no margin."""


def _fisher(s1: float, s2: float, k: int, cal: Calibration) -> float:
    """Fisher's fused p-value without a per-finger floor (the rule before issue 23)."""
    c = k * cal.false_match_rate(s1) * k * cal.false_match_rate(s2)
    return c * (1.0 - math.log(c))


def test_two_weak_fingers_never_identify() -> None:
    """Issue 23's outsider: neither finger clears the single-press bound, yet the old
    calibration fused them to p = 3e-9 against a bound of 1.8e-7. Not a match any more."""
    owners = np.array([0, 0, 1, 1])
    fmr = STATION_BOUND * 2  # two voters -> per-voter bound STATION_BOUND
    # Two presses whose old p-values are 1.2e-5 each (two templates per voter).
    weak = PRE_ISSUE_23.threshold(1.2e-5 / 2)
    s1 = np.array([weak, 0.0, 0.0, 0.0], np.float32)
    s2 = np.array([0.0, weak, 0.0, 0.0], np.float32)
    old = decide_fused(s1, s2, owners, fmr, calibration=PRE_ISSUE_23)
    assert 1e-9 < _fisher(weak, weak, 2, PRE_ISSUE_23) < 5e-9 < STATION_BOUND
    assert decide(s1, owners, fmr, calibration=PRE_ISSUE_23).outcome is not Outcome.MATCH
    # Under the old calibration these presses even clear the floor: what refuses them is
    # the calibration across sensors (heavier tail, margin) together with the floor.
    assert (old.outcome, old.voter) == (Outcome.MATCH, 0)
    fused = decide_fused(s1, s2, owners, fmr)
    assert (fused.outcome, fused.p_value) == (Outcome.NO_MATCH, 1.0)


def test_the_floor_bounds_what_fusion_adds() -> None:
    """One finger just short of the single-press bound, the other just under the floor:
    Fisher's product clears the bound by orders of magnitude, the rule still says no."""
    owners = np.array([0, 0, 1, 1])
    fmr = STATION_BOUND * 2
    floor = prm.threshold(prm.FUSION_FINGER_FMR)
    strong = prm.threshold(STATION_BOUND / 2) - 1e-4
    weak = float(np.nextafter(np.float32(floor), np.float32(0)))
    s1 = np.array([strong, 0.0, 0.0, 0.0], np.float32)
    s2 = np.array([0.0, weak, 0.0, 0.0], np.float32)
    assert decide(s1, owners, fmr).outcome is not Outcome.MATCH
    assert _fisher(strong, weak, 2, prm.CALIBRATION) < STATION_BOUND / 10
    assert decide_fused(s1, s2, owners, fmr).outcome is Outcome.NO_MATCH
    # Both fingers convincing (each at FMR 2.5e-5 with the margin): fused, a match.
    good = prm.threshold(2.5e-5)
    s1[0], s2[1] = good, good
    assert decide(s1, owners, fmr).outcome is not Outcome.MATCH
    both = decide_fused(s1, s2, owners, fmr)
    assert (both.outcome, both.voter) == (Outcome.MATCH, 0)


def test_margin_makes_the_calibration_conservative() -> None:
    """Shipped thresholds promise ``fmr`` where the fit alone would say ``fmr / margin``."""
    cal = prm.CALIBRATION
    assert cal.margin >= 10.0
    for f in (1e-3, 1e-5, 1e-8):
        assert cal.threshold(f) == pytest.approx(cal._fitted_threshold(f / cal.margin))
    assert prm.false_match_rate(prm.threshold(1e-4)) == pytest.approx(1e-4, rel=1e-6)


@pytest.mark.parametrize(
    ("folder", "a", "b", "low", "high"),
    [
        ("DB1_B", "101_1", "101_2", 0.30, 0.70),  # genuine, clear
        ("DB4_B", "102_1", "102_5", 0.15, 0.40),  # genuine, synthetic sensor
        ("DB2_B", "103_1", "103_4", 0.10, 0.20),  # genuine, above the single-press bound
        ("DB1_B", "101_1", "102_1", 0.0, 0.03),   # impostor
        ("DB3_B", "105_2", "108_2", 0.0, 0.03),   # impostor, stretched set
    ],
)
def test_real_pairs_score_bands(ref_data: Path, folder: str, a: str, b: str, low: float,
                                high: float) -> None:
    """Scores of real vendor-template pairs (best over the scale hypotheses) stay in band;
    impostors stay below the fusion floor, genuine pairs above the single-press bound."""
    d = ref_data / "fvc2002" / folder
    g = Matcher().gallery([load_template((d / f"{a}.iso").read_bytes())])
    s = float(scale.scores(g, load_template((d / f"{b}.iso").read_bytes()))[0])
    assert low <= s <= high
    single = prm.threshold(STATION_BOUND / 2)
    assert (s >= single) if low > 0.0 else (s < prm.threshold(prm.FUSION_FINGER_FMR))
