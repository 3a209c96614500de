"""Every tuned constant of the matcher and its decision thresholds, in one place.

Site configuration (which FMR a station runs at) lives in ``agent.runtime.config``;
this module holds what the algorithm needs and what calibration produced.
Lengths are in pixels at ``STANDARD_DPI`` (500 dpi), angles in radians.

The kernels receive these values as one float64 vector (:func:`kernel_vector`)
rather than reading module globals, because Numba freezes globals into its
on-disk cache and would silently keep stale values after an edit here.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass

import numpy as np
from numpy.typing import NDArray

from agent.match.calibration import Calibration


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
# Printed by `python -m benchmarks match` (see docs/MATCHING.md and
# agent/match/calibration.py): impostor scores of the FVC2002 DB1-4_B fingers in
# three pairings (register templates on both sides, kiosk extraction on both
# sides, register gallery against kiosk probe), within and across the sets,
# grouped by sensor and pairing; heaviest per-group tail; margin below.
# Re-run and paste its output here whenever the matcher or the extractor changes.
CALIBRATION_MARGIN = 10.0
"""Factor on every calibrated false-match rate. Leave-one-sensor-out
cross-validation (benchmarks/RESULTS.md, "match_cv") found held-out sensors
with up to about 1.8x (all their impostors) and 4.9x (pairs within the
sensor only, few events) the pass rate the other three sets predicted; one
decade covers that, with little to spare for sensors in no data set at all
(issue 23's held-out sets were worse than ours): re-check on the register's
own templates before deployment."""
SCALE_CHANCES = 2
"""A template's evidence is the stronger of its plain score and its best score
over the scale hypotheses (:mod:`agent.match.scale`), each calibrated on its
own: two chances for an impostor, so the margin counts them (union bound)."""

CALIBRATION = Calibration(
    points=(
        (0.1, 0.01627),
        (0.01, 0.02062),
        (0.001, 0.02596),
    ),
    tail_t0=0.02596,
    tail_fmr0=0.001,
    tail_beta=0.00332,
    margin=CALIBRATION_MARGIN * SCALE_CHANCES,
    impostors=276480,
)
"""The shipped score <-> FMR calibration (:class:`~agent.match.calibration.Calibration`)
of the plain score; the decisions use it for :func:`agent.match.scale.scores`."""

SCALED_CALIBRATION = Calibration(
    points=(
        (0.1, 0.01911),
        (0.01, 0.02565),
        (0.001, 0.03325),
    ),
    tail_t0=0.03325,
    tail_fmr0=0.001,
    tail_beta=0.00594,
    margin=1,
    impostors=276480,
)
"""Fit of the best score over ``SCALE_HYPOTHESES`` (no margin: it only maps that
score onto the plain scale, :func:`agent.match.scale.equivalent`)."""


def threshold(fmr: float) -> float:
    """Score threshold giving false-match rate ``fmr`` per comparison (:data:`CALIBRATION`)."""
    return CALIBRATION.threshold(fmr)


def false_match_rate(score: float) -> float:
    """Inverse of :func:`threshold`: the per-comparison FMR promised at ``score``."""
    return CALIBRATION.false_match_rate(score)


# --------------------------------------------------------------------------- decisions
VERIFY_FMR = 1e-4
"""Default per-claim false-match rate of 1:1 verification against the named voter."""
IDENTIFY_FPIR = 1e-3
"""Default false-positive identification rate of one 1:N search over a whole station."""
FUSION_FINGER_FMR = 1e-4
"""Evidence each finger must carry on its own before two presses are fused:
its score must clear ``threshold(FUSION_FINGER_FMR)`` (the calibration's
margin included) against the voter's template. Fusion multiplies two
p-values, so an error in the calibrated tail counts twice; this floor keeps
every fused decision at a level the development data resolve (FMR 1e-4 is
about 28 impostors in the 276,480 of the calibration) instead of two
extrapolated ones (issue 23: two impostor presses at about 1e-5 each fused
to 3e-9 on a sensor whose true tail was heavier)."""

SCALE_HYPOTHESES: tuple[tuple[float, float], ...] = (
    (1.0, 1.0), (0.8, 1.0), (1.25, 1.0), (1.0, 0.8), (1.0, 1.25),
    (0.8, 0.8), (0.8, 1.25), (1.25, 0.8), (1.25, 1.25),
)
"""(x, y) scales under which a probe is also compared with the shortlist
(:mod:`agent.match.scale`): a register scanned or resampled at another
resolution or aspect ratio. Chosen by leave-one-sensor-out cross-validation
among a few grids (benchmarks/RESULTS.md, "match_cv")."""
SCALE_SHORTLIST = 1024
"""Templates of the exact search re-scored under the scale hypotheses: 8 x 1,024
extra comparisons a press (about +15 % on a 56,000-template search). At 64 the
plain score of about 2 in 3 field-pairing mates of DB3 fell below the cut at
station scale; at 1,024 about 1 in 3 (benchmarks/RESULTS.md, "match_decisions")."""
