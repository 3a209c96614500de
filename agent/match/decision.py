"""Match decisions for the station: 1:1 verification, 1:N identification, two-finger fusion.

Outcomes are values (closed types), never exceptions: "no match" and "ask
for another finger" are ordinary results at a polling station.

Thresholds come from :mod:`agent.match.parameters` (calibrated impostor
score distribution). The rules, documented in docs/MATCHING.md:

* **Verification** (ID document names the voter): the probe is compared with
  that voter's templates (up to 10 fingers); accepted when the best score
  clears ``threshold(fmr / k)`` for ``k`` candidates, so the claim as a whole
  keeps false-match rate ``fmr`` however many fingers are enrolled.
* **Identification** (1:N over the station): the per-comparison FMR is sized
  for the gallery, ``fpir / N`` for ``N`` templates, so a search of the whole
  station falsely matches with probability about ``fpir``. A MATCH needs the
  best voter to clear it and no *other* voter to clear it too (an ambiguous
  result asks for a second finger instead of guessing).
* **Fusion** (second finger): each voter's evidence from probe ``i`` is the
  p-value ``p_i = min(1, k_v * FMR(s_i))`` of the best of their ``k_v``
  templates (two different templates for the two probes); the two are
  combined with Fisher's rule for two independent p-values,
  ``p = c * (1 - ln c)`` with ``c = p_1 * p_2``, and the voter is identified when
  ``p <= fpir / V`` over ``V`` voters. A single finger alone gives
  ``p = k_v * FMR(s)`` and the same bound, so fusion never accepts what
  neither finger supports in combination, and a second moderately good finger
  turns many "need another finger" cases into MATCH (effect measured in
  docs/MATCHING.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from numpy.typing import NDArray

from agent.match import parameters as prm
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
) -> Verification:
    """Probe against the (up to 10) templates of the voter named by the ID document."""
    if not candidates:
        return Verification(False, 0.0, -1, math.inf)
    q = matcher.prepare(probe)
    scores = [matcher.compare_prepared(q, matcher.prepare(c)) for c in candidates]
    best = int(np.argmax(scores))
    t = prm.threshold(fmr / len(candidates))
    return Verification(scores[best] >= t, float(scores[best]), best, t)


def _validate_owners(gallery: Gallery, owners: NDArray[np.integer]) -> NDArray[np.int64]:
    own = np.asarray(owners, np.int64)
    if own.shape != (len(gallery),):
        raise ValueError(f"owners has shape {own.shape}, gallery has {len(gallery)} templates")
    if len(own) and own.min() < 0:
        raise ValueError("owners must be non-negative voter indices")
    return own


def _voter_evidence(
    scores: NDArray[np.float32], owners: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]:
    """Best score and its template per voter, plus each voter's template count."""
    n_voters = int(owners.max()) + 1
    best = np.full(n_voters, -1.0)
    arg = np.full(n_voters, -1, np.int64)
    order = np.argsort(scores, kind="stable")
    # Ascending order: the last write per voter is its best template.
    best[owners[order]] = scores[order]
    arg[owners[order]] = order
    counts = np.bincount(owners, minlength=n_voters).astype(np.int64)
    return best, arg, counts


def _p_single(score: float, k: int) -> float:
    """p-value of a voter's best of ``k`` templates; a negative score means "no evidence"."""
    if score < 0.0:
        return 1.0
    return min(1.0, k * prm.false_match_rate(score))


def _fisher2(p1: float, p2: float) -> float:
    c = max(p1 * p2, 1e-300)
    return min(1.0, c * (1.0 - math.log(c)))


def identify(
    gallery: Gallery,
    probe: Template | Prepared,
    owners: NDArray[np.integer],
    fmr: float = prm.IDENTIFY_FPIR,
    *,
    exhaustive: bool | None = None,
) -> Identification:
    """1:N identification of one finger over the station's gallery.

    ``owners[i]`` is the voter index of gallery template ``i``; ``fmr`` is the
    false-match rate of the search as a whole (FPIR), not per comparison. Returns MATCH
    when the best voter's evidence clears the bound sized for the gallery
    and no other voter's does; NEED_SECOND_FINGER otherwise; NO_MATCH only when
    there is nothing to search (empty gallery, probe without usable minutiae).
    ``exhaustive`` is passed to ``Gallery.scores`` (``False`` = the faster
    two-stage search; see docs/MATCHING.md for what it changes).
    """
    own = _validate_owners(gallery, owners)
    if len(gallery) == 0:
        return Identification(Outcome.NO_MATCH, -1, 0.0, 1.0, 0.0)
    q = probe if isinstance(probe, Prepared) else gallery.matcher.prepare(probe)
    if len(q) == 0:
        return Identification(Outcome.NO_MATCH, -1, 0.0, 1.0, 0.0)
    best, _, counts = _voter_evidence(gallery.scores(q, exhaustive=exhaustive), own)
    present = np.nonzero(counts)[0]
    n_voters = len(present)
    bound = fmr / n_voters
    pvals = np.array([_p_single(float(best[v]), int(counts[v])) for v in present])
    order = np.argsort(pvals, kind="stable")
    top = int(present[order[0]])
    p_top = float(pvals[order[0]])
    runner_clears = len(order) > 1 and float(pvals[order[1]]) <= bound
    outcome = Outcome.MATCH if p_top <= bound and not runner_clears else Outcome.NEED_SECOND_FINGER
    return Identification(outcome, top, float(best[top]), p_top, bound)


def identify_fused(
    gallery: Gallery,
    probe1: Template | Prepared,
    probe2: Template | Prepared,
    owners: NDArray[np.integer],
    fmr: float = prm.IDENTIFY_FPIR,
) -> Identification:
    """1:N identification from two different fingers of the same person.

    Each voter's evidence is the best template for each probe (two distinct
    templates), combined with Fisher's rule (module docstring). Returns MATCH
    or NO_MATCH; never asks for more.
    """
    own = _validate_owners(gallery, owners)
    if len(gallery) == 0:
        return Identification(Outcome.NO_MATCH, -1, 0.0, 1.0, 0.0)
    m = gallery.matcher
    q1 = probe1 if isinstance(probe1, Prepared) else m.prepare(probe1)
    q2 = probe2 if isinstance(probe2, Prepared) else m.prepare(probe2)
    # Always exhaustive: the second finger is asked for precisely in the marginal
    # cases where the two-stage filter can miss a mate.
    s1 = gallery.scores(q1, exhaustive=True)
    s2 = gallery.scores(q2, exhaustive=True)
    counts = np.bincount(own).astype(np.int64)
    present = np.nonzero(counts)[0]
    bound = fmr / len(present)
    # Per voter: best assignment of the two probes to two different templates.
    order = np.argsort(own, kind="stable")
    starts = np.searchsorted(own[order], present)
    ends = np.searchsorted(own[order], present, side="right")
    best_p = 1.0
    best_v = -1
    best_s = 0.0
    second_p = 1.0
    for v, a, b in zip(present, starts, ends, strict=True):
        idx = order[a:b]
        k = len(idx)
        i1 = idx[np.argsort(-s1[idx], kind="stable")[:2]]
        i2 = idx[np.argsort(-s2[idx], kind="stable")[:2]]
        if k == 1:
            # One enrolled finger: only one probe can be its mate; the other adds nothing.
            pairs = [(float(s1[i1[0]]), -1.0)] if s1[i1[0]] >= s2[i2[0]] else [
                (-1.0, float(s2[i2[0]]))
            ]
        elif i1[0] != i2[0]:
            pairs = [(float(s1[i1[0]]), float(s2[i2[0]]))]
        else:
            pairs = [
                (float(s1[i1[0]]), float(s2[i2[1]])),
                (float(s1[i1[1]]), float(s2[i2[0]])),
            ]
        p = min(_fisher2(_p_single(x, k), _p_single(y, k)) for x, y in pairs)
        if p < best_p:
            second_p = best_p
            best_p, best_v, best_s = p, int(v), max(pairs[0])
        elif p < second_p:
            second_p = p
    if best_v >= 0 and best_p <= bound and second_p > bound:
        return Identification(Outcome.MATCH, best_v, best_s, best_p, bound)
    return Identification(Outcome.NO_MATCH, best_v, best_s, best_p, bound)
