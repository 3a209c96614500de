"""Helpers of the tests that drive a command line as a person would."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    """Exit code and output of one command."""

    code: int
    out: str
    err: str


def run_module(module: str, *args: object, cwd: Path | None = None, timeout: float = 60) -> Run:
    """``python -m module args...`` as a subprocess of this interpreter."""
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to prove a refusal changed nothing)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def one_line_refusal(r: Run, *words: str, code: int = 1) -> str:
    """Assert exit ``code`` and exactly one stderr line containing ``words``; return it."""
    lines = r.err.strip().splitlines()
    assert r.code == code, r
    assert len(lines) == 1, r.err
    assert "Traceback" not in r.err and "Error:" not in lines[0].split(":", 1)[0], r.err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]
