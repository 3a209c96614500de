"""Run every benchmark module (``bench_*.py``) in turn, or the ones named."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    wanted = [a.removeprefix("bench_") for a in argv] or [n.removeprefix("bench_") for n in names]
    for short in wanted:
        mod = importlib.import_module(f"benchmarks.bench_{short}")
        t0 = time.perf_counter()
        print(f"== bench_{short}", flush=True)
        mod.main()
        print(f"== bench_{short} done in {time.perf_counter() - t0:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
