"""The session-1 comparison kernel, frozen: the baseline that match_speed runs beside the
current one (agent/match/lssr.py) in the same process, on the same gallery and probes.

It is the LSS-R kernel as it stood on 2026-11-27 06:00 (commit 861ce58): per-comparison
allocations, binary-searched direction windows, 1024-bucket counting sort. Not used by the
agent; kept only so that "how much faster" is measured, not remembered.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

from agent.match import parameters as prm
from agent.match.bits import popcount
from agent.match.cylinders import G_COS, G_SIN, G_T, G_X, G_Y, _dphi, disk_cells
from agent.match.lssr import LUT_D_MAX, LUT_SIZE
from agent.runtime.jit import njit, njit_parallel


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
def _sigmoid(v: float, mu: float, tau: float) -> float:
    return 1.0 / (1.0 + math.exp(-tau * (v - mu)))


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
    min_me = p[prm.P_MIN_ME] * disk_cells(p)
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
                if float(popcount(mm)) < min_me:
                    continue
                ca = np.uint64(0)
                cb = np.uint64(0)
                cx = np.uint64(0)
                for k in range(1, nw):
                    wa = a_w[i, k] & mm
                    wb = b_w[j, k] & mm
                    ca += popcount(wa)
                    cb += popcount(wb)
                    cx += popcount(wa ^ wb)
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


@njit_parallel
def search(
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
        out[g] = _lssr(q_w, q_g, g_w[s:e], g_g[s:e], p, lut, np.empty((0, 2), np.int32))
