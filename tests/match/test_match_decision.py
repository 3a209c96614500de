"""Thresholds, verification, identification and two-finger fusion on real FVC2002 fingers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.match import Matcher, Template
from agent.match import parameters as prm
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
    """40 real fingers (DB1..DB4_B), 8 impressions each."""
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


def test_fusion_rescues_second_finger_cases(fingers: list[list[Template]],
                                            station: tuple) -> None:
    _, g, owners = station
    asked = rescued = 0
    for v in range(20):
        for j in range(1, 8):
            r = identify(g, fingers[2 * v][j], owners)
            if r.outcome is Outcome.NEED_SECOND_FINGER:
                asked += 1
                f = identify_fused(g, fingers[2 * v][j], fingers[2 * v + 1][j], owners)
                assert f.outcome in (Outcome.MATCH, Outcome.NO_MATCH)
                if f.outcome is Outcome.MATCH:
                    assert f.voter == v
                    rescued += 1
    assert asked > 0
    assert rescued >= asked // 2


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
        s1, s2 = g.scores(p1), g.scores(p2)
        assert decide(s1, owners) == identify(g, p1, owners)
        assert decide_fused(s1, s2, owners) == identify_fused(g, p1, p2, owners)


def test_fusion_assigns_two_different_templates() -> None:
    """When both presses' best is the same template, the other finger must carry evidence."""
    owners = np.array([0, 0, 1, 1])
    strong = prm.threshold(1e-6)
    # Voter 0: both presses best on template 0 and nothing elsewhere -> no second finger.
    s1 = np.array([strong, 0.0, 0.0, 0.0], np.float32)
    s2 = np.array([strong, 0.0, 0.0, 0.0], np.float32)
    lone = decide_fused(s1, s2, owners)
    # Same evidence on two different templates of voter 0 -> stronger (smaller p).
    s2b = np.array([0.0, strong, 0.0, 0.0], np.float32)
    pair = decide_fused(s1, s2b, owners)
    assert lone.voter == pair.voter == 0
    assert pair.p_value < lone.p_value
    with pytest.raises(ValueError, match="owners"):
        decide_fused(s1, s2, owners[:-1])
