"""Every FVC2002 image's minutiae, exactly, for comparing two machines bit for bit.

    python -m benchmarks.fvc_minutiae OUT.txt            # one line per image
    python -m benchmarks.fvc_minutiae --stages OUT.txt   # + a digest of every stage
    python -m benchmarks.fvc_minutiae --full OUT.txt     # all 320 images (the fuller set)

Extracts each FVC2002 impression embedded in the repository (80 PNG images,
``hardware_sim/data/fvc2002``) the way the station extracts a probe
(``agent.match.extract`` at the set's resolution, ``hardware_sim.fingers.FVC_DPI``:
DB2_B at 569 dpi goes through the resampling stage) and writes
``set finger_impression`` with the template's header, the SHA-256 of its
ISO 19794-2:2005 encoding and every minutia as ``x,y,angle,kind,quality``
(floats as ``float.hex``: exact). Run it on x86 and on arm64
(tests/images/test_arm64_extraction.py does, under qemu-user) and compare
the files: any difference is a platform dependence of the extractor.

``--stages`` adds, per image, a short digest of every intermediate the
pipeline records (``RecordingSink``), so the first stage whose output
differs between two machines names the kernel to look at. ``--full`` reads
all eight impressions of every finger from the fuller copy of the set
(``hardware_sim.reference_data.reference_data(full=True)``), as the
extraction accuracy benchmark does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

from agent.match.codecs import to_iso2005
from agent.match.extraction import RecordingSink, extract
from agent.match.template import Template
from hardware_sim.fingers import FVC_DPI, list_impressions, load_fvc
from hardware_sim.reference_data import ReferenceDataError, reference_data

FVC = reference_data() / "fvc2002"  # impressions 2 and 3 of every finger are embedded
USAGE = "usage: python -m benchmarks.fvc_minutiae [--stages] [--full] OUT.txt"


def template_line(t: Template) -> str:
    """The template's header, ISO encoding digest and minutiae, every value exact."""
    iso = hashlib.sha256(to_iso2005(t)).hexdigest()
    minutiae = ";".join(
        f"{float(x).hex()},{float(y).hex()},{float(a).hex()},{int(k)},{int(q)}"
        for x, y, a, k, q in zip(t.x, t.y, t.angle, t.kind, t.minutia_quality, strict=True))
    return f"{t.width}x{t.height} q={t.quality} n={len(t)} iso={iso} {minutiae}"


def _feed(h: hashlib._Hash, value: object) -> None:
    if isinstance(value, np.ndarray):
        h.update(f"{value.dtype.str}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            h.update(f.name.encode())
            _feed(h, getattr(value, f.name))
    elif isinstance(value, float):
        h.update(value.hex().encode())
    else:
        h.update(repr(value).encode())


def digest(value: object) -> str:
    """A short digest of an intermediate: array bytes, dtype and shape; dataclass fields."""
    h = hashlib.sha256()
    _feed(h, value)
    return h.hexdigest()[:16]


def minutiae(fvc: Path = FVC, *, stages: bool = False) -> list[str]:
    """``set finger_impression template`` (then the stage digests) for every embedded image."""
    lines = []
    for name in FVC_DPI:
        for finger, impression in list_impressions(fvc, name):
            image, dpi = load_fvc(fvc, name, finger, impression)
            sink = RecordingSink()
            t = extract(image, dpi=dpi, sink=sink)
            line = f"{name} {finger}_{impression} {template_line(t)}"
            if stages:
                line += " | " + " ".join(f"{k}={digest(v)}" for k, v in sink.stages.items())
            lines.append(line)
    return lines


def main(argv: list[str]) -> int:
    """Write the minutiae to the last argument."""
    flags = {a for a in argv if a.startswith("-")}
    args = [a for a in argv if not a.startswith("-")]
    if len(args) != 1 or not flags <= {"--stages", "--full"}:
        print(USAGE, file=sys.stderr)
        return 2
    out = Path(args[0])
    if not out.parent.is_dir():
        print(f"fvc_minutiae: no folder {out.parent} for {out}: create it or name another",
              file=sys.stderr)
        return 2
    try:
        fvc = reference_data(full="--full" in flags) / "fvc2002"
    except ReferenceDataError as e:
        print(f"fvc_minutiae: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    lines = minutiae(fvc, stages="--stages" in flags)
    out.write_text("\n".join(lines) + "\n")
    total = sum(int(line.split(" n=", 1)[1].split(" ", 1)[0]) for line in lines)
    print(f"{len(lines)} images, {total} minutiae -> {out} "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
