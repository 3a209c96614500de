"""The matcher's lookup tables, the same on every machine.

The direction table of the cylinders (``erf``) and the relaxation's
compatibility tables (``exp``) used to be built with the platform's maths
library, and x86-64 and AArch64 disagree in the last bit of some entries
(glibc's ``erf``, NumPy's SIMD ``exp``): a kiosk and the workstation that
evaluated the matcher then gave scores differing in the last bit. Here
``exp`` and ``erf`` are computed in decimal arithmetic to 40 significant
digits and rounded once to the nearest double, i.e. correctly rounded, and
everything around them is IEEE +, -, *, / which every platform rounds alike.

Computing ``erf`` that way takes a few seconds, so the tables of the default
parameters are shipped in ``tables.json`` (exact hexadecimal doubles) and
only rebuilt at start when the parameters differ;
``python -m agent.match tables`` rewrites the file and
tests/match/test_exact_tables.py rebuilds it at higher precision and compares
bit for bit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict
from decimal import Decimal, localcontext
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agent.match import parameters as prm

TABLES_FILE = Path(__file__).with_name("tables.json")
#: Significant digits of the decimal computation; a double needs 17, the rest
#: is margin for the last rounding (the test rebuilds at 60 and compares).
PRECISION = 40
#: pi to 75 digits (the decimal computations below, and agent/match/extraction/portable.py).
PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494459230781640628")
#: |x| beyond which erf(x) rounds to +-1 in double precision (erfc(6) < 2.2e-17).
_ERF_ONE = 6.0


def exp(x: float, precision: int = PRECISION) -> float:
    """e**x correctly rounded to a double."""
    with localcontext() as ctx:
        ctx.prec = precision
        return float(Decimal(x).exp())


def erf(x: float, precision: int = PRECISION) -> float:
    """erf(x) correctly rounded to a double.

    Series ``erf(x) = 2/sqrt(pi) * exp(-x^2) * sum 2^n x^(2n+1) / (1*3*...*(2n+1))``:
    all terms have the sign of x, so nothing cancels and ``precision`` digits hold.
    """
    if x == 0.0 or abs(x) >= _ERF_ONE:
        return x if x == 0.0 else math.copysign(1.0, x)
    with localcontext() as ctx:
        ctx.prec = precision + 5
        d = Decimal(x)
        d2 = d * d
        term = total = d
        n = 0
        stop = Decimal(10) ** -(precision + 3) * abs(d)
        while abs(term) > stop:
            n += 1
            term = term * 2 * d2 / (2 * n + 1)
            total += term
        value = 2 / PI.sqrt() * (-d2).exp() * total
        ctx.prec = precision
        return float(+value)


def atan_decimal(x: Decimal, precision: int = PRECISION) -> Decimal:
    """atan(x) to ``precision`` significant digits, in decimal arithmetic.

    |x| > 1 is folded by atan(x) = pi/2 - atan(1/x); two halvings
    (atan(x) = 2 atan(x / (1 + sqrt(1 + x^2)))) bring x under tan(pi/16) before
    the alternating series, whose terms then shrink by 25 at least.
    """
    with localcontext() as ctx:
        ctx.prec = precision + 10
        sign = -1 if x < 0 else 1
        d = abs(x)
        folded = d > 1
        if folded:
            d = 1 / d
        for _ in range(2):
            d = d / (1 + (1 + d * d).sqrt())
        d2 = d * d
        term = total = d
        n = 0
        stop = Decimal(10) ** -(precision + 5) * d
        while abs(term) > stop:
            n += 1
            term = -term * d2
            total += term / (2 * n + 1)
        value = 4 * total
        if folded:
            value = PI / 2 - value
        return +(sign * value)


def atan2(y: float, x: float, precision: int = PRECISION) -> float:
    """atan2(y, x) of finite doubles, correctly rounded to a double (atan2(0, 0) = 0)."""
    if y == 0.0:
        return math.copysign(math.pi if math.copysign(1.0, x) < 0 else 0.0, y)
    if x == 0.0:
        return math.copysign(math.pi / 2, y)
    with localcontext() as ctx:
        ctx.prec = precision + 10
        a = atan_decimal(Decimal(y) / Decimal(x), precision + 5)
        if x < 0:
            a = a + PI if y > 0 else a - PI
        ctx.prec = precision
        return float(+a)


def _apply(f: Callable[[float, int], float], v: NDArray[np.floating[Any]],
           precision: int) -> NDArray[np.float64]:
    return np.array([f(float(e), precision) for e in v.ravel()], np.float64).reshape(v.shape)


#: Entries of the directional-contribution table over [-pi, pi).
DIR_TABLE_SIZE = 4096
#: Entries per compatibility table (distance and the two angle terms).
LUT_SIZE = 1024
#: Distance differences (px) covered by the distance table; beyond it the term is ~0.
LUT_D_MAX = 64.0


def build_direction(params: prm.MccParameters, precision: int = PRECISION) -> NDArray[np.float64]:
    """Share of a Gaussian (sigma_d) of direction differences falling in one layer's bin.

    Indexed by the difference between a layer's centre and a neighbour's
    relative direction over [-pi, pi) in ``DIR_TABLE_SIZE`` steps.
    """
    delta_d = 2.0 * math.pi / params.nd
    k = 1.0 / (params.sigma_d * math.sqrt(2.0))
    diff = -math.pi + (np.arange(DIR_TABLE_SIZE) + 0.5) * (2.0 * math.pi / DIR_TABLE_SIZE)
    hi = _apply(erf, (diff + delta_d / 2) * k, precision)
    lo = _apply(erf, (diff - delta_d / 2) * k, precision)
    return np.asarray(0.5 * (hi - lo), np.float64)


def build_compatibility(params: prm.MccParameters,
                        precision: int = PRECISION) -> NDArray[np.float64]:
    """Sigmoid tables of the relaxation's three compatibility terms, (3, LUT_SIZE).

    Row 0 is indexed by distance difference in steps of ``LUT_D_MAX / LUT_SIZE``
    px, rows 1 and 2 by angle difference in steps of ``pi / LUT_SIZE``.
    """
    d = (np.arange(LUT_SIZE, dtype=np.float64) + 0.5) * (LUT_D_MAX / LUT_SIZE)
    a = (np.arange(LUT_SIZE, dtype=np.float64) + 0.5) * (math.pi / LUT_SIZE)

    def sig(v: NDArray[np.float64], mu: float, tau: float) -> NDArray[np.float64]:
        return np.asarray(1.0 / (1.0 + _apply(exp, -tau * (v - mu), precision)), np.float64)

    return np.stack([
        sig(d, params.rel_mu1, params.rel_tau1),
        sig(a, params.rel_mu2, params.rel_tau2),
        sig(a, params.rel_mu3, params.rel_tau3),
    ])


def build_pairs(params: prm.MccParameters, max_len: int = 256) -> NDArray[np.int64]:
    """n_P (pairs averaged into the score) for every smaller-template size up to ``max_len``:
    ``min_np + round(sigmoid(n; mu_p, tau_p) * (max_np - min_np))``."""
    n = np.arange(max_len + 1, dtype=np.float64)
    sig = 1.0 / (1.0 + _apply(exp, -params.tau_p * (n - params.mu_p), PRECISION))
    return np.asarray(params.min_np + np.round(sig * (params.max_np - params.min_np)), np.int64)


def _key(params: prm.MccParameters) -> dict[str, float]:
    """The parameters the shipped tables depend on, as stored in ``tables.json``."""
    fields = asdict(params)
    return {name: float(fields[name]) for name in (
        "nd", "sigma_d", "rel_mu1", "rel_tau1", "rel_mu2", "rel_tau2", "rel_mu3", "rel_tau3")}


def _encode(params: prm.MccParameters, direction: NDArray[np.float64],
            compatibility: NDArray[np.float64]) -> str:
    doc = {
        "about": "agent/match/exact.py: correctly rounded tables; python -m agent.match tables",
        "params": {k: v.hex() for k, v in _key(params).items()},
        "direction": [float(v).hex() for v in direction],
        "compatibility": [[float(v).hex() for v in row] for row in compatibility],
    }
    return json.dumps(doc, indent=0) + "\n"


@cache
def _shipped() -> dict[str, object]:
    doc: dict[str, object] = json.loads(TABLES_FILE.read_text())
    return doc


def _shipped_for(params: prm.MccParameters) -> dict[str, object] | None:
    try:
        doc = _shipped()
    except (OSError, ValueError):
        return None
    wanted = {k: v.hex() for k, v in _key(params).items()}
    return doc if doc.get("params") == wanted else None


def _load_or_build(params: prm.MccParameters, name: str,
                   build: Callable[[prm.MccParameters], NDArray[np.float64]]
                   ) -> NDArray[np.float64]:
    """Table ``name`` from ``tables.json`` when it is for ``params``, else ``build(params)``."""
    doc = _shipped_for(params)
    if doc is None:
        return build(params)
    hexes = np.array(doc[name], str)
    return np.asarray(np.vectorize(float.fromhex, otypes=[np.float64])(hexes), np.float64)


def direction_table(params: prm.MccParameters) -> NDArray[np.float64]:
    """The direction table of ``params``: shipped for the defaults, else computed exactly."""
    return _load_or_build(params, "direction", build_direction)


def compatibility_tables(params: prm.MccParameters) -> NDArray[np.float64]:
    """The compatibility tables of ``params``: shipped for the defaults, else computed exactly."""
    return _load_or_build(params, "compatibility", build_compatibility)


def write_tables() -> int:
    """Rewrite ``tables.json`` for the default parameters (``python -m agent.match tables``)."""
    params = prm.MccParameters()
    TABLES_FILE.write_text(_encode(params, build_direction(params), build_compatibility(params)))
    print(f"wrote {TABLES_FILE}")
    return 0

