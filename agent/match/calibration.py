"""Impostor score calibration: from a score to a false-match rate and back.

A :class:`Calibration` maps a comparison score to the probability that an
impostor comparison scores at least that much (``false_match_rate``) and
back (``threshold``). It is fitted (:func:`fit`) to impostor scores grouped
by *condition* (one sensor and one pairing of extractors, e.g. "DB3, register
template against kiosk probe"), because a station meets one sensor, and the
sensors the kiosk will meet were not in the data:

* **Empirical part** (FMR 1e-1 down to the tail's start ``fmr0``, 1e-3):
  quantiles, interpolated log-linearly; each point is the *highest* of the
  pooled and the per-condition quantiles that resolve it (at least
  ``MIN_EVENTS`` exceedances), so no condition seen in the data is looser
  than promised.
* **Tail** (below ``fmr0``, where single conditions no longer resolve the
  quantiles): an exponential tail ``FMR(t) = fmr0 exp(-(t - t0) /
  beta)``; ``t0`` is the empirical point at ``fmr0`` and ``beta`` the
  *largest* per-condition maximum-likelihood slope (mean excess over that
  condition's own ``fmr0`` quantile): the heaviest tail seen, not the
  average one.
* **Margin**: every false-match rate is multiplied by ``margin`` (capped at
  1), i.e. the calibration promises ``fmr`` where the fit says
  ``fmr / margin``. The margin covers what cross-validation measured (a
  sensor left out of the fit had up to that much more impostor mass at the
  resolvable levels than the fit said) and what it cannot: the tail of a
  sensor not in the data at all.

Pure functions on NumPy arrays; the fitted constants live in
:mod:`agent.match.parameters`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

MIN_EVENTS = 25
"""Exceedances a quantile needs before the empirical part trusts it."""
MIN_TAIL_EVENTS = 10
"""Exceedances a condition needs before its tail slope counts."""
LEVELS = (1e-1, 1e-2, 1e-3)
"""FMR levels of the empirical part (down to the tail's start)."""


@dataclass(frozen=True)
class Calibration:
    """Score <-> false-match rate of one comparison (see the module docstring).

    ``points`` are (FMR, threshold) pairs with FMR descending and thresholds
    ascending; the tail starts at ``(tail_fmr0, tail_t0)``.
    """

    points: tuple[tuple[float, float], ...]
    tail_t0: float
    tail_fmr0: float
    tail_beta: float
    margin: float = 1.0
    impostors: int = 0

    def __post_init__(self) -> None:
        fmrs = [f for f, _ in self.points]
        ts = [t for _, t in self.points]
        if not self.points or fmrs != sorted(fmrs, reverse=True) or ts != sorted(ts):
            raise ValueError("calibration points must have FMR descending, thresholds ascending")
        if self.tail_beta <= 0.0 or self.margin < 1.0 or not 0.0 < self.tail_fmr0 < 1.0:
            raise ValueError("need tail_beta > 0, margin >= 1, 0 < tail_fmr0 < 1")

    def _fitted_threshold(self, fmr: float) -> float:
        pts = self.points
        lf = math.log(fmr)
        if fmr >= pts[0][0]:
            # Above the first point, log-linear towards FMR 1 at score 0.
            return pts[0][1] * lf / math.log(pts[0][0])
        for (f0, t0), (f1, t1) in itertools.pairwise(pts):
            if f1 <= fmr <= f0:
                return t0 + (lf - math.log(f0)) / (math.log(f1) - math.log(f0)) * (t1 - t0)
        tail = self.tail_t0 + self.tail_beta * math.log(self.tail_fmr0 / fmr)
        return max(tail, pts[-1][1])

    def threshold(self, fmr: float) -> float:
        """Score threshold at which impostors pass with probability at most ``fmr``."""
        if not 0.0 < fmr < 1.0:
            raise ValueError(f"fmr={fmr} must be in (0, 1)")
        return self._fitted_threshold(min(fmr / self.margin, 0.999999))

    def _fitted_rate(self, score: float) -> float:
        pts = self.points
        if score <= pts[0][1]:
            # Never claim evidence a low score does not carry: FMR rises to 1 at score 0.
            return float(pts[0][0] ** (max(score, 0.0) / pts[0][1]))
        for (f0, t0), (f1, t1) in itertools.pairwise(pts):
            if t0 <= score <= t1:
                u = (score - t0) / (t1 - t0)
                return math.exp(math.log(f0) + u * (math.log(f1) - math.log(f0)))
        tail = self.tail_fmr0 * math.exp(-(score - self.tail_t0) / self.tail_beta)
        return min(tail, pts[-1][0])

    def false_match_rate(self, score: float) -> float:
        """Inverse of :meth:`threshold`: the FMR this calibration promises at ``score``."""
        return min(1.0, self.margin * self._fitted_rate(score))

    def _fitted_rates(self, scores: NDArray[np.floating]) -> NDArray[np.float64]:
        """:meth:`_fitted_rate` of every score (vectorised, same values)."""
        s = np.asarray(scores, np.float64)
        fs = np.array([f for f, _ in self.points])
        ts = np.array([t for _, t in self.points])
        low = fs[0] ** (np.maximum(s, 0.0) / ts[0])
        mid = np.exp(np.interp(s, ts, np.log(fs)))
        tail = np.minimum(self.tail_fmr0 * np.exp(-(s - self.tail_t0) / self.tail_beta), fs[-1])
        return np.asarray(np.where(s <= ts[0], low, np.where(s <= ts[-1], mid, tail)), np.float64)

    def _fitted_thresholds(self, fmrs: NDArray[np.floating]) -> NDArray[np.float64]:
        """:meth:`_fitted_threshold` of every FMR in (0, 1) (vectorised, same values)."""
        f = np.asarray(fmrs, np.float64)
        fs = np.array([x for x, _ in self.points])
        ts = np.array([t for _, t in self.points])
        lf = np.log(f)
        high = ts[0] * lf / np.log(fs[0])
        mid = np.interp(lf, np.log(fs[::-1]), ts[::-1])
        tail = np.maximum(self.tail_t0 + self.tail_beta * np.log(self.tail_fmr0 / f), ts[-1])
        return np.asarray(np.where(f >= fs[0], high, np.where(f >= fs[-1], mid, tail)),
                          np.float64)

    def false_match_rates(self, scores: NDArray[np.floating]) -> NDArray[np.float64]:
        """:meth:`false_match_rate` of every score (vectorised)."""
        return np.minimum(1.0, self.margin * self._fitted_rates(scores))


def fit(conditions: Mapping[str, NDArray[np.floating]], margin: float = 1.0,
        tail_fmr0: float = 1e-3) -> Calibration:
    """Fit a calibration to impostor scores grouped by condition (module docstring)."""
    groups = [np.asarray(v, np.float64) for v in conditions.values() if len(v)]
    if not groups:
        raise ValueError("no impostor scores to calibrate on")
    pooled = np.concatenate(groups)
    points = []
    for f in LEVELS:
        if f < tail_fmr0 or f * len(pooled) < MIN_EVENTS:
            break
        qs = [float(np.quantile(g, 1 - f)) for g in [pooled, *groups]
              if f * len(g) >= MIN_EVENTS]
        points.append((f, max(qs)))
    # Thresholds must not decrease as FMR falls (max over groups can break that).
    fixed: list[tuple[float, float]] = []
    for f, t in points:
        fixed.append((f, max(t, fixed[-1][1]) if fixed else t))
    if not any(f == tail_fmr0 for f, _ in fixed):
        raise ValueError(f"too few impostor scores to resolve FMR {tail_fmr0:g}")
    t0 = dict(fixed)[tail_fmr0]
    betas = []
    for g in groups:
        if tail_fmr0 * len(g) >= MIN_TAIL_EVENTS:
            q = float(np.quantile(g, 1 - tail_fmr0))
            betas.append(float(np.mean(g[g > q] - q)))
    if not betas:
        raise ValueError(f"no condition has {MIN_TAIL_EVENTS} impostors above FMR {tail_fmr0:g}")
    return Calibration(points=tuple(fixed), tail_t0=t0, tail_fmr0=tail_fmr0,
                       tail_beta=max(betas), margin=margin, impostors=len(pooled))


def translate(scores: NDArray[np.floating], source: Calibration, target: Calibration
              ) -> NDArray[np.float64]:
    """The ``target`` scores whose fitted FMR equals that of ``scores`` under ``source``.

    Puts two statistics on one scale (margins aside): the best score over the
    scale hypotheses (its own, heavier-tailed calibration) expressed as the
    plain score that is equally rare among impostors.
    """
    rates = np.minimum(source._fitted_rates(scores), 0.999999)
    return target._fitted_thresholds(rates)


def observed_ratio(cal: Calibration, impostors: NDArray[np.floating],
                   levels: tuple[float, ...] = (1e-2, 1e-3, 1e-4),
                   min_expected: float = 5.0) -> float:
    """Largest (observed / promised) impostor pass rate over the levels ``impostors`` resolve.

    Applied to a condition left out of the fit, it measures how far the
    calibration would have been too optimistic there (the margin must cover it).
    """
    imp = np.asarray(impostors, np.float64)
    worst = 0.0
    for f in levels:
        if f * len(imp) < min_expected:
            continue
        observed = float(np.mean(imp >= cal.threshold(f)))
        worst = max(worst, observed / f)
    return worst


def source(cal: Calibration) -> str:
    """The calibration as the Python expression pasted into ``parameters.py``."""
    pts = ",\n".join(f"        ({f:g}, {t:.5f})" for f, t in cal.points)
    return (
        "CALIBRATION = Calibration(\n"
        f"    points=(\n{pts},\n    ),\n"
        f"    tail_t0={cal.tail_t0:.5f},\n"
        f"    tail_fmr0={cal.tail_fmr0:g},\n"
        f"    tail_beta={cal.tail_beta:.5f},\n"
        f"    margin={cal.margin:g},\n"
        f"    impostors={cal.impostors},\n"
        ")"
    )
