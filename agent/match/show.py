"""Draw minutiae (and the paired minutiae of a comparison) as a PNG, for eyeballing.

Ridge endings are drawn as circles, bifurcations as squares, "other" as
diamonds, each with a tick along the minutia direction. With two templates the
images are placed side by side and the consolidated pairs behind the score are
joined by lines.

Template coordinates are laid over an image by scaling the template's
declared image size to the picture's size (the FVC2002 ISO templates declare
300 x 400 whatever the native size; see hardware_sim/data/README.md).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from agent.match.cylinders import G_X, G_Y
from agent.match.matcher import Matcher, Prepared
from agent.match.template import MinutiaType, Template

_TICK = 12.0
_R = 4.0
_COLOURS = ((220, 40, 40), (40, 110, 230))
_PAIR = (20, 170, 60)


def _canvas(t: Template, image: Image.Image | None) -> Image.Image:
    if image is None:
        return Image.new("RGB", (t.width, t.height), (255, 255, 255))
    return image.convert("RGB")


def _scale(t: Template, img: Image.Image) -> tuple[float, float]:
    return img.width / t.width, img.height / t.height


def draw_minutiae(
    draw: ImageDraw.ImageDraw, t: Template, sx: float, sy: float, dx: float, colour: tuple[
        int, int, int]
) -> None:
    """Draw every minutia of ``t`` scaled by (sx, sy) and shifted right by ``dx``."""
    for x, y, a, k in zip(t.x, t.y, t.angle, t.kind, strict=True):
        px, py = dx + float(x) * sx, float(y) * sy
        box = (px - _R, py - _R, px + _R, py + _R)
        if k == MinutiaType.RIDGE_ENDING:
            draw.ellipse(box, outline=colour, width=2)
        elif k == MinutiaType.BIFURCATION:
            draw.rectangle(box, outline=colour, width=2)
        else:
            draw.polygon([(px, py - _R), (px + _R, py), (px, py + _R), (px - _R, py)],
                         outline=colour)
        # ISO angles are counter-clockwise as seen, and y grows downwards.
        draw.line((px, py, px + _TICK * math.cos(float(a)), py - _TICK * math.sin(float(a))),
                  fill=colour, width=2)


def render(
    a: Template,
    b: Template | None = None,
    *,
    image_a: Image.Image | None = None,
    image_b: Image.Image | None = None,
    matcher: Matcher | None = None,
) -> tuple[Image.Image, float | None]:
    """Picture of ``a`` (and ``b`` with the comparison's pairs); also returns the score."""
    left = _canvas(a, image_a)
    if b is None:
        sx, sy = _scale(a, left)
        draw_minutiae(ImageDraw.Draw(left), a, sx, sy, 0.0, _COLOURS[0])
        return left, None
    right = _canvas(b, image_b)
    out = Image.new("RGB", (left.width + right.width, max(left.height, right.height)),
                    (255, 255, 255))
    out.paste(left, (0, 0))
    out.paste(right, (left.width, 0))
    d = ImageDraw.Draw(out)
    sax, say = _scale(a, left)
    sbx, sby = _scale(b, right)
    draw_minutiae(d, a, sax, say, 0.0, _COLOURS[0])
    draw_minutiae(d, b, sbx, sby, float(left.width), _COLOURS[1])
    m = matcher or Matcher()
    pa: Prepared = m.prepare(a)
    pb: Prepared = m.prepare(b)
    score, pairs = m.pairs(pa, pb)
    for i, j in pairs:
        # Prepared geometry keeps y pointing up; flip back to image rows.
        xa, ya = float(pa.geometry[i, G_X]) * sax, -float(pa.geometry[i, G_Y]) * say
        xb = left.width + float(pb.geometry[j, G_X]) * sbx
        yb = -float(pb.geometry[j, G_Y]) * sby
        d.line((xa, ya, xb, yb), fill=_PAIR, width=2)
    d.text((4, 4), f"score {score:.4f}, {len(pairs)} pairs", fill=_PAIR)
    return out, score


def load_image(path: str) -> Image.Image:
    """Open an image file as 8-bit grey (an FVC2002 PNG, any PIL format)."""
    with Image.open(path) as im:
        return Image.fromarray(np.asarray(im.convert("L")))
