"""Slow: the image's Numba cache is the one a Raspberry Pi 4 looks up at first start.

Numba keys a cache entry on (LLVM triple, CPU name, CPU features). The image
compiles its cache with NUMBA_CPU_NAME / NUMBA_CPU_FEATURES from
images/target-cpu.sh and the unit's drop-in sets the same pair. Under
qemu-user, with a Pi's /proc/cpuinfo mounted over the emulator's, this
checks that LLVM reports exactly that pair on the board, and that a first
start with the unit's environment loads every kernel from the image's cache
without compiling anything (``NUMBA_DEBUG_CACHE``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from arm64 import DATA, copy_tree, run, target_cpu

pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]

_HOST_CPU = (
    "import llvmlite.binding as ll; from numba.core.codegen import JITCPUCodegen as C; "
    "c = C('probe'); print(ll.get_host_cpu_name()); print(c._tm_features); "
    "print(repr(c.magic_tuple()))"
)


def unit_environment(root: Path) -> dict[str, str]:
    """Environment= of the installed unit and its image drop-in, as systemd would merge them."""
    env: dict[str, str] = {}
    for unit in ("etc/systemd/system/kesp-agent.service",
                 "etc/systemd/system/kesp-agent.service.d/image.conf"):
        for line in (root / unit).read_text().splitlines():
            if line.startswith("Environment="):
                key, value = line.removeprefix("Environment=").strip('"').split("=", 1)
                env[key] = value
    return env


def test_llvm_reports_the_pi4_as_the_image_is_keyed(arm64_rootfs: Path) -> None:
    want = target_cpu()
    r = run(arm64_rootfs, ["python", "-c", _HOST_CPU], cpuinfo=DATA / "pi4-cpuinfo")
    assert r.returncode == 0, r.stderr
    name, features, magic = r.stdout.strip().splitlines()
    assert (name, features) == (want["KESP_PI4_CPU"], want["KESP_PI4_FEATURES"]), r.stdout
    # The emulator's own /proc/cpuinfo (this machine's) gives another key: a cache
    # keyed only by CPU name, as before, would have missed on the Pi.
    bare = run(arm64_rootfs, ["python", "-c", _HOST_CPU])
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.strip().splitlines()[2] != magic, bare.stdout


def test_pi5_is_a_cortex_a76(arm64_rootfs: Path) -> None:
    r = run(arm64_rootfs, ["python", "-c", _HOST_CPU], cpuinfo=DATA / "pi5-cpuinfo")
    assert r.returncode == 0, r.stderr
    name, features, _ = r.stdout.strip().splitlines()
    assert name == "cortex-a76"
    assert {"+neon", "+aes", "+sha2", "+crc"} <= set(features.split(",")), features


@pytest.mark.parametrize("how", ["unit environment", "detected on the Pi"])
def test_first_start_on_a_pi4_loads_the_cache_without_compiling(arm64_rootfs: Path,
                                                                how: str) -> None:
    root = arm64_rootfs
    image_cache = root / "usr/lib/kesp/numba-cache"
    assert list(image_cache.rglob("*.nbi")), "the image has no Numba cache"
    # What kesp-firstboot does: the image's cache copied onto the state partition.
    copy_tree(image_cache, root / "var/cache/kesp/numba-firstboot")
    env = unit_environment(root)
    assert env["NUMBA_CPU_NAME"] == target_cpu()["KESP_PI4_CPU"]
    assert env["NUMBA_CPU_FEATURES"] == target_cpu()["KESP_PI4_FEATURES"]
    if how == "detected on the Pi":
        del env["NUMBA_CPU_NAME"], env["NUMBA_CPU_FEATURES"]
    env.update(NUMBA_CACHE_DIR="/var/cache/kesp/numba-firstboot", NUMBA_DEBUG_CACHE="1")
    r = run(root, ["python", "-c", "from agent.match.warm import warm_up; warm_up()"],
            env=env, cpuinfo=DATA / "pi4-cpuinfo", timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    loaded = re.findall(r"\[cache\] data loaded from", r.stdout + r.stderr)
    saved = re.findall(r"\[cache\] data saved to", r.stdout + r.stderr)
    assert loaded and not saved, (len(loaded), len(saved), (r.stdout + r.stderr)[-3000:])
