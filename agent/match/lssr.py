"""The comparison kernels: local similarities of bit cylinders and LSS-R consolidation.

Written for the 1:N loop, where one probe meets tens of thousands of
templates, so everything that depends on the probe alone is computed once per
search (:func:`probe_pairs`) and the per-template kernel :func:`score` works
in preallocated scratch arrays (:class:`Scratch`, one per worker chunk).

Performance notes (measured with ``perf stat`` on the search loop; see
docs/MATCHING.md "Speed"): the cost of a comparison was branch mispredictions
and instruction count, not arithmetic. Hence

* cylinder rows are one 64-byte line (validity mask, six direction layers,
  bit count) and the six layers are unrolled;
* the local-similarity loop branches only per probe row (whole-disk rows use
  the template's stored bit count); within a row the masked popcounts are
  always computed and invalid pairs are zeroed by a select;
* angle wrapping and ``atan2`` are branch-free; the compatibility terms test
  the cheapest rejection first;
* the greedy pair selection keeps each probe cylinder's best and second-best
  candidate and corrects a row lazily, only when it comes out on top with a
  partner already taken;
* the relaxation runs column-wise so its inner loop vectorises.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
from numpy.typing import NDArray

from agent.jit import njit, njit_parallel
from agent.match import parameters as prm
from agent.match.bits import popcount
from agent.match.cylinders import (
    G_COS,
    G_SIN,
    G_T,
    G_X,
    G_Y,
    ROW,
    W_COUNT,
    W_MASK,
    disk_cells,
    wrap_angle,
)

LUT_SIZE = 1024
"""Entries per compatibility lookup table (distance and the two angle terms)."""
LUT_D_MAX = 64.0
"""Distance differences (px) covered by the distance table; beyond it the term is ~0."""
MAX_BITS = 6 * 64
"""Largest popcount of a cylinder's layers (the square-root table's last index)."""

_TWO_PI = 2.0 * math.pi
# Probe-pair geometry planes (see probe_pairs).
_P_DIST, _P_DTHETA, _P_LX, _P_LY = range(4)


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


def sqrt_table() -> NDArray[np.float64]:
    """``sqrt(n)`` for every possible popcount (one load instead of a square root)."""
    return np.sqrt(np.arange(MAX_BITS + 1, dtype=np.float64))


def pairs_to_consolidate(params: prm.MccParameters, max_len: int = 256) -> NDArray[np.int64]:
    """n_P (pairs averaged into the score) for every smaller-template size up to ``max_len``.

    ``min_np + round(sigmoid(n; mu_p, tau_p) * (max_np - min_np))``, tabulated
    so the kernel does not call ``exp`` per comparison.
    """
    n = np.arange(max_len + 1, dtype=np.float64)
    sig = 1.0 / (1.0 + np.exp(-params.tau_p * (n - params.mu_p)))
    return np.asarray(params.min_np + np.round(sig * (params.max_np - params.min_np)), np.int64)


class Tables(NamedTuple):
    """Everything a kernel looks up, built once per :class:`~agent.match.Matcher`."""

    p: NDArray[np.float64]
    lut: NDArray[np.float64]
    sqrt: NDArray[np.float64]
    n_p: NDArray[np.int64]


def tables(params: prm.MccParameters) -> Tables:
    """The lookup tables of ``params``."""
    return Tables(prm.kernel_vector(params), compatibility_tables(params), sqrt_table(),
                  pairs_to_consolidate(params))


@njit
def _abs_atan2(y: float, x: float) -> float:
    """|atan2(y, x)| in [0, pi] to about 0.004 rad (feeds a 1024-step table), branch-free."""
    ay = abs(y)
    ax = abs(x)
    big = max(ax, ay)
    z = min(ax, ay) / (big if big > 0.0 else 1.0)
    r = 0.7853981633974483 * z - z * (z - 1.0) * (0.2447 + 0.0663 * z)
    # Octant and half-plane corrections as arithmetic (a branch here mispredicts half the time).
    r += (ay > ax) * (1.5707963267948966 - 2.0 * r)
    return r + (x < 0.0) * (math.pi - 2.0 * r)


@njit
def probe_pairs(a_g: NDArray[np.float32]) -> NDArray[np.float32]:
    """Pairwise geometry of one template's cylinders, (4, n, n).

    Planes: distance, direction difference (wrapped), and the position of
    minutia h in minutia k's frame (x, y). In a search the probe's half of
    every compatibility term is read from here instead of recomputed per
    template.
    """
    n = a_g.shape[0]
    out = np.empty((4, n, n), np.float32)
    for k in range(n):
        xk = a_g[k, G_X]
        yk = a_g[k, G_Y]
        ck = a_g[k, G_COS]
        sk = a_g[k, G_SIN]
        for h in range(n):
            dx = a_g[h, G_X] - xk
            dy = a_g[h, G_Y] - yk
            out[_P_DIST, k, h] = math.sqrt(dx * dx + dy * dy)
            out[_P_DTHETA, k, h] = wrap_angle(float(a_g[k, G_T]) - float(a_g[h, G_T]))
            out[_P_LX, k, h] = dx * ck + dy * sk
            out[_P_LY, k, h] = dy * ck - dx * sk
    return out


class Scratch(NamedTuple):
    """Work arrays of :func:`score`, sized for a probe of ``na`` and templates up to ``nb``."""

    sim: NDArray[np.float32]
    f: NDArray[np.float64]
    i: NDArray[np.int64]
    used: NDArray[np.bool_]
    stride: int
    """Length of each per-row or per-pair section of ``f`` and ``i``: max(na, max_nr)."""


# Offsets into Scratch.f / Scratch.i, in units of Scratch.stride.
_F_BEST, _F_SECOND, _F_LAM0, _F_CUR, _F_NXT = range(5)
_I_BEST, _I_SECOND, _I_LO, _I_HI, _I_SEL_A, _I_SEL_B = range(6)


@njit
def scratch(na: int, nb: int, max_nr: int) -> Scratch:
    """Allocate the work arrays once per worker chunk."""
    w = max(na, max_nr, 1)
    return Scratch(
        np.empty(max(na * nb, 1), np.float32),
        np.empty(5 * w + max_nr * max_nr, np.float64),
        np.empty(6 * w, np.int64),
        np.empty(max(nb, 1), np.bool_),
        w,
    )


@njit
def score(
    a_w: NDArray[np.uint64],
    a_g: NDArray[np.float32],
    a_pairs: NDArray[np.float32],
    b_w: NDArray[np.uint64],
    b_g: NDArray[np.float32],
    p: NDArray[np.float64],
    lut: NDArray[np.float64],
    sq: NDArray[np.float64],
    n_p_table: NDArray[np.int64],
    n_disk: int,
    work: Scratch,
    pairs_out: NDArray[np.int32],
) -> float:
    """MCC similarity of two prepared templates in [0, 1] (LSS-R).

    ``*_w`` are cylinder rows of ``ROW`` words flattened, ``*_g`` the geometry
    rows, ``a_pairs`` is ``probe_pairs(a_g)``, ``n_disk`` is ``disk_cells(p)``.
    Cylinders are sorted by direction within each template. ``pairs_out``
    (``max_np`` rows, or none) receives the consolidated (row in a, row in b)
    pairs, unused rows -1.
    """
    pairs_out[:] = -1
    na = a_g.shape[0]
    nb = b_g.shape[0]
    if na == 0 or nb == 0:
        return 0.0
    sim = work.sim
    f = work.f
    iw = work.i
    used = work.used
    w = work.stride
    o_best, o_second, o_lam0, o_cur, o_nxt = _F_BEST * w, _F_SECOND * w, _F_LAM0 * w, \
        _F_CUR * w, _F_NXT * w
    o_rho = 5 * w
    o_ibest, o_isecond, o_lo, o_hi, o_sa, o_sb = _I_BEST * w, _I_SECOND * w, _I_LO * w, \
        _I_HI * w, _I_SEL_A * w, _I_SEL_B * w
    delta_theta = p[prm.P_DELTA_THETA]
    min_me = p[prm.P_MIN_ME] * n_disk

    # Stage 2: local similarities of direction-compatible pairs. Both
    # templates are sorted by direction, so each probe cylinder's partners
    # form one window of b's directions unrolled three times (t, t + 2 pi,
    # t + 4 pi), found with two pointers that only move forward.
    lo_ptr = 0
    hi_ptr = 0
    nb3 = 3 * nb
    for i in range(na):
        centre = float(a_g[i, G_T]) + _TWO_PI
        while lo_ptr < nb3:
            lap = 0 if lo_ptr < nb else (1 if lo_ptr < 2 * nb else 2)
            if float(b_g[lo_ptr - lap * nb, G_T]) + _TWO_PI * lap >= centre - delta_theta:
                break
            lo_ptr += 1
        hi_ptr = max(hi_ptr, lo_ptr)
        while hi_ptr < nb3:
            lap = 0 if hi_ptr < nb else (1 if hi_ptr < 2 * nb else 2)
            if float(b_g[hi_ptr - lap * nb, G_T]) + _TWO_PI * lap > centre + delta_theta:
                break
            hi_ptr += 1
        iw[o_lo + i] = lo_ptr
        iw[o_hi + i] = hi_ptr
        ia = i * ROW
        mi = a_w[ia + W_MASK]
        a1 = a_w[ia + 1]
        a2 = a_w[ia + 2]
        a3 = a_w[ia + 3]
        a4 = a_w[ia + 4]
        a5 = a_w[ia + 5]
        a6 = a_w[ia + 6]
        best = 0.0
        second = 0.0
        arg = -1
        arg2 = -1
        j = lo_ptr % nb
        row = i * nb
        # A probe cylinder valid on its whole disk (most are) meets b on b's own
        # valid cells, where b's bit count is stored: 12 popcounts instead of 18.
        # The test is per row, so the branch below is perfectly predicted.
        whole = popcount(mi) == n_disk
        for _ in range(lo_ptr, hi_ptr):
            jb = j * ROW
            mm = mi & b_w[jb + W_MASK]
            wa1 = a1 & mm
            wa2 = a2 & mm
            wa3 = a3 & mm
            wa4 = a4 & mm
            wa5 = a5 & mm
            wa6 = a6 & mm
            ca = (popcount(wa1) + popcount(wa2) + popcount(wa3) + popcount(wa4)
                  + popcount(wa5) + popcount(wa6))
            if whole:
                cb = b_w[jb + W_COUNT]
                cx = (popcount(wa1 ^ b_w[jb + 1]) + popcount(wa2 ^ b_w[jb + 2])
                      + popcount(wa3 ^ b_w[jb + 3]) + popcount(wa4 ^ b_w[jb + 4])
                      + popcount(wa5 ^ b_w[jb + 5]) + popcount(wa6 ^ b_w[jb + 6]))
            else:
                wb1 = b_w[jb + 1] & mm
                wb2 = b_w[jb + 2] & mm
                wb3 = b_w[jb + 3] & mm
                wb4 = b_w[jb + 4] & mm
                wb5 = b_w[jb + 5] & mm
                wb6 = b_w[jb + 6] & mm
                cb = (popcount(wb1) + popcount(wb2) + popcount(wb3) + popcount(wb4)
                      + popcount(wb5) + popcount(wb6))
                cx = (popcount(wa1 ^ wb1) + popcount(wa2 ^ wb2) + popcount(wa3 ^ wb3)
                      + popcount(wa4 ^ wb4) + popcount(wa5 ^ wb5) + popcount(wa6 ^ wb6))
            den = sq[ca] + sq[cb]
            # Too few common valid cells, or two empty cylinders: not a candidate.
            ok = den > 0.0 and float(popcount(mm)) >= min_me
            sv = 1.0 - sq[cx] / (den if ok else 1.0)
            sv = sv if ok else 0.0
            sim[row + j] = sv
            if sv > second:
                if sv > best:
                    second = best
                    arg2 = arg
                    best = sv
                    arg = j
                else:
                    second = sv
                    arg2 = j
            j += 1
            j = 0 if j == nb else j
        f[o_best + i] = best
        f[o_second + i] = second
        iw[o_ibest + i] = arg
        iw[o_isecond + i] = arg2

    # Stage 3a: the best one-to-one pairs, greedily in descending similarity
    # (ties to the lower probe row). Lazy: a row's stored best is an upper
    # bound of its best unused partner and is only corrected when that row
    # comes out on top with a partner already taken (its second best, else a
    # rescan of its window); the row on top with a free partner is the true
    # maximum.
    n_min = min(na, nb)
    n_r = min(n_min, int(p[prm.P_MAX_NR]))
    used[:nb] = False
    r = 0
    while r < n_r:
        bi = -1
        bv = 0.0
        for i in range(na):
            v = f[o_best + i]
            bi = i if v > bv else bi
            bv = v if v > bv else bv
        if bi < 0:
            break
        bj = iw[o_ibest + bi]
        if used[bj]:
            j2 = iw[o_isecond + bi]
            if f[o_second + bi] > 0.0 and not used[j2]:
                f[o_best + bi] = f[o_second + bi]
                iw[o_ibest + bi] = j2
            else:
                best = 0.0
                arg = -1
                j = iw[o_lo + bi] % nb
                row = bi * nb
                for _ in range(iw[o_lo + bi], iw[o_hi + bi]):
                    v = float(sim[row + j]) if not used[j] else 0.0
                    arg = j if v > best else arg
                    best = v if v > best else best
                    j += 1
                    j = 0 if j == nb else j
                f[o_best + bi] = best
                iw[o_ibest + bi] = arg
            f[o_second + bi] = 0.0
            continue
        iw[o_sa + r] = bi
        iw[o_sb + r] = bj
        f[o_lam0 + r] = float(sim[bi * nb + bj])
        r += 1
        f[o_best + bi] = 0.0
        used[bj] = True
    if r == 0:
        return 0.0
    n_p = n_p_table[min(n_min, len(n_p_table) - 1)]
    if r < 2:
        if len(pairs_out):
            pairs_out[0, 0] = iw[o_sa]
            pairs_out[0, 1] = iw[o_sb]
        return float(f[o_lam0]) / float(n_p)

    # Stage 3b: compatibility of the selected pairs: distance, relative
    # direction and radial angle (probe halves from a_pairs, table lookups).
    d_step = LUT_SIZE / LUT_D_MAX
    a_step = LUT_SIZE / math.pi
    rel = p[prm.P_REL_D_TOL_REL]
    # Flat views: one multiply-add per lookup instead of strided multi-indexing.
    bg = b_g.ravel()
    ap = a_pairs.ravel()
    lt = lut.ravel()
    plane = na * na
    for k in range(r):
        f[o_rho + k * r + k] = 0.0
        ak = iw[o_sa + k]
        bk = iw[o_sb + k] * 5
        xbk = float(bg[bk + G_X])
        ybk = float(bg[bk + G_Y])
        cbk = float(bg[bk + G_COS])
        sbk = float(bg[bk + G_SIN])
        tbk = float(bg[bk + G_T])
        for h in range(k + 1, r):
            pa = ak * na + iw[o_sa + h]
            bh = iw[o_sb + h] * 5
            f[o_rho + k * r + h] = 0.0
            f[o_rho + h * r + k] = 0.0
            # Cheapest test first: most impostor pairs already fail on direction.
            dtb = wrap_angle(tbk - float(bg[bh + G_T]))
            d2 = abs(wrap_angle(float(ap[_P_DTHETA * plane + pa]) - dtb))
            c2 = lt[LUT_SIZE + min(LUT_SIZE - 1, int(d2 * a_step))]
            if c2 < 1e-4:
                continue
            dxb = float(bg[bh + G_X]) - xbk
            dyb = float(bg[bh + G_Y]) - ybk
            da = float(ap[_P_DIST * plane + pa])
            db = math.sqrt(dxb * dxb + dyb * dyb)
            d1 = abs(da - db) - rel * 0.5 * (da + db)
            i1 = int(max(d1, 0.0) * d_step)
            if i1 >= LUT_SIZE:
                continue
            # Radial angles compared in each pair's local frame: no angle wrapping.
            lax = float(ap[_P_LX * plane + pa])
            lay = float(ap[_P_LY * plane + pa])
            lbx = dxb * cbk + dyb * sbk
            lby = dyb * cbk - dxb * sbk
            d3 = _abs_atan2(lax * lby - lay * lbx, lax * lbx + lay * lby)
            c = lt[i1] * c2 * lt[2 * LUT_SIZE + min(LUT_SIZE - 1, int(d3 * a_step))]
            f[o_rho + k * r + h] = c
            f[o_rho + h * r + k] = c

    # Relaxation: each pair's strength moves towards the support of the pairs
    # compatible with it (LSS-R, n_rel iterations).
    w_r = p[prm.P_W_R]
    scale = (1.0 - w_r) / (r - 1)
    for k in range(r):
        f[o_cur + k] = f[o_lam0 + k]
    for _ in range(int(p[prm.P_N_REL])):
        for k in range(r):
            f[o_nxt + k] = 0.0
        for h in range(r):
            ch = f[o_cur + h]
            base = o_rho + h * r
            for k in range(r):
                f[o_nxt + k] += f[base + k] * ch
        for k in range(r):
            f[o_cur + k] = w_r * f[o_cur + k] + scale * f[o_nxt + k]

    # Score: mean relaxed strength of the n_P most efficient pairs (strength
    # kept / strength at the start), ties to the stronger pair.
    for k in range(r):
        f[o_nxt + k] = f[o_cur + k] / f[o_lam0 + k]
    total = 0.0
    for q in range(min(n_p, r)):
        top = 0
        tv = f[o_nxt]
        for k in range(1, r):
            v = f[o_nxt + k]
            top = k if v > tv else top
            tv = v if v > tv else tv
        total += f[o_cur + top]
        f[o_nxt + top] = -1.0
        if q < len(pairs_out):
            pairs_out[q, 0] = iw[o_sa + top]
            pairs_out[q, 1] = iw[o_sb + top]
    return total / float(n_p)


@njit
def compare(
    a_w: NDArray[np.uint64],
    a_g: NDArray[np.float32],
    b_w: NDArray[np.uint64],
    b_g: NDArray[np.float32],
    p: NDArray[np.float64],
    lut: NDArray[np.float64],
    sq: NDArray[np.float64],
    n_p_table: NDArray[np.int64],
    pairs_out: NDArray[np.int32],
) -> float:
    """One comparison (1:1): :func:`score` with its own probe geometry and scratch."""
    work = scratch(a_g.shape[0], b_g.shape[0], int(p[prm.P_MAX_NR]))
    return score(a_w.ravel(), a_g, probe_pairs(a_g), b_w.ravel(), b_g, p, lut, sq, n_p_table,
                 disk_cells(p), work, pairs_out)


@njit_parallel
def search(
    q_w: NDArray[np.uint64],
    q_g: NDArray[np.float32],
    g_w: NDArray[np.uint64],
    g_g: NDArray[np.float32],
    offsets: NDArray[np.int64],
    p: NDArray[np.float64],
    lut: NDArray[np.float64],
    sq: NDArray[np.float64],
    n_p_table: NDArray[np.int64],
    chunks: int,
    out: NDArray[np.float32],
) -> None:
    """Score the probe against every gallery template into ``out``.

    Work is split in ``chunks`` (several per thread, for balance; the caller
    passes it because asking Numba for the thread count here would make the
    kernel uncacheable); each chunk allocates its scratch once.
    """
    n = len(offsets) - 1
    if n == 0 or q_g.shape[0] == 0:
        return
    a_w = q_w.ravel()
    a_pairs = probe_pairs(q_g)
    nb_max = 1
    for g in range(len(offsets) - 1):
        nb_max = max(nb_max, offsets[g + 1] - offsets[g])
    n_disk = disk_cells(p)
    max_nr = int(p[prm.P_MAX_NR])
    no_pairs = np.empty((0, 2), np.int32)
    chunks = max(1, min(n, chunks))
    for c in numba.prange(chunks):
        work = scratch(q_g.shape[0], nb_max, max_nr)
        for g in range(n * c // chunks, n * (c + 1) // chunks):
            s = offsets[g]
            e = offsets[g + 1]
            out[g] = score(a_w, q_g, a_pairs, g_w[s * ROW:e * ROW], g_g[s:e], p, lut, sq,
                           n_p_table, n_disk, work, no_pairs)
