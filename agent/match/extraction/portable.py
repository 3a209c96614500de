"""Elementary functions that give the same bits on every platform.

The extractor used the platform's ``sin``, ``cos``, ``atan2`` and ``exp``:
glibc's (with FMA variants picked at run time on x86-64) inside the Numba
kernels, and NumPy's own SIMD loops (AVX-512, SVML on x86-64; NEON or libm
on AArch64) on arrays. Those differ in the last bit between the kiosk and
the workstation, and an orientation, a Gabor kernel or a sampling position
one ulp off can move a pixel across a rounding boundary.

These are written with IEEE-754 +, -, *, / and sqrt only, which every
platform rounds alike (Numba compiles without fast-math, so nothing is
fused or reordered); constants come from :mod:`agent.match.exact` (decimal
arithmetic), not from the platform. Accuracy is about one ulp of a double,
so where the extractor keeps a float32 the result is the correctly rounded
float32 but for about one input in 10^8 (tests/match/test_portable_math.py
checks both against decimal arithmetic). ``sin`` and ``cos`` take
arguments up to ``TRIG_LIMIT`` (the extractor's are angles, under 20).
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from functools import cache

import numpy as np
from numpy.typing import NDArray

from agent.match import exact
from agent.runtime.jit import njit

#: Largest |x| for sin and cos: k * _PIO2_1 stays exact while |k| < 2^20.
TRIG_LIMIT = 2.0**19


def _split(value: Decimal, bits: int) -> float:
    """``value`` rounded to a double of ``bits`` significant bits (so multiples stay exact)."""
    _, e = math.frexp(float(value))
    scale = Decimal(2) ** (bits - e)
    return float((value * scale).to_integral_value() / scale)


def _constants() -> tuple[float, ...]:
    with localcontext() as ctx:
        ctx.prec = 60
        pio2 = exact.PI / 2
        p1 = _split(pio2, 33)
        p2 = _split(pio2 - Decimal(p1), 33)
        p3 = float(pio2 - Decimal(p1) - Decimal(p2))
        ln2 = Decimal(2).ln()
        l1 = _split(ln2, 32)
        l2 = float(ln2 - Decimal(l1))
        pi_hi = float(exact.PI)
        pi_lo = float(exact.PI - Decimal(pi_hi))
        pio2_hi = float(pio2)
        pio2_lo = float(pio2 - Decimal(pio2_hi))
        return (p1, p2, p3, float(2 / exact.PI), l1, l2, float(1 / ln2),
                pi_hi, pi_lo, pio2_hi, pio2_lo)


(_PIO2_1, _PIO2_2, _PIO2_3, _TWO_OVER_PI, _LN2_HI, _LN2_LO, _INV_LN2,
 _PI_HI, _PI_LO, _PIO2_HI, _PIO2_LO) = _constants()

# Taylor coefficients (1/n! and 1/(2n+1)), each the double nearest the exact fraction.
_SIN = np.array([(-1) ** n / math.factorial(2 * n + 1) for n in range(1, 10)], np.float64)
_COS = np.array([(-1) ** n / math.factorial(2 * n) for n in range(1, 10)], np.float64)
_EXP = np.array([1.0 / math.factorial(n) for n in range(18)], np.float64)
_ATAN = np.array([(-1) ** n / (2 * n + 1) for n in range(1, 9)], np.float64)
#: atan(j/8), j = 0..8, as a head and a tail (|t - j/8| <= 1/16 after the split).
_ATAN_STEPS = 8
_ATAN_HI = np.empty(_ATAN_STEPS + 1, np.float64)
_ATAN_LO = np.empty(_ATAN_STEPS + 1, np.float64)
for _j in range(_ATAN_STEPS + 1):
    _d = exact.atan_decimal(Decimal(_j) / _ATAN_STEPS)
    _ATAN_HI[_j] = float(_d)
    _ATAN_LO[_j] = float(_d - Decimal(_ATAN_HI[_j]))


@njit
def _horner(c: NDArray[np.float64], z: float) -> float:
    """c[0] + c[1] z + c[2] z^2 + ..., innermost term first."""
    p: float = c[-1]
    for i in range(len(c) - 2, -1, -1):
        p = p * z + c[i]
    return p


@njit
def _sin_poly(r: float) -> float:
    z = r * r
    return r + r * z * _horner(_SIN, z)


@njit
def _cos_poly(r: float) -> float:
    z = r * r
    return 1.0 + z * _horner(_COS, z)


@njit
def _reduce(x: float) -> tuple[float, int]:
    """r and k with x = k * pi/2 + r, |r| <= pi/4 (+ a rounding)."""
    if not abs(x) <= TRIG_LIMIT:
        raise ValueError("portable sin/cos: argument is not finite or beyond 2^19")
    k = math.floor(x * _TWO_OVER_PI + 0.5)
    r = ((x - k * _PIO2_1) - k * _PIO2_2) - k * _PIO2_3
    return r, int(k) & 3


@njit
def _quadrant(r: float, q: int) -> float:
    """sin(q * pi/2 + r): sin, cos, -sin, -cos of r by quadrant."""
    if q == 0:
        return _sin_poly(r)
    if q == 1:
        return _cos_poly(r)
    if q == 2:
        return -_sin_poly(r)
    return -_cos_poly(r)


@njit
def sin(x: float) -> float:
    """sin(x) for |x| <= TRIG_LIMIT, within about one ulp, the same on every platform."""
    r, q = _reduce(x)
    return _quadrant(r, q)


@njit
def cos(x: float) -> float:
    """cos(x) for |x| <= TRIG_LIMIT, within about one ulp, the same on every platform."""
    r, q = _reduce(x)
    return _quadrant(r, (q + 1) & 3)


@njit
def _atan_unit(t: float) -> float:
    """atan(t) for 0 <= t <= 1: atan(j/8) + atan((t - j/8) / (1 + t j/8))."""
    j = int(t * _ATAN_STEPS + 0.5)
    c = j / _ATAN_STEPS
    u = (t - c) / (1.0 + t * c)
    z = u * u
    p = _horner(_ATAN, z)
    head: float = _ATAN_HI[j]
    tail: float = _ATAN_LO[j]
    return head + (tail + (u + u * z * p))


@njit
def atan2(y: float, x: float) -> float:
    """The angle of (x, y) in [-pi, pi], IEEE's signed-zero and infinity cases included."""
    if math.isnan(x) or math.isnan(y):
        return x + y
    ax = abs(x)
    ay = abs(y)
    negative_x = x < 0.0 or (x == 0.0 and math.copysign(1.0, x) < 0.0)
    if ay == 0.0:
        a = _PI_HI if negative_x else 0.0
    elif ax == math.inf and ay == math.inf:
        a = 0.25 * _PI_HI if not negative_x else 0.75 * _PI_HI
    elif ax == math.inf:
        a = _PI_HI if negative_x else 0.0
    elif ax == 0.0:
        a = _PIO2_HI
    else:
        a = _atan_unit(ay / ax) if ay <= ax else _PIO2_HI - (_atan_unit(ax / ay) - _PIO2_LO)
        if negative_x:
            a = _PI_HI - (a - _PI_LO)
    return math.copysign(a, y)


@njit
def exp(x: float) -> float:
    """e**x within about one ulp, the same on every platform (0 below -745, inf above 709.8)."""
    if math.isnan(x):
        return x
    if x > 709.8:
        return math.inf
    if x < -745.2:
        return 0.0
    k = math.floor(x * _INV_LN2 + 0.5)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    return math.ldexp(_horner(_EXP, r), int(k))


@njit
def _map_sin(v: NDArray[np.float64], out: NDArray[np.float64]) -> None:
    for i in range(v.size):
        out[i] = sin(v[i])


@njit
def _map_cos(v: NDArray[np.float64], out: NDArray[np.float64]) -> None:
    for i in range(v.size):
        out[i] = cos(v[i])


@njit
def _map_exp(v: NDArray[np.float64], out: NDArray[np.float64]) -> None:
    for i in range(v.size):
        out[i] = exp(v[i])


@njit
def _map_atan2(y: NDArray[np.float64], x: NDArray[np.float64], out: NDArray[np.float64]) -> None:
    for i in range(y.size):
        out[i] = atan2(y[i], x[i])


def _flat(v: NDArray[np.floating] | float) -> NDArray[np.float64]:
    # One contiguous 1-D float64 signature per kernel: the warm-up compiles it once.
    return np.ascontiguousarray(v, dtype=np.float64).ravel()


def sin_array(v: NDArray[np.floating] | float) -> NDArray[np.float64]:
    """:func:`sin` of every element (computed in double precision)."""
    a = _flat(v)
    out = np.empty_like(a)
    _map_sin(a, out)
    return out.reshape(np.shape(v))


def cos_array(v: NDArray[np.floating] | float) -> NDArray[np.float64]:
    """:func:`cos` of every element (computed in double precision)."""
    a = _flat(v)
    out = np.empty_like(a)
    _map_cos(a, out)
    return out.reshape(np.shape(v))


def exp_array(v: NDArray[np.floating] | float) -> NDArray[np.float64]:
    """:func:`exp` of every element (computed in double precision)."""
    a = _flat(v)
    out = np.empty_like(a)
    _map_exp(a, out)
    return out.reshape(np.shape(v))


def atan2_array(y: NDArray[np.floating], x: NDArray[np.floating]) -> NDArray[np.float64]:
    """:func:`atan2` elementwise over ``y`` and ``x`` broadcast together."""
    yy, xx = np.broadcast_arrays(np.asarray(y, np.float64), np.asarray(x, np.float64))
    a, b = _flat(yy), _flat(xx)
    out = np.empty_like(a)
    _map_atan2(a, b, out)
    return out.reshape(yy.shape)


@cache
def atan2_grid(radius: int) -> NDArray[np.float64]:
    """``atan2(dy, dx)`` correctly rounded for every integer |dy|, |dx| <= ``radius``.

    Indexed ``[dy + radius, dx + radius]``: the direction of a traced ridge
    from one skeleton pixel to another, so exact and the same everywhere.
    """
    out = np.empty((2 * radius + 1, 2 * radius + 1), np.float64)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out[dy + radius, dx + radius] = exact.atan2(float(dy), float(dx))
    return out
