"""Match decisions for the station: 1:1 verification, 1:N identification, two-finger fusion.

Outcomes are values (closed types), never exceptions: "no match" and "ask
for another finger" are ordinary results at a polling station.

Thresholds come from a :class:`~agent.match.calibration.Calibration`
(default :data:`agent.match.parameters.CALIBRATION`: fitted across sensors
and extractor pairings, heaviest tail, a x10 margin), for the scores of
:func:`agent.match.scale.scores` (best over the scale hypotheses on the
shortlist). The rules, documented in docs/MATCHING.md:

* **Verification** (ID document names the voter): the probe is compared with
  that voter's templates (up to 10 fingers); accepted when the best score
  clears ``threshold(fmr / k)`` for ``k`` candidates, so the claim as a whole
  keeps false-match rate ``fmr`` however many fingers are enrolled.
* **Identification** (1:N over the station): each voter's evidence is the
  p-value ``k_v * FMR(best score)`` over their ``k_v`` templates; a MATCH
  needs the best voter at ``p <= fpir / V`` (``V`` voters) and no *other*
  voter there too (an ambiguous result asks for a second finger instead of
  guessing).
* **Fusion** (second finger): the two presses are assigned to two different
  templates of a voter, their p-values combined with Fisher's rule for two
  independent p-values, ``p = c * (1 - ln c)`` with ``c = p_1 * p_2``,
  against the same bound -- but only when *each* finger alone clears
  ``threshold(FUSION_FINGER_FMR)``. Fusion multiplies two extrapolated
  p-values, so an optimistic calibration tail counts twice; the floor bounds
  what fusion can add when neither finger is convincing alone (issue 23: an
  outsider fused to p = 3e-9 from two presses that each missed the bound).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from numpy.typing import NDArray

from agent.match import parameters as prm
from agent.match import scale
from agent.match.calibration import Calibration
from agent.match.matcher import Gallery, Matcher, Prepared
from agent.match.template import Template


class Outcome(Enum):
    """Closed set of identification outcomes."""

    MATCH = "match"
    NEED_SECOND_FINGER = "need_second_finger"
    NO_MATCH = "no_match"


@dataclass(frozen=True)
class Verification:
    """Result of verifying a probe against one voter's enrolled fingers.

    ``finger`` is the index into the candidate sequence of the best-scoring
    template (-1 when there were no candidates).
    """

    accepted: bool
    score: float
    finger: int
    threshold: float


@dataclass(frozen=True)
class Identification:
    """Result of a 1:N search.

    ``voter`` and ``score`` describe the best candidate (``-1`` / ``0.0`` when
    there is none); ``p_value`` is the calibrated probability that an impostor
    voter would produce evidence this strong (smaller = stronger);
    ``bound`` is the p-value a MATCH needs.
    """

    outcome: Outcome
    voter: int
    score: float
    p_value: float
    bound: float

    @property
    def matched(self) -> bool:
        """True only for a MATCH."""
        return self.outcome is Outcome.MATCH


def verify(
    matcher: Matcher,
    probe: Template,
    candidates: Sequence[Template],
    fmr: float = prm.VERIFY_FMR,
    *,
    calibration: Calibration = prm.CALIBRATION,
) -> Verification:
    """Probe against the (up to 10) templates of the voter named by the ID document."""
    if not candidates:
        return Verification(False, 0.0, -1, math.inf)
    # Best over the scale hypotheses, the score the calibration is for (10 x 9 comparisons).
    qs = [matcher.prepare(scale.rescaled(probe, sx, sy)) for sx, sy in prm.SCALE_HYPOTHESES]
    prepared = [matcher.prepare(c) for c in candidates]
    scores = [max(matcher.compare_prepared(q, c) for q in qs) for c in prepared]
    best = int(np.argmax(scores))
    t = calibration.threshold(fmr / len(candidates))
    return Verification(scores[best] >= t, float(scores[best]), best, t)


def _validate_owners(gallery: Gallery | NDArray[np.floating],
                     owners: NDArray[np.integer]) -> NDArray[np.int64]:
    own = np.asarray(owners, np.int64)
    if own.shape != (len(gallery),):
        raise ValueError(f"owners has shape {own.shape}, gallery has {len(gallery)} templates")
    if len(own) and own.min() < 0:
        raise ValueError("owners must be non-negative voter indices")
    return own


def _voter_evidence(
    scores: NDArray[np.float32], owners: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Best score per voter (-1 for index gaps) and each voter's template count."""
    n_voters = int(owners.max()) + 1
    best = np.full(n_voters, -1.0)
    np.maximum.at(best, owners, scores)
    counts = np.bincount(owners, minlength=n_voters).astype(np.int64)
    return best, counts


def identify(
    gallery: Gallery,
    probe: Template | Prepared,
    owners: NDArray[np.integer],
    fmr: float = prm.IDENTIFY_FPIR,
    *,
    calibration: Calibration = prm.CALIBRATION,
) -> Identification:
    """1:N identification of one finger over the station's gallery.

    ``owners[i]`` is the voter index of gallery template ``i``; ``fmr`` is the
    false-match rate of the search as a whole (FPIR), not per comparison. Returns MATCH
    when the best voter's evidence clears the bound sized for the gallery
    and no other voter's does; NEED_SECOND_FINGER otherwise; NO_MATCH only when
    there is nothing to search (empty gallery, probe without usable minutiae).
    """
    own = _validate_owners(gallery, owners)
    if len(gallery) == 0:
        return Identification(Outcome.NO_MATCH, -1, 0.0, 1.0, 0.0)
    if len(probe if isinstance(probe, Prepared) else gallery.matcher.prepare(probe)) == 0:
        return Identification(Outcome.NO_MATCH, -1, 0.0, 1.0, 0.0)
    return decide(_scores(gallery, probe), own, fmr, calibration=calibration)


def _scores(gallery: Gallery, probe: Template | Prepared) -> NDArray[np.float32]:
    """The scores the calibration is for: best over the scale hypotheses on the shortlist.

    A probe that is already prepared cannot be rescaled: its plain scores
    (never higher, so the decision stays on the safe side).
    """
    if isinstance(probe, Prepared):
        return gallery.scores(probe)
    return scale.scores(gallery, probe)


def decide(
    scores: NDArray[np.float32],
    owners: NDArray[np.integer],
    fmr: float = prm.IDENTIFY_FPIR,
    *,
    calibration: Calibration = prm.CALIBRATION,
) -> Identification:
    """The :func:`identify` decision from one probe's scores against the whole gallery.

    Lets a caller keep the scores of a press (``Gallery.scores``) and fuse
    them with the next press (:func:`decide_fused`) without searching again.
    """
    own = _validate_owners(scores, owners)
    if len(scores) == 0:
        return Identification(Outcome.NO_MATCH, -1, 0.0, 1.0, 0.0)
    best, counts = _voter_evidence(scores, own)
    present = np.nonzero(counts)[0]
    bound = fmr / len(present)
    pvals = _p_values(best[present], counts[present], calibration)
    order = np.argsort(pvals, kind="stable")
    top = int(present[order[0]])
    p_top = float(pvals[order[0]])
    runner_clears = len(order) > 1 and float(pvals[order[1]]) <= bound
    outcome = Outcome.MATCH if p_top <= bound and not runner_clears else Outcome.NEED_SECOND_FINGER
    return Identification(outcome, top, float(best[top]), p_top, bound)


def _fmr(scores: NDArray[np.floating], calibration: Calibration) -> NDArray[np.float64]:
    """``calibration.false_match_rate`` of every score."""
    return calibration.false_match_rates(scores)


def _p_values(scores: NDArray[np.floating], k: NDArray[np.int64],
              calibration: Calibration) -> NDArray[np.float64]:
    """p-values of voters' best-of-``k`` scores; a negative score means "no evidence"."""
    p = np.minimum(1.0, k * _fmr(np.maximum(scores, 0.0), calibration))
    return np.where(scores < 0.0, 1.0, p)


def _fisher(p1: NDArray[np.float64], p2: NDArray[np.float64]) -> NDArray[np.float64]:
    c = np.maximum(p1 * p2, 1e-300)
    return np.minimum(1.0, c * (1.0 - np.log(c)))


def _fused(x: NDArray[np.float64], y: NDArray[np.float64], k: NDArray[np.int64],
           calibration: Calibration, floor_fmr: float) -> NDArray[np.float64]:
    """Fisher's p-value of two presses' scores, or 1 when either finger is too weak alone.

    The floor (``floor_fmr``, default ``prm.FUSION_FINGER_FMR``) bounds what fusion can add: two
    fingers that are each unconvincing do not make a match, however small
    the product of their extrapolated p-values.
    """
    floor = calibration.threshold(floor_fmr) if floor_fmr < 1.0 else 0.0
    p = _fisher(_p_values(x, k, calibration), _p_values(y, k, calibration))
    return np.where((x >= floor) & (y >= floor), p, 1.0)


def identify_fused(
    gallery: Gallery,
    probe1: Template | Prepared,
    probe2: Template | Prepared,
    owners: NDArray[np.integer],
    fmr: float = prm.IDENTIFY_FPIR,
    *,
    calibration: Calibration = prm.CALIBRATION,
) -> Identification:
    """1:N identification from two different fingers of the same person.

    Each voter's evidence is the best template for each probe (two distinct
    templates), combined with Fisher's rule (module docstring). Returns MATCH
    or NO_MATCH; never asks for more.
    """
    own = _validate_owners(gallery, owners)
    if len(gallery) == 0:
        return Identification(Outcome.NO_MATCH, -1, 0.0, 1.0, 0.0)
    return decide_fused(_scores(gallery, probe1), _scores(gallery, probe2), own, fmr,
                        calibration=calibration)


def _top2(
    scores: NDArray[np.float32],
    order_owner: NDArray[np.int64],
    own_sorted: NDArray[np.int64],
    starts: NDArray[np.int64],
    counts: NDArray[np.int64],
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Each voter's best and second-best template (second = best for one template)."""
    # Within each voter's run, templates by descending score (stable: lower index first).
    order = order_owner[np.lexsort((-scores[order_owner], own_sorted))]
    first = order[starts]
    second = order[starts + np.minimum(counts, 2) - 1]
    return first, second


def decide_fused(
    scores1: NDArray[np.float32],
    scores2: NDArray[np.float32],
    owners: NDArray[np.integer],
    fmr: float = prm.IDENTIFY_FPIR,
    *,
    calibration: Calibration = prm.CALIBRATION,
    floor_fmr: float = prm.FUSION_FINGER_FMR,
) -> Identification:
    """The :func:`identify_fused` decision from two presses' scores (no search).

    ``floor_fmr`` is the per-finger evidence each press needs before it is
    fused (1 = none: the rule before issue 23, kept for the benchmark's
    comparison).
    """
    own = _validate_owners(scores1, owners)
    _validate_owners(scores2, owners)
    if len(scores1) == 0:
        return Identification(Outcome.NO_MATCH, -1, 0.0, 1.0, 0.0)
    s1 = np.asarray(scores1, np.float64)
    s2 = np.asarray(scores2, np.float64)
    all_counts = np.bincount(own).astype(np.int64)
    present = np.nonzero(all_counts)[0]
    k = all_counts[present]
    bound = fmr / len(present)
    order_owner = np.argsort(own, kind="stable")
    own_sorted = own[order_owner]
    starts = np.searchsorted(own_sorted, present)
    a1, b1 = _top2(scores1, order_owner, own_sorted, starts, k)
    a2, b2 = _top2(scores2, order_owner, own_sorted, starts, k)
    # Per voter: best assignment of the two probes to two different templates.
    # One enrolled finger: only one probe can be its mate, the other adds nothing.
    single = k == 1
    x1 = np.where(single & (s1[a1] < s2[a2]), -1.0, s1[a1])
    y1 = np.where(single & (s1[a1] >= s2[a2]), -1.0, np.where(a1 != a2, s2[a2], s2[b2]))
    p = _fused(x1, y1, k, calibration, floor_fmr)
    # Both probes' best is the same template: also try the other assignment.
    clash = ~single & (a1 == a2)
    x2 = np.where(clash, s1[b1], -1.0)
    y2 = np.where(clash, s2[a2], -1.0)
    p2 = _fused(x2, y2, k, calibration, floor_fmr)
    better = clash & (p2 < p)
    p = np.where(better, p2, p)
    x1 = np.where(better, x2, x1)
    y1 = np.where(better, y2, y1)
    order = np.argsort(p, kind="stable")
    best_p = float(p[order[0]])
    second_p = float(p[order[1]]) if len(order) > 1 else 1.0
    if best_p >= 1.0:
        return Identification(Outcome.NO_MATCH, -1, 0.0, 1.0, bound)
    v = int(present[order[0]])
    best_s = float(max(x1[order[0]], y1[order[0]]))
    outcome = Outcome.MATCH if best_p <= bound and second_p > bound else Outcome.NO_MATCH
    return Identification(outcome, v, best_s, best_p, bound)
