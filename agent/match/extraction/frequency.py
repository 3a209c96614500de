"""Ridge frequency (as a period in pixels) per block, from oriented x-signatures.

For each foreground block the normalised image is projected along the ridge
direction over a window across the ridges; the distance between consecutive
maxima of that signature is the local ridge period. Blocks where it cannot be
measured (core, scar, blur) take a smooth average of their neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from agent.match.extraction import parameters as prm
from agent.match.extraction.orientation import OrientationField, gaussian_blocks
from agent.match.extraction.portable import cos, sin
from agent.runtime.jit import njit


@dataclass(frozen=True)
class RidgePeriod:
    """Ridge period (pixels at 500 dpi) per block; ``measured`` marks direct estimates."""

    period: NDArray[np.float32]
    measured: NDArray[np.bool_]
    median: float


@njit
def _x_signature_periods(
    norm: NDArray[np.float32],
    angle: NDArray[np.float32],
    blocks: NDArray[np.bool_],
    block: int,
    across: int,
    along: int,
    min_period: float,
    max_period: float,
    out: NDArray[np.float32],
) -> None:
    h, w = norm.shape
    bh, bw = blocks.shape
    sig = np.empty(across, np.float32)
    sm = np.empty(across, np.float32)
    for by in range(bh):
        for bx in range(bw):
            out[by, bx] = 0.0
            if not blocks[by, bx]:
                continue
            cy = by * block + block / 2.0 - 0.5
            cx = bx * block + block / 2.0 - 0.5
            t = angle[by, bx]
            dx = np.float32(cos(t))
            dy = np.float32(sin(t))
            # Normal to the ridges.
            nx = -dy
            ny = dx
            for k in range(across):
                u = k - across / 2.0 + 0.5
                acc = 0.0
                cnt = 0
                for m in range(along):
                    v = m - along / 2.0 + 0.5
                    px = int(cx + u * nx + v * dx + 0.5)
                    py = int(cy + u * ny + v * dy + 0.5)
                    if 0 <= px < w and 0 <= py < h:
                        acc += norm[py, px]
                        cnt += 1
                sig[k] = acc / cnt if cnt > 0 else 0.0
            for k in range(across):
                lo = max(k - 1, 0)
                hi = min(k + 1, across - 1)
                sm[k] = (sig[lo] + 2.0 * sig[k] + sig[hi]) * 0.25
            # Peaks must stand out from the signature's own spread, or the
            # "period" is the spacing of noise.
            mean = 0.0
            for k in range(across):
                mean += sm[k]
            mean /= across
            var = 0.0
            for k in range(across):
                var += (sm[k] - mean) ** 2
            std = np.sqrt(var / across)
            if std < 0.15:
                continue
            first = -1.0
            last = -1.0
            npk = 0
            for k in range(1, across - 1):
                if sm[k] > sm[k - 1] and sm[k] >= sm[k + 1] and sm[k] > mean:
                    # Parabolic refinement of the peak position.
                    den = sm[k - 1] - 2.0 * sm[k] + sm[k + 1]
                    off = 0.0
                    if den < 0.0:
                        off = 0.5 * (sm[k - 1] - sm[k + 1]) / den
                    pos = k + off
                    if npk == 0:
                        first = pos
                    last = pos
                    npk += 1
            if npk >= 2:
                period = (last - first) / (npk - 1)
                if min_period <= period <= max_period:
                    out[by, bx] = period


def ridge_period(
    norm: NDArray[np.float32], field: OrientationField, blocks: NDArray[np.bool_]
) -> RidgePeriod:
    """Measure, fill and smooth the ridge period over the foreground blocks."""
    raw = np.zeros(blocks.shape, np.float32)
    _x_signature_periods(
        norm,
        field.angle,
        blocks,
        prm.BLOCK,
        prm.FREQ_WINDOW_ACROSS,
        prm.FREQ_WINDOW_ALONG,
        prm.MIN_PERIOD,
        prm.MAX_PERIOD,
        raw,
    )
    measured = raw > 0
    median = float(np.median(raw[measured])) if measured.any() else prm.DEFAULT_PERIOD
    # Normalised convolution: the smooth average of measured neighbours fills
    # the gaps and damps single wrong measurements.
    wsum = gaussian_blocks(measured.astype(np.float32), 2.0)
    vsum = gaussian_blocks(raw, 2.0)
    period = np.where(wsum > 0.05, vsum / np.maximum(wsum, 1e-6), median)
    period = np.clip(period, max(prm.MIN_PERIOD, 0.7 * median), min(prm.MAX_PERIOD, 1.4 * median))
    return RidgePeriod(period=period.astype(np.float32), measured=measured, median=median)
