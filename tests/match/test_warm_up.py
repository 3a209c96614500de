"""After the start-up warm-up, a voter's identification compiles nothing.

Run in a fresh process (the suite's own process has long compiled every
kernel): ``agent.match.warm.warm_up()``, then one identification as the
station runs it, on a real finger captured the way each sensor delivers it.
Every Numba dispatcher of the agent must hold the same signatures before and
after; a new one is a compile (or a cache load) the first voter would wait for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import importlib, json, pkgutil, sys
from pathlib import Path

import numba
import numpy as np
from PIL import Image

import agent
from agent.match.warm import warm_up

warm_up()

from agent.drivers.sensor.grow_codec import pack_image, unpack_image
from agent.match import Matcher, extract, load_template
from agent.match.decision import decide, decide_fused, verify
from hardware_sim.fingers import PressVariation, load_fvc, render_press

def signatures():
    found = {}
    for info in pkgutil.walk_packages(agent.__path__, "agent."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if isinstance(obj, numba.core.registry.CPUDispatcher):
                name = f"{obj.py_func.__module__}.{obj.py_func.__qualname__}"
                found[name] = sorted(map(str, obj.signatures))
    return found

before = signatures()
data = Path(sys.argv[1])
fvc = data / "fvc2002" / "DB1_B"
gallery_templates = [load_template((fvc / f"{f}_1.iso").read_bytes()) for f in range(101, 111)]
owners = np.arange(10, dtype=np.int32)
matcher = Matcher()
gallery = matcher.gallery(gallery_templates)
# Grow/ZhianTec over UART: the sensor window, 4-bit pixels
image, dpi = load_fvc(data / "fvc2002", "DB1_B", 101, 2)
grow = unpack_image(pack_image(render_press(image, dpi, PressVariation())))
# a small USB sensor at 385 dpi (resampled to 500)
with Image.open(data / "usb-recordings" / "nb1010" / "capture.png") as im:
    usb = np.asarray(im.convert("L"), dtype=np.uint8)
for capture, capture_dpi in ((grow, 500), (usb, 385)):
    probe = extract(capture, dpi=capture_dpi)
    scores = gallery.scores(probe)
    decide(scores, owners)
    decide_fused(scores, scores, owners)
    verify(matcher, probe, gallery_templates[:1])
identified = decide(gallery.scores(extract(grow, dpi=500)), owners)
after = signatures()
new = {k: sorted(set(v) - set(before.get(k, []))) for k, v in after.items()}
print(json.dumps({"kernels": len(after), "identified": int(identified.voter),
                  "new": {k: v for k, v in new.items() if v}}))
"""


def test_identification_after_warm_up_compiles_nothing(ref_data: Path) -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(ref_data)], capture_output=True,
                         text=True, timeout=600, env=dict(os.environ), check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts["kernels"] >= 30  # the walk found the extraction and matching kernels
    assert facts["identified"] == 0  # the real finger was identified: every stage ran
    assert facts["new"] == {}, f"compiled during the first identification: {facts['new']}"
