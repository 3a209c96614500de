"""Capture quality (0-100, in the spirit of NFIQ 2) and per-minutia quality.

Capture quality multiplies four factors in [0, 1]:

* coverage - foreground area against QUALITY_AREA_FULL_MM2 (or 80 % of a
  smaller sensor's area);
* orientation certainty - mean coherence over the foreground;
* ridge clarity - share of foreground blocks whose ridge period could be measured;
* contrast - median grey-level spread of the foreground blocks.

Coverage is the hard factor (no finger, no score); the others are softened
with exponents so a dry but complete print is not scored like an empty one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from agent.match.extraction import parameters as prm
from agent.match.extraction.frequency import RidgePeriod
from agent.match.extraction.orientation import OrientationField
from agent.match.extraction.segmentation import SegmentationMask
from agent.match.template import STANDARD_DPI


@dataclass(frozen=True)
class CaptureQuality:
    """The capture score and its factors (each in [0, 1])."""

    score: int
    coverage: float
    certainty: float
    clarity: float
    contrast: float

    @property
    def acceptable(self) -> bool:
        """True when the capture is good enough to match (score >= threshold)."""
        return self.score >= prm.QUALITY_THRESHOLD


NO_FINGER = CaptureQuality(score=0, coverage=0.0, certainty=0.0, clarity=0.0, contrast=0.0)
"""Quality of an image without usable foreground."""


def capture_quality(
    mask: SegmentationMask, field: OrientationField, period: RidgePeriod
) -> CaptureQuality:
    """Score the capture as a whole."""
    blocks = mask.blocks
    if not blocks.any():
        return NO_FINGER
    mm_per_px = 25.4 / STANDARD_DPI
    area = mask.area_px * mm_per_px * mm_per_px
    # A small sensor (AES3500: 6.5 mm square) can never show 90 mm^2; asking
    # the voter to press again would not help, so coverage is judged against
    # what the sensor can show.
    h, w = mask.pixels.shape
    full = min(prm.QUALITY_AREA_FULL_MM2, 0.8 * h * w * mm_per_px * mm_per_px)
    coverage = min(area / full, 1.0)
    certainty = min(float(field.coherence[blocks].mean()) / prm.QUALITY_COHERENCE_FULL, 1.0)
    clarity = float(period.measured[blocks].mean())
    contrast = min(float(np.median(mask.spread[blocks])) / prm.QUALITY_CONTRAST_FULL, 1.0)
    score = 100.0 * coverage**0.7 * certainty**1.0 * clarity**0.5 * contrast**0.3
    return CaptureQuality(
        score=round(min(max(score, 0.0), 100.0)),
        coverage=coverage,
        certainty=certainty,
        clarity=clarity,
        contrast=contrast,
    )


def minutia_quality(
    xs: NDArray[np.int64],
    ys: NDArray[np.int64],
    border: NDArray[np.float64],
    field: OrientationField,
    mask: SegmentationMask,
) -> NDArray[np.uint8]:
    """Per-minutia quality 1-100 from local coherence, contrast and distance to the edge.

    0 is avoided on purpose: ISO 19794-2:2005 readers may take 0 as "not reported".
    """
    if len(xs) == 0:
        return np.zeros(0, np.uint8)
    by = np.clip(ys // field.block, 0, field.coherence.shape[0] - 1)
    bx = np.clip(xs // field.block, 0, field.coherence.shape[1] - 1)
    coh = np.clip(field.coherence[by, bx] / prm.QUALITY_COHERENCE_FULL, 0.0, 1.0)
    con = np.clip(mask.spread[by, bx] / prm.QUALITY_CONTRAST_FULL, 0.0, 1.0)
    edge = np.clip(border / (2.0 * prm.BORDER_DISTANCE), 0.0, 1.0)
    q = 100.0 * coh * np.sqrt(con) * (0.5 + 0.5 * edge)
    out: NDArray[np.uint8] = np.clip(np.round(q), 1, 100).astype(np.uint8)
    return out
