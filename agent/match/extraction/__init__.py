"""Minutiae extraction with a capture-quality gate.

Public API::

    from agent.match.extraction import extract, ImageError, QUALITY_THRESHOLD
    t = extract(image, dpi=500)      # uint8 H x W, dark ridges -> Template at 500 dpi
    if t.quality < QUALITY_THRESHOLD: ask for another press
    show_extraction("finger.png", "out.png")   # what the extractor saw

Stages (one module each): validation, resampling, normalisation,
orientation, segmentation, frequency, enhancement, binarisation, thinning,
minutiae (detection), pruning (false-minutiae removal), quality.
"""

from agent.match.extraction.parameters import QUALITY_THRESHOLD
from agent.match.extraction.pipeline import extract
from agent.match.extraction.show import show_extraction
from agent.match.extraction.sink import ExtractionSink, NullSink, RecordingSink
from agent.match.extraction.validation import ImageError

__all__ = [
    "QUALITY_THRESHOLD",
    "ExtractionSink",
    "ImageError",
    "NullSink",
    "RecordingSink",
    "extract",
    "show_extraction",
]
