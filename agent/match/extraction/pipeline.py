"""The extraction pipeline: a straight sequence of named stages.

image (uint8, any supported dpi)
  -> validation -> resampling to 500 dpi -> normalisation -> block tensors
  -> segmentation mask -> orientation field -> ridge period -> Gabor enhancement
  -> binarisation -> thinning -> minutiae detection -> false-minutiae removal
  -> capture and per-minutia quality -> Template (ISO conventions).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from agent.match.extraction import parameters as prm
from agent.match.extraction.binarisation import binarise
from agent.match.extraction.enhancement import enhance
from agent.match.extraction.frequency import ridge_period
from agent.match.extraction.minutiae import detect
from agent.match.extraction.normalisation import normalise
from agent.match.extraction.orientation import block_tensors, orientation_field
from agent.match.extraction.pruning import (
    border_distance,
    border_rule,
    break_rule,
    cluster_rule,
    topology_rules,
)
from agent.match.extraction.quality import capture_quality, minutia_quality
from agent.match.extraction.resampling import to_standard_resolution
from agent.match.extraction.segmentation import segment
from agent.match.extraction.sink import ExtractionSink, NullSink
from agent.match.extraction.thinning import thin
from agent.match.extraction.validation import validate
from agent.match.template import Template


def to_iso_angle(image_angle: NDArray[np.float64]) -> NDArray[np.float64]:
    """Image-coordinate direction (y down) -> ISO 19794-2 angle (counter-clockwise, y up).

    Mirroring the y axis negates the angle. The internal ending direction
    (towards the free end) is opposite to the register's convention, checked
    against the SecuGen templates of FVC2002 (docs/EXTRACTION.md), hence + pi.
    """
    return np.mod(-image_angle + prm.ISO_ANGLE_OFFSET, 2 * np.pi)


def _empty(width: int, height: int) -> Template:
    return Template.from_arrays([], [], [], width=width, height=height, quality=0)


def extract(
    image: NDArray[np.uint8], dpi: int = 500, sink: ExtractionSink | None = None
) -> Template:
    """Extract a minutiae template from a grayscale fingerprint image.

    ``image`` is uint8 H x W with dark ridges, ``dpi`` its resolution
    (250-1000); the result is at 500 dpi in ISO conventions. An image without
    a usable finger gives quality 0 and no minutiae; compare ``quality`` with
    ``parameters.QUALITY_THRESHOLD`` to decide whether to ask for another
    press. Raises :class:`ImageError` for input that is not such an image.
    """
    s: ExtractionSink = sink if sink is not None else NullSink()
    img8 = validate(image, dpi)
    img, _scale = to_standard_resolution(img8, int(dpi))
    h, w = img.shape
    s.record("resampled", img)
    norm = normalise(img)
    s.record("normalised", norm)
    tensors = block_tensors(norm)
    mask = segment(img, tensors)
    s.record("segmentation", mask)
    if not mask.blocks.any():
        return _empty(w, h)
    field = orientation_field(tensors, mask.blocks)
    s.record("orientation", field)
    period = ridge_period(norm, field, mask.blocks)
    s.record("frequency", period)
    quality = capture_quality(mask, field, period)
    s.record("quality", quality)
    if quality.score == 0:
        return _empty(w, h)
    enhanced = enhance(norm, field, period, mask.pixels)
    s.record("enhanced", enhanced)
    binary = binarise(enhanced, mask.pixels)
    s.record("binary", binary)
    skeleton = thin(binary)
    s.record("skeleton", skeleton)
    cands = detect(skeleton, mask.pixels)
    s.record("candidates", cands)
    cands = cands.select(topology_rules(cands))
    s.record("after_topology", cands)
    cands = cands.select(break_rule(cands))
    s.record("after_breaks", cands)
    cands = cands.select(border_rule(cands, mask.pixels))
    s.record("after_border", cands)
    cands = cands.select(cluster_rule(cands))
    s.record("after_clusters", cands)
    border = border_distance(cands, mask.pixels, int(2 * prm.BORDER_DISTANCE))
    mq = minutia_quality(cands.x, cands.y, border, field, mask)
    order = np.argsort(-mq.astype(np.int64), kind="stable")[: prm.MAX_MINUTIAE]
    order.sort()
    score = quality.score
    if len(order) < prm.MIN_MINUTIAE_FOR_QUALITY:
        score = min(score, prm.QUALITY_THRESHOLD - 1)
    template = Template.from_arrays(
        cands.x[order].astype(np.float32),
        cands.y[order].astype(np.float32),
        to_iso_angle(cands.angle[order]),
        width=w,
        height=h,
        kind=cands.kind[order],
        minutia_quality=mq[order],
        quality=int(score),
        source_format="extracted",
    )
    s.record("template", template)
    return template
