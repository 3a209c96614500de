"""Fuzz ``load_template`` with 1,000,000 mutated minutiae records.

Seeds: real FVC2002 ISO 19794-2:2005 records, the same re-encoded as ANSI 378,
and hand-built ISO 19794-2:2011 records. Mutations: truncations, bit flips,
random bytes, length fields lying, huge counts, inserted and deleted runs.
Pass = no exception other than ``TemplateError`` and no call slower than
``HANG_SECONDS``. Run: ``python -m benchmarks fuzz`` (``KESP_FUZZ_N`` overrides
the count).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter

from agent.match.codecs import load_template, to_ansi378, to_iso2005
from agent.match.template import Template, TemplateError
from benchmarks.results import write_section
from hardware_sim.fuzz import mutate
from hardware_sim.reference_data import reference_data

HANG_SECONDS = 1.0
DATA = reference_data()  # every ISO template is in the repository

def _iso2011_seed() -> bytes:
    rep = bytes(9) + b"\x00\x00\x01\x00\x02" + b"\x01" + bytes((50, 0, 1, 0, 2))
    rep += bytes((1, 0)) + (197).to_bytes(2, "big") * 2 + b"\x00"
    rep += (300).to_bytes(2, "big") + (400).to_bytes(2, "big") + bytes((0x60, 3))
    for x, y in ((10, 20), (100, 200), (250, 390)):
        rep += ((1 << 14) | x).to_bytes(2, "big") + y.to_bytes(2, "big") + b"\x40\x32"
    rep += b"\x00\x0a\x01\x00\x00\x0a" + b"\x00" * 6
    rep = (4 + len(rep)).to_bytes(4, "big") + rep
    return b"FMR\x00030\x00" + (15 + len(rep)).to_bytes(4, "big") + b"\x00\x01\x00" + rep


def seeds() -> list[bytes]:
    """Valid records of every supported format."""
    out = [p.read_bytes() for p in sorted((DATA / "fvc2002").glob("DB*_B/10[15]_[12].iso"))]
    out += [to_ansi378(load_template(s)) for s in out[:4]]
    out.append(_iso2011_seed())
    out.append(to_iso2005(Template.from_arrays([1], [1], [0.0], width=2, height=2)))
    return out


def run(n: int, seed: int = 2026) -> tuple[Counter[str], float, int]:
    """Fuzz ``n`` mutations; returns outcome counts, slowest call (s), seconds."""
    rng = random.Random(seed)
    base = seeds()
    counts: Counter[str] = Counter()
    slowest = 0.0
    t_start = time.perf_counter()
    for _ in range(n):
        data = mutate(rng, rng.choice(base))
        t0 = time.perf_counter()
        try:
            load_template(data)
            counts["accepted"] += 1
        except TemplateError:
            counts["TemplateError"] += 1
        except Exception as exc:
            counts[f"UNEXPECTED {type(exc).__name__}"] += 1
        slowest = max(slowest, time.perf_counter() - t0)
    return counts, slowest, int(time.perf_counter() - t_start)


def main() -> None:
    n = int(os.environ.get("KESP_FUZZ_N", "1000000"))
    counts, slowest, seconds = run(n)
    unexpected = sum(v for k, v in counts.items() if k.startswith("UNEXPECTED"))
    hangs = int(slowest > HANG_SECONDS)
    lines = [
        f"{n:,} mutated records through `load_template` in {seconds} s "
        f"(truncations, bit flips, random bytes, length lies, huge counts, insertions, "
        f"deletions, garbage after a valid magic).",
        "",
        "| outcome | count |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:,} |" for k, v in sorted(counts.items())]
    lines += [
        "",
        f"Exceptions other than `TemplateError`: **{unexpected}**; slowest single call "
        f"{slowest * 1e3:.2f} ms; hangs (> {HANG_SECONDS:.0f} s): **{hangs}**.",
    ]
    write_section("match_fuzz", "Template decoder fuzzing", "\n".join(lines))
    print("\n".join(lines))
    if unexpected or hangs:
        raise SystemExit(1)
