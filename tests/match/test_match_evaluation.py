"""FVC protocol bookkeeping and error-rate arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from agent.match.evaluation import error_rates, protocol_pairs


def test_protocol_pair_counts() -> None:
    genuine, fvc, wide = protocol_pairs()
    assert (len(genuine), len(fvc), len(wide)) == (280, 45, 2880)
    assert all(a[0] == b[0] and a[1] < b[1] for a, b in genuine)
    assert all(a[0] != b[0] for a, b in wide)
    assert set(fvc) <= set(wide)


def test_perfect_separation() -> None:
    r = error_rates([0.8, 0.9, 0.7], [0.1, 0.2, 0.3])
    assert (r.eer, r.fmr100, r.fmr1000, r.zero_fmr) == (0.0, 0.0, 0.0, 0.0)


def test_known_overlap() -> None:
    # 10 genuine 1..10, 10 impostor 0.5..9.5: the curves cross near 50 %.
    gen = np.arange(1, 11, dtype=float)
    imp = np.arange(10, dtype=float) + 0.5
    r = error_rates(gen, imp)
    assert r.eer == pytest.approx(0.45, abs=0.06)
    assert r.zero_fmr == pytest.approx(0.9)  # only genuine 10 is above every impostor


def test_fmr_points_use_fvc_definitions() -> None:
    imp = np.linspace(0, 1, 1000)  # FMR(t) = share >= t
    gen = np.array([0.9995, 0.995, 0.5, 0.1])
    r = error_rates(gen, imp)
    # FMR <= 0.1 % needs t above the 2nd-highest impostor (998/999): only 0.9995 passes.
    assert r.fmr1000 == pytest.approx(0.75)
    # FMR <= 1 % needs t above 989/999: 0.9995 and 0.995 pass.
    assert r.fmr100 == pytest.approx(0.5)
    with pytest.raises(ValueError, match="non-empty"):
        error_rates([], [0.1])
