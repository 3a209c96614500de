"""Minutia Cylinder-Code matcher (bit cylinders, LSS-R consolidation) and 1:N galleries.

Pipeline (named stages, see docs/MATCHING.md):

1. ``prepare``: one cylinder per minutia - an 8 x 8 grid of cells around the
   minutia, rotated with it, times ``nd`` direction layers. A cell bit says
   "some neighbouring minutia near this cell has this relative direction".
   Bits are packed one 64-bit word per direction layer, plus one validity word
   (cells inside the radius and inside the dilated convex hull of the
   template, i.e. where the capture actually saw skin).
2. ``local similarities``: for every cylinder pair whose directions differ by
   less than ``delta_theta``, ``1 - sqrt(|a^b|) / (sqrt|a| + sqrt|b|)`` over the
   cells valid in both (popcounts of the masked words).
3. ``LSS-R``: the best one-to-one pairs are relaxed by their geometric
   compatibility with each other (distance, relative direction and radial
   angle); pairs that keep their support are the evidence, and the score is
   the mean relaxed similarity of the ``n_p`` most efficient pairs, in [0, 1].

Everything numeric runs in Numba kernels (``agent.jit``); a gallery packs all
cylinders of all templates in contiguous arrays once.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic
from numpy.typing import NDArray

from agent.jit import njit, njit_parallel, set_threads
from agent.match import parameters as prm
from agent.match.template import Template


def _popcount_codegen(typingctx: object, x: object) -> tuple[object, object]:
    """LLVM ``ctpop`` on a uint64 (one instruction on x86-64 and AArch64)."""
    del typingctx, x
    sig = types.uint64(types.uint64)

    def codegen(context: object, builder: Any, signature: object, args: Any) -> Any:
        del context, signature
        return builder.ctpop(args[0])

    return sig, codegen


# Numba calls the intrinsic with one argument; mypy sees its real signature.
_popcount = cast(Callable[[np.uint64], np.uint64], intrinsic(_popcount_codegen))


@njit
def _dphi(a: float, b: float) -> float:
    """Signed angle difference a - b wrapped to [-pi, pi)."""
    d = a - b
    if d < -math.pi:
        d += 2.0 * math.pi
    elif d >= math.pi:
        d -= 2.0 * math.pi
    return d


@njit
def _abs_atan2(y: float, x: float) -> float:
    """|atan2(y, x)| in [0, pi] to about 0.004 rad (feeds a 1024-step table)."""
    ay = abs(y)
    ax = abs(x)
    if ax == 0.0 and ay == 0.0:
        return 0.0
    if ay <= ax:
        z = ay / ax
        r = 0.7853981633974483 * z - z * (z - 1.0) * (0.2447 + 0.0663 * z)
    else:
        z = ax / ay
        r = 1.5707963267948966 - (0.7853981633974483 * z - z * (z - 1.0) * (0.2447 + 0.0663 * z))
    return math.pi - r if x < 0.0 else r


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


DIR_TABLE_SIZE = 4096
"""Entries of the directional-contribution table over [-pi, pi)."""


def direction_table(params: prm.MccParameters) -> NDArray[np.float64]:
    """Share of a Gaussian (sigma_d) of direction differences falling in one layer's bin.

    Indexed by the difference between a layer's centre and a neighbour's
    relative direction; tabulated because ``erf`` per neighbour and layer was
    the dominant cost of building cylinders.
    """
    delta_d = 2.0 * math.pi / params.nd
    k = 1.0 / (params.sigma_d * math.sqrt(2.0))
    diff = -math.pi + (np.arange(DIR_TABLE_SIZE) + 0.5) * (2.0 * math.pi / DIR_TABLE_SIZE)
    erf = np.vectorize(math.erf)
    return np.asarray(0.5 * (erf((diff + delta_d / 2) * k) - erf((diff - delta_d / 2) * k)),
                      np.float64)


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
    disk_cells = _disk_cells(p)
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
            valid_cells >= p[prm.P_MIN_VC] * disk_cells and neighbours >= p[prm.P_MIN_M]
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
def _disk_cells(p: NDArray[np.float64]) -> int:
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


@njit
def _sigmoid(v: float, mu: float, tau: float) -> float:
    return 1.0 / (1.0 + math.exp(-tau * (v - mu)))


LUT_SIZE = 1024
"""Entries per compatibility lookup table (distance and the two angle terms)."""
LUT_D_MAX = 64.0
"""Distance differences (px) covered by the distance table; beyond it the term is ~0."""


def compatibility_tables(params: prm.MccParameters) -> NDArray[np.float64]:
    """Sigmoid tables of the relaxation's three compatibility terms, (3, LUT_SIZE).

    Row 0 is indexed by distance difference in steps of ``LUT_D_MAX / LUT_SIZE``
    px, rows 1 and 2 by angle difference in steps of ``pi / LUT_SIZE``; the
    kernels look up instead of calling ``exp`` three times per pair.
    """
    d = (np.arange(LUT_SIZE, dtype=np.float64) + 0.5) * (LUT_D_MAX / LUT_SIZE)
    a = (np.arange(LUT_SIZE, dtype=np.float64) + 0.5) * (math.pi / LUT_SIZE)

    def sig(v: NDArray[np.float64], mu: float, tau: float) -> NDArray[np.float64]:
        return np.asarray(1.0 / (1.0 + np.exp(-tau * (v - mu))), np.float64)

    return np.stack([
        sig(d, params.rel_mu1, params.rel_tau1),
        sig(a, params.rel_mu2, params.rel_tau2),
        sig(a, params.rel_mu3, params.rel_tau3),
    ])


G_X, G_Y, G_T, G_COS, G_SIN = range(5)
"""Columns of the per-cylinder geometry array (x, y up, angle, cos, sin)."""

_SORT_BINS = 1024


@njit
def _bucket(v: np.float32) -> int:
    """Counting-sort bucket of a similarity in (0, 1], 0 = best."""
    return _SORT_BINS - 1 - min(_SORT_BINS - 1, int(v * np.float32(_SORT_BINS)))


@njit
def _lower(g: NDArray[np.float32], v: float) -> int:
    """First row whose direction is >= v (rows sorted by direction)."""
    lo = 0
    hi = g.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if g[mid, G_T] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit
def _upper(g: NDArray[np.float32], v: float) -> int:
    """First row whose direction is > v (rows sorted by direction)."""
    lo = 0
    hi = g.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if g[mid, G_T] <= v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit
def _cylinder_similarity(
    a_w: NDArray[np.uint64], i: int, b_w: NDArray[np.uint64], j: int, min_me: float
) -> float:
    """Bit-cylinder similarity over the cells valid in both (0 when too few are)."""
    mm = a_w[i, 0] & b_w[j, 0]
    if float(_popcount(mm)) < min_me:
        return 0.0
    ca = np.uint64(0)
    cb = np.uint64(0)
    cx = np.uint64(0)
    for k in range(1, a_w.shape[1]):
        wa = a_w[i, k] & mm
        wb = b_w[j, k] & mm
        ca += _popcount(wa)
        cb += _popcount(wb)
        cx += _popcount(wa ^ wb)
    if ca + cb == np.uint64(0):
        return 0.0
    return 1.0 - math.sqrt(float(cx)) / (math.sqrt(float(ca)) + math.sqrt(float(cb)))


@njit
def _score(
    a_w: NDArray[np.uint64],
    a_g: NDArray[np.float32],
    b_w: NDArray[np.uint64],
    b_g: NDArray[np.float32],
    p: NDArray[np.float64],
    lut: NDArray[np.float64],
) -> float:
    """MCC similarity of two prepared templates in [0, 1] (LSS-R).

    ``*_w`` rows are ``[validity mask, layer 0 .. layer nd-1]``, ``*_g`` rows
    the geometry columns ``G_*``.
    """
    return _lssr(a_w, a_g, b_w, b_g, p, lut, np.empty((0, 2), np.int32))


@njit
def _lssr(
    a_w: NDArray[np.uint64],
    a_g: NDArray[np.float32],
    b_w: NDArray[np.uint64],
    b_g: NDArray[np.float32],
    p: NDArray[np.float64],
    lut: NDArray[np.float64],
    pairs_out: NDArray[np.int32],
) -> float:
    """``_score``, also writing the consolidated cylinder pairs into ``pairs_out`` rows.

    ``pairs_out`` has ``max_np`` rows (or none, to skip); unused rows stay -1.
    """
    pairs_out[:] = -1
    na = a_w.shape[0]
    nb = b_w.shape[0]
    if na == 0 or nb == 0:
        return 0.0
    min_me = p[prm.P_MIN_ME] * _disk_cells(p)
    nw = a_w.shape[1]
    # Stage 2: local similarities of direction-compatible pairs, bucketed by value.
    cap = na * nb
    vals = np.empty(cap, np.float32)
    pair = np.empty(cap, np.int32)
    hist = np.zeros(_SORT_BINS + 1, np.int32)
    m = 0
    delta_theta = p[prm.P_DELTA_THETA]
    two_pi = 2.0 * math.pi
    for i in range(na):
        # Cylinders are sorted by direction, so the compatible ones form at most
        # two runs: no per-pair direction test, no unpredictable branch.
        lo = a_g[i, G_T] - delta_theta
        hi = a_g[i, G_T] + delta_theta
        mi = a_w[i, 0]
        if lo < 0.0:
            r0, r1, r2, r3 = 0, _upper(b_g, hi), _lower(b_g, lo + two_pi), nb
        elif hi >= two_pi:
            r0, r1, r2, r3 = 0, _upper(b_g, hi - two_pi), _lower(b_g, lo), nb
        else:
            r0, r1, r2, r3 = _lower(b_g, lo), _upper(b_g, hi), nb, nb
        for run in range(2):
            j0 = r0 if run == 0 else max(r2, r1)
            j1 = r1 if run == 0 else r3
            for j in range(j0, j1):
                # _cylinder_similarity written out: the call with two array
                # arguments cost ~10 % of a comparison in this innermost loop.
                mm = mi & b_w[j, 0]
                if float(_popcount(mm)) < min_me:
                    continue
                ca = np.uint64(0)
                cb = np.uint64(0)
                cx = np.uint64(0)
                for k in range(1, nw):
                    wa = a_w[i, k] & mm
                    wb = b_w[j, k] & mm
                    ca += _popcount(wa)
                    cb += _popcount(wb)
                    cx += _popcount(wa ^ wb)
                if ca + cb == np.uint64(0):
                    continue
                sv = 1.0 - math.sqrt(float(cx)) / (math.sqrt(float(ca)) + math.sqrt(float(cb)))
                if sv > 0.0:
                    vals[m] = sv
                    pair[m] = i * nb + j
                    # Bucket from the stored float32 so the scatter below agrees exactly.
                    hist[_bucket(vals[m])] += 1
                    m += 1
    if m == 0:
        return 0.0
    # Stage 3a: best one-to-one pairs, greedy in descending similarity. A
    # counting sort on 1024 buckets replaces a full sort (ties within a bucket
    # keep scan order); the pair's exact similarity is what is kept.
    start = 0
    for q in range(_SORT_BINS + 1):
        c = hist[q]
        hist[q] = start
        start += c
    order = np.empty(m, np.int32)
    for q in range(m):
        bucket = _bucket(vals[q])
        order[hist[bucket]] = q
        hist[bucket] += 1
    nmin = min(na, nb)
    n_r = min(nmin, int(p[prm.P_MAX_NR]))
    used_a = np.zeros(na, np.bool_)
    used_b = np.zeros(nb, np.bool_)
    sel_a = np.empty(n_r, np.int32)
    sel_b = np.empty(n_r, np.int32)
    lam0 = np.empty(n_r)
    r = 0
    for q in range(m):
        if r >= n_r:
            break
        o = order[q]
        i = pair[o] // nb
        j = pair[o] - i * nb
        if used_a[i] or used_b[j]:
            continue
        used_a[i] = True
        used_b[j] = True
        sel_a[r] = i
        sel_b[r] = j
        lam0[r] = vals[o]
        r += 1
    n_p = int(
        p[prm.P_MIN_NP]
        + round(_sigmoid(nmin, p[prm.P_MU_P], p[prm.P_TAU_P]) * (p[prm.P_MAX_NP] - p[prm.P_MIN_NP]))
    )
    if r < 2:
        if len(pairs_out):
            pairs_out[0, 0] = sel_a[0]
            pairs_out[0, 1] = sel_b[0]
        return float(lam0[0]) / n_p
    # Stage 3b: relaxation by pairwise geometric compatibility (table lookups).
    rho = np.zeros((r, r))
    d_step = LUT_SIZE / LUT_D_MAX
    a_step = LUT_SIZE / math.pi
    rel = p[prm.P_REL_D_TOL_REL]
    for k in range(r):
        ak = sel_a[k]
        bk = sel_b[k]
        xak = a_g[ak, G_X]
        yak = a_g[ak, G_Y]
        cak = a_g[ak, G_COS]
        sak = a_g[ak, G_SIN]
        xbk = b_g[bk, G_X]
        ybk = b_g[bk, G_Y]
        cbk = b_g[bk, G_COS]
        sbk = b_g[bk, G_SIN]
        for h in range(k + 1, r):
            ah = sel_a[h]
            bh = sel_b[h]
            dxa = a_g[ah, G_X] - xak
            dya = a_g[ah, G_Y] - yak
            dxb = b_g[bh, G_X] - xbk
            dyb = b_g[bh, G_Y] - ybk
            da = math.sqrt(dxa * dxa + dya * dya)
            db = math.sqrt(dxb * dxb + dyb * dyb)
            d1 = abs(da - db) - rel * 0.5 * (da + db)
            i1 = 0 if d1 <= 0.0 else int(d1 * d_step)
            if i1 >= LUT_SIZE:
                continue
            d2 = abs(
                _dphi(_dphi(a_g[ak, G_T], a_g[ah, G_T]), _dphi(b_g[bk, G_T], b_g[bh, G_T]))
            )
            i2 = min(LUT_SIZE - 1, int(d2 * a_step))
            if lut[1, i2] < 1e-4:
                continue  # incompatible directions: the product is ~0 whatever d3 is
            # Radial angles compared in each pair's local frame: no angle wrapping.
            lax = dxa * cak + dya * sak
            lay = dya * cak - dxa * sak
            lbx = dxb * cbk + dyb * sbk
            lby = dyb * cbk - dxb * sbk
            d3 = _abs_atan2(lax * lby - lay * lbx, lax * lbx + lay * lby)
            i3 = min(LUT_SIZE - 1, int(d3 * a_step))
            c = lut[0, i1] * lut[1, i2] * lut[2, i3]
            rho[k, h] = c
            rho[h, k] = c
    w_r = p[prm.P_W_R]
    cur = lam0[:r].copy()
    nxt = np.empty(r)
    for _ in range(int(p[prm.P_N_REL])):
        for k in range(r):
            acc = 0.0
            for h in range(r):
                acc += rho[k, h] * cur[h]
            nxt[k] = w_r * cur[k] + (1.0 - w_r) * acc / (r - 1)
        cur[:] = nxt
    eff = cur / lam0[:r]
    top = np.argsort(-eff)
    take = min(n_p, r)
    total = 0.0
    for q in range(take):
        total += cur[top[q]]
        if q < len(pairs_out):
            pairs_out[q, 0] = sel_a[top[q]]
            pairs_out[q, 1] = sel_b[top[q]]
    return total / n_p


@njit
def _filter_score(
    q_w: NDArray[np.uint64],
    q_g: NDArray[np.float32],
    b_w: NDArray[np.uint64],
    b_g: NDArray[np.float32],
    p: NDArray[np.float64],
) -> float:
    """Cheap ranking score: mean of the better half of each probe cylinder's best similarity."""
    nq = q_w.shape[0]
    nb = b_w.shape[0]
    if nq == 0 or nb == 0:
        return 0.0
    cos_dt = math.cos(p[prm.P_DELTA_THETA])
    min_me = p[prm.P_MIN_ME] * _disk_cells(p)
    best = np.zeros(nq)
    for i in range(nq):
        ci = q_g[i, G_COS]
        si = q_g[i, G_SIN]
        top = 0.0
        for j in range(nb):
            if ci * b_g[j, G_COS] + si * b_g[j, G_SIN] < cos_dt:
                continue
            top = max(top, _cylinder_similarity(q_w, i, b_w, j, min_me))
        best[i] = top
    best.sort()
    half = (nq + 1) // 2
    total = 0.0
    for i in range(nq - half, nq):
        total += float(best[i])
    return float(total / half)


@njit_parallel
def _filter_search(
    q_w: NDArray[np.uint64],
    q_g: NDArray[np.float32],
    g_w: NDArray[np.uint64],
    g_g: NDArray[np.float32],
    offsets: NDArray[np.int64],
    p: NDArray[np.float64],
    out: NDArray[np.float32],
) -> None:
    """Filter score of the (subset) probe against every gallery template."""
    for g in numba.prange(len(offsets) - 1):
        s = offsets[g]
        e = offsets[g + 1]
        out[g] = _filter_score(q_w, q_g, g_w[s:e], g_g[s:e], p)


@njit_parallel
def _search_subset(
    q_w: NDArray[np.uint64],
    q_g: NDArray[np.float32],
    g_w: NDArray[np.uint64],
    g_g: NDArray[np.float32],
    offsets: NDArray[np.int64],
    which: NDArray[np.int64],
    p: NDArray[np.float64],
    lut: NDArray[np.float64],
    out: NDArray[np.float32],
) -> None:
    """Full scores of the gallery templates listed in ``which`` into ``out[which]``."""
    for w in numba.prange(len(which)):
        g = which[w]
        s = offsets[g]
        e = offsets[g + 1]
        out[g] = _score(q_w, q_g, g_w[s:e], g_g[s:e], p, lut)


@njit_parallel
def _search(
    q_w: NDArray[np.uint64],
    q_g: NDArray[np.float32],
    g_w: NDArray[np.uint64],
    g_g: NDArray[np.float32],
    offsets: NDArray[np.int64],
    p: NDArray[np.float64],
    lut: NDArray[np.float64],
    out: NDArray[np.float32],
) -> None:
    """Score the probe against every gallery template (``prange`` over templates)."""
    for g in numba.prange(len(offsets) - 1):
        s = offsets[g]
        e = offsets[g + 1]
        out[g] = _score(q_w, q_g, g_w[s:e], g_g[s:e], p, lut)


@dataclass(frozen=True, eq=False)
class Prepared:
    """Cylinders of one template: only minutiae whose cylinder is valid.

    ``words`` rows are ``[validity mask, direction layers...]``; ``geometry``
    rows are (x, y up, angle, cos, sin) of the cylinder's minutia.
    """

    words: NDArray[np.uint64]
    geometry: NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.words)

    @property
    def nbytes(self) -> int:
        """Memory held by this prepared template."""
        return self.words.nbytes + self.geometry.nbytes


def _filter_rows(q: Prepared, n: int) -> NDArray[np.int64]:
    """Rows of the ``n`` most complete probe cylinders (most valid cells, then most bits)."""
    if len(q) <= n:
        return np.arange(len(q), dtype=np.int64)
    words = q.words
    valid = np.array([int(w).bit_count() for w in words[:, 0]])
    bits = np.array([sum(int(w).bit_count() for w in row[1:]) for row in words])
    order = np.lexsort((-bits, -valid))
    return np.sort(order[:n]).astype(np.int64)


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


class Matcher:
    """Compares templates (1:1) and builds galleries (1:N).

    ``threads`` bounds the cores a gallery search may use (``None`` = all
    that Numba was started with).
    """

    def __init__(self, params: prm.MccParameters = prm.DEFAULT, *, threads: int | None = None):
        self.params = params
        self.threads = threads
        self._p = prm.kernel_vector(params)
        self._lut = compatibility_tables(params)
        self._dir = direction_table(params)

    def _cylinders(
        self, templates: Sequence[Template]
    ) -> tuple[NDArray[np.uint64], NDArray[np.float32], NDArray[np.int64]]:
        x, y, a, offsets = _flatten(templates)
        n = len(x)
        nd = self.params.nd
        bits = np.zeros((n, nd), np.uint64)
        mask = np.zeros(n, np.uint64)
        valid = np.zeros(n, np.bool_)
        if n:
            _cylinders_batch(x, y, a, offsets, self._p, self._dir, bits, mask, valid)
        owner = np.repeat(np.arange(len(templates)), np.diff(offsets))
        keep = np.nonzero(valid)[0]
        # Within each template, cylinders in ascending direction (see _lssr).
        keep = keep[np.lexsort((a[keep], owner[keep]))]
        per = np.zeros(len(templates), np.int64)
        if n:
            per = np.add.reduceat(valid.astype(np.int64), offsets[:-1])
            # reduceat reports the next element for an empty segment.
            per = np.where(np.diff(offsets) == 0, 0, per)
        new_off = np.zeros(len(templates) + 1, np.int64)
        np.cumsum(per, out=new_off[1:])
        words = np.empty((len(keep), nd + 1), np.uint64)
        words[:, 0] = mask[keep]
        words[:, 1:] = bits[keep]
        geometry = np.empty((len(keep), 5), np.float32)
        geometry[:, G_X] = x[keep]
        geometry[:, G_Y] = y[keep]
        geometry[:, G_T] = a[keep]
        geometry[:, G_COS] = np.cos(a[keep])
        geometry[:, G_SIN] = np.sin(a[keep])
        return words, geometry, new_off

    def prepare(self, template: Template) -> Prepared:
        """Build the cylinders of one template (reuse the result for many comparisons)."""
        words, geometry, _ = self._cylinders([template])
        return Prepared(words, geometry)

    def compare_prepared(self, a: Prepared, b: Prepared) -> float:
        """Similarity of two prepared templates, in [0, 1]."""
        return float(_score(a.words, a.geometry, b.words, b.geometry, self._p, self._lut))

    def pairs(self, a: Prepared, b: Prepared) -> tuple[float, list[tuple[int, int]]]:
        """Score and the consolidated (row in ``a``, row in ``b``) cylinder pairs behind it."""
        out = np.full((self.params.max_np, 2), -1, np.int32)
        score = float(_lssr(a.words, a.geometry, b.words, b.geometry, self._p, self._lut, out))
        return score, [(int(i), int(j)) for i, j in out if i >= 0]

    def compare(self, a: Template, b: Template) -> float:
        """Similarity of two templates in [0, 1]; higher = more similar; symmetric."""
        return self.compare_prepared(self.prepare(a), self.prepare(b))

    def gallery(self, templates: Sequence[Template]) -> Gallery:
        """Pack ``templates`` for 1:N search (indices follow the input order)."""
        return Gallery(self, templates)


GALLERY_FORMAT_VERSION = 1
"""Version of the file written by ``Gallery.save`` (bump when the layout changes)."""


class GalleryFileError(ValueError):
    """A saved gallery cannot be used (corrupt, other version or other parameters)."""


class Gallery:
    """Cylinders of many templates in contiguous arrays, searched 1:N."""

    def __init__(self, matcher: Matcher, templates: Sequence[Template]) -> None:
        self.matcher = matcher
        self.words, self.geometry, self.offsets = matcher._cylinders(templates)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def save(self, path: Path | BinaryIO) -> None:
        """Write the packed cylinders to ``path`` (``.npz``) so start-up can skip building.

        ``path`` may also be a binary file object (the agent encrypts the
        bytes before they touch the disk). The file records a format version
        and the matcher parameters it was built with; :meth:`load` refuses a
        file that does not match.
        """
        if isinstance(path, Path):
            with path.open("wb") as fh:
                self.save(fh)
            return
        np.savez(
            path,
            version=np.array([GALLERY_FORMAT_VERSION]),
            params=self.matcher._p,
            words=self.words,
            geometry=self.geometry,
            offsets=self.offsets,
        )

    @classmethod
    def load(cls, matcher: Matcher, path: Path | BinaryIO) -> Gallery:
        """Read a gallery written by :meth:`save`, validating it at the boundary.

        Raises ``GalleryFileError`` for a wrong version, other parameters,
        or inconsistent arrays.
        """
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("version", "params", "words", "geometry", "offsets")}
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise GalleryFileError(f"{path}: not a gallery file ({exc})") from exc
        if arrays["version"].tolist() != [GALLERY_FORMAT_VERSION]:
            raise GalleryFileError(f"{path}: format {arrays['version'].tolist()} unsupported")
        if not np.array_equal(arrays["params"], matcher._p):
            raise GalleryFileError(f"{path}: built with other matcher parameters")
        words, geometry, offsets = arrays["words"], arrays["geometry"], arrays["offsets"]
        n = len(words)
        if (
            words.dtype != np.uint64
            or words.shape != (n, matcher.params.nd + 1)
            or geometry.dtype != np.float32
            or geometry.shape != (n, 5)
            or offsets.dtype != np.int64
            or offsets.ndim != 1
            or len(offsets) == 0
            or offsets[0] != 0
            or offsets[-1] != n
            or bool(np.any(np.diff(offsets) < 0))
            or not bool(np.all(np.isfinite(geometry)))
        ):
            raise GalleryFileError(f"{path}: arrays are inconsistent")
        # _lssr relies on each template's cylinders being sorted by direction.
        t = geometry[:, G_T]
        same = np.ones(max(n - 1, 0), np.bool_)
        same[offsets[1:-1][(offsets[1:-1] > 0) & (offsets[1:-1] < n)] - 1] = False
        if bool(np.any((t < 0) | (t >= 2 * math.pi))) or bool(np.any(np.diff(t)[same] < 0)):
            raise GalleryFileError(f"{path}: cylinder directions out of range or unsorted")
        g = cls.__new__(cls)
        g.matcher = matcher
        g.words = np.ascontiguousarray(words)
        g.geometry = np.ascontiguousarray(geometry)
        g.offsets = np.ascontiguousarray(offsets)
        return g

    @property
    def nbytes(self) -> int:
        """Memory held by the packed gallery (all arrays)."""
        return self.words.nbytes + self.geometry.nbytes + self.offsets.nbytes

    def scores(
        self,
        probe: Template | Prepared,
        *,
        threads: int | None = None,
        exhaustive: bool | None = None,
    ) -> NDArray[np.float32]:
        """Score of ``probe`` against every template, in gallery order.

        ``exhaustive=False`` (or a ``filter_min_gallery`` the gallery reaches)
        searches in two stages: templates outside the filter's shortlist get
        score 0. Faster, but not accuracy-neutral (see ``MccParameters``).
        """
        q = probe if isinstance(probe, Prepared) else self.matcher.prepare(probe)
        out = np.zeros(len(self), np.float32)
        if len(self) == 0 or len(q) == 0:
            return out
        prm_ = self.matcher.params
        if exhaustive is None:
            exhaustive = not 0 < prm_.filter_min_gallery <= len(self)
        n_threads = threads if threads is not None else self.matcher.threads
        previous = numba.get_num_threads()
        if n_threads is not None:
            set_threads(n_threads)
        p = self.matcher._p
        lut = self.matcher._lut
        try:
            if exhaustive:
                _search(q.words, q.geometry, self.words, self.geometry, self.offsets, p, lut, out)
            else:
                sub = _filter_rows(q, prm_.filter_cylinders)
                rank = np.zeros(len(self), np.float32)
                _filter_search(q.words[sub], q.geometry[sub], self.words, self.geometry,
                               self.offsets, p, rank)
                k = min(len(self), max(prm_.shortlist_min,
                                       math.ceil(prm_.shortlist_fraction * len(self))))
                which = np.argpartition(-rank, k - 1)[:k].astype(np.int64)
                _search_subset(q.words, q.geometry, self.words, self.geometry, self.offsets,
                               which, p, lut, out)
        finally:
            set_threads(previous)
        return out

    def search(
        self,
        probe: Template | Prepared,
        top: int = 10,
        *,
        threads: int | None = None,
        exhaustive: bool | None = None,
    ) -> list[tuple[int, float]]:
        """The ``top`` best (index, score) pairs, best first (ties by lower index)."""
        if top <= 0:
            return []
        s = self.scores(probe, threads=threads, exhaustive=exhaustive)
        k = min(top, len(s))
        if k == 0:
            return []
        idx = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
        idx = idx[np.lexsort((idx, -s[idx]))]
        return [(int(i), float(s[i])) for i in idx]


def warm_up() -> None:
    """Compile (or load from the cache) every kernel on tiny inputs.

    The agent calls this at start-up so the first voter does not pay for
    compilation.
    """
    rng = np.random.default_rng(0)
    ts = [
        Template.from_arrays(
            rng.uniform(20, 280, 12), rng.uniform(20, 380, 12), rng.uniform(0, 6.28, 12),
            width=300, height=400,
        )
        for _ in range(2)
    ]
    m = Matcher()
    a, b = m.prepare(ts[0]), m.prepare(ts[1])
    m.compare_prepared(a, b)
    m.pairs(a, b)
    g = m.gallery(ts)
    g.search(a, top=1, exhaustive=True)
    g.search(a, top=1, exhaustive=False)
