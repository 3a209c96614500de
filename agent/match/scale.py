"""Scale hypotheses: tolerate a register whose templates are stretched against the kiosk's.

A national register's templates come from another scanner and another
extractor. Their geometry can differ from the kiosk's by a resolution error
or, as with the FVC2002 vendor templates, an anisotropic stretch (images
resized to 300 x 400 px ignoring their aspect ratio: x 0.77 / y 1.07 on DB1,
y 1.33 on DB3). MCC tolerates a few per cent; beyond that a mate scores like
an impostor. As some MCC variants do, the probe is also compared under a
few (x, y) scale hypotheses and a template's score is the best of them.

Only the ``shortlist`` best templates of the exact search (all of them in a
small gallery) are re-scored, so a press costs one full search plus
``shortlist x (hypotheses - 1)`` comparisons. The calibration is fitted to
the best-of-hypotheses score of every impostor pair, which bounds the
impostors outside the shortlist too (they keep their lower plain score).
A mate outside the shortlist loses only the re-scoring (it keeps its plain
score): the benchmark reports how often a mate's plain score is below the
shortlist's cut at station scale.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from agent.match import parameters as prm
from agent.match.matcher import Gallery, Prepared
from agent.match.template import Template


def rescaled(t: Template, sx: float, sy: float) -> Template:
    """``t`` stretched by ``sx`` along x and ``sy`` along y (directions follow the axes)."""
    if sx == 1.0 and sy == 1.0:
        return t
    # ISO angles are counter-clockwise with y up: the direction (cos a, -sin a) on the
    # image stretches to (sx cos a, -sy sin a).
    angle = np.arctan2(np.sin(t.angle) * sy, np.cos(t.angle) * sx)
    return Template.from_arrays(
        t.x * sx, t.y * sy, angle,
        width=max(1, round(t.width * sx)), height=max(1, round(t.height * sy)),
        kind=t.kind, minutia_quality=t.minutia_quality, quality=t.quality,
        finger_position=t.finger_position, source_format=t.source_format,
    )


def prepare_hypotheses(gallery: Gallery, probe: Template,
                       hypotheses: tuple[tuple[float, float], ...] = prm.SCALE_HYPOTHESES
                       ) -> list[Prepared]:
    """The probe's cylinders under every hypothesis other than (1, 1)."""
    m = gallery.matcher
    return [m.prepare(rescaled(probe, sx, sy)) for sx, sy in hypotheses if (sx, sy) != (1.0, 1.0)]


def scores(gallery: Gallery, probe: Template, *,
           hypotheses: tuple[tuple[float, float], ...] = prm.SCALE_HYPOTHESES,
           shortlist: int = prm.SCALE_SHORTLIST,
           threads: int | None = None) -> NDArray[np.float32]:
    """Every template's score, the ``shortlist`` best re-scored under the scale hypotheses.

    The vector the decision rules (:func:`agent.match.decision.decide`) are
    calibrated for.
    """
    plain = gallery.scores(probe, threads=threads)
    others = prepare_hypotheses(gallery, probe, hypotheses)
    if not others or len(plain) == 0 or shortlist <= 0:
        return plain
    k = min(shortlist, len(plain))
    top = np.argpartition(-plain, k - 1)[:k] if k < len(plain) else np.arange(len(plain))
    sub = gallery.subset(top)
    best = plain.copy()
    for q in others:
        if len(q):
            best[top] = np.maximum(best[top], sub.scores(q, threads=threads))
    return best
