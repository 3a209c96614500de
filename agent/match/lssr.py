"""The comparison kernels: local similarities of bit cylinders and LSS-R consolidation.

Written for the 1:N loop, where one probe meets tens of thousands of
templates, so everything that depends on the probe alone is computed once per
search (:func:`probe_pairs`) and the per-template kernel :func:`score` works
in preallocated scratch arrays (:class:`Scratch`, one per worker chunk).

Performance notes (measured with ``perf stat`` and stage-by-stage timing; see
docs/MATCHING.md "Speed"): the cost of a comparison was branch mispredictions
and instruction count, not arithmetic, so the kernel is written for the
compiler's loop vectoriser (AVX-512/AVX2 on x86-64, NEON on AArch64):

* the gallery is stored by column (:func:`columns`): within a template, word
  ``w`` of every cylinder is contiguous, so one probe cylinder meets eight
  template cylinders per vector instruction; whole rows are computed (the
  direction window is applied afterwards), which is cheaper than a short
  scalar loop over the window;
* the best partner of each probe cylinder, the greedy selection's running
  maximum and, when a row's partner is taken, its best free partner are
  max-reductions over 64-bit keys (float32 similarity bits, then position),
  which vectorise where a branchy arg-max does not;
* the compatibility terms of the selected pairs are computed a column at a
  time in three passes (gather, arithmetic, table look-ups) so the middle
  pass vectorises;
* angle wrapping and ``atan2`` are branch-free; the relaxation is column-wise.

Indices that feed vector loops start at zero (``range(n)``): a loop index the
compiler cannot prove non-negative keeps Numba's negative-index wraparound
and turns contiguous loads into gathers.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
from numpy.typing import NDArray

from agent.match import exact
from agent.match import parameters as prm
from agent.match.bits import popcount
from agent.match.cylinders import (
    G_COS,
    G_SIN,
    G_T,
    G_X,
    G_Y,
    ROW,
    W_MASK,
    disk_cells,
    wrap_angle,
)
from agent.match.exact import LUT_D_MAX, LUT_SIZE
from agent.runtime.jit import njit, njit_parallel

PAD = 8
"""Words after the last template of a column-stored gallery: the kernel reads
cylinder columns in whole blocks of eight, up to seven words past a template."""

_TWO_PI = 2.0 * math.pi
# Probe-pair geometry planes (see probe_pairs).
_P_DIST, _P_DTHETA, _P_LX, _P_LY = range(4)


def compatibility_tables(params: prm.MccParameters) -> NDArray[np.float64]:
    """Sigmoid tables of the relaxation's three compatibility terms, (3, LUT_SIZE).

    Row 0 is indexed by distance difference in steps of ``LUT_D_MAX / LUT_SIZE``
    px, rows 1 and 2 by angle difference in steps of ``pi / LUT_SIZE``; the
    kernels look up instead of calling ``exp`` three times per pair. Correctly
    rounded, so the same on every machine (:mod:`agent.match.exact`).
    """
    return exact.compatibility_tables(params)


def pairs_to_consolidate(params: prm.MccParameters, max_len: int = 256) -> NDArray[np.int64]:
    """n_P (pairs averaged into the score) for every smaller-template size up to ``max_len``.

    ``min_np + round(sigmoid(n; mu_p, tau_p) * (max_np - min_np))``, tabulated
    so the kernel does not call ``exp`` per comparison.
    """
    return exact.build_pairs(params, max_len)


class Tables(NamedTuple):
    """Everything a kernel looks up, built once per :class:`~agent.match.Matcher`."""

    p: NDArray[np.float64]
    lut: NDArray[np.float64]
    n_p: NDArray[np.int64]


def tables(params: prm.MccParameters) -> Tables:
    """The lookup tables of ``params``."""
    return Tables(prm.kernel_vector(params), compatibility_tables(params),
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


@njit
def columns(words: NDArray[np.uint64], offsets: NDArray[np.int64]) -> NDArray[np.uint64]:
    """Cylinder rows (n, ROW) to the kernel's gallery layout, flat, with ``PAD`` words after.

    Template ``g`` keeps its block ``[offsets[g] * ROW, offsets[g + 1] * ROW)``
    but stores it by column: word ``w`` of its cylinder ``j`` is at
    ``block + w * nb + j`` for its ``nb`` cylinders.
    """
    out = np.zeros(words.shape[0] * ROW + PAD, np.uint64)
    for g in range(len(offsets) - 1):
        s = offsets[g]
        nb = offsets[g + 1] - s
        base = s * ROW
        for j in range(nb):
            for w in range(ROW):
                out[base + w * nb + j] = words[s + j, w]
    return out


class Scratch(NamedTuple):
    """Work arrays of :func:`score`, sized for a probe of ``na`` and templates up to ``nb``."""

    sim: NDArray[np.float32]
    """Local similarities (na, nb rounded up to 8): whole rows, window applied on reading."""
    keys: NDArray[np.int64]
    """Per probe row: key of its best free partner (similarity bits << 32 | ~row), 0 = none."""
    f: NDArray[np.float64]
    """Rows _F_*: per probe row or per selected pair."""
    i: NDArray[np.int64]
    """Rows _I_*: per probe row or per selected pair."""
    used: NDArray[np.bool_]
    """Template cylinders already paired (padded to whole vector steps)."""
    sel: NDArray[np.float64]
    """Rows _S_*: geometry of the selected pairs, one column per pair."""
    idx: NDArray[np.int64]
    """The three compatibility-table indices of one column of pairs."""
    rho: NDArray[np.float64]
    """Compatibility of the selected pairs (max_nr, max_nr)."""


# Rows of Scratch.f, Scratch.i and Scratch.sel.
_F_LAM0, _F_CUR, _F_NXT = range(3)
_I_BEST, _I_LO, _I_HI, _I_SEL_A, _I_SEL_B = range(5)
_S_X, _S_Y, _S_T, _S_COS, _S_SIN, _S_DA, _S_DTA, _S_LXA, _S_LYA = range(9)
_LOW = 0xFFFFFFFF


@njit
def scratch(na: int, nb: int, max_nr: int) -> Scratch:
    """Allocate the work arrays once per worker chunk."""
    w = max(na, max_nr, 1)
    nr = max(max_nr, 1)
    nb8 = (max(nb, 1) + 7) // 8 * 8
    return Scratch(
        np.empty((max(na, 1), nb8), np.float32),
        np.empty(w, np.int64),
        np.empty((3, w), np.float64),
        np.empty((5, w), np.int64),
        np.empty(nb8, np.bool_),
        np.empty((9, nr), np.float64),
        np.empty((3, nr), np.int64),
        np.empty((nr, nr), np.float64),
    )


@njit
def _window_key(sim_bits: np.uint32, j: int, j0: int, n_win: int, nb: int) -> np.int64:
    """Order key of position ``j`` in a row whose window is ``j0, j0 + 1, ...`` (mod nb).

    Similarity bits first (a non-negative float32's bit pattern orders like
    the float), then scan order from ``j0``; 0 outside the window or past
    ``nb``. Arg-max as a max-reduction over these keys vectorises.
    """
    d = j - j0
    d = d + nb if d < 0 else d
    key = (np.int64(sim_bits) << 32) | (_LOW - d)
    return key if (d < n_win) & (j < nb) else np.int64(0)


@njit
def _key_position(key: np.int64, j0: int, nb: int) -> int:
    """The template cylinder a :func:`_window_key` stands for, -1 for none."""
    return int((j0 + _LOW - (key & _LOW)) % nb) if (key >> 32) > 0 else -1


@njit
def _row_key(key: np.int64, row: int) -> np.int64:
    """Key of probe row ``row`` whose best partner has ``key``: similarity bits,
    then lower row first; 0 when the row has no partner."""
    return (key >> 32 << 32) | (_LOW - row) if (key >> 32) > 0 else np.int64(0)


@njit
def score(
    a_w: NDArray[np.uint64],
    a_g: NDArray[np.float32],
    a_pairs: NDArray[np.float32],
    b_w: NDArray[np.uint64],
    b_g: NDArray[np.float32],
    p: NDArray[np.float64],
    lut: NDArray[np.float64],
    n_p_table: NDArray[np.int64],
    n_disk: int,
    work: Scratch,
    pairs_out: NDArray[np.int32],
) -> float:
    """MCC similarity of two prepared templates in [0, 1] (LSS-R).

    ``a_w`` are the probe's cylinder rows of ``ROW`` words flattened; ``b_w``
    is the template's block in the :func:`columns` layout, followed by at
    least ``PAD`` readable words. ``*_g`` are the geometry rows, ``a_pairs``
    is ``probe_pairs(a_g)``, ``n_disk`` is ``disk_cells(p)``. Cylinders are
    sorted by direction within each template. ``pairs_out`` (``max_np``
    rows, or none) receives the consolidated (row in a, row in b) pairs,
    unused rows -1.
    """
    pairs_out[:] = -1
    na = a_g.shape[0]
    nb = b_g.shape[0]
    if na == 0 or nb == 0:
        return 0.0
    sim = work.sim
    bits = sim.view(np.uint32)
    keys = work.keys
    f = work.f
    iw = work.i
    used = work.used
    delta_theta = p[prm.P_DELTA_THETA]
    # popcount >= min_me * n_disk, in integers (the popcount is an integer).
    min_me = math.ceil(p[prm.P_MIN_ME] * n_disk)
    one = np.float32(1.0)
    zero = np.float32(0.0)

    # Stage 2: local similarities. Both templates are sorted by direction, so
    # each probe cylinder's direction-compatible partners form one window of
    # b's directions unrolled three times (t, t + 2 pi, t + 4 pi), found with
    # two pointers that only move forward: positions j0, j0 + 1, ... (mod nb),
    # n_win of them.
    lo_ptr = 0
    hi_ptr = 0
    nb3 = 3 * nb
    nb8 = (nb + 7) // 8 * 8
    bm = b_w[0:nb8]
    b1 = b_w[nb:nb + nb8]
    b2 = b_w[2 * nb:2 * nb + nb8]
    b3 = b_w[3 * nb:3 * nb + nb8]
    b4 = b_w[4 * nb:4 * nb + nb8]
    b5 = b_w[5 * nb:5 * nb + nb8]
    b6 = b_w[6 * nb:6 * nb + nb8]
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
        iw[_I_LO, i] = lo_ptr
        iw[_I_HI, i] = hi_ptr
        j0 = lo_ptr % nb
        n_win = hi_ptr - lo_ptr
        ia = i * ROW
        mi = a_w[ia + W_MASK]
        a1 = a_w[ia + 1]
        a2 = a_w[ia + 2]
        a3 = a_w[ia + 3]
        a4 = a_w[ia + 4]
        a5 = a_w[ia + 5]
        a6 = a_w[ia + 6]
        # The whole row, eight template cylinders per vector step (lanes past
        # nb read the next column and are never used). (Using b's stored bit
        # count for probe rows valid on their whole disk saved six popcounts
        # in scalar code; vectorised, the saving measured within noise.)
        for j in range(nb8):
            mm = mi & bm[j]
            wa1 = a1 & mm
            wa2 = a2 & mm
            wa3 = a3 & mm
            wa4 = a4 & mm
            wa5 = a5 & mm
            wa6 = a6 & mm
            wb1 = b1[j] & mm
            wb2 = b2[j] & mm
            wb3 = b3[j] & mm
            wb4 = b4[j] & mm
            wb5 = b5[j] & mm
            wb6 = b6[j] & mm
            ca = (popcount(wa1) + popcount(wa2) + popcount(wa3) + popcount(wa4)
                  + popcount(wa5) + popcount(wa6))
            cb = (popcount(wb1) + popcount(wb2) + popcount(wb3) + popcount(wb4)
                  + popcount(wb5) + popcount(wb6))
            cx = (popcount(wa1 ^ wb1) + popcount(wa2 ^ wb2) + popcount(wa3 ^ wb3)
                  + popcount(wa4 ^ wb4) + popcount(wa5 ^ wb5) + popcount(wa6 ^ wb6))
            den = np.sqrt(np.float32(np.int64(ca))) + np.sqrt(np.float32(np.int64(cb)))
            # Too few common valid cells, or two empty cylinders: not a candidate.
            ok = (den > zero) & (np.int64(popcount(mm)) >= min_me)
            sv = one - np.sqrt(np.float32(np.int64(cx))) / (den if ok else one)
            # Never below +0: the keys below read the bits as an unsigned number,
            # where a negative float (or -0.0) would rank above every positive one.
            sim[i, j] = max(sv, zero) if ok else zero
        # Best partner in the window: a max-reduction over keys, ties to the
        # first in scan order. (Its best free partner, when this one is taken,
        # is found in stage 3a.)
        k1 = np.int64(0)
        for j in range(nb8):
            k1 = max(k1, _window_key(bits[i, j], j, j0, n_win, nb))
        iw[_I_BEST, i] = _key_position(k1, j0, nb)
        keys[i] = _row_key(k1, i)

    # Stage 3a: the best one-to-one pairs, greedily in descending similarity
    # (ties to the lower probe row). Lazy: a row's key is an upper bound of its
    # best free partner and is only corrected when that row comes out on top
    # with its partner already taken; the row on top with a free partner is
    # the true maximum.
    n_min = min(na, nb)
    n_r = min(n_min, int(p[prm.P_MAX_NR]))
    used[:] = False
    r = 0
    while r < n_r:
        top = np.int64(0)
        for i in range(na):
            top = max(top, keys[i])
        if (top >> 32) == 0:
            break
        bi = int(_LOW - (top & _LOW))
        bj = iw[_I_BEST, bi]
        if used[bj]:
            # The best free partner in its window: a masked max-reduction
            # over the same keys, or none.
            lo = iw[_I_LO, bi]
            j0 = lo % nb
            n_win = iw[_I_HI, bi] - lo
            free = np.int64(0)
            for j in range(nb8):
                key = _window_key(bits[bi, j], j, j0, n_win, nb)
                free = max(free, key if not used[j] else np.int64(0))
            iw[_I_BEST, bi] = _key_position(free, j0, nb)
            keys[bi] = _row_key(free, bi)
            continue
        iw[_I_SEL_A, r] = bi
        iw[_I_SEL_B, r] = bj
        f[_F_LAM0, r] = float(sim[bi, bj])
        r += 1
        keys[bi] = 0
        used[bj] = True
    if r == 0:
        return 0.0
    n_p = n_p_table[min(n_min, len(n_p_table) - 1)]
    if r < 2:
        if len(pairs_out):
            pairs_out[0, 0] = iw[_I_SEL_A, 0]
            pairs_out[0, 1] = iw[_I_SEL_B, 0]
        return float(f[_F_LAM0, 0]) / float(n_p)

    # Stage 3b: compatibility of the selected pairs: distance, relative
    # direction and radial angle (probe halves from a_pairs, table lookups).
    # Pair (k, h), k < h, is compared in k's frame; one column h at a time.
    d_step = LUT_SIZE / LUT_D_MAX
    a_step = LUT_SIZE / math.pi
    rel = p[prm.P_REL_D_TOL_REL]
    ap = a_pairs.ravel()
    lt = lut.ravel()
    plane = na * na
    sel = work.sel
    ix = work.idx
    rho = work.rho
    for k in range(r):
        bk = iw[_I_SEL_B, k]
        sel[_S_X, k] = b_g[bk, G_X]
        sel[_S_Y, k] = b_g[bk, G_Y]
        sel[_S_T, k] = b_g[bk, G_T]
        sel[_S_COS, k] = b_g[bk, G_COS]
        sel[_S_SIN, k] = b_g[bk, G_SIN]
    for h in range(r):
        rho[h, h] = 0.0
        ah = iw[_I_SEL_A, h]
        xbh = sel[_S_X, h]
        ybh = sel[_S_Y, h]
        tbh = sel[_S_T, h]
        for k in range(h):
            pa = iw[_I_SEL_A, k] * na + ah
            sel[_S_DA, k] = ap[_P_DIST * plane + pa]
            sel[_S_DTA, k] = ap[_P_DTHETA * plane + pa]
            sel[_S_LXA, k] = ap[_P_LX * plane + pa]
            sel[_S_LYA, k] = ap[_P_LY * plane + pa]
        for k in range(h):
            dtb = wrap_angle(sel[_S_T, k] - tbh)
            d2 = abs(wrap_angle(sel[_S_DTA, k] - dtb))
            dxb = xbh - sel[_S_X, k]
            dyb = ybh - sel[_S_Y, k]
            da = sel[_S_DA, k]
            db = math.sqrt(dxb * dxb + dyb * dyb)
            d1 = abs(da - db) - rel * 0.5 * (da + db)
            # Radial angles compared in each pair's local frame: no angle wrapping.
            lax = sel[_S_LXA, k]
            lay = sel[_S_LYA, k]
            lbx = dxb * sel[_S_COS, k] + dyb * sel[_S_SIN, k]
            lby = dyb * sel[_S_COS, k] - dxb * sel[_S_SIN, k]
            d3 = _abs_atan2(lax * lby - lay * lbx, lax * lbx + lay * lby)
            ix[0, k] = int(max(d1, 0.0) * d_step)
            ix[1, k] = LUT_SIZE + min(LUT_SIZE - 1, int(d2 * a_step))
            ix[2, k] = 2 * LUT_SIZE + min(LUT_SIZE - 1, int(d3 * a_step))
        for k in range(h):
            i1 = ix[0, k]
            c2 = lt[ix[1, k]]
            c = lt[min(i1, LUT_SIZE - 1)] * c2 * lt[ix[2, k]]
            # Beyond the distance table, or directions too far apart: incompatible.
            c = c if (c2 >= 1e-4) & (i1 < LUT_SIZE) else 0.0
            rho[h, k] = c
            rho[k, h] = c

    # Relaxation: each pair's strength moves towards the support of the pairs
    # compatible with it (LSS-R, n_rel iterations).
    w_r = p[prm.P_W_R]
    scale = (1.0 - w_r) / (r - 1)
    for k in range(r):
        f[_F_CUR, k] = f[_F_LAM0, k]
    for _ in range(int(p[prm.P_N_REL])):
        for k in range(r):
            f[_F_NXT, k] = 0.0
        for h in range(r):
            ch = f[_F_CUR, h]
            for k in range(r):
                f[_F_NXT, k] += rho[h, k] * ch
        for k in range(r):
            f[_F_CUR, k] = w_r * f[_F_CUR, k] + scale * f[_F_NXT, k]

    # Score: mean relaxed strength of the n_P most efficient pairs (strength
    # kept / strength at the start), ties to the stronger pair.
    for k in range(r):
        f[_F_NXT, k] = f[_F_CUR, k] / f[_F_LAM0, k]
    total = 0.0
    for q in range(min(n_p, r)):
        top_k = 0
        tv = f[_F_NXT, 0]
        for k in range(1, r):
            v = f[_F_NXT, k]
            top_k = k if v > tv else top_k
            tv = v if v > tv else tv
        total += f[_F_CUR, top_k]
        f[_F_NXT, top_k] = -1.0
        if q < len(pairs_out):
            pairs_out[q, 0] = iw[_I_SEL_A, top_k]
            pairs_out[q, 1] = iw[_I_SEL_B, top_k]
    return total / float(n_p)


@njit
def compare(
    a_w: NDArray[np.uint64],
    a_g: NDArray[np.float32],
    b_w: NDArray[np.uint64],
    b_g: NDArray[np.float32],
    p: NDArray[np.float64],
    lut: NDArray[np.float64],
    n_p_table: NDArray[np.int64],
    pairs_out: NDArray[np.int32],
) -> float:
    """One comparison (1:1) of two templates' cylinder rows: :func:`score` with
    its own column layout for ``b``, probe geometry and scratch."""
    nb = b_g.shape[0]
    offsets = np.array([0, nb], np.int64)
    work = scratch(a_g.shape[0], nb, int(p[prm.P_MAX_NR]))
    return score(a_w.ravel(), a_g, probe_pairs(a_g), columns(b_w, offsets), b_g, p, lut,
                 n_p_table, disk_cells(p), work, pairs_out)


@njit_parallel
def search(
    q_w: NDArray[np.uint64],
    q_g: NDArray[np.float32],
    g_w: NDArray[np.uint64],
    g_g: NDArray[np.float32],
    offsets: NDArray[np.int64],
    p: NDArray[np.float64],
    lut: NDArray[np.float64],
    n_p_table: NDArray[np.int64],
    chunks: int,
    out: NDArray[np.float32],
) -> None:
    """Score the probe (cylinder rows) against every gallery template into ``out``.

    ``g_w`` is the gallery in the :func:`columns` layout. Work is split in
    ``chunks`` (several per thread, for balance; the caller passes it because
    asking Numba for the thread count here would make the kernel
    uncacheable); each chunk allocates its scratch once.
    """
    n = len(offsets) - 1
    if n == 0 or q_g.shape[0] == 0:
        return
    if len(g_w) < offsets[n] * ROW + PAD:
        raise ValueError("gallery words shorter than its offsets and padding")
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
            out[g] = score(a_w, q_g, a_pairs, g_w[s * ROW:e * ROW + PAD], g_g[s:e], p, lut,
                           n_p_table, n_disk, work, no_pairs)
