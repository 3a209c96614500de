"""Running the arm64 kiosk root filesystem here, through qemu-user (slow tests only).

The root filesystem comes from ``KESP_ARM64_ROOTFS`` (a tree made by
``KESP_ARCH=arm64 images/build-rootfs.sh DIR``) or is built once per session
into a temporary directory (40-60 minutes here). It has the kernel and the
Pi's firmware: the container test ignores them, the whole-machine test
(``test_arm64_vm.py``) boots that kernel.
Commands run in a private mount namespace (``unshare -m``) with /proc, /dev
and any extra bind mounts set up inside it, so nothing stays mounted on the
host when they end, and optionally with a Raspberry Pi's ``/proc/cpuinfo``
mounted over the emulator's (LLVM reads the CPU from there).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from agent.drivers.sensor.types import Guidance
from hardware_sim.escpos_sim import EscposPrinterSimulator
from hardware_sim.fingers import load_fvc
from hardware_sim.grow_sim import GrowSensorSimulator
from hardware_sim.reference_data import reference_data
from hardware_sim.voters import fvc_finger, iso_bytes

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
MIRROR = os.environ.get("KESP_IMAGE_MIRROR",
                        "deb http://deb.debian.org/debian bookworm main non-free-firmware")
BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")


def target_cpu() -> dict[str, str]:
    """``KESP_PI4_CPU`` and friends from images/target-cpu.sh (what the image is keyed on)."""
    out: dict[str, str] = {}
    for line in (REPO / "images" / "target-cpu.sh").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def require_emulation() -> None:
    """Skip unless this machine can run arm64 binaries as root."""
    if os.geteuid() != 0:
        pytest.skip("needs root (chroot, mount namespaces)")
    if os.uname().machine != "aarch64" and not BINFMT.exists():
        pytest.skip("no qemu-aarch64 binfmt entry: apt-get install qemu-user-static "
                    "binfmt-support (and mount -t binfmt_misc binfmt_misc "
                    "/proc/sys/fs/binfmt_misc)")


def build_rootfs(dest: Path) -> Path:
    """``images/build-rootfs.sh`` for arm64, kernel included, into ``dest``."""
    wheels = dest.parent / "wheels-aarch64"
    subprocess.run(["sh", str(REPO / "images" / "fetch-wheels.sh"), str(wheels), "aarch64"],
                   check=True, timeout=1200,
                   env={**os.environ, "PYTHON": str(REPO / ".venv" / "bin" / "python")})
    env = {**os.environ, "KESP_ARCH": "arm64", "KESP_MIRROR": MIRROR,
           "KESP_WHEELHOUSE": str(wheels), "PYTHON": str(REPO / ".venv" / "bin" / "python")}
    proc = subprocess.run(["nice", "sh", str(REPO / "images" / "build-rootfs.sh"), str(dest)],
                          env=env, capture_output=True, text=True, check=False, timeout=7200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dest


def run(root: Path, argv: list[str], *, env: dict[str, str] | None = None,
        cpuinfo: Path | None = None, binds: dict[Path, str] | None = None,
        user: str | None = None, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    """``argv`` inside ``root`` (chroot) in a private mount namespace.

    ``binds`` maps host paths to paths inside the root; ``cpuinfo`` replaces
    /proc/cpuinfo; ``env`` is the whole environment (``env -i``).
    """
    steps = [f"mount -t proc proc {shlex.quote(str(root / 'proc'))}",
             f"mount --rbind /dev {shlex.quote(str(root / 'dev'))}"]
    if cpuinfo is not None:
        steps.append(f"mount --bind {shlex.quote(str(cpuinfo))} "
                     f"{shlex.quote(str(root / 'proc' / 'cpuinfo'))}")
    for host, inside in (binds or {}).items():
        target = root / inside.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        steps.append(f"mount --bind {shlex.quote(str(host))} {shlex.quote(str(target))}")
    chroot = ["chroot", *([f"--userspec={user}:{user}"] if user else []), str(root),
              "/usr/bin/env", "-i", "PATH=/opt/kesp/venv/bin:/usr/bin:/bin",
              *(f"{k}={v}" for k, v in (env or {}).items()), *argv]
    script = " && ".join(steps) + " && exec " + shlex.join(chroot)
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, check=False, timeout=timeout)


def copy_tree(src: Path, dest: Path) -> None:
    """A fresh copy of ``src`` at ``dest`` (what first boot does with the image's cache)."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, symlinks=True)


def write_roll_inputs(work: Path, voters: int) -> Path:
    """The CEC's inputs for ``voters`` FVC2002 voters under ``work``: voters.csv and templates/.

    Returns the templates directory.
    """
    shared = reference_data()
    templates = work / "templates"
    rows = []
    for i in range(voters):
        folder = templates / f"ID{1000 + i}"
        folder.mkdir(parents=True)
        for pos in (1, 2):
            (folder / f"{pos}.iso").write_bytes(iso_bytes(shared, i, pos))
        rows.append(f"{i + 1},Үсөн кызы Айгүл {i},Усенова Айгуль {i},ID{1000 + i}\n")
    (work / "voters.csv").write_text("list_number,name_ky,name_ru,document\n" + "".join(rows),
                                     encoding="utf-8")
    return templates


def present_until_slip(sensor: GrowSensorSimulator, printer: EscposPrinterSimulator,
                       timeout: float = 1800) -> str:
    """Voter 1 presents the embedded impressions (not in the roll) until a slip prints.

    Lifts when the sensor asks to press again, presses when it is ready;
    returns the new slip's text.
    """
    db, finger = fvc_finger(0)
    impression = 3
    docs = len(printer.documents)
    deadline = time.monotonic() + timeout
    while len(printer.documents) == docs and time.monotonic() < deadline:
        g = sensor.guidance
        if g is Guidance.RETRY and sensor.finger_present:
            sensor.lift()
        elif g is Guidance.READY and not sensor.finger_present:
            sensor.press(*load_fvc(reference_data() / "fvc2002", db, finger, impression))
            impression = 2 if impression == 3 else 3  # the embedded images
        time.sleep(0.2)
    sensor.lift()
    assert len(printer.documents) > docs, "no slip printed"
    return printer.documents[-1].text
