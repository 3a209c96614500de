"""Minutia cylinders: the rotation- and translation-invariant local descriptors of MCC.

One cylinder per minutia - an 8 x 8 grid of cells around the minutia,
rotated with it, times ``nd`` direction layers. A cell bit says "some
neighbouring minutia near this cell has this relative direction". Bits are
packed one 64-bit word per direction layer, plus one validity word (cells
inside the radius and inside the dilated convex hull of the template, i.e.
where the capture actually saw skin).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np
from numpy.typing import NDArray

from agent.match import exact
from agent.match import parameters as prm
from agent.match.exact import DIR_TABLE_SIZE
from agent.match.template import Template
from agent.runtime.jit import njit, njit_parallel


@njit
def wrap_angle(d: float) -> float:
    """``d`` in [-3 pi, 3 pi) wrapped to [-pi, pi), without a branch (the comparison
    kernel calls it in loops where a branch mispredicts half the time)."""
    lo = 2.0 * math.pi if d < -math.pi else 0.0
    hi = 2.0 * math.pi if d >= math.pi else 0.0
    return d + lo - hi


@njit
def _dphi(a: float, b: float) -> float:
    """Signed angle difference a - b wrapped to [-pi, pi)."""
    return wrap_angle(a - b)


@njit
def _convex_hull(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.int64]:
    """Indices of the convex hull, counter-clockwise (Andrew's monotone chain)."""
    n = len(x)
    order = np.argsort(x * 65536.0 + y)
    hull = np.empty(2 * n + 1, np.int64)
    k = 0
    for ii in range(n):
        i = order[ii]
        while k >= 2:
            a = hull[k - 2]
            b = hull[k - 1]
            if (x[b] - x[a]) * (y[i] - y[a]) - (y[b] - y[a]) * (x[i] - x[a]) <= 0.0:
                k -= 1
            else:
                break
        hull[k] = i
        k += 1
    lower = k + 1
    for ii in range(n - 2, -1, -1):
        i = order[ii]
        while k >= lower:
            a = hull[k - 2]
            b = hull[k - 1]
            if (x[b] - x[a]) * (y[i] - y[a]) - (y[b] - y[a]) * (x[i] - x[a]) <= 0.0:
                k -= 1
            else:
                break
        hull[k] = i
        k += 1
    if k > 1:
        k -= 1  # the last point repeats the first
    return hull[:k].copy()


@njit
def _hull_distance(
    px: float, py: float, hx: NDArray[np.float64], hy: NDArray[np.float64]
) -> float:
    """Distance from (px, py) to the CCW polygon's boundary, negated when inside."""
    m = len(hx)
    inside = m >= 3
    best = 1e30
    for i in range(m):
        j = (i + 1) % m
        ex = hx[j] - hx[i]
        ey = hy[j] - hy[i]
        wx = px - hx[i]
        wy = py - hy[i]
        if ex * wy - ey * wx < 0.0:
            inside = False
        len2 = ex * ex + ey * ey
        t = 0.0 if len2 == 0.0 else min(1.0, max(0.0, (wx * ex + wy * ey) / len2))
        dx = wx - t * ex
        dy = wy - t * ey
        best = min(best, dx * dx + dy * dy)
    d = math.sqrt(best)
    return -d if inside else d


@njit
def _near_hull(
    px: float, py: float, hx: NDArray[np.float64], hy: NDArray[np.float64], omega: float
) -> bool:
    """True when (px, py) is inside the CCW polygon or within ``omega`` of it."""
    m = len(hx)
    if m >= 3:
        inside = True
        for i in range(m):
            j = (i + 1) % m
            if (hx[j] - hx[i]) * (py - hy[i]) - (hy[j] - hy[i]) * (px - hx[i]) < 0.0:
                inside = False
                break
        if inside:
            return True
    return _hull_distance(px, py, hx, hy) <= omega


def direction_table(params: prm.MccParameters) -> NDArray[np.float64]:
    """Share of a Gaussian (sigma_d) of direction differences falling in one layer's bin.

    Indexed by the difference between a layer's centre and a neighbour's
    relative direction; tabulated because ``erf`` per neighbour and layer was
    the dominant cost of building cylinders. Correctly rounded, so the same on
    every machine (:mod:`agent.match.exact`).
    """
    return exact.direction_table(params)


@njit
def _cylinders_one(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    t: NDArray[np.float64],
    p: NDArray[np.float64],
    dir_table: NDArray[np.float64],
    bits: NDArray[np.uint64],
    mask: NDArray[np.uint64],
    valid: NDArray[np.bool_],
) -> None:
    """Cylinders of one template (``y`` pointing up, angles CCW) into preallocated rows."""
    n = len(x)
    radius = p[prm.P_RADIUS]
    ns = int(p[prm.P_NS])
    nd = int(p[prm.P_ND])
    sig_s = p[prm.P_SIGMA_S]
    mu_psi = p[prm.P_MU_PSI]
    omega = p[prm.P_OMEGA]
    delta_s = 2.0 * radius / ns
    delta_d = 2.0 * math.pi / nd
    reach2 = (3.0 * sig_s) ** 2
    neigh2 = (radius + 3.0 * sig_s) ** 2
    gs_norm = 1.0 / (sig_s * math.sqrt(2.0 * math.pi))
    inv2s2 = 1.0 / (2.0 * sig_s * sig_s)
    dir_step = DIR_TABLE_SIZE / (2.0 * math.pi)
    for i in range(n):
        valid[i] = False
        mask[i] = np.uint64(0)
        for k in range(nd):
            bits[i, k] = np.uint64(0)
    if n == 0:
        return
    hull = _convex_hull(x, y)
    hx = x[hull]
    hy = y[hull]
    cd = np.zeros((n, nd))
    cell_acc = np.zeros((ns * ns, nd))
    reach = 3.0 * sig_s
    half = ns / 2.0
    near = np.empty(n, np.int64)
    n_disk = disk_cells(p)
    for i in range(n):
        ci = math.cos(t[i])
        si = math.sin(t[i])
        # Only minutiae within radius + 3 sigma can touch any cell of this cylinder.
        neighbours = 0
        for j in range(n):
            if j == i:
                continue
            dx = x[j] - x[i]
            dy = y[j] - y[i]
            if dx * dx + dy * dy > neigh2:
                continue
            near[neighbours] = j
            neighbours += 1
            dth = _dphi(t[i], t[j])
            for k in range(nd):
                diff = _dphi(-math.pi + (k + 0.5) * delta_d, dth)
                q = min(DIR_TABLE_SIZE - 1, int((diff + math.pi) * dir_step))
                cd[j, k] = dir_table[q]
        # Each neighbour only reaches the cells within 3 sigma of it: visit those
        # instead of testing every (cell, neighbour) pair.
        cell_acc[:, :] = 0.0
        for jj in range(neighbours):
            j = near[jj]
            dx = x[j] - x[i]
            dy = y[j] - y[i]
            uj = dx * ci + dy * si
            vj = -dx * si + dy * ci
            a0 = max(0, math.floor((uj - reach) / delta_s + half))
            a1 = min(ns - 1, math.floor((uj + reach) / delta_s + half))
            b0 = max(0, math.floor((vj - reach) / delta_s + half))
            b1 = min(ns - 1, math.floor((vj + reach) / delta_s + half))
            for a in range(a0, a1 + 1):
                du = (a - (ns - 1) / 2.0) * delta_s - uj
                for b in range(b0, b1 + 1):
                    dv = (b - (ns - 1) / 2.0) * delta_s - vj
                    d2 = du * du + dv * dv
                    if d2 <= reach2:
                        g = gs_norm * math.exp(-d2 * inv2s2)
                        cell = a * ns + b
                        for k in range(nd):
                            cell_acc[cell, k] += g * cd[j, k]
        m_word = np.uint64(0)
        valid_cells = 0
        # A disk that lies inside the dilated hull needs no per-cell test.
        whole_disk = -_hull_distance(x[i], y[i], hx, hy) + omega >= radius
        for a in range(ns):
            for b in range(ns):
                u = (a - (ns - 1) / 2.0) * delta_s
                v = (b - (ns - 1) / 2.0) * delta_s
                if u * u + v * v > radius * radius:
                    continue
                px = x[i] + u * ci - v * si
                py = y[i] + u * si + v * ci
                if not whole_disk and not _near_hull(px, py, hx, hy, omega):
                    continue
                cell = a * ns + b
                m_word |= np.uint64(1) << np.uint64(cell)
                valid_cells += 1
                for k in range(nd):
                    if cell_acc[cell, k] > mu_psi:
                        bits[i, k] |= np.uint64(1) << np.uint64(cell)
        mask[i] = m_word
        valid[i] = (
            valid_cells >= p[prm.P_MIN_VC] * n_disk and neighbours >= p[prm.P_MIN_M]
        )


@njit_parallel
def _cylinders_batch(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    t: NDArray[np.float64],
    offsets: NDArray[np.int64],
    p: NDArray[np.float64],
    dir_table: NDArray[np.float64],
    bits: NDArray[np.uint64],
    mask: NDArray[np.uint64],
    valid: NDArray[np.bool_],
) -> None:
    """``_cylinders_one`` over many templates laid out back to back (``offsets``)."""
    for g in numba.prange(len(offsets) - 1):
        s = offsets[g]
        e = offsets[g + 1]
        _cylinders_one(
            x[s:e], y[s:e], t[s:e], p, dir_table, bits[s:e], mask[s:e], valid[s:e]
        )


@njit
def disk_cells(p: NDArray[np.float64]) -> int:
    """Cells of the grid whose centre lies inside the cylinder radius."""
    ns = int(p[prm.P_NS])
    radius = p[prm.P_RADIUS]
    delta_s = 2.0 * radius / ns
    count = 0
    for a in range(ns):
        for b in range(ns):
            u = (a - (ns - 1) / 2.0) * delta_s
            v = (b - (ns - 1) / 2.0) * delta_s
            if u * u + v * v <= radius * radius:
                count += 1
    return count


ROW = 7
"""uint64 words per packed cylinder: validity mask, then the 6 direction layers.

No bit-count word: it saved six popcounts per pair in a scalar kernel, but
the vectorised one gains nothing from it, and a smaller gallery reads and
decrypts faster at start-up."""
W_MASK = 0
G_X, G_Y, G_T, G_COS, G_SIN = range(5)
"""Columns of the per-cylinder geometry array (x, y up, angle, cos, sin)."""


def _flatten(templates: Sequence[Template]) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                                     NDArray[np.float64], NDArray[np.int64]]:
    counts = np.fromiter((len(t) for t in templates), np.int64, len(templates))
    offsets = np.zeros(len(templates) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    if len(templates) == 0 or offsets[-1] == 0:
        empty = np.zeros(0, np.float64)
        return empty, empty, empty, offsets
    x = np.concatenate([t.x for t in templates]).astype(np.float64)
    # Kernels work with y up so that ISO's counter-clockwise angles are ordinary math angles.
    y = -np.concatenate([t.y for t in templates]).astype(np.float64)
    a = np.concatenate([t.angle for t in templates]).astype(np.float64)
    return x, y, a, offsets


def build(
    params: prm.MccParameters, dir_table: NDArray[np.float64], templates: Sequence[Template]
) -> tuple[NDArray[np.uint64], NDArray[np.float32], NDArray[np.int64]]:
    """Packed cylinders of ``templates``: words (n, ROW), geometry (n, 5), offsets.

    Only valid cylinders are kept; within each template they are sorted by
    direction (the comparison kernel relies on it). ``offsets[t]:offsets[t+1]``
    are template ``t``'s rows.
    """
    x, y, a, offsets = _flatten(templates)
    n = len(x)
    nd = params.nd
    bits = np.zeros((n, nd), np.uint64)
    mask = np.zeros(n, np.uint64)
    valid = np.zeros(n, np.bool_)
    if n:
        _cylinders_batch(x, y, a, offsets, prm.kernel_vector(params), dir_table, bits, mask,
                         valid)
    owner = np.repeat(np.arange(len(templates)), np.diff(offsets))
    keep = np.nonzero(valid)[0]
    keep = keep[np.lexsort((a[keep], owner[keep]))]
    per = np.zeros(len(templates), np.int64)
    if n:
        per = np.add.reduceat(valid.astype(np.int64), offsets[:-1])
        # reduceat reports the next element for an empty segment.
        per = np.where(np.diff(offsets) == 0, 0, per)
    new_off = np.zeros(len(templates) + 1, np.int64)
    np.cumsum(per, out=new_off[1:])
    words = np.empty((len(keep), ROW), np.uint64)
    words[:, W_MASK] = mask[keep]
    words[:, 1:1 + nd] = bits[keep]
    geometry = np.empty((len(keep), 5), np.float32)
    geometry[:, G_X] = x[keep]
    geometry[:, G_Y] = y[keep]
    geometry[:, G_T] = a[keep]
    geometry[:, G_COS] = np.cos(a[keep])
    geometry[:, G_SIN] = np.sin(a[keep])
    return words, geometry, new_off

