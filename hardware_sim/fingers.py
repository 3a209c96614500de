"""Virtual fingers: FVC 2002 images presented as a sensor would see them.

A real press never gives the same image twice: the finger lands shifted and
rotated, pressed harder or softer, sometimes only partly on the glass.
:func:`render_press` turns one FVC impression into what a 256 x 288, 500 dpi
sensor window captures under such a :class:`PressVariation`;
:func:`random_variation` draws one from a seeded generator so a simulated day is
reproducible.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

# Resolution of each FVC 2002 "B" set (see the data README).
FVC_DPI: dict[str, int] = {"DB1_B": 500, "DB2_B": 569, "DB3_B": 500, "DB4_B": 500}
SENSOR_SHAPE = (288, 256)  # rows, columns of the Grow image buffer
SENSOR_DPI = 500
_NAME_RE = re.compile(r"^(\d+)_(\d+)\.png$")


class FingerDataError(ValueError):
    """The FVC folder or file asked for does not exist or is not what it should be."""


def fvc_path(root: str | Path, db: str, finger: int, impression: int) -> Path:
    """Path of ``<root>/<db>/<finger>_<impression>.png`` (checked to exist)."""
    if db not in FVC_DPI:
        raise FingerDataError(f"unknown FVC set {db!r}; one of {', '.join(FVC_DPI)}")
    p = Path(root) / db / f"{finger}_{impression}.png"
    if not p.is_file():
        raise FingerDataError(f"no FVC image {p}")
    return p


def load_fvc(root: str | Path, db: str, finger: int, impression: int
             ) -> tuple[NDArray[np.uint8], int]:
    """One FVC impression as (8-bit grey image, dpi)."""
    with Image.open(fvc_path(root, db, finger, impression)) as im:
        arr = np.asarray(im.convert("L"), dtype=np.uint8)
    return arr, FVC_DPI[db]


def list_impressions(root: str | Path, db: str) -> list[tuple[int, int]]:
    """All (finger, impression) pairs present in a set, sorted."""
    d = Path(root) / db
    if db not in FVC_DPI or not d.is_dir():
        raise FingerDataError(f"no FVC set {d}")
    found = []
    for p in d.iterdir():
        m = _NAME_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), int(m.group(2))))
    return sorted(found)


def impressions_of(root: str | Path, db: str, finger: int) -> list[int]:
    """The impressions of one finger present as images in a set, sorted."""
    return [i for f, i in list_impressions(root, db) if f == finger]


@dataclass(frozen=True)
class PressVariation:
    """How one press differs from the reference impression.

    ``dx``/``dy`` shift in sensor pixels, ``angle_deg`` rotation, ``pressure``
    scales ridge darkness (1 = as recorded, < 1 a light or dry touch),
    ``contact`` the fraction of the finger on the glass (1 = full) with the
    lifted part on the side ``lift_dir_deg`` points to, ``noise`` the std-dev
    of sensor noise in grey levels.
    """

    dx: float = 0.0
    dy: float = 0.0
    angle_deg: float = 0.0
    pressure: float = 1.0
    contact: float = 1.0
    lift_dir_deg: float = 0.0
    noise: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.contact <= 1.0:
            raise ValueError(f"contact {self.contact} not in (0, 1]")
        if not 0.0 < self.pressure <= 2.0:
            raise ValueError(f"pressure {self.pressure} not in (0, 2]")
        if self.noise < 0:
            raise ValueError("noise must be >= 0")


def random_variation(rng: np.random.Generator) -> PressVariation:
    """A plausible press: +-20 px shift, +-15 degrees, pressure 0.6-1.15, partial contact
    in about one press out of four."""
    partial = rng.random() < 0.25
    return PressVariation(
        dx=float(rng.uniform(-20, 20)),
        dy=float(rng.uniform(-20, 20)),
        angle_deg=float(rng.uniform(-15, 15)),
        pressure=float(rng.uniform(0.6, 1.15)),
        contact=float(rng.uniform(0.6, 0.9)) if partial else 1.0,
        lift_dir_deg=float(rng.uniform(0, 360)),
        noise=float(rng.uniform(1.0, 4.0)),
    )


def _centroid(img: NDArray[np.uint8]) -> tuple[float, float]:
    """Centre of the dark (finger) mass, so crops keep the finger in the window."""
    w = (255.0 - img.astype(np.float64)) ** 2
    total = float(w.sum())
    if total == 0.0:
        return img.shape[1] / 2.0, img.shape[0] / 2.0
    ys, xs = np.indices(img.shape)
    return float((w * xs).sum() / total), float((w * ys).sum() / total)


def render_press(image: NDArray[np.uint8], dpi: int, variation: PressVariation,
                 rng: np.random.Generator | None = None,
                 shape: tuple[int, int] = SENSOR_SHAPE, out_dpi: int = SENSOR_DPI
                 ) -> NDArray[np.uint8]:
    """What the sensor window (``shape`` rows x cols at ``out_dpi``) sees of ``image``."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"image must be 2-D uint8, got {image.dtype} {image.shape}")
    if dpi <= 0:
        raise ValueError("dpi must be positive")
    rows, cols = shape
    cx, cy = _centroid(image)
    scale = dpi / out_dpi  # source pixels per sensor pixel
    th = math.radians(variation.angle_deg)
    cos, sin = math.cos(th), math.sin(th)
    # Output (u, v) -> source: rotate about the window centre, scale, then
    # place the finger centroid (moved by the shift) at the window centre.
    ou, ov = cols / 2.0 + variation.dx, rows / 2.0 + variation.dy
    a, b = scale * cos, scale * sin
    d, e = -scale * sin, scale * cos
    c = cx - a * ou - b * ov
    f = cy - d * ou - e * ov
    src = Image.fromarray(image)
    warped = src.transform((cols, rows), Image.Transform.AFFINE, (a, b, c, d, e, f),
                           resample=Image.Resampling.BILINEAR, fillcolor=255)
    out = np.asarray(warped, dtype=np.float64)
    ink = (255.0 - out) * variation.pressure
    if variation.contact < 1.0:
        # A soft edge across the window: the lifted side fades to background.
        phi = math.radians(variation.lift_dir_deg)
        ys, xs = np.indices(shape, dtype=np.float64)
        proj = (xs - cols / 2.0) * math.cos(phi) + (ys - rows / 2.0) * math.sin(phi)
        half = 0.5 * math.hypot(cols * math.cos(phi), rows * math.sin(phi))
        edge = half * (2.0 * variation.contact - 1.0)
        ink *= np.clip((edge - proj) / 12.0 + 0.5, 0.0, 1.0)
    out = 255.0 - ink
    if variation.noise > 0:
        gen = rng if rng is not None else np.random.default_rng(0)
        out += gen.normal(0.0, variation.noise, size=out.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
