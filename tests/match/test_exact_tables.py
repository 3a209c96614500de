"""The matcher's lookup tables are correctly rounded, hence the same on x86-64 and AArch64.

``agent/match/tables.json`` (shipped) is rebuilt here at 60 significant
digits instead of 40 and must agree bit for bit: a table entry whose
rounding depended on the precision, a stale file after a parameter change,
or a table built with the platform's maths library all fail.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from agent.match import exact
from agent.match import parameters as prm
from agent.match.cylinders import direction_table
from agent.match.lssr import compatibility_tables


def _ulps(a: float, b: float) -> int:
    ia = np.array(a, np.float64).view(np.int64)
    ib = np.array(b, np.float64).view(np.int64)
    return abs(int(ia) - int(ib))


def test_shipped_tables_are_the_default_parameters_tables() -> None:
    params = prm.MccParameters()
    assert exact._shipped_for(params) is not None, (
        "agent/match/tables.json is for other parameters: run `python -m agent.match tables`")


def test_shipped_tables_rebuilt_at_higher_precision_bit_for_bit() -> None:
    params = prm.MccParameters()
    shipped_dir = direction_table(params)
    shipped_compat = compatibility_tables(params)
    rebuilt_dir = exact.build_direction(params, precision=60)
    rebuilt_compat = exact.build_compatibility(params, precision=60)
    assert shipped_dir.shape == (exact.DIR_TABLE_SIZE,)
    assert shipped_compat.shape == (3, exact.LUT_SIZE)
    assert np.array_equal(shipped_dir.view(np.int64), rebuilt_dir.view(np.int64))
    assert np.array_equal(shipped_compat.view(np.int64), rebuilt_compat.view(np.int64))


@pytest.mark.parametrize(("x", "want"), [
    # published decimal expansions, rounded to a double by Python's correctly rounded parser
    (0.5, "0.520499877813046537682746653891964528736451575757963700058805725647"),
    (-1.0, "-0.842700792949714869341220635082609259296066997966302908459937897834"),
    (3.0, "0.999977909503001414558627223870417679620152292912600750342761045"),
    (1e-8, "1.12837916709551253617e-8"),
    (7.0, "1"),
])
def test_erf_known_values(x: float, want: str) -> None:
    assert exact.erf(x) == float(want)


def test_erf_and_exp_agree_with_the_maths_library_within_one_ulp() -> None:
    # The library is not correctly rounded, but never more than an ulp off.
    for x in np.linspace(-6.5, 6.5, 301):
        assert _ulps(exact.erf(float(x)), math.erf(float(x))) <= 1, x
    for x in np.linspace(-40.0, 40.0, 301):
        assert _ulps(exact.exp(float(x)), math.exp(float(x))) <= 1, x
    assert exact.exp(1.0) == math.e and exact.exp(0.0) == 1.0


def test_other_parameters_are_computed_not_loaded() -> None:
    params = replace(prm.MccParameters(), rel_tau2=-25.0)
    assert exact._shipped_for(params) is None
    table = compatibility_tables(params)
    assert table.shape == (3, exact.LUT_SIZE)
    assert not np.array_equal(table[1], compatibility_tables(prm.MccParameters())[1])
    assert np.array_equal(table[0], compatibility_tables(prm.MccParameters())[0])
