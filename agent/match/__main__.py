"""Command line: ``python -m agent.match {compare,eval,show,calibrate} ...``.

* ``compare A B`` - score two template files (any supported format) and the
  decision at the default verification FMR.
* ``eval DIR...`` - FVC protocol on each folder of ``NNN_M.iso`` templates.
* ``show A [B] [--image X.png] [--image-b Y.png] [--out out.png]`` - draw
  minutiae, and the pairs of a comparison.
* ``tables`` - rewrite ``agent/match/tables.json`` (the correctly rounded
  lookup tables of the default parameters, :mod:`agent.match.exact`) after a
  parameter change.
* ``calibrate DIR...`` - impostor score distribution of every non-mated pair
  across the folders (one folder = one sensor), fitted as
  :func:`agent.match.calibration.fit` does; prints the ``CALIBRATION`` and
  ``SCALED_CALIBRATION`` blocks for ``agent/match/parameters.py`` (the
  shipped ones also cover the kiosk's extraction: ``python -m benchmarks
  match`` prints them).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from agent.match import exact
from agent.match import parameters as prm
from agent.match.calibration import fit, source
from agent.match.codecs import load_template
from agent.match.evaluation import average, evaluate_set, format_markdown, load_set
from agent.match.matcher import Matcher, Prepared
from agent.match.scale import rescaled
from agent.match.template import Template, TemplateError


def _load(path: str) -> Template:
    return load_template(Path(path).read_bytes())


def cmd_compare(args: argparse.Namespace) -> int:
    a, b = _load(args.a), _load(args.b)
    score = Matcher().compare(a, b)
    t = prm.threshold(args.fmr)
    verdict = "MATCH" if score >= t else "NO MATCH"
    print(f"{score:.6f}\t{verdict} at FMR {args.fmr:g} (threshold {t:.6f})")
    return 0


def prepared_comparator(
    m: Matcher, templates: dict[tuple[int, int], Template]
) -> Callable[[Template, Template], float]:
    """A comparator for one set that prepares each template once (evaluation helper)."""
    prep = {id(t): m.prepare(t) for t in templates.values()}

    def compare(a: Template, b: Template) -> float:
        return m.compare_prepared(prep[id(a)], prep[id(b)])

    return compare


def cmd_eval(args: argparse.Namespace) -> int:
    m = Matcher()
    results = []
    t0 = time.perf_counter()
    for d in args.dirs:
        ts = load_set(Path(d))
        results.append(evaluate_set(Path(d).name, prepared_comparator(m, ts), ts))
    print(format_markdown(results))
    avg = average(results)
    print(f"\naverage (all impostors): EER {100 * avg.eer:.2f} %, FMR1000 "
          f"{100 * avg.fmr1000:.2f} % in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from agent.match.show import load_image, render

    a = _load(args.a)
    b = _load(args.b) if args.b else None
    img, score = render(
        a, b,
        image_a=load_image(args.image) if args.image else None,
        image_b=load_image(args.image_b) if args.image_b else None,
    )
    img.save(args.out)
    print(f"wrote {args.out}" + (f" (score {score:.6f})" if score is not None else ""))
    return 0


def impostor_scores(m: Matcher, dirs: list[Path]
                    ) -> tuple[dict[str, NDArray[np.float64]], dict[str, NDArray[np.float64]]]:
    """Per folder: its plain and its best-over-hypotheses scores against every template
    that is not the same finger.

    A folder is one condition of the fit (one sensor); a pair across two
    folders counts for the first of them. The hypotheses (``prm.SCALE_HYPOTHESES``)
    rescale the second template of a pair, as the station rescales its probe.
    """
    items: list[tuple[tuple[int, int], Prepared, list[Prepared]]] = []
    for si, d in enumerate(dirs):
        for (f, _), t in sorted(load_set(d).items()):
            items.append(((si, f), m.prepare(t),
                          [m.prepare(rescaled(t, sx, sy)) for sx, sy in prm.SCALE_HYPOTHESES]))
    plain: dict[str, list[float]] = {str(d): [] for d in dirs}
    best: dict[str, list[float]] = {str(d): [] for d in dirs}
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            if items[i][0] != items[j][0]:
                group = str(dirs[items[i][0][0]])
                plain[group].append(m.compare_prepared(items[i][1], items[j][1]))
                best[group].append(max(m.compare_prepared(items[i][1], q) for q in items[j][2]))
    return ({k: np.asarray(v, np.float64) for k, v in plain.items()},
            {k: np.asarray(v, np.float64) for k, v in best.items()})


def cmd_show_extraction(args: argparse.Namespace) -> int:
    from agent.match.extraction import ImageError, show_extraction

    try:
        t = show_extraction(Path(args.image), Path(args.out), dpi=args.dpi)
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(t)} minutiae, capture quality {t.quality}; drawn to {args.out}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    plain, best = impostor_scores(Matcher(), [Path(d) for d in args.dirs])
    try:
        cal = fit(plain, margin=prm.CALIBRATION_MARGIN * prm.SCALE_CHANCES)
        scaled = fit(best)
    except ValueError as exc:
        print(f"error: {exc}; give more folders of NNN_M.iso templates", file=sys.stderr)
        return 2
    print(source(cal))
    print(source(scaled).replace("CALIBRATION =", "SCALED_CALIBRATION ="))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m agent.match``."""
    ap = argparse.ArgumentParser(prog="python -m agent.match", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="score two templates")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--fmr", type=float, default=prm.VERIFY_FMR)
    c.set_defaults(fn=cmd_compare)
    e = sub.add_parser("eval", help="FVC protocol on folders of NNN_M.iso")
    e.add_argument("dirs", nargs="+")
    e.set_defaults(fn=cmd_eval)
    s = sub.add_parser("show", help="draw minutiae (and pairs) as PNG")
    s.add_argument("a")
    s.add_argument("b", nargs="?")
    s.add_argument("--image", help="picture under template A")
    s.add_argument("--image-b", help="picture under template B")
    s.add_argument("--out", default="minutiae.png")
    s.set_defaults(fn=cmd_show)
    x = sub.add_parser("show-extraction",
                       help="draw what the extractor saw: mask, orientation field, minutiae")
    x.add_argument("image", help="grey fingerprint image (PNG, ...)")
    x.add_argument("--dpi", type=int, default=500)
    x.add_argument("--out", default="extraction.png")
    x.set_defaults(fn=cmd_show_extraction)
    k = sub.add_parser("calibrate", help="fit decision thresholds to impostor scores")
    k.add_argument("dirs", nargs="+")
    k.set_defaults(fn=cmd_calibrate)
    t = sub.add_parser("tables", help="rewrite agent/match/tables.json after a parameter change")
    t.set_defaults(fn=lambda _args: exact.write_tables())
    args = ap.parse_args(argv)
    try:
        return int(args.fn(args))
    except (TemplateError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
