"""Scale hypotheses: tolerate a register whose templates are stretched against the kiosk's.

A national register's templates come from another scanner and another
extractor. Their geometry can differ from the kiosk's by a resolution error
or, as with the FVC2002 vendor templates, an anisotropic stretch (images
resized to 300 x 400 px ignoring their aspect ratio: x 0.77 / y 1.07 on DB1,
y 1.33 on DB3). MCC tolerates a few per cent; beyond that a mate scores like
an impostor. As some MCC variants do, the probe is also compared under a
few (x, y) scale hypotheses; a template's best score over them is mapped to
the plain score that is equally rare among impostors (:func:`equivalent`),
and the template's score is the higher of that and its plain score. A
register in true geometry thus keeps its plain-score thresholds (paying only
the x2 for two chances), a stretched one gets the hypotheses.

Only the ``shortlist`` best templates of the exact search (all of them in a
small gallery) are re-scored, so a press costs one full search plus
``shortlist x (hypotheses - 1)`` comparisons. The scaled calibration is
fitted to the best-of-hypotheses score of every impostor pair, which bounds
the impostors outside the shortlist too (they keep their plain score).
A mate outside the shortlist loses only the re-scoring (it keeps its plain
score): the benchmark reports how often a mate's plain score is below the
shortlist's cut at station scale.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from agent.match import parameters as prm
from agent.match.calibration import translate
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
    calibrated for: :meth:`Gallery.scores` followed by :func:`rescore`.
    """
    plain = gallery.scores(probe, threads=threads)
    return rescore(gallery, probe, plain, hypotheses=hypotheses, shortlist=shortlist,
                   threads=threads)


def rescore(gallery: Gallery, probe: Template, plain: NDArray[np.float32], *,
            hypotheses: tuple[tuple[float, float], ...] = prm.SCALE_HYPOTHESES,
            shortlist: int = prm.SCALE_SHORTLIST,
            threads: int | None = None) -> NDArray[np.float32]:
    """``plain`` (the exact search's scores) with its ``shortlist`` best raised to their best
    score under the hypotheses; a new array."""
    others = prepare_hypotheses(gallery, probe, hypotheses)
    if not others or len(plain) == 0 or shortlist <= 0:
        return plain
    k = min(shortlist, len(plain))
    top = np.argpartition(-plain, k - 1)[:k] if k < len(plain) else np.arange(len(plain))
    sub = gallery.subset(top)
    best = plain[top].copy()
    for q in others:
        if len(q):
            best = np.maximum(best, sub.scores(q, threads=threads))
    out = plain.copy()
    out[top] = np.maximum(plain[top], equivalent(best))
    return out


def equivalent(best: NDArray[np.floating]) -> NDArray[np.float32]:
    """Best-over-hypotheses scores as the plain scores equally rare among impostors.

    The best of nine comparisons has a heavier impostor tail than one; mapped
    through the two fitted calibrations (:data:`~agent.match.parameters.SCALED_CALIBRATION`
    to :data:`~agent.match.parameters.CALIBRATION`), a template's evidence is
    the stronger of its plain and its mapped score, and the plain calibration
    counts the two chances (its margin includes x2 for them).
    """
    return translate(best, prm.SCALED_CALIBRATION, prm.CALIBRATION).astype(np.float32)
