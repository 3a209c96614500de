"""Honest evaluation of the matcher's decision rule on the four FVC2002 dev sets.

Used by ``python -m benchmarks match`` (sections ``match_cv`` and
``match_decisions``). Three pairings ("cases") of the same fingers:

* ``register``: the vendor's ISO templates on both sides, as the register
  delivers them (stretched per set, see the data README);
* ``kiosk``: the kiosk's own extraction of the images on both sides;
* ``field``: the register's vendor template in the gallery, the kiosk's
  extraction as the probe (what a polling station actually does).

Every score needed is one of 4 x 4 x 3 matrices (gallery set x probe set x
case, 80 x 80 templates each), computed once and cached on disk under
``.cache/bench-match`` (keyed by the matcher's and the extractor's sources),
so the decision tests are table look-ups. The calibration used on set ``s``
is always fitted on the other three sets (leave-one-sensor-out), as is every
other choice the rule makes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from agent.match import calibration as cb
from agent.match import parameters as prm
from agent.match.decision import Outcome, decide, decide_fused
from agent.match.evaluation import Rates, error_rates, load_set
from agent.match.matcher import Matcher
from agent.match.scale import rescaled
from agent.match.template import Template
from hardware_sim.reference_data import reference_data

REPO = Path(__file__).resolve().parents[1]
DATA = reference_data(full=True) / "fvc2002"
"""The full FVC2002 sets (images too, for the kiosk's extraction): beside the repository."""
CACHE = REPO / ".cache" / "bench-match"
SETS = ("DB1_B", "DB2_B", "DB3_B", "DB4_B")
CASES = ("register", "kiosk", "field")
STATION_VOTERS = 5_610
KEYS = [(f, i) for f in range(10) for i in range(1, 9)]
"""Row/column order of every score matrix: finger-major, impression 1..8."""
Matrices = dict[tuple[str, str, str], NDArray[np.float32]]
"""(case, gallery set, probe set) -> scores[gallery key, probe key]."""


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _cached(name: str, make: Callable[[], object]) -> object:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / name
    if path.exists():
        return pickle.loads(path.read_bytes())
    value = make()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(value))
    os.replace(tmp, path)
    return value


def kiosk_set(data: Path, name: str) -> dict[tuple[int, int], Template]:
    """The kiosk's extraction of one set's images (cached on disk: ~10 s a set)."""
    from benchmarks.bench_extract import extract_set

    key = _digest(list((REPO / "agent" / "match" / "extraction").glob("*.py")))
    made = _cached(f"kiosk-{name}-{key}.pkl", lambda: extract_set(name))
    return made  # type: ignore[return-value]


def _scores_key(m: Matcher) -> str:
    """What the scores depend on: the kernels' and codecs' sources, the extractor, parameters."""
    src = REPO / "agent" / "match"
    files = [src / n for n in ("cylinders.py", "lssr.py", "matcher.py", "template.py",
                               "codecs.py", "scale.py")]
    key = _digest([*files, *(src / "extraction").glob("*.py")])
    return key + hashlib.sha256(prm.kernel_vector(m.params).tobytes()).hexdigest()[:8]


def score_matrices(data: Path, hypothesis: tuple[float, float] = (1.0, 1.0),
                   matcher: Matcher | None = None) -> Matrices:
    """All 48 score matrices, probes rescaled by ``hypothesis`` (cached on disk)."""
    m = matcher or Matcher(threads=1)
    sx, sy = hypothesis

    def make() -> Matrices:
        register = {s: load_set(data / s) for s in SETS}
        kiosk = {s: kiosk_set(data, s) for s in SETS}
        out: Matrices = {}
        for a in SETS:
            galleries = {"register": m.gallery([register[a][k] for k in KEYS]),
                         "kiosk": m.gallery([kiosk[a][k] for k in KEYS])}
            for b in SETS:
                for case, gal, probes in (("register", "register", register[b]),
                                          ("kiosk", "kiosk", kiosk[b]),
                                          ("field", "register", kiosk[b])):
                    g = galleries[gal]
                    out[(case, a, b)] = np.stack(
                        [g.scores(m.prepare(rescaled(probes[k], sx, sy)), threads=1)
                         for k in KEYS], axis=1)
        return out

    return _cached(f"scores-{_scores_key(m)}-{sx:g}x{sy:g}.pkl", make)  # type: ignore[return-value]


def best_of(data: Path, hypotheses: tuple[tuple[float, float], ...]) -> Matrices:
    """Each pair's best score over ``hypotheses`` (what the station's shortlist computes)."""
    per = [score_matrices(data, h) for h in hypotheses]
    return {k: np.maximum.reduce([p[k] for p in per]) for k in per[0]}


_K = np.array(KEYS)
_SAME = _K[:, 0][:, None] == _K[:, 0][None, :]
_EARLIER = _K[:, 1][:, None] < _K[:, 1][None, :]
_UPPER = np.arange(len(KEYS))[:, None] < np.arange(len(KEYS))[None, :]


def genuine(mats: Matrices, case: str, s: str) -> NDArray[np.float64]:
    """FVC genuine pairs: impression i in the gallery, j > i as the probe (280)."""
    return np.asarray(mats[(case, s, s)][_SAME & _EARLIER], np.float64)


def impostors_within(mats: Matrices, case: str, s: str) -> NDArray[np.float64]:
    """Every cross-finger pair of one set (2,880; 5,760 for the asymmetric field case)."""
    m = mats[(case, s, s)]
    return np.asarray(m[~_SAME & _UPPER] if case != "field" else m[~_SAME], np.float64)


def impostors_of(mats: Matrices, case: str, s: str, exclude: tuple[str, ...] = ()
                 ) -> NDArray[np.float64]:
    """Set ``s``'s impostors in ``case``: within the set and against the other sets."""
    parts = [impostors_within(mats, case, s)]
    parts += [mats[(case, s, b)].ravel().astype(np.float64) for b in SETS
              if b != s and b not in exclude]
    return np.concatenate(parts)


def fit_calibration(mats: Matrices, sets: tuple[str, ...],
                    margin: float = prm.CALIBRATION_MARGIN) -> cb.Calibration:
    """The shipped fitting procedure on ``sets`` only (pairs with other sets left out)."""
    others = tuple(s for s in SETS if s not in sets)
    return cb.fit({f"{c}/{s}": impostors_of(mats, c, s, others) for c in CASES for s in sets},
                  margin=margin)


def heldout_ratio(mats: Matrices, s: str, within_only: bool = False) -> dict[str, float]:
    """Per case: worst observed / promised impostor pass rate on ``s``, fitted without it.

    ``within_only``: only the pairs inside set ``s`` (the station's situation,
    but few events: levels with >= 2 expected exceedances count).
    """
    cal = fit_calibration(mats, tuple(x for x in SETS if x != s), margin=1.0)
    out = {}
    for c in CASES:
        if within_only:
            out[c] = cb.observed_ratio(cal, impostors_within(mats, c, s), min_expected=2.0)
            continue
        imp = np.concatenate([impostors_of(mats, c, s)]
                             + [mats[(c, b, s)].ravel() for b in SETS if b != s])
        out[c] = cb.observed_ratio(cal, imp)
    return out


def clopper_pearson_upper(events: int, n: int, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound of a binomial rate (exact; 3/n-ish for 0 events)."""
    if n <= 0:
        return 1.0
    alpha = 1.0 - confidence
    if events == 0:
        return float(1.0 - alpha ** (1.0 / n))

    def cdf(p: float) -> float:
        logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                + k * math.log(p) + (n - k) * math.log1p(-p) for k in range(events + 1)]
        top = max(logs)
        return math.exp(top) * sum(math.exp(v - top) for v in logs)

    lo, hi = events / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > alpha else (lo, mid)
    return hi


@dataclass
class Tally:
    """Counts of one decision test."""

    attempts: int = 0
    first: int = 0
    second_alone: int = 0
    fused: int = 0
    wrong: int = 0
    closest: float = math.inf
    """Smallest p-value / bound over attempts that must not match (decades of margin)."""
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, other: Tally) -> None:
        self.attempts += other.attempts
        self.first += other.first
        self.second_alone += other.second_alone
        self.fused += other.fused
        self.wrong += other.wrong
        self.closest = min(self.closest, other.closest)

    @property
    def identified(self) -> int:
        return self.first + self.second_alone + self.fused


def _voters(n_voters: int) -> NDArray[np.int64]:
    return np.repeat(np.arange(n_voters), 2)


def _rows(e: int, voters: list[int]) -> list[int]:
    """Gallery rows of ``voters`` (fingers 2v, 2v+1) enrolled with impression ``e``."""
    return [KEYS.index((f, e)) for v in voters for f in (2 * v, 2 * v + 1)]


def _turn(s1: NDArray[np.float32], s2: NDArray[np.float32], owners: NDArray[np.int64],
          fmr: float, cal: cb.Calibration, floor_fmr: float = prm.FUSION_FINGER_FMR
          ) -> tuple[str, int, float]:
    """One voter's turn as the station runs it: press, second press alone, fused.

    Returns (how, voter, smallest p-value / bound seen on the way).
    """
    r = decide(s1, owners, fmr, calibration=cal)
    closest = r.p_value / r.bound
    if r.outcome is Outcome.MATCH:
        return "first", r.voter, closest
    r2 = decide(s2, owners, fmr, calibration=cal)
    closest = min(closest, r2.p_value / r2.bound)
    if r2.outcome is Outcome.MATCH:
        return "second", r2.voter, closest
    f = decide_fused(s1, s2, owners, fmr, calibration=cal, floor_fmr=floor_fmr)
    closest = min(closest, f.p_value / f.bound if f.bound > 0 else math.inf)
    if f.outcome is Outcome.MATCH:
        return "fused", f.voter, closest
    return "none", -1, closest


def _fmr_for(n_voters: int) -> float:
    """The FPIR argument that gives a small gallery the per-voter bound of a full station."""
    return prm.IDENTIFY_FPIR * n_voters / STATION_VOTERS


def mates(mats: Matrices, case: str, s: str, cal: cb.Calibration,
          floor_fmr: float = prm.FUSION_FINGER_FMR) -> Tally:
    """Voters of set ``s`` (5 x 2 fingers) identifying themselves, every enrolment impression.

    Gallery: impression ``e`` of both fingers of the 5 voters; each voter
    presses impression ``j != e`` of one finger, then (if needed) the same
    impression of the other finger; both finger orders. 560 turns per set.
    """
    m = mats[(case, s, s)]
    owners = _voters(5)
    fmr = _fmr_for(5)
    t = Tally()
    for e in range(1, 9):
        rows = _rows(e, list(range(5)))
        for v in range(5):
            for j in range(1, 9):
                if j == e:
                    continue
                for a, b in ((2 * v, 2 * v + 1), (2 * v + 1, 2 * v)):
                    how, who, _ = _turn(m[rows, KEYS.index((a, j))], m[rows, KEYS.index((b, j))],
                                        owners, fmr, cal, floor_fmr)
                    t.attempts += 1
                    if how == "none":
                        continue
                    t.wrong += who != v
                    t.first += how == "first"
                    t.second_alone += how == "second"
                    t.fused += how == "fused"
    return t


def _outsider_turns(m: NDArray[np.float32], rows: list[int], n_voters: int, out: list[int],
                    cal: cb.Calibration, floor_fmr: float = prm.FUSION_FINGER_FMR
                    ) -> Iterator[tuple[str, float]]:
    """Every two-press turn of person ``out`` (two fingers, all impressions) at a gallery."""
    owners = _voters(n_voters)
    fmr = _fmr_for(n_voters)
    a_f, b_f = out
    for a, b in ((a_f, b_f), (b_f, a_f)):
        for j in range(1, 9):
            s1 = m[rows, KEYS.index((a, j))]
            for j2 in range(1, 9):
                how, _, closest = _turn(s1, m[rows, KEYS.index((b, j2))], owners, fmr, cal,
                                        floor_fmr)
                yield how, closest


def outsiders_same_sensor(mats: Matrices, case: str, s: str, cal: cb.Calibration,
                          floor_fmr: float = prm.FUSION_FINGER_FMR) -> Tally:
    """Leave-one-voter-out on one sensor: each voter removed in turn and probed (all presses).

    8 enrolment impressions x 5 voters x 2 finger orders x 8 x 8 impressions
    = 5,120 two-press turns per set, each against the other 4 voters.
    """
    m = mats[(case, s, s)]
    t = Tally()
    for e in range(1, 9):
        for v in range(5):
            rest = [w for w in range(5) if w != v]
            for how, closest in _outsider_turns(m, _rows(e, rest), 4, [2 * v, 2 * v + 1], cal,
                                                floor_fmr):
                t.attempts += 1
                t.wrong += how != "none"
                t.closest = min(t.closest, closest)
    return t


def outsiders_cross_sensor(mats: Matrices, case: str, s: str, cal: cb.Calibration) -> Tally:
    """People of set ``s`` at a station of another set's 5 voters (every other set).

    3 galleries x 8 enrolment impressions x 5 people x 128 two-press turns
    = 15,360 per set.
    """
    t = Tally()
    for g in SETS:
        if g == s:
            continue
        m = mats[(case, g, s)]
        for e in range(1, 9):
            rows = _rows(e, list(range(5)))
            for v in range(5):
                for how, closest in _outsider_turns(m, rows, 5, [2 * v, 2 * v + 1], cal):
                    t.attempts += 1
                    t.wrong += how != "none"
                    t.closest = min(t.closest, closest)
    return t


def rates(mats: Matrices, case: str, s: str) -> Rates:
    """FVC error rates of one set and case, all cross-finger impostors."""
    return error_rates(genuine(mats, case, s), impostors_within(mats, case, s))


CANDIDATES: dict[str, tuple[tuple[float, float], ...]] = {
    "none": ((1.0, 1.0),),
    "axes 0.8/1.25": ((1.0, 1.0), (0.8, 1.0), (1.25, 1.0), (1.0, 0.8), (1.0, 1.25)),
    "grid 3x3 0.8/1/1.25": prm.SCALE_HYPOTHESES,
}
"""Scale-hypothesis sets the cross-validation chooses among (the shipped one is the last)."""


def _others(*sets: str) -> tuple[str, ...]:
    return tuple(s for s in SETS if s not in sets)


@dataclass
class Fold:
    """What was chosen without set ``held_out`` and how it did there."""

    held_out: str
    hypotheses: str
    inner: dict[str, float]
    """Candidate -> mean field identification on the three training sets (nested CV)."""
    calibration: cb.Calibration
    mats: Matrices


def choose_hypotheses(data: Path, held_out: str) -> tuple[str, dict[str, float]]:
    """Nested leave-one-out on the three training sets: the candidate that identifies most
    voters in the field pairing (each inner set scored with a calibration fitted without it)."""
    inner = {}
    for name, hyps in CANDIDATES.items():
        rates_ = []
        for t in _others(held_out):
            mats, cal, _ = combined(data, hyps, _others(held_out, t))
            tally = mates(mats, "field", t, cal)
            rates_.append(tally.identified / tally.attempts)
        inner[name] = float(np.mean(rates_))
    return max(inner, key=lambda k: inner[k]), inner


def folds(data: Path) -> list[Fold]:
    """One fold per dev set: every choice made on the other three."""
    out = []
    for s in SETS:
        name, inner = choose_hypotheses(data, s)
        mats, cal, _ = combined(data, CANDIDATES[name], _others(s))
        out.append(Fold(s, name, inner, cal, mats))
    return out


def shortlist_misses(data: Path, case: str, s: str, gallery_size: int, shortlist: int) -> int:
    """Genuine pairs of set ``s`` whose plain score would rank below the shortlist's cut in a
    gallery of ``gallery_size`` impostor templates (estimated from the plain impostor scores:
    a mate misses when ``gallery_size * FMR(plain score) >= shortlist``)."""
    plain = score_matrices(data)
    imp = np.sort(np.concatenate([impostors_of(plain, case, x) for x in SETS]))
    cut = imp[int(len(imp) * (1.0 - shortlist / gallery_size))]
    return int(np.sum(genuine(plain, case, s) < cut))


PRE_ISSUE_23 = cb.Calibration(
    points=((0.1, 0.01613), (0.01, 0.02057), (0.001, 0.02624), (0.0001, 0.03253)),
    tail_t0=0.02624, tail_fmr0=0.001, tail_beta=0.00325,
)
"""The calibration shipped before issue 23 (pooled ISO impostors, plain scores, no margin)."""


def variants(data: Path) -> dict[str, tuple[Matrices, Callable[[str], cb.Calibration], float]]:
    """The shipped rule's ancestors on the same protocol: (scores, calibration per held-out
    set, fusion floor FMR)."""
    plain = score_matrices(data)
    return {
        "rule before issue 23 (pooled calibration, no margin, no floor, plain scores)":
            (plain, lambda s: PRE_ISSUE_23, 1.0),
        "issue-23 rule without scale hypotheses (plain scores, fold calibration)":
            (plain, lambda s: fit_calibration(plain, _others(s)), prm.FUSION_FINGER_FMR),
    }


def combined(data: Path, hypotheses: tuple[tuple[float, float], ...], sets: tuple[str, ...]
             ) -> tuple[Matrices, cb.Calibration, cb.Calibration]:
    """What the station computes, with calibrations fitted on ``sets`` only.

    Returns the matrices of ``max(plain, translated best-over-hypotheses)``
    (:func:`agent.match.scale.rescore` on a gallery its shortlist covers), the
    calibration the decisions use (the plain fit, margin x2 for the two
    chances when there are hypotheses) and the scaled fit (``SCALED_CALIBRATION``).
    """
    plain = score_matrices(data)
    plain_fit = fit_calibration(plain, sets, margin=1.0)
    if len(hypotheses) == 1:
        return plain, dataclasses.replace(plain_fit, margin=prm.CALIBRATION_MARGIN), plain_fit
    best = best_of(data, hypotheses)
    scaled_fit = fit_calibration(best, sets, margin=1.0)
    mats = {k: np.maximum(plain[k], cb.translate(best[k], scaled_fit, plain_fit)
                          .astype(np.float32)) for k in plain}
    cal = dataclasses.replace(plain_fit, margin=prm.CALIBRATION_MARGIN * prm.SCALE_CHANCES)
    return mats, cal, scaled_fit
