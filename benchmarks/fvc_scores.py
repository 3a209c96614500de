"""Every FVC2002 protocol score, exactly, for comparing two machines bit for bit.

    python -m benchmarks.fvc_scores OUT.txt        # one line per comparison

Writes ``set first second score`` with the score as a hexadecimal double
(``float.hex``: exact) for the genuine and wide-impostor pairs of the four
sets (4 x (280 + 2,880) = 12,640 comparisons). Run it on x86 and on arm64
(tests/images/test_arm64_identity.py does, under qemu-user) and compare the
files: any difference is a platform dependence of the matcher.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent.match.evaluation import load_set, protocol_pairs
from agent.match.matcher import Matcher
from hardware_sim.reference_data import reference_data

FVC = reference_data() / "fvc2002"  # all 320 ISO templates are embedded in the repository
SETS = ("DB1_B", "DB2_B", "DB3_B", "DB4_B")


def scores(fvc: Path = FVC) -> list[str]:
    """``set first second hex-score`` for every genuine and wide-impostor pair."""
    matcher = Matcher()
    genuine, _, wide = protocol_pairs()
    lines = []
    for name in SETS:
        templates = load_set(fvc / name)
        prepared = {k: matcher.prepare(t) for k, t in templates.items()}
        for a, b in genuine + wide:
            s = matcher.compare_prepared(prepared[a], prepared[b])
            lines.append(f"{name} {a[0]}_{a[1]} {b[0]}_{b[1]} {float(s).hex()}")
    return lines


def main(argv: list[str]) -> int:
    """Write the scores to ``argv[0]``."""
    if len(argv) != 1:
        print("usage: python -m benchmarks.fvc_scores OUT.txt", file=sys.stderr)
        return 2
    lines = scores()
    Path(argv[0]).write_text("\n".join(lines) + "\n")
    print(f"{len(lines)} scores -> {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
