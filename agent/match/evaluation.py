"""FVC accuracy protocol, reusable by the matcher and the extractor work.

The protocol (``hardware_sim/data/README.md``, FVC2002 rules) per set of
10 fingers x 8 impressions:

* genuine: every pair (i < j) of impressions of one finger (280 comparisons);
* impostor, FVC variant: impression 1 of each finger against impression 1 of
  every other finger (45);
* impostor, wide variant: every cross-finger pair (2,880), because 45 impostor
  scores cannot resolve low false-match rates.

Error rates follow the FVC definitions: ``FMR(t)`` is the share of impostor
scores ``>= t``, ``FNMR(t)`` the share of genuine scores ``< t``; EER is the
FVC interval estimate; FMR100 / FMR1000 are the lowest FNMR with
``FMR <= 1 %`` / ``0.1 %``; ZeroFMR the lowest FNMR with ``FMR = 0``.

Usage::

    from agent.match.evaluation import evaluate_dirs, format_markdown
    results = evaluate_dirs(matcher.compare, [Path(".../DB1_B"), ...])
    print(format_markdown(results))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from agent.match.codecs import load_template
from agent.match.template import Template

Key = tuple[int, int]
"""(finger index 0-based, impression number 1-based)."""

Compare = Callable[[Template, Template], float]

_NAME = re.compile(r"^(\d+)_(\d+)\.(iso|ist|ansi|fmr)$")


@dataclass(frozen=True)
class Rates:
    """Error rates of one score distribution pair (all as fractions, not %)."""

    eer: float
    fmr100: float
    fmr1000: float
    zero_fmr: float
    n_genuine: int
    n_impostor: int


@dataclass(frozen=True)
class SetResult:
    """Accuracy of one data set under both impostor variants."""

    name: str
    fvc: Rates
    wide: Rates
    max_asymmetry: float
    genuine: NDArray[np.float64]
    impostor_fvc: NDArray[np.float64]
    impostor_wide: NDArray[np.float64]


def protocol_pairs(
    n_fingers: int = 10, n_impressions: int = 8
) -> tuple[list[tuple[Key, Key]], list[tuple[Key, Key]], list[tuple[Key, Key]]]:
    """The genuine, FVC-impostor and wide-impostor pairs of the protocol."""
    genuine = [
        ((f, i), (f, j))
        for f in range(n_fingers)
        for i in range(1, n_impressions + 1)
        for j in range(i + 1, n_impressions + 1)
    ]
    fvc = [((f, 1), (g, 1)) for f in range(n_fingers) for g in range(f + 1, n_fingers)]
    keys = [(f, i) for f in range(n_fingers) for i in range(1, n_impressions + 1)]
    wide = [
        (a, b) for ia, a in enumerate(keys) for b in keys[ia + 1 :] if a[0] != b[0]
    ]
    return genuine, fvc, wide


def load_set(
    directory: Path, loader: Callable[[Path], Template] | None = None
) -> dict[Key, Template]:
    """Templates of one FVC-style folder (``NNN_M.iso``), keyed by (finger, impression).

    Fingers are renumbered 0.. in sorted order of their file numbers.
    ``loader`` turns a path into a template (default: decode the minutiae
    record); the extractor work passes one that reads and extracts a PNG.
    """
    load = loader or (lambda p: load_template(p.read_bytes()))
    found: dict[tuple[int, int], Path] = {}
    for p in sorted(directory.iterdir()):
        m = _NAME.match(p.name)
        if m and (loader is not None or m.group(3) != "png"):
            found[(int(m.group(1)), int(m.group(2)))] = p
    if not found:
        raise FileNotFoundError(f"no NNN_M.iso templates in {directory}")
    fingers = sorted({f for f, _ in found})
    index = {f: k for k, f in enumerate(fingers)}
    return {(index[f], i): load(p) for (f, i), p in found.items()}


def error_rates(genuine: Sequence[float] | NDArray[np.float64],
                impostor: Sequence[float] | NDArray[np.float64]) -> Rates:
    """FVC error rates of a genuine and an impostor score distribution."""
    gen = np.sort(np.asarray(genuine, np.float64))
    imp = np.sort(np.asarray(impostor, np.float64))
    if len(gen) == 0 or len(imp) == 0:
        raise ValueError("both score distributions must be non-empty")
    thresholds = np.unique(np.concatenate([gen, imp, [np.inf]]))
    # FMR(t): share of impostors >= t; FNMR(t): share of genuines < t.
    fmr = 1.0 - np.searchsorted(imp, thresholds, side="left") / len(imp)
    fnmr = np.searchsorted(gen, thresholds, side="left") / len(gen)

    # FVC EER: t1 = largest t with FNMR <= FMR, t2 = smallest t with FNMR >= FMR.
    le = np.nonzero(fnmr <= fmr)[0]
    ge = np.nonzero(fnmr >= fmr)[0]
    i1 = int(le[-1]) if len(le) else 0
    i2 = int(ge[0]) if len(ge) else len(thresholds) - 1
    if fnmr[i1] + fmr[i1] <= fnmr[i2] + fmr[i2]:
        low, high = fnmr[i1], fmr[i1]
    else:
        low, high = fmr[i2], fnmr[i2]
    eer = float((low + high) / 2.0)

    def at_fmr(limit: float) -> float:
        ok = fmr <= limit + 1e-12
        return float(fnmr[ok].min()) if ok.any() else 1.0

    return Rates(
        eer=eer,
        fmr100=at_fmr(0.01),
        fmr1000=at_fmr(0.001),
        zero_fmr=at_fmr(0.0),
        n_genuine=len(gen),
        n_impostor=len(imp),
    )


def evaluate_set(name: str, compare: Compare, templates: Mapping[Key, Template]) -> SetResult:
    """Run the full protocol on one set; also measures score symmetry on genuine pairs."""
    n_fingers = 1 + max(f for f, _ in templates)
    n_imp = max(i for _, i in templates)
    genuine_pairs, fvc_pairs, wide_pairs = protocol_pairs(n_fingers, n_imp)
    missing = [k for pair in genuine_pairs for k in pair if k not in templates]
    if missing:
        raise KeyError(f"{name}: templates missing for {sorted(set(missing))[:5]}")
    gen = np.array([compare(templates[a], templates[b]) for a, b in genuine_pairs])
    rev = np.array([compare(templates[b], templates[a]) for a, b in genuine_pairs])
    wide = np.array([compare(templates[a], templates[b]) for a, b in wide_pairs])
    wide_index = {pair: k for k, pair in enumerate(wide_pairs)}
    fvc = np.array([wide[wide_index[p]] for p in fvc_pairs])
    return SetResult(
        name=name,
        fvc=error_rates(gen, fvc),
        wide=error_rates(gen, wide),
        max_asymmetry=float(np.max(np.abs(gen - rev))),
        genuine=gen,
        impostor_fvc=fvc,
        impostor_wide=wide,
    )


def evaluate_dirs(compare: Compare, directories: Sequence[Path],
                  loader: Callable[[Path], Template] | None = None) -> list[SetResult]:
    """Evaluate every folder (one FVC set each) with the same comparator."""
    return [evaluate_set(d.name, compare, load_set(d, loader)) for d in directories]


def average(results: Sequence[SetResult], variant: str = "wide") -> Rates:
    """Arithmetic mean of the per-set rates (the FVC 'average' figure)."""
    rates = [r.wide if variant == "wide" else r.fvc for r in results]
    return Rates(
        eer=float(np.mean([r.eer for r in rates])),
        fmr100=float(np.mean([r.fmr100 for r in rates])),
        fmr1000=float(np.mean([r.fmr1000 for r in rates])),
        zero_fmr=float(np.mean([r.zero_fmr for r in rates])),
        n_genuine=sum(r.n_genuine for r in rates),
        n_impostor=sum(r.n_impostor for r in rates),
    )


def format_markdown(results: Sequence[SetResult]) -> str:
    """A Markdown table of per-set and average rates for both impostor variants."""
    lines = [
        "| set | impostors | EER % | FMR100 % | FMR1000 % | ZeroFMR % | max asym. |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(name: str, variant: str, r: Rates, asym: str) -> str:
        return (
            f"| {name} | {variant} ({r.n_impostor}) | {100 * r.eer:.2f} | {100 * r.fmr100:.2f} | "
            f"{100 * r.fmr1000:.2f} | {100 * r.zero_fmr:.2f} | {asym} |"
        )

    for res in results:
        lines.append(row(res.name, "FVC", res.fvc, f"{res.max_asymmetry:.2g}"))
        lines.append(row(res.name, "all", res.wide, ""))
    if len(results) > 1:
        lines.append(row("**average**", "FVC", average(results, "fvc"), ""))
        lines.append(row("**average**", "all", average(results, "wide"), ""))
    return "\n".join(lines)
