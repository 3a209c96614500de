"""Slow: minutiae extracted from every embedded FVC2002 image are bit for bit the same on arm64.

``benchmarks/fvc_minutiae.py`` is run twice on this checkout: natively and
with the arm64 image's Python and wheels (the checkout bound into the root
filesystem, a fresh Numba cache, so every extraction kernel is compiled for
AArch64). The emulator plays a Raspberry Pi 4 (``QEMU_CPU=cortex-a72``: the
CPU features NumPy picks its SIMD loops by) and Numba compiles for it as the
kiosk's unit does (images/target-cpu.sh). The 80 templates are compared line
by line (header, ISO encoding digest, every minutia as exact values), and so
are the digests of every intermediate stage, which name the stage where a
difference starts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from arm64 import DATA, REPO, run, target_cpu

pytestmark = [pytest.mark.slow, pytest.mark.timeout(7200)]

IMAGES = 80  # impressions 2 and 3 of the 40 FVC2002 fingers embedded in the repository


def _stage_differences(ours: list[str], theirs: list[str]) -> dict[str, int]:
    """How many images differ first at each stage (the digests after ``|``)."""
    first: dict[str, int] = {}
    for a, b in zip(ours, theirs, strict=True):
        for p, q in zip(a.split(" | ", 1)[1].split(), b.split(" | ", 1)[1].split(), strict=True):
            if p != q:
                stage = p.split("=", 1)[0]
                first[stage] = first.get(stage, 0) + 1
                break
    return first


def test_fvc_minutiae_identical_on_arm64(arm64_rootfs: Path, tmp_path: Path) -> None:
    native = tmp_path / "x86_64.txt"
    subprocess.run([sys.executable, "-m", "benchmarks.fvc_minutiae", "--stages", str(native)],
                   cwd=REPO, check=True, timeout=1800)
    scratch = tmp_path / "arm64"
    scratch.mkdir()
    cpu = target_cpu()
    # Bound over directories the root filesystem already has, so nothing is
    # created in it; the Numba cache and the output go to the scratch folder.
    r = run(arm64_rootfs,
            ["python", "-m", "benchmarks.fvc_minutiae", "--stages", "/tmp/aarch64.txt"],
            env={"PYTHONPATH": "/mnt", "PYTHONDONTWRITEBYTECODE": "1",
                 "NUMBA_CACHE_DIR": "/tmp/numba", "HOME": "/tmp",
                 "QEMU_CPU": cpu["KESP_PI4_CPU"],
                 "NUMBA_CPU_NAME": cpu["KESP_PI4_CPU"],
                 "NUMBA_CPU_FEATURES": cpu["KESP_PI4_FEATURES"]},
            cpuinfo=DATA / "pi4-cpuinfo",
            binds={REPO: "/mnt", scratch: "/tmp"}, timeout=7000)
    assert r.returncode == 0, r.stderr[-3000:]
    theirs = (scratch / "aarch64.txt").read_text().splitlines()
    ours = native.read_text().splitlines()
    assert len(ours) == len(theirs) == IMAGES
    stages = _stage_differences(ours, theirs)
    differ = [(a.split(" | ")[0], b.split(" | ")[0]) for a, b in zip(ours, theirs, strict=True)
              if a.split(" | ")[0] != b.split(" | ")[0]]
    assert not differ, (f"{len(differ)} of {IMAGES} templates differ (first differing stage "
                        f"per image: {stages}), e.g. {differ[:2]}")
    assert not stages, f"templates agree but intermediates differ, first at: {stages}"
