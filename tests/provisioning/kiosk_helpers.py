"""Helpers for provisioning tests: run kesp-provision in-process, kiosks, templates, a CA."""

from __future__ import annotations

import contextlib
import io
import os
import pwd
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hardware_sim.reference_data import reference_data
from provisioning.cli import main

ME = pwd.getpwuid(os.geteuid()).pw_name
REPO = Path(__file__).resolve().parents[2]
FVC = reference_data() / "fvc2002"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def kp(*argv: str | Path) -> Result:
    """Run ``kesp-provision`` in this process and capture its output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


def ok(*argv: str | Path) -> Result:
    """Run and require success."""
    r = kp(*argv)
    assert r.code == 0, f"{argv}: rc={r.code}\n{r.out}\n{r.err}"
    return r


@dataclass(frozen=True)
class Kiosk:
    device_id: str
    station: str
    etc: Path
    var: Path
    request: Path


MakeKiosk = Callable[..., Kiosk]


def fvc_templates(dest: Path, voters: int) -> list[tuple[int, str, str, str]]:
    """Lay out real FVC2002 ISO templates by the directory convention; return CSV rows."""
    rows = []
    for i in range(voters):
        doc = f"ID{1000 + i}"
        folder = dest / doc
        folder.mkdir(parents=True)
        db = f"DB{i % 4 + 1}_B"
        for pos in (1, 2):
            src = FVC / db / f"{101 + (i // 4) % 10}_{pos}.iso"
            shutil.copy(src, folder / f"{pos}.iso")
        rows.append((i + 1, f"Үсөн кызы Айгүл {i}", f"Усенова Айгуль {i}", doc))
    return rows


def write_csv(path: Path, header: str, rows: Sequence[tuple[object, ...]]) -> Path:
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def make_ca(d: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for ``host`` (openssl CLI)."""
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "30", "-subj", "/CN=KESP test CA")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={host}")
    (d / "ext.cnf").write_text(f"subjectAltName=IP:{host}\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "30", "-extfile", "ext.cnf")
    return d / "ca.crt", d / "server.crt", d / "server.key"
