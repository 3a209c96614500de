"""Helpers of the systemd unit tests: read a unit's settings, score it with systemd-analyze."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


def settings(text: str) -> dict[str, list[str]]:
    """key -> every value assigned in the unit (comments and sections dropped)."""
    out: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def exposure(unit: Path) -> float:
    """``systemd-analyze security`` overall exposure of ``unit`` (offline)."""
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True, text=True, check=False, timeout=60, cwd=unit.parent,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert m, proc.stdout + proc.stderr
    return float(m.group(1))


HARDENING = ("Protect", "Private", "CapabilityBoundingSet", "SystemCall",
             "RestrictAddressFamilies", "RestrictNamespaces")


def weakened(unit: Path, out_dir: Path, also: tuple[str, ...] = ()) -> Path:
    """A copy of ``unit`` without its filesystem, privilege and sandbox hardening."""
    weak = "\n".join(line for line in unit.read_text().splitlines()
                     if not line.startswith(HARDENING + also))
    path = out_dir / unit.name
    path.write_text(weak)
    return path


def analyze_verify(unit: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` of ``unit``."""
    return subprocess.run(["systemd-analyze", "verify", str(unit)],
                          capture_output=True, text=True, check=False, timeout=60)
