"""Start-up warm-up: every Numba kernel a voter's identification runs, before READY.

A kernel that is neither compiled nor loaded from the Numba cache when the
first finger arrives makes the first voter of the day wait for it (the
extraction kernels used to load, or compile on a cache built by the image's
matcher-only warm-up, inside the first identification: 7.7 s on a kiosk).
:func:`warm_up` runs the extractor and the matcher once on synthetic input of
the types a capture has, so every dispatcher holds the signature a real
identification calls.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from agent.match import matcher
from agent.match.extraction import extract

_SINGULARITIES = ((0.3, 0.35, 1), (0.65, 0.3, -1), (0.4, 0.7, -1), (0.7, 0.72, 1))
"""(x, y as fractions of the image, winding sign): ridge endings and bifurcations."""


def ridge_image(height: int = 288, width: int = 256, period: float = 9.0) -> NDArray[np.uint8]:
    """Parallel ridges with a few phase singularities: a synthetic finger with minutiae.

    Each singularity winds the ridge phase by one period, so one ridge ends
    (sign +1) or one splits (sign -1) there: every extraction stage, down to
    minutiae detection and pruning, has work to do.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    phase = 2 * np.pi * y / period
    for fx, fy, sign in _SINGULARITIES:
        phase += sign * np.arctan2(y - fy * height, x - fx * width)
    out: NDArray[np.uint8] = np.clip(128 - 100 * np.cos(phase), 0, 255).astype(np.uint8)
    return out


def warm_up() -> None:
    """Compile (or load from the Numba cache) every kernel of extraction and matching.

    The agent runs this at start-up, before it reports READY, and the kiosk
    image runs it to ship a warm cache, so the first voter of the day waits
    for nothing the later ones do not.
    """
    probe = extract(ridge_image(), dpi=500)
    extract(ridge_image(), dpi=385)  # resampled path of the small USB sensors
    if len(probe) == 0:
        raise RuntimeError("warm-up image gave no minutiae: the extraction kernels "
                           "past detection were not exercised")
    matcher.warm_up()
