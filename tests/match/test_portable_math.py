"""The extractor's elementary functions: accurate, and independent of the platform's maths.

``agent/match/extraction/portable.py`` replaces libm's and NumPy's sin, cos,
atan2 and exp in the extractor so that the kiosk (AArch64) and x86-64
extract the same minutiae bit for bit (tests/images/test_arm64_extraction.py
checks that under emulation). Here: each function against decimal
arithmetic, the integer direction table against a rebuild at higher
precision, and the whole extraction against NumPy with its SIMD loops
switched off (a different maths library on the same machine).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np
import pytest

from agent.match import exact
from agent.match.extraction import portable

REPO = Path(__file__).resolve().parents[2]


def _taylor(x: float, first: int) -> float:
    """sin (first=1) or cos (first=0) of the double ``x``, correctly rounded, by its series."""
    with localcontext() as ctx:
        ctx.prec = 60
        d = Decimal(x)
        term = d if first else Decimal(1)
        total = Decimal(0)
        n = first
        while abs(term) > Decimal(10) ** -55:
            total += term
            term = -term * d * d / ((n + 1) * (n + 2))
            n += 2
        return float(total)


def _ulps(a: float, b: float) -> int:
    ia = int(np.array(a, np.float64).view(np.int64))
    ib = int(np.array(b, np.float64).view(np.int64))
    return abs(ia - ib)


ARGS = np.random.default_rng(21).uniform(-20.0, 20.0, 400)


@pytest.mark.parametrize(("fn", "ref"), [
    (portable.sin, lambda x: _taylor(x, 1)),
    (portable.cos, lambda x: _taylor(x, 0)),
    (portable.exp, exact.exp),
])
def test_within_one_ulp_of_decimal_arithmetic(fn: object, ref: object) -> None:
    assert callable(fn) and callable(ref)
    worst = max(_ulps(fn(float(x)), ref(float(x))) for x in ARGS)
    assert worst <= 1


def test_atan2_within_one_ulp_in_every_quadrant() -> None:
    rng = np.random.default_rng(4)
    ys = np.concatenate([rng.uniform(-5, 5, 300), rng.uniform(-1e-3, 1e-3, 50)])
    xs = np.concatenate([rng.uniform(-5, 5, 300), rng.uniform(-1e3, 1e3, 50)])
    worst = max(_ulps(portable.atan2(float(y), float(x)), exact.atan2(float(y), float(x)))
                for y, x in zip(ys, xs, strict=True))
    assert worst <= 1


@pytest.mark.parametrize(("y", "x", "want"), [
    (0.0, 0.0, 0.0), (-0.0, 0.0, -0.0), (0.0, -0.0, math.pi), (-0.0, -1.0, -math.pi),
    (1.0, 0.0, math.pi / 2), (1.0, -0.0, math.pi / 2), (-2.0, 0.0, -math.pi / 2),
    (1.0, math.inf, 0.0), (1.0, -math.inf, math.pi), (math.inf, 1.0, math.pi / 2),
    (1.0, 1.0, math.pi / 4), (-1.0, -1.0, -3 * math.pi / 4),
])
def test_atan2_special_cases(y: float, x: float, want: float) -> None:
    got = portable.atan2(y, x)
    assert got == want and math.copysign(1.0, got) == math.copysign(1.0, want)


def test_float32_results_are_correctly_rounded() -> None:
    # What the extractor keeps is float32: a double within an ulp rounds to
    # the correctly rounded float32 but in about one case in 10^8.
    t = np.random.default_rng(7).uniform(0, 2 * np.pi, 2000).astype(np.float32)
    got = portable.cos_array(t).astype(np.float32)
    want = np.array([_taylor(float(v), 0) for v in t]).astype(np.float32)
    assert np.array_equal(got, want)


def test_trig_refuses_arguments_it_cannot_reduce() -> None:
    with pytest.raises(ValueError, match="2\\^19"):
        portable.sin(1e7)
    assert math.isnan(portable.exp(math.nan))


def test_integer_direction_table_rebuilt_at_higher_precision_bit_for_bit() -> None:
    grid = portable.atan2_grid(12)
    assert grid.shape == (25, 25)
    for dy in range(-12, 13):
        for dx in range(-12, 13):
            want = exact.atan2(float(dy), float(dx), precision=60)
            assert grid[dy + 12, dx + 12] == want, (dy, dx)


def test_decimal_atan_known_values() -> None:
    with localcontext() as ctx:
        ctx.prec = 50
        assert abs(exact.atan_decimal(Decimal(1), 45) - exact.PI / 4) < Decimal(10) ** -44
        third = exact.atan_decimal(Decimal(3).sqrt(), 45) - exact.PI / 3
        assert abs(third) < Decimal(10) ** -44


def _dispatched_simd() -> list[str]:
    """NumPy's SIMD targets beyond its baseline that this CPU runs."""
    try:
        from numpy._core._multiarray_umath import (  # type: ignore[attr-defined]
            __cpu_dispatch__,
            __cpu_features__,
        )
    except ImportError:  # NumPy moved its private module: nothing to switch off by name
        return []
    return [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]


def test_extraction_does_not_depend_on_numpys_simd_loops(tmp_path: Path) -> None:
    # NumPy's transcendental loops differ by an ulp between its SIMD targets
    # (AVX-512 and SVML here, NEON or libm on the kiosk): with them switched
    # off every stage of every image must still be bit for bit the same.
    # Before the portable functions, the orientation stage differed in all
    # 80 images.
    found = _dispatched_simd()
    if not found:
        pytest.skip("NumPy runs no SIMD target beyond its baseline on this CPU")
    outs = []
    for name, disabled in (("simd", ""), ("baseline", " ".join(found))):
        out = tmp_path / f"{name}.txt"
        env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": disabled}
        subprocess.run([sys.executable, "-m", "benchmarks.fvc_minutiae", "--stages", str(out)],
                       cwd=REPO, env=env, check=True, timeout=900, capture_output=True)
        outs.append(out.read_text().splitlines())
    assert len(outs[0]) == 80
    differ = [a.split()[:2] for a, b in zip(*outs, strict=True) if a != b]
    assert not differ, f"{len(differ)} images differ with NumPy's SIMD off, e.g. {differ[:3]}"
