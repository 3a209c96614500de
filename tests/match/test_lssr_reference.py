"""The vectorised comparison kernel against a plain reading of its rules.

``reference_score`` below is the matcher written for clarity, not speed: a
Python loop per stage, the greedy selection as "the best free pair overall"
instead of the kernel's lazy row keys, no column layout, no vector tricks.
The kernel must give the same score and the same consolidated pairs on real
templates, so the next rewrite of the kernel has something to be held to.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from agent.match import Matcher, Template
from agent.match import parameters as prm
from agent.match.cylinders import G_COS, G_SIN, G_T, G_X, G_Y, disk_cells, wrap_angle
from agent.match.evaluation import load_set
from agent.match.lssr import LUT_D_MAX, LUT_SIZE, _abs_atan2, probe_pairs
from agent.match.matcher import Prepared

TWO_PI = 2.0 * math.pi
_wrap = wrap_angle.py_func


def _windows(a_t: NDArray[np.float32], b_t: NDArray[np.float32],
             delta: float) -> list[list[int]]:
    """Per probe cylinder, the template cylinders within delta of its direction, in scan
    order: b's sorted directions unrolled three times, from the first one >= t - delta."""
    nb = len(b_t)
    unrolled = [float(b_t[k % nb]) + TWO_PI * (k // nb) for k in range(3 * nb)]
    out = []
    for t in a_t:
        centre = float(t) + TWO_PI
        out.append([k % nb for k, u in enumerate(unrolled)
                    if centre - delta <= u <= centre + delta])
    return out


def _local_similarity(a: NDArray[np.uint64], b: NDArray[np.uint64], min_me: float) -> float:
    """1 - sqrt|a xor b| / (sqrt|a| + sqrt|b|) over the cells valid in both, float32."""
    common = int(a[0]) & int(b[0])
    if bin(common).count("1") < min_me:
        return 0.0
    ca = sum(bin(int(w) & common).count("1") for w in a[1:])
    cb = sum(bin(int(w) & common).count("1") for w in b[1:])
    cx = sum(bin((int(u) ^ int(v)) & common).count("1") for u, v in zip(a[1:], b[1:],
                                                                        strict=True))
    den = np.sqrt(np.float32(ca)) + np.sqrt(np.float32(cb))
    if den == 0:
        return 0.0
    return float(max(np.float32(1.0) - np.sqrt(np.float32(cx)) / den, np.float32(0.0)))


def reference_score(m: Matcher, a: Prepared, b: Prepared) -> tuple[float, list[tuple[int, int]]]:
    """LSS-R score of two prepared templates and its consolidated pairs, the slow way."""
    p = m.tables.p
    na, nb = len(a), len(b)
    if na == 0 or nb == 0:
        return 0.0, []
    min_me = p[prm.P_MIN_ME] * disk_cells(p)
    windows = _windows(a.geometry[:, G_T], b.geometry[:, G_T], p[prm.P_DELTA_THETA])
    sim = {(i, j): _local_similarity(a.words[i], b.words[j], min_me)
           for i in range(na) for j in windows[i]}

    # Greedy: the most similar pair whose probe and template cylinders are both
    # free; ties to the lower probe row, then the first in that row's scan order.
    n_r = min(na, nb, int(p[prm.P_MAX_NR]))
    pairs: list[tuple[int, int]] = []
    free_a, free_b = set(range(na)), set(range(nb))
    while len(pairs) < n_r:
        best = None
        for i in sorted(free_a):
            for j in windows[i]:
                if j in free_b and sim[i, j] > 0.0 and (best is None or sim[i, j] > best[0]):
                    best = (sim[i, j], i, j)
        if best is None:
            break
        _, i, j = best
        pairs.append((i, j))
        free_a.discard(i)
        free_b.discard(j)
    if not pairs:
        return 0.0, []
    n_p = int(m.tables.n_p[min(na, nb, len(m.tables.n_p) - 1)])
    lam0 = [float(np.float32(sim[pair])) for pair in pairs]
    r = len(pairs)
    if r < 2:
        return lam0[0] / n_p, pairs[:1]

    # Compatibility of pair k with pair h (k < h), in k's frame, through the
    # tables. The probe's half comes from lssr.probe_pairs (computed once per
    # search in float32, as the kernel reads it); the template's half here.
    lut = m.tables.lut
    pp = probe_pairs(a.geometry).astype(np.float64)
    gb = b.geometry.astype(np.float64)
    rho = np.zeros((r, r))
    for k in range(r):
        for h in range(k + 1, r):
            (ak, bk), (ah, bh) = pairs[k], pairs[h]
            da, dta, lax, lay = pp[:, ak, ah]
            dxb, dyb = gb[bh, G_X] - gb[bk, G_X], gb[bh, G_Y] - gb[bk, G_Y]
            db = math.sqrt(dxb * dxb + dyb * dyb)
            d2 = abs(_wrap(dta - _wrap(gb[bk, G_T] - gb[bh, G_T])))
            d1 = abs(da - db) - p[prm.P_REL_D_TOL_REL] * 0.5 * (da + db)
            lbx = dxb * gb[bk, G_COS] + dyb * gb[bk, G_SIN]
            lby = dyb * gb[bk, G_COS] - dxb * gb[bk, G_SIN]
            d3 = _abs_atan2.py_func(lax * lby - lay * lbx, lax * lbx + lay * lby)
            i1 = int(max(d1, 0.0) * (LUT_SIZE / LUT_D_MAX))
            c2 = lut[1, min(LUT_SIZE - 1, int(d2 * (LUT_SIZE / math.pi)))]
            if i1 < LUT_SIZE and c2 >= 1e-4:
                c3 = lut[2, min(LUT_SIZE - 1, int(d3 * (LUT_SIZE / math.pi)))]
                rho[k, h] = rho[h, k] = lut[0, i1] * c2 * c3

    # Relaxation, then the mean of the n_P most efficient pairs (ties to the first).
    w_r = p[prm.P_W_R]
    cur = list(lam0)
    for _ in range(int(p[prm.P_N_REL])):
        nxt = [0.0] * r
        for h in range(r):
            for k in range(r):
                nxt[k] += rho[h, k] * cur[h]
        cur = [w_r * cur[k] + (1.0 - w_r) / (r - 1) * nxt[k] for k in range(r)]
    efficiency = [cur[k] / lam0[k] for k in range(r)]
    order = sorted(range(r), key=lambda k: -efficiency[k])[:min(n_p, r)]
    return sum(cur[k] for k in order) / n_p, [pairs[k] for k in order]


@pytest.fixture(scope="module")
def db2(ref_data: Path) -> dict[tuple[int, int], Template]:
    return load_set(ref_data / "fvc2002" / "DB2_B")


def test_kernel_matches_the_reference(db2: dict[tuple[int, int], Template]) -> None:
    m = Matcher()
    keys = sorted(db2)
    # Mated pairs (many compatible pairs, long relaxations) and non-mated ones.
    cases = [((f, 1), (f, i)) for f in range(0, 10, 3) for i in (2, 5)]
    cases += [((f, 1), (f + 1, 3)) for f in range(0, 9, 2)]
    cases += [(keys[7], keys[70]), (keys[33], keys[12])]
    for ka, kb in cases:
        a, b = m.prepare(db2[ka]), m.prepare(db2[kb])
        got, got_pairs = m.pairs(a, b)
        want, want_pairs = reference_score(m, a, b)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (ka, kb)
        assert got_pairs == want_pairs, (ka, kb)
