"""images/build-rootfs.sh checks every prerequisite before downloading anything.

Run with mmdebstrap hidden from PATH, a wheelhouse that does not exist and a
mirror that does not answer: it must list each with the command that fixes
it, exit 1, and leave no output behind (and run no pip: it never gets that far).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _path_without(tmp: Path, hidden: str) -> str:
    """A PATH holding every tool of the current PATH except ``hidden``."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not Path(d).is_dir():
            continue
        for tool in Path(d).iterdir():
            link = bin_dir / tool.name
            if tool.name != hidden and not link.exists() and os.access(tool, os.X_OK):
                link.symlink_to(tool)
    return str(bin_dir)


def test_missing_prerequisites_are_listed_before_any_download(tmp_path: Path) -> None:
    out = tmp_path / "rootfs"
    pip_log = tmp_path / "pip-ran"
    python = tmp_path / "python"
    # A python that records any pip call; the mirror check still needs a real one.
    python.write_text(f'#!/bin/sh\ncase "$*" in *"-m pip"*" download"*|*"-m pip wheel"*) '
                      f'touch {pip_log};; esac\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    env = {**os.environ, "PATH": _path_without(tmp_path, "mmdebstrap"),
           "KESP_ARCH": "arm64", "KESP_NO_KERNEL": "1", "KESP_MODE": "unshare",
           "KESP_WHEELHOUSE": str(tmp_path / "no-wheels"), "PYTHON": str(python),
           "KESP_MIRROR": "deb http://127.0.0.1:9/debian bookworm main"}
    proc = subprocess.run(["sh", str(REPO / "images" / "build-rootfs.sh"), str(out)], env=env,
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert "cannot build the arm64 image, missing:" in err
    assert "mmdebstrap: apt-get install mmdebstrap" in err
    assert "KESP_WHEELHOUSE" in err and "fetch-wheels.sh" in err
    assert "http://127.0.0.1:9/debian does not answer" in err and "KESP_MIRROR=" in err
    assert not out.exists() and not pip_log.exists()
    assert "Traceback" not in err
