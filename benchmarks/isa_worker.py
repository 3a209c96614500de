"""One build of the matching kernels, timed: the child process of ``bench_match``'s ISA section.

    NUMBA_CPU_NAME=x86-64-v2 NUMBA_CPU_FEATURES=... python -m benchmarks.isa_worker

Numba reads the target CPU when it starts, so each instruction set is timed
in its own process (with its own cache directory) on the same gallery and
probes. Prints one JSON object: the target, comparisons/s on 1 thread over
the 64,000-template gallery, the 56,000-template search times on 1 and 2
threads, and what the comparison kernel's assembly uses (vector registers,
popcount instructions).
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import Counter

import numba
from numba.core import codegen

from agent.match import lssr
from agent.match.matcher import Matcher, warm_up
from benchmarks.bench_match import GALLERY_N, STATION_N, _time_search, fvc_sets, jittered_gallery


def kernel_asm() -> str:
    """Assembly of the comparison kernel as compiled in this process."""
    warm_up()
    return "\n".join(lssr.score.inspect_asm(sig) for sig in lssr.score.signatures)


def kernel_ir() -> str:
    """Optimised LLVM IR of the comparison kernel as compiled in this process."""
    warm_up()
    return "\n".join(lssr.score.inspect_llvm(sig) for sig in lssr.score.signatures)


def ir_profile(ir: str) -> dict[str, object]:
    """Loops the vectoriser turned into vector loops (``vector.body`` blocks) and their types."""
    bodies = sorted(set(re.findall(r"^(vector\.body[\d.]*):", ir, re.MULTILINE)))
    types = Counter(re.findall(r"<(\d+ x (?:i\d+|float|double))>", ir))
    return {"vector_loops": len(bodies),
            "vector_types": dict(types.most_common(8)),
            "ctpop": sorted(set(re.findall(r"@llvm\.ctpop\.([\w.]+)", ir)))}


def asm_profile(asm: str) -> dict[str, int]:
    """Instruction-set evidence in ``asm``: register classes used and popcount instructions."""
    regs = Counter(re.findall(r"%(zmm|ymm|xmm)\d+", asm))
    return {
        "zmm": regs["zmm"], "ymm": regs["ymm"], "xmm": regs["xmm"],
        "popcnt": len(re.findall(r"\bv?popcnt[a-z]*\b", asm)),
        "neon_cnt_8b": len(re.findall(r"\bcnt\s+v\d+\.8b", asm)),
        "neon_cnt_16b": len(re.findall(r"\bcnt\s+v\d+\.16b", asm)),
        "neon_2d_ops": len(re.findall(r"\bv\d+\.2d\b", asm)),
    }


def main() -> int:
    """Time this process's build and print the JSON line."""
    cpu = codegen.JITCPUCodegen("isa")
    target = {"triple": cpu._llvm_module.triple, "cpu": cpu._get_host_cpu_name(),
              "features": cpu._tm_features}
    profile = asm_profile(kernel_asm())
    loops = ir_profile(kernel_ir())
    base = [t for _, ts in fvc_sets() for t in ts.values()]
    sizes = [len(t) for t in base]
    mean = statistics.fmean(sizes)
    probes = [t for t in base if abs(len(t) - mean) <= 3][::6][:24]
    m = Matcher()
    gal = jittered_gallery(base, GALLERY_N)
    g = m.gallery(gal)
    one = statistics.median(_time_search(g, probes[:6], m, threads=1))
    gs = m.gallery(gal[:STATION_N])
    station = {str(t): [1e3 * s for s in _time_search(gs, probes[:8], m, threads=t)]
               for t in (1, 2)}
    print(json.dumps({"target": target, "asm": profile, "ir": loops, "threads_available":
                      int(numba.config.NUMBA_NUM_THREADS),  # type: ignore[attr-defined]
                      "comparisons_per_s_1t": GALLERY_N / one, "station_ms": station}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
