"""Binarisation of the enhanced image, with ridge fragments and pores cleaned up."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from agent.match.extraction import parameters as prm
from agent.match.extraction.filters import remove_small


def binarise(enhanced: NDArray[np.float32], mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Ridge pixels (True) inside ``mask``.

    The Gabor output is zero-mean, so its sign separates ridges from valleys.
    Tiny ridge islands (dust, sweat dots) are removed and tiny valley holes
    (pores, which would thin into loops and fake bifurcation pairs) filled.
    """
    ridges = (enhanced > 0) & mask
    ridges = remove_small(ridges, prm.MIN_RIDGE_AREA, eight=True)
    valleys = ~ridges & mask
    small_holes = valleys & ~remove_small(valleys, prm.MIN_VALLEY_AREA, eight=False)
    return np.ascontiguousarray(ridges | small_holes)
