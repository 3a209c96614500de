"""Contextual enhancement: a Gabor filter tuned to each pixel's ridge direction and period.

The bank of kernels (quantised directions x quantised periods) is built once
per process; the filtering kernel runs only over foreground pixels.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import NDArray

from agent.match.extraction import parameters as prm
from agent.match.extraction.frequency import RidgePeriod
from agent.match.extraction.orientation import OrientationField
from agent.match.extraction.portable import atan2, cos, cos_array, exp_array, sin
from agent.match.extraction.resampling import _bilinear
from agent.runtime.jit import njit


@functools.lru_cache(maxsize=1)
def gabor_bank() -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Kernels [angle, period, 2R+1, 2R+1] and the periods they are tuned to.

    Each kernel is zero-mean (flat regions give 0) and has unit L1 norm.
    """
    r = prm.GABOR_RADIUS
    periods = np.arange(prm.MIN_PERIOD, prm.MAX_PERIOD + 1e-6, prm.GABOR_PERIOD_STEP)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    bank = np.empty((prm.GABOR_ANGLES, len(periods), 2 * r + 1, 2 * r + 1), np.float32)
    for ai in range(prm.GABOR_ANGLES):
        t = np.pi * ai / prm.GABOR_ANGLES
        ct = cos(t)
        st = sin(t)
        along = xx * ct + yy * st
        across = -xx * st + yy * ct
        for pi, period in enumerate(periods):
            sa = prm.GABOR_SIGMA_ACROSS * period
            env = exp_array(-0.5 * ((across / sa) ** 2 + (along / prm.GABOR_SIGMA_ALONG) ** 2))
            g = env * cos_array(2 * np.pi * across / period)
            g -= env * (g.sum() / env.sum())
            bank[ai, pi] = g / np.abs(g).sum()
    return bank, periods.astype(np.float32)


@njit
def _gabor_filter(
    padded: NDArray[np.float32],
    cos2: NDArray[np.float32],
    sin2: NDArray[np.float32],
    period: NDArray[np.float32],
    mask: NDArray[np.bool_],
    bank: NDArray[np.float32],
    p0: float,
    pstep: float,
    out: NDArray[np.float32],
) -> None:
    h, w = mask.shape
    na = bank.shape[0]
    npd = bank.shape[1]
    k = bank.shape[2]
    for y in range(h):
        for x in range(w):
            if not mask[y, x]:
                out[y, x] = 0.0
                continue
            t = 0.5 * np.float32(atan2(sin2[y, x], cos2[y, x]))
            if t < 0.0:
                t += np.pi
            ai = int(t / np.pi * na + 0.5) % na
            pi = int((period[y, x] - p0) / pstep + 0.5)
            pi = min(max(pi, 0), npd - 1)
            # Gabor kernels are point-symmetric (g(-v) = g(v)): pair opposite
            # taps and halve the multiplications.
            r = k // 2
            kern = bank[ai, pi]
            acc = kern[r, r] * padded[y + r, x + r]
            for dy in range(r):
                for dx in range(k):
                    opposite = padded[y + k - 1 - dy, x + k - 1 - dx]
                    acc += kern[dy, dx] * (padded[y + dy, x + dx] + opposite)
            for dx in range(r):
                acc += kern[r, dx] * (padded[y + r, x + dx] + padded[y + r, x + k - 1 - dx])
            out[y, x] = acc


def upsample_blocks(values: NDArray[np.float32], h: int, w: int, block: int) -> NDArray[np.float32]:
    """Bilinear interpolation of a block map to pixels (block centres aligned)."""
    bh, bw = values.shape
    out = np.empty((bh * block, bw * block), np.float32)
    _bilinear(np.ascontiguousarray(values, dtype=np.float32), out, float(block))
    return np.ascontiguousarray(out[:h, :w])


def enhance(
    norm: NDArray[np.float32],
    field: OrientationField,
    period: RidgePeriod,
    mask: NDArray[np.bool_],
) -> NDArray[np.float32]:
    """Gabor-filtered image: ridges positive, valleys negative, 0 outside ``mask``."""
    h, w = norm.shape
    c2, s2 = field.vectors()
    # Weighting by coherence before interpolation lets reliable blocks steer
    # the pixels between them.
    cos2 = upsample_blocks(c2 * field.coherence, h, w, field.block)
    sin2 = upsample_blocks(s2 * field.coherence, h, w, field.block)
    per = upsample_blocks(period.period, h, w, field.block)
    bank, periods = gabor_bank()
    r = prm.GABOR_RADIUS
    padded = np.pad(norm, r, mode="constant").astype(np.float32)
    out = np.empty((h, w), np.float32)
    _gabor_filter(
        padded, cos2, sin2, per, mask, bank, float(periods[0]), prm.GABOR_PERIOD_STEP, out
    )
    return out
