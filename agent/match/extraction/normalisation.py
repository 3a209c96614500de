"""Local normalisation: zero mean, unit spread, ridges positive.

Pressure, dryness and the sensor's illumination change contrast across one
image; dividing by the local spread makes later thresholds (Gabor sign,
frequency peaks) independent of it. Ridges are dark on every supported
sensor, so the sign is flipped to make ridges positive.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from agent.match.extraction import parameters as prm
from agent.match.extraction.filters import box_moments

_MIN_LOCAL_STD = 2.0
"""Spread floor; keeps flat background from being blown up to full contrast."""


def normalise(image: NDArray[np.float32]) -> NDArray[np.float32]:
    """Return the locally normalised image: (mean - x) / std, clipped."""
    mean, sq = box_moments(image, prm.NORM_RADIUS)
    std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    out = (mean - image) / np.maximum(std, _MIN_LOCAL_STD)
    np.clip(out, -prm.NORM_CLIP, prm.NORM_CLIP, out=out)
    return out.astype(np.float32)
