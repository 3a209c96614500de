"""Minutiae detection on the skeleton, with direction from tracing the ridge.

A skeleton pixel's branch count is its crossing number, the number of runs
of set pixels around its 8-ring: 1 is a ridge ending, 3 a bifurcation (the
staircase pass of thinning makes this exact on our skeletons). From each candidate the skeleton is
followed for a few pixels; what the trace meets (nothing, another ending, a
junction) feeds false-minutia removal, and where it goes gives the direction.

Directions here are in image coordinates (radians, x right, y down): an
ending points from the ridge towards its free end, a bifurcation from the
fork into its single stem. By ridge/valley duality both then name the same
physical direction, so a minutia read as the wrong type still lines up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from agent.match.extraction import parameters as prm
from agent.match.extraction.portable import atan2_grid
from agent.match.template import MinutiaType
from agent.runtime.jit import njit

STOP_LENGTH = 0
"""Trace went the full length without meeting anything."""
STOP_ENDING = 1
"""Trace ran into the end of the ridge."""
STOP_BRANCH = 2
"""Trace ran into a junction."""

# Ring order N, NE, E, SE, S, SW, W, NW (dy, dx).
_RING_DY = np.array([-1, -1, 0, 1, 1, 1, 0, -1], np.int64)
_RING_DX = np.array([0, 1, 1, 1, 0, -1, -1, -1], np.int64)


@dataclass(frozen=True)
class Candidates:
    """Raw minutiae with what tracing found; image coordinates at 500 dpi.

    For endings, ``stop_*`` describe the trace along the ridge; for
    bifurcations, the shortest branch that stopped early (steps = large when
    none did).
    """

    x: NDArray[np.int64]
    y: NDArray[np.int64]
    kind: NDArray[np.uint8]
    angle: NDArray[np.float64]
    stop_reason: NDArray[np.int64]
    stop_steps: NDArray[np.int64]
    stop_x: NDArray[np.int64]
    stop_y: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.x)

    def select(self, keep: NDArray[np.bool_]) -> Candidates:
        """The candidates where ``keep`` is True."""
        return Candidates(
            x=self.x[keep],
            y=self.y[keep],
            kind=self.kind[keep],
            angle=self.angle[keep],
            stop_reason=self.stop_reason[keep],
            stop_steps=self.stop_steps[keep],
            stop_x=self.stop_x[keep],
            stop_y=self.stop_y[keep],
        )


@njit
def _ring(skel: NDArray[np.bool_], y: int, x: int, ring: NDArray[np.bool_]) -> None:
    for k in range(8):
        ring[k] = skel[y + _RING_DY[k], x + _RING_DX[k]]


@njit
def _branches(skel: NDArray[np.bool_], y: int, x: int, ring: NDArray[np.bool_]) -> int:
    _ring(skel, y, x, ring)
    n = 0
    for k in range(8):
        if ring[k] and not ring[(k + 7) % 8]:
            n += 1
    return n


@njit
def _adjacent(ay: int, ax: int, by: int, bx: int) -> bool:
    return abs(ay - by) <= 1 and abs(ax - bx) <= 1


@njit
def _trace(
    skel: NDArray[np.bool_],
    sy: int,
    sx: int,
    fy: int,
    fx: int,
    maxsteps: int,
    path_y: NDArray[np.int64],
    path_x: NDArray[np.int64],
    ring: NDArray[np.bool_],
) -> tuple[int, int]:
    # Follows the skeleton from (sy, sx) through (fy, fx); returns (steps,
    # reason) with the visited pixels in path_y/path_x[0:steps].
    h, w = skel.shape
    py, px = sy, sx
    ppy, ppx = sy, sx
    cy, cx = fy, fx
    path_y[0] = cy
    path_x[0] = cx
    steps = 1
    while steps < maxsteps:
        if cy <= 0 or cx <= 0 or cy >= h - 1 or cx >= w - 1:
            return steps, STOP_ENDING
        nb = _branches(skel, cy, cx, ring)
        if nb >= 3 and steps >= 2:
            return steps, STOP_BRANCH
        if nb <= 1:
            return steps, STOP_ENDING
        best_y = -1
        best_x = -1
        fallback_y = -1
        fallback_x = -1
        for order in range(2):
            for k in range(order, 8, 2):
                ny = cy + _RING_DY[k]
                nx = cx + _RING_DX[k]
                if not skel[ny, nx]:
                    continue
                if (ny == py and nx == px) or (ny == ppy and nx == ppx):
                    continue
                if (ny == sy and nx == sx) or (steps <= 2 and _adjacent(ny, nx, sy, sx)):
                    continue
                if _adjacent(ny, nx, py, px):
                    if fallback_y < 0:
                        fallback_y = ny
                        fallback_x = nx
                    continue
                if best_y < 0:
                    best_y = ny
                    best_x = nx
        if best_y < 0:
            best_y = fallback_y
            best_x = fallback_x
        if best_y < 0:
            return steps, STOP_ENDING
        ppy, ppx = py, px
        py, px = cy, cx
        cy, cx = best_y, best_x
        path_y[steps] = cy
        path_x[steps] = cx
        steps += 1
    return steps, STOP_LENGTH


@njit
def _angle_diff(a: float, b: float) -> float:
    d = (a - b) % (2 * np.pi)
    return min(d, 2 * np.pi - d)


@njit
def _detect(
    skel: NDArray[np.bool_],
    mask: NDArray[np.bool_],
    trace_steps: int,
    max_steps: int,
    out: NDArray[np.int64],
    angles: NDArray[np.float64],
    directions: NDArray[np.float64],
) -> int:
    # out rows: y, x, kind, stop_reason, stop_steps, stop_y, stop_x.
    # directions[dy + r, dx + r] is atan2(dy, dx) for |dy|, |dx| <= r = max_steps
    # (a traced pixel is at most that far from where the trace began).
    h, w = skel.shape
    r = (directions.shape[0] - 1) // 2
    ring = np.zeros(8, np.bool_)
    path_y = np.zeros(max_steps + 1, np.int64)
    path_x = np.zeros(max_steps + 1, np.int64)
    first_y = np.zeros(3, np.int64)
    first_x = np.zeros(3, np.int64)
    n = 0
    cap = out.shape[0]
    for y in range(2, h - 2):
        for x in range(2, w - 2):
            if not skel[y, x] or not mask[y, x]:
                continue
            nb = _branches(skel, y, x, ring)
            if nb == 1:
                # The single run's first set pixel, 4-neighbours preferred.
                _ring(skel, y, x, ring)
                fy = -1
                fx = -1
                for order in range(2):
                    for k in range(order, 8, 2):
                        if ring[k] and fy < 0:
                            fy = y + _RING_DY[k]
                            fx = x + _RING_DX[k]
                steps, reason = _trace(skel, y, x, fy, fx, max_steps, path_y, path_x, ring)
                j = min(trace_steps, steps) - 1
                # Direction: from the traced point back to the ending.
                ang = directions[y - path_y[j] + r, x - path_x[j] + r]
                if n >= cap:
                    return n
                out[n, 0] = y
                out[n, 1] = x
                out[n, 2] = 1
                out[n, 3] = reason
                out[n, 4] = steps
                out[n, 5] = path_y[steps - 1]
                out[n, 6] = path_x[steps - 1]
                angles[n] = ang
                n += 1
            elif nb == 3:
                # Skip the second pixel of a two-pixel junction.
                dup = False
                for k in range(8):
                    ny = y + _RING_DY[k]
                    nx = x + _RING_DX[k]
                    earlier = ny < y or (ny == y and nx < x)
                    if earlier and skel[ny, nx] and _branches(skel, ny, nx, ring) >= 3:
                        dup = True
                if dup:
                    continue
                _ring(skel, y, x, ring)
                # First pixel of each run (a 4-neighbour when the run has one).
                nbr = 0
                for k in range(8):
                    if ring[k] and not ring[(k + 7) % 8]:
                        best = -1
                        m = k
                        for _ in range(8):
                            if not ring[m]:
                                break
                            if skel[y + _RING_DY[m], x + _RING_DX[m]] and (
                                best < 0 or (m % 2 == 0 and best % 2 == 1)
                            ):
                                best = m
                            m = (m + 1) % 8
                        if nbr < 3 and best >= 0:
                            first_y[nbr] = y + _RING_DY[best]
                            first_x[nbr] = x + _RING_DX[best]
                            nbr += 1
                if nbr < 3:
                    continue
                b_ang0 = 0.0
                b_ang1 = 0.0
                b_ang2 = 0.0
                stop_reason = STOP_LENGTH
                stop_steps = 1_000_000
                stop_y = y
                stop_x = x
                for b in range(3):
                    steps, reason = _trace(
                        skel, y, x, first_y[b], first_x[b], max_steps, path_y, path_x, ring
                    )
                    j = min(trace_steps, steps) - 1
                    a = directions[path_y[j] - y + r, path_x[j] - x + r]
                    if b == 0:
                        b_ang0 = a
                    elif b == 1:
                        b_ang1 = a
                    else:
                        b_ang2 = a
                    if reason != STOP_LENGTH and steps < stop_steps:
                        stop_steps = steps
                        stop_reason = reason
                        stop_y = path_y[steps - 1]
                        stop_x = path_x[steps - 1]
                # The stem is the branch farthest in angle from the other two.
                d01 = _angle_diff(b_ang0, b_ang1)
                d02 = _angle_diff(b_ang0, b_ang2)
                d12 = _angle_diff(b_ang1, b_ang2)
                if d12 <= d01 and d12 <= d02:
                    ang = b_ang0
                elif d02 <= d01 and d02 <= d12:
                    ang = b_ang1
                else:
                    ang = b_ang2
                if n >= cap:
                    return n
                out[n, 0] = y
                out[n, 1] = x
                out[n, 2] = 2
                out[n, 3] = stop_reason
                out[n, 4] = stop_steps
                out[n, 5] = stop_y
                out[n, 6] = stop_x
                angles[n] = ang
                n += 1
    return n


def detect(skeleton: NDArray[np.bool_], mask: NDArray[np.bool_]) -> Candidates:
    """Find endings and bifurcations of ``skeleton`` inside ``mask``."""
    cap = 4096
    out = np.zeros((cap, 7), np.int64)
    angles = np.zeros(cap, np.float64)
    max_steps = max(prm.TRACE_STEPS, prm.SPUR_LENGTH, prm.SHORT_RIDGE_LENGTH)
    n = _detect(skeleton, mask, prm.TRACE_STEPS, max_steps, out, angles, atan2_grid(max_steps))
    kind = np.where(out[:n, 2] == 1, MinutiaType.RIDGE_ENDING, MinutiaType.BIFURCATION)
    return Candidates(
        x=out[:n, 1].copy(),
        y=out[:n, 0].copy(),
        kind=kind.astype(np.uint8),
        angle=np.mod(angles[:n], 2 * np.pi),
        stop_reason=out[:n, 3].copy(),
        stop_steps=out[:n, 4].copy(),
        stop_x=out[:n, 6].copy(),
        stop_y=out[:n, 5].copy(),
    )

