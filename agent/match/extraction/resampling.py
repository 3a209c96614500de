"""Resampling to the standard resolution (500 dpi), so later stages see one scale."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from agent.match.template import STANDARD_DPI
from agent.runtime.jit import njit


@njit
def _bilinear(src: NDArray[np.float32], out: NDArray[np.float32], scale: float) -> None:
    # Pixel centres are aligned (x_src = (x_dst + 0.5) / scale - 0.5) so the
    # image does not drift by half a pixel when the scale is far from 1.
    h, w = src.shape
    oh, ow = out.shape
    for y in range(oh):
        sy = (y + 0.5) / scale - 0.5
        sy = min(max(sy, 0.0), h - 1.0)
        y0 = int(sy)
        y1 = min(y0 + 1, h - 1)
        fy = sy - y0
        for x in range(ow):
            sx = (x + 0.5) / scale - 0.5
            sx = min(max(sx, 0.0), w - 1.0)
            x0 = int(sx)
            x1 = min(x0 + 1, w - 1)
            fx = sx - x0
            top = src[y0, x0] * (1.0 - fx) + src[y0, x1] * fx
            bottom = src[y1, x0] * (1.0 - fx) + src[y1, x1] * fx
            out[y, x] = top * (1.0 - fy) + bottom * fy


def to_standard_resolution(
    image: NDArray[np.uint8], dpi: int
) -> tuple[NDArray[np.float32], float]:
    """Return the image as float32 at 500 dpi and the scale applied (500 / dpi)."""
    src = image.astype(np.float32)
    if dpi == STANDARD_DPI:
        return src, 1.0
    scale = STANDARD_DPI / dpi
    h, w = image.shape
    out = np.empty((max(1, math.floor(h * scale + 0.5)), max(1, math.floor(w * scale + 0.5))),
                   np.float32)
    if scale < 1.0:
        # Downsampling: a box pre-filter of the step size avoids aliasing the
        # ridge pattern (569 dpi -> 500 dpi is mild, 1000 -> 500 is not).
        k = max(1, round(1.0 / scale))
        if k > 1:
            pad = np.pad(src, ((0, k - 1), (0, k - 1)), mode="edge")
            c = np.cumsum(np.cumsum(pad, axis=0, dtype=np.float64), axis=1)
            c = np.pad(c, ((1, 0), (1, 0)))
            src = ((c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)).astype(
                np.float32
            )[:h, :w]
    _bilinear(src, out, scale)
    return out, scale
