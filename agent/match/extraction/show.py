"""Drawing what the extractor saw: mask, orientation field and minutiae over the image."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from agent.match.extraction.orientation import OrientationField
from agent.match.extraction.pipeline import extract
from agent.match.extraction.segmentation import SegmentationMask
from agent.match.extraction.sink import RecordingSink
from agent.match.template import MinutiaType, Template


def render(sink: RecordingSink, template: Template, zoom: int = 2) -> Image.Image:
    """RGB picture of a recorded extraction (background tinted, field, minutiae)."""
    img = np.asarray(sink.stages["resampled"], np.float32)
    grey = np.clip(img, 0, 255).astype(np.uint8)
    rgb = np.stack([grey, grey, grey], axis=-1).astype(np.float32)
    mask = sink.stages.get("segmentation")
    if isinstance(mask, SegmentationMask):
        bg = ~mask.pixels
        rgb[bg] = rgb[bg] * 0.55 + np.array([90.0, 40.0, 40.0])
    pic = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).resize(
        (img.shape[1] * zoom, img.shape[0] * zoom), Image.Resampling.NEAREST
    )
    draw = ImageDraw.Draw(pic)
    field = sink.stages.get("orientation")
    if isinstance(field, OrientationField) and isinstance(mask, SegmentationMask):
        b = field.block
        for by in range(0, field.angle.shape[0], 2):
            for bx in range(0, field.angle.shape[1], 2):
                if not mask.blocks[by, bx]:
                    continue
                cx, cy = (bx + 0.5) * b * zoom, (by + 0.5) * b * zoom
                t = float(field.angle[by, bx])
                r = 0.45 * b * zoom * (0.4 + 0.6 * float(field.coherence[by, bx]))
                dx, dy = r * math.cos(t), r * math.sin(t)
                draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=(60, 160, 255), width=1)
    for x, y, a, k in zip(template.x, template.y, template.angle, template.kind, strict=True):
        colour = (255, 40, 40) if k == MinutiaType.RIDGE_ENDING else (40, 220, 40)
        px, py = float(x) * zoom, float(y) * zoom
        r = 3 * zoom
        draw.ellipse([px - r, py - r, px + r, py + r], outline=colour, width=2)
        # ISO angle is counter-clockwise with y up: on the image, dy = -sin.
        ln = 7 * zoom
        draw.line(
            [(px, py), (px + ln * math.cos(float(a)), py - ln * math.sin(float(a)))],
            fill=colour,
            width=2,
        )
    draw.text((4, 4), f"quality {template.quality}  minutiae {len(template)}", fill=(255, 255, 0))
    return pic


def show_extraction(image_path: str | Path, out_path: str | Path, *, dpi: int = 500) -> Template:
    """Extract ``image_path`` and draw orientation field, mask and minutiae to ``out_path`` (PNG).

    Endings are red, bifurcations green, each with a stroke along its ISO
    direction; the background (outside the mask) is tinted red. Returns the
    template that was drawn.
    """
    with Image.open(image_path) as im:
        grey = np.asarray(im.convert("L"), np.uint8)
    sink = RecordingSink()
    template = extract(grey, dpi=dpi, sink=sink)
    if "resampled" not in sink.stages:
        sink.stages["resampled"] = grey.astype(np.float32)
    render(sink, template).save(out_path, format="PNG")
    return template
