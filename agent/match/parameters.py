"""Every tuned constant of the matcher and its decision thresholds, in one place.

Site configuration (which FMR a station runs at) lives in ``agent.runtime.config``;
this module holds what the algorithm needs and what calibration produced.
Lengths are in pixels at ``STANDARD_DPI`` (500 dpi), angles in radians.

The kernels receive these values as one float64 vector (:func:`kernel_vector`)
rather than reading module globals, because Numba freezes globals into its
on-disk cache and would silently keep stale values after an edit here.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import astuple, dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class MccParameters:
    """Minutia Cylinder-Code (Cappelli, Ferrara, Maltoni, PAMI 2010) with LSS-R consolidation.

    Defaults follow the paper except where noted: the cylinder is 8 x 8 cells
    (one 64-bit word per direction layer, so the validity mask is one word),
    and the pair-distance tolerance of the relaxation grows with the distance
    (``rel_d_tol_rel``) so that skin stretch and the per-set anisotropic
    resampling of register templates are tolerated.

    ``nd`` is fixed at 6: a packed cylinder is seven words (validity mask,
    six layers) and the comparison kernel unrolls the layers.
    """

    radius: float = 65.0
    ns: int = 8
    nd: int = 6
    sigma_s: float = 28.0 / 3.0
    sigma_d: float = 2.0 * math.pi / 9.0
    mu_psi: float = 0.01
    omega: float = 50.0
    min_vc: float = 0.75
    min_m: int = 2
    min_me: float = 0.60
    delta_theta: float = math.pi / 2.0
    mu_p: float = 20.0
    tau_p: float = 2.0 / 5.0
    min_np: int = 4
    max_np: int = 12
    w_r: float = 0.5
    n_rel: int = 5
    rel_mu1: float = 5.0
    rel_tau1: float = -8.0 / 5.0
    rel_mu2: float = math.pi / 12.0
    rel_tau2: float = -30.0
    rel_mu3: float = math.pi / 12.0
    rel_tau3: float = -30.0
    rel_d_tol_rel: float = 0.0
    max_nr: int = 20

    def __post_init__(self) -> None:
        if self.ns != 8:
            raise ValueError("the bit layout needs ns == 8 (one 64-bit word per layer)")
        if self.nd != 6:
            # A packed cylinder is the mask and 6 layer words; the comparison
            # kernel unrolls the six layers.
            raise ValueError("the packed layout needs nd == 6 (the kernel unrolls six layer words)")
        if self.min_np < 1 or self.max_np < self.min_np:
            raise ValueError("need 1 <= min_np <= max_np")


DEFAULT = MccParameters()


def kernel_vector(p: MccParameters) -> NDArray[np.float64]:
    """The parameters in field order, as the kernels index them."""
    return np.asarray(astuple(p), dtype=np.float64)


# Indexes into kernel_vector(); kept next to the dataclass so they cannot drift.
FIELDS = tuple(MccParameters.__dataclass_fields__)
(
    P_RADIUS, P_NS, P_ND, P_SIGMA_S, P_SIGMA_D, P_MU_PSI, P_OMEGA, P_MIN_VC, P_MIN_M, P_MIN_ME,
    P_DELTA_THETA, P_MU_P, P_TAU_P, P_MIN_NP, P_MAX_NP, P_W_R, P_N_REL, P_REL_MU1, P_REL_TAU1,
    P_REL_MU2, P_REL_TAU2, P_REL_MU3, P_REL_TAU3, P_REL_D_TOL_REL, P_MAX_NR,
) = range(len(FIELDS))


# --------------------------------------------------------------------------- calibration
# Produced by `python -m agent.match calibrate hardware_sim/data/fvc2002/DB*_B` (see
# docs/MATCHING.md): impostor scores of every non-mated pair among the 320 FVC2002
# DB1-4_B templates (49,920 pairs, cross-set pairs included), with the default
# MccParameters. Re-run and paste its output here whenever the matcher changes.
CALIBRATION_IMPOSTORS = 49920
CALIBRATION_POINTS: tuple[tuple[float, float], ...] = (
    (0.1, 0.01613),
    (0.01, 0.02057),
    (0.001, 0.02624),
    (0.0001, 0.03253),
)
"""Empirical (FMR, threshold) pairs: the share of impostor scores >= threshold."""
TAIL_T0 = 0.02624
TAIL_FMR0 = 0.001
TAIL_BETA = 0.00325
"""Exponential tail fitted to impostor scores above TAIL_T0 (maximum likelihood:
beta = mean excess); FMR(t) = TAIL_FMR0 * exp(-(t - TAIL_T0) / TAIL_BETA) for
t >= TAIL_T0. Used below the resolution of the data (FMR < ~1e-4), e.g. for
1:N thresholds at station scale."""


def _interpolate(x: float, x0: float, x1: float, y0: float, y1: float) -> float:
    return y0 + (x - x0) / (x1 - x0) * (y1 - y0)


def threshold(fmr: float) -> float:
    """Score threshold giving false-match rate ``fmr`` per comparison.

    Log-linear interpolation between the empirical calibration points; below
    the smallest calibrated FMR, the fitted exponential tail (never looser
    than the last empirical point).
    """
    if not 0.0 < fmr < 1.0:
        raise ValueError(f"fmr={fmr} must be in (0, 1)")
    pts = CALIBRATION_POINTS
    lf = math.log(fmr)
    if fmr >= pts[0][0]:
        # Above the first point, log-linear towards FMR 1 at score 0.
        return pts[0][1] * lf / math.log(pts[0][0])
    for (f0, t0), (f1, t1) in itertools.pairwise(pts):
        if f1 <= fmr <= f0:
            return _interpolate(lf, math.log(f0), math.log(f1), t0, t1)
    tail = TAIL_T0 + TAIL_BETA * math.log(TAIL_FMR0 / fmr)
    return max(tail, pts[-1][1])


def false_match_rate(score: float) -> float:
    """Inverse of :func:`threshold`: the per-comparison FMR at which ``score`` just passes."""
    pts = CALIBRATION_POINTS
    if score <= pts[0][1]:
        # Never claim evidence a low score does not carry: FMR rises to 1 at score 0.
        return float(pts[0][0] ** (max(score, 0.0) / pts[0][1]))
    for (f0, t0), (f1, t1) in itertools.pairwise(pts):
        if t0 <= score <= t1:
            return math.exp(_interpolate(score, t0, t1, math.log(f0), math.log(f1)))
    tail = TAIL_FMR0 * math.exp(-(score - TAIL_T0) / TAIL_BETA)
    return min(tail, pts[-1][0])


# --------------------------------------------------------------------------- decisions
VERIFY_FMR = 1e-4
"""Default per-claim false-match rate of 1:1 verification against the named voter."""
IDENTIFY_FPIR = 1e-3
"""Default false-positive identification rate of one 1:N search over a whole station."""
