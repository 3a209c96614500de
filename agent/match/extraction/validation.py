"""Input checks: what is not a fingerprint image raises :class:`ImageError`.

An image that *is* an image but shows no usable finger (blank, black,
saturated) is not an error: the pipeline returns an empty template with
quality 0, because "no finger on the glass" is an expected outcome.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.match.extraction import parameters as prm


class ImageError(ValueError):
    """The input is not a grayscale fingerprint image the extractor accepts.

    ``reason`` is a short machine-readable tag (``dtype``, ``ndim``, ``size``,
    ``dpi``, ``type``) and ``value`` the offending value, for the caller's log.
    """

    def __init__(self, message: str, *, reason: str, value: object = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.value = value


def validate(image: Any, dpi: Any) -> NDArray[np.uint8]:
    """Check ``image`` (uint8, H x W) and ``dpi``; return a C-contiguous view.

    Raises :class:`ImageError` naming the first thing that is wrong.
    """
    if not isinstance(image, np.ndarray):
        raise ImageError(
            f"image must be a numpy array, not {type(image).__name__}",
            reason="type",
            value=type(image).__name__,
        )
    if image.dtype != np.uint8:
        raise ImageError(
            f"image dtype must be uint8, not {image.dtype}", reason="dtype", value=str(image.dtype)
        )
    if image.ndim != 2:
        raise ImageError(
            f"image must be 2-D (H x W grayscale), got shape {image.shape}",
            reason="ndim",
            value=image.shape,
        )
    if isinstance(dpi, bool) or not isinstance(dpi, int | np.integer):
        raise ImageError(f"dpi must be an integer, not {dpi!r}", reason="dpi", value=dpi)
    if not prm.MIN_DPI <= int(dpi) <= prm.MAX_DPI:
        raise ImageError(
            f"dpi {dpi} outside {prm.MIN_DPI}..{prm.MAX_DPI}", reason="dpi", value=int(dpi)
        )
    h, w = image.shape
    if min(h, w) < prm.MIN_SIDE_PX:
        raise ImageError(
            f"image {w}x{h} is smaller than {prm.MIN_SIDE_PX} px on a side",
            reason="size",
            value=(w, h),
        )
    if max(h, w) > prm.MAX_SIDE_PX or h * w > prm.MAX_PIXELS:
        raise ImageError(
            f"image {w}x{h} exceeds the limit of {prm.MAX_SIDE_PX} px per side "
            f"and {prm.MAX_PIXELS} pixels",
            reason="size",
            value=(w, h),
        )
    standard = min(h, w) * 500 / int(dpi)
    if standard < prm.MIN_STANDARD_SIDE_PX:
        raise ImageError(
            f"image {w}x{h} at {dpi} dpi is under {prm.MIN_STANDARD_SIDE_PX} px at 500 dpi",
            reason="size",
            value=(w, h),
        )
    return np.ascontiguousarray(image)
