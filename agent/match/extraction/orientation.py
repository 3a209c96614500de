"""Orientation field with reliability (coherence), on the block grid.

Structure tensor of the Sobel gradient summed over a window per block, then
smoothed as doubled-angle vectors (so 0 and pi agree) with a Gaussian over
neighbouring blocks. Angles are ridge directions in image coordinates
(x right, y down), in [0, pi).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from agent.match import exact
from agent.match.extraction import parameters as prm
from agent.match.extraction import portable
from agent.match.extraction.filters import block_window_sum


@dataclass(frozen=True)
class BlockTensors:
    """Structure-tensor terms per block: a = Gxx - Gyy, b = 2 Gxy, e = Gxx + Gyy."""

    a: NDArray[np.float32]
    b: NDArray[np.float32]
    e: NDArray[np.float32]

    def coherence(self) -> NDArray[np.float32]:
        """Unsmoothed coherence |(a, b)| / e in [0, 1]."""
        out: NDArray[np.float32] = (
            np.sqrt(self.a**2 + self.b**2) / np.maximum(self.e, 1e-6)
        ).astype(np.float32)
        return out


@dataclass(frozen=True)
class OrientationField:
    """Ridge direction (radians, [0, pi), image coordinates) and coherence per block."""

    angle: NDArray[np.float32]
    coherence: NDArray[np.float32]
    block: int

    def vectors(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Doubled-angle unit vectors (cos 2t, sin 2t), for interpolation."""
        doubled = 2 * self.angle
        return (portable.cos_array(doubled).astype(np.float32),
                portable.sin_array(doubled).astype(np.float32))


def gradients(norm: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Sobel gradients (gx, gy) with replicated edges."""
    p = np.pad(norm, 1, mode="edge")
    dx = p[:, 2:] - p[:, :-2]
    dy = p[2:, :] - p[:-2, :]
    gx = dx[:-2, :] + 2 * dx[1:-1, :] + dx[2:, :]
    gy = dy[:, :-2] + 2 * dy[:, 1:-1] + dy[:, 2:]
    return gx.astype(np.float32), gy.astype(np.float32)


def block_tensors(norm: NDArray[np.float32]) -> BlockTensors:
    """Structure tensor summed over ORIENT_WINDOW around every block centre."""
    gx, gy = gradients(norm)
    gxx = block_window_sum(gx * gx, prm.BLOCK, prm.ORIENT_WINDOW)
    gyy = block_window_sum(gy * gy, prm.BLOCK, prm.ORIENT_WINDOW)
    gxy = block_window_sum(gx * gy, prm.BLOCK, prm.ORIENT_WINDOW)
    return BlockTensors(a=gxx - gyy, b=2 * gxy, e=gxx + gyy)


@functools.cache
def _gaussian_taps(sigma: float) -> NDArray[np.float64]:
    """Normalised Gaussian taps over +-2.5 sigma, correctly rounded (the same everywhere)."""
    r = max(1, int(np.ceil(2.5 * sigma)))
    k = np.array([exact.exp(float(v)) for v in -0.5 * (np.arange(-r, r + 1) / sigma) ** 2])
    k /= k.sum()
    k.setflags(write=False)
    return k


def gaussian_blocks(values: NDArray[np.floating], sigma: float) -> NDArray[np.float32]:
    """Separable Gaussian smoothing of a block map (edges replicated)."""
    k = _gaussian_taps(float(sigma))
    r = len(k) // 2
    p = np.pad(values.astype(np.float64), r, mode="edge")
    rows = sum(k[i] * p[:, i : i + values.shape[1]] for i in range(2 * r + 1))
    out = sum(k[i] * rows[i : i + values.shape[0], :] for i in range(2 * r + 1))
    return np.asarray(out, np.float32)


def orientation_field(tensors: BlockTensors, mask: NDArray[np.bool_]) -> OrientationField:
    """Smooth the tensors over the foreground blocks ``mask`` into a field.

    Background blocks do not contribute, so noise outside the finger does not
    bend the directions at its rim; background blocks still get the nearest
    foreground direction (through the normalised smoothing) for drawing.
    """
    w = mask.astype(np.float32)
    s = prm.ORIENT_SMOOTH_SIGMA
    # Normalise each block's vector by its energy before smoothing so one
    # high-contrast block does not dominate its neighbours.
    e = np.maximum(tensors.e, 1e-6)
    ua = gaussian_blocks(tensors.a / e * w, s)
    ub = gaussian_blocks(tensors.b / e * w, s)
    ww = gaussian_blocks(w, s)
    coherence = np.sqrt(ua**2 + ub**2) / np.maximum(ww, 1e-6)
    coherence = np.where(mask, np.clip(coherence, 0.0, 1.0), 0.0).astype(np.float32)
    # Gradient direction is 0.5*atan2(b, a); ridges run perpendicular to it.
    atan = portable.atan2_array(ub, ua).astype(np.float32)
    angle = np.mod(0.5 * atan + np.pi / 2, np.pi).astype(np.float32)
    return OrientationField(angle=angle, coherence=coherence, block=prm.BLOCK)
