"""False-minutiae removal: spurs, short ridges, bridges and pores, breaks, border, clusters.

Each rule is a named function returning a keep-mask, so the transparency sink
can show what every rule removed.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from agent.match.extraction import parameters as prm
from agent.match.extraction import portable
from agent.match.extraction.minutiae import STOP_BRANCH, STOP_ENDING, Candidates
from agent.match.template import MinutiaType
from agent.runtime.jit import njit


def _nearest(c: Candidates, x: int, y: int, kind: int, radius: float) -> int:
    sel = c.kind == kind
    if not sel.any():
        return -1
    d2 = (c.x - x) ** 2 + (c.y - y) ** 2
    d2 = np.where(sel, d2, np.iinfo(np.int64).max)
    i = int(np.argmin(d2))
    return i if d2[i] <= radius * radius else -1


def topology_rules(c: Candidates) -> NDArray[np.bool_]:
    """Remove spurs, short ridges and bridges/pore loops found by tracing.

    * an ending whose ridge reaches a junction within SPUR_LENGTH is a spur
      (both the ending and the junction go);
    * an ending whose ridge ends again within SHORT_RIDGE_LENGTH is a dot or
      fragment (both endings go);
    * a junction whose branch reaches another junction within
      BRIDGE_DISTANCE is a bridge between ridges or a pore loop (both go).
    """
    keep = np.ones(len(c), np.bool_)
    for i in range(len(c)):
        reason = int(c.stop_reason[i])
        steps = int(c.stop_steps[i])
        sx, sy = int(c.stop_x[i]), int(c.stop_y[i])
        if c.kind[i] == MinutiaType.RIDGE_ENDING:
            if reason == STOP_BRANCH and steps <= prm.SPUR_LENGTH:
                keep[i] = False
                j = _nearest(c, sx, sy, MinutiaType.BIFURCATION, 3.0)
                if j >= 0:
                    keep[j] = False
            elif reason == STOP_ENDING and steps <= prm.SHORT_RIDGE_LENGTH:
                keep[i] = False
                j = _nearest(c, sx, sy, MinutiaType.RIDGE_ENDING, 2.0)
                if j >= 0:
                    keep[j] = False
        elif reason == STOP_BRANCH and steps <= prm.BRIDGE_DISTANCE:
            keep[i] = False
            j = _nearest(c, sx, sy, MinutiaType.BIFURCATION, 3.0)
            if j >= 0:
                keep[j] = False
        elif reason == STOP_ENDING and steps <= prm.SPUR_LENGTH:
            keep[i] = False
    return keep


def break_rule(c: Candidates) -> NDArray[np.bool_]:
    """Remove pairs of endings that face each other across a small gap (a broken ridge)."""
    keep = np.ones(len(c), np.bool_)
    idx = np.flatnonzero(c.kind == MinutiaType.RIDGE_ENDING)
    if len(idx) < 2:
        return keep
    x = c.x[idx].astype(np.float64)
    y = c.y[idx].astype(np.float64)
    a = c.angle[idx]
    dx = x[None, :] - x[:, None]
    dy = y[None, :] - y[:, None]
    # Whole pixels: the sum of squares is exact and sqrt correctly rounded.
    d = np.sqrt(dx * dx + dy * dy)
    cos_tol = portable.cos(prm.BREAK_ANGLE)
    ca = portable.cos_array(a)[:, None]
    sa = portable.sin_array(a)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        # Anti-parallel directions, and ending i pointing at ending j.
        facing = (ca * dx + sa * dy) / d >= cos_tol * 0.7
    anti = portable.cos_array(a[:, None] - a[None, :]) <= -cos_tol
    pair = (d > 0) & (d <= prm.BREAK_DISTANCE) & anti & facing & facing.T
    keep[idx[pair.any(axis=1)]] = False
    return keep


@njit
def _border_distance(
    mask: NDArray[np.bool_], xs: NDArray[np.int64], ys: NDArray[np.int64], limit: int,
    out: NDArray[np.float64],
) -> None:
    h, w = mask.shape
    for i in range(len(xs)):
        best = float(limit)
        for dy in range(-limit, limit + 1):
            for dx in range(-limit, limit + 1):
                d = np.sqrt(dx * dx + dy * dy)
                if d >= best:
                    continue
                y = ys[i] + dy
                x = xs[i] + dx
                if y < 0 or x < 0 or y >= h or x >= w or not mask[y, x]:
                    best = d
        out[i] = best


def border_distance(c: Candidates, mask: NDArray[np.bool_], limit: int) -> NDArray[np.float64]:
    """Distance (pixels, capped at ``limit``) from each candidate to the background."""
    out = np.empty(len(c), np.float64)
    _border_distance(mask, c.x, c.y, limit, out)
    return out


def border_rule(c: Candidates, mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Remove minutiae next to the foreground edge, where ridges are cut off."""
    return border_distance(c, mask, int(prm.BORDER_DISTANCE) + 1) >= prm.BORDER_DISTANCE


def cluster_rule(c: Candidates) -> NDArray[np.bool_]:
    """Remove minutiae in crowded neighbourhoods (scars, creases, noise)."""
    if len(c) == 0:
        return np.ones(0, np.bool_)
    d2 = (c.x[:, None] - c.x[None, :]) ** 2 + (c.y[:, None] - c.y[None, :]) ** 2
    crowd = (d2 <= prm.CLUSTER_RADIUS**2).sum(axis=1) - 1
    return np.asarray(crowd <= prm.CLUSTER_MAX, np.bool_)
