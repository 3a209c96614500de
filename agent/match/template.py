"""The one internal representation of a finger minutiae template.

Every codec (ISO 19794-2 2005/2011, ANSI 378) reads into and writes from this
type, and the extractor produces it. Coordinates are normalised to the
standard resolution ``STANDARD_DPI`` (500 dpi, 197 px/cm) whatever the
source resolution was, so a 569 dpi FVC2002 DB2 template and a 500 dpi probe
are comparable without further scaling.

Conventions (ISO/IEC 19794-2): origin top-left, x to the right, y down;
``angle`` is the minutia direction in radians in [0, 2*pi), measured
counter-clockwise from the x axis as seen on the image (so with y pointing
down, a direction of pi/2 points *up* the image).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

STANDARD_DPI = 500
"""Resolution of the internal representation, in dots per inch."""

PX_PER_CM_STANDARD = 197
"""ISO's header value for 500 dpi (pixels per centimetre, rounded)."""


class MinutiaType(IntEnum):
    """Minutia type as coded in the two top bits of ISO's x field."""

    OTHER = 0
    RIDGE_ENDING = 1
    BIFURCATION = 2


class TemplateError(ValueError):
    """A template could not be decoded or is not valid.

    ``offset`` is the byte offset in the input where the problem was found
    (``-1`` when it concerns the template as a whole) and ``field`` names the
    field that is wrong.
    """

    def __init__(self, message: str, *, offset: int = -1, field: str = "") -> None:
        where = f" at offset {offset}" if offset >= 0 else ""
        what = f" ({field})" if field else ""
        super().__init__(f"{message}{what}{where}")
        self.offset = offset
        self.field = field


@dataclass(frozen=True, eq=False)
class Template:
    """Minutiae of one finger view at ``STANDARD_DPI``.

    Arrays all have length ``n`` (the minutia count). ``quality`` is the
    capture quality of the whole image (0-100, 0 = not reported / unusable),
    ``minutia_quality`` the per-minutia quality (0-100).
    """

    x: NDArray[np.float32]
    y: NDArray[np.float32]
    angle: NDArray[np.float32]
    kind: NDArray[np.uint8]
    minutia_quality: NDArray[np.uint8]
    width: int
    height: int
    quality: int = 0
    finger_position: int = 0
    source_format: str = field(default="internal")

    def __post_init__(self) -> None:
        n = len(self.x)
        for name in ("y", "angle", "kind", "minutia_quality"):
            if len(getattr(self, name)) != n:
                raise TemplateError(f"array {name} has length {len(getattr(self, name))}, not {n}")
        if self.width <= 0 or self.height <= 0:
            raise TemplateError(f"image size {self.width}x{self.height} is not positive")
        if not 0 <= self.quality <= 100:
            raise TemplateError(f"quality {self.quality} outside 0..100", field="quality")

    def __len__(self) -> int:
        return len(self.x)

    @classmethod
    def from_arrays(
        cls,
        x: NDArray[np.floating] | list[float],
        y: NDArray[np.floating] | list[float],
        angle: NDArray[np.floating] | list[float],
        *,
        width: int,
        height: int,
        kind: NDArray[np.integer] | list[int] | None = None,
        minutia_quality: NDArray[np.integer] | list[int] | None = None,
        quality: int = 0,
        finger_position: int = 0,
        source_format: str = "internal",
    ) -> Template:
        """Build a template from plain sequences (coordinates already at 500 dpi)."""
        xs = np.asarray(x, dtype=np.float32)
        n = len(xs)
        return cls(
            x=xs,
            y=np.asarray(y, dtype=np.float32),
            angle=np.mod(np.asarray(angle, dtype=np.float32), np.float32(2 * np.pi)).astype(
                np.float32
            ),
            kind=(
                np.full(n, MinutiaType.OTHER, np.uint8)
                if kind is None
                else np.asarray(kind, dtype=np.uint8)
            ),
            minutia_quality=(
                np.zeros(n, np.uint8)
                if minutia_quality is None
                else np.asarray(minutia_quality, dtype=np.uint8)
            ),
            width=width,
            height=height,
            quality=quality,
            finger_position=finger_position,
            source_format=source_format,
        )
