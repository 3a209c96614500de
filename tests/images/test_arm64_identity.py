"""Slow: every FVC2002 protocol score is bit for bit the same on arm64 (qemu-user) and here.

``benchmarks/fvc_scores.py`` is run twice on this checkout: natively and
with the arm64 image's Python and wheels (the checkout bound into the root
filesystem, a fresh Numba cache, so every kernel is compiled for AArch64),
the emulator playing a Raspberry Pi 4's Cortex-A72 (``QEMU_CPU``: its
default CPU offers SVE, which no Pi has).
The 12,640 scores are compared as exact hexadecimal doubles.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from arm64 import REPO, run, target_cpu

pytestmark = [pytest.mark.slow, pytest.mark.timeout(7200)]

def test_fvc_scores_identical_on_arm64(arm64_rootfs: Path, tmp_path: Path) -> None:
    native = tmp_path / "x86_64.txt"
    subprocess.run([sys.executable, "-m", "benchmarks.fvc_scores", str(native)], cwd=REPO,
                   check=True, timeout=1800)
    out = tmp_path / "out"
    out.mkdir()
    r = run(arm64_rootfs, ["python", "-m", "benchmarks.fvc_scores", "/mnt/out/aarch64.txt"],
            env={"PYTHONPATH": "/mnt/src", "PYTHONDONTWRITEBYTECODE": "1",
                 "QEMU_CPU": target_cpu()["KESP_PI4_CPU"],
                 "NUMBA_CACHE_DIR": "/mnt/out/numba-cache",  # nothing left in the tree
                 "HOME": "/tmp"},
            binds={REPO: "/mnt/src", out: "/mnt/out"}, timeout=7000)
    assert r.returncode == 0, r.stderr[-3000:]
    theirs = (out / "aarch64.txt").read_text().splitlines()
    ours = native.read_text().splitlines()
    assert len(ours) == len(theirs) == 12_640
    differ = [(a, b) for a, b in zip(ours, theirs, strict=True) if a != b]
    assert not differ, f"{len(differ)} scores differ, e.g. {differ[:3]}"
