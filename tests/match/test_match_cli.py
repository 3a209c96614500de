"""``python -m agent.match`` sub-commands and the minutiae drawing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agent.match.__main__ import main


def test_compare_and_errors(ref_data: Path, capsys: pytest.CaptureFixture[str],
                            tmp_path: Path) -> None:
    d = ref_data / "fvc2002" / "DB1_B"
    assert main(["compare", str(d / "101_1.iso"), str(d / "101_2.iso")]) == 0
    score, verdict = capsys.readouterr().out.split("\t")
    assert float(score) > 0.1 and verdict.startswith("MATCH")
    bad = tmp_path / "bad.iso"
    bad.write_bytes(b"FMR\x00 20\x00\x00")
    assert main(["compare", str(bad), str(d / "101_2.iso")]) == 2
    assert "record length" in capsys.readouterr().err


def test_eval_prints_protocol_table(ref_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(ref_data / "fvc2002" / "DB4_B")]) == 0
    out = capsys.readouterr().out
    assert "| DB4_B | FVC (45) |" in out and "| DB4_B | all (2880) |" in out


def test_show_draws_pairs_over_images(ref_data: Path, tmp_path: Path) -> None:
    d = ref_data / "fvc2002" / "DB2_B"
    out = tmp_path / "pair.png"
    assert main(["show", str(d / "103_2.iso"), str(d / "103_3.iso"), "--image",
                 str(d / "103_2.png"), "--image-b", str(d / "103_3.png"), "--out", str(out)]) == 0
    with Image.open(out) as im, Image.open(d / "103_2.png") as src:
        assert im.size == (2 * src.width, src.height)
        rgb = np.asarray(im.convert("RGB"))
        assert (rgb == (20, 170, 60)).all(axis=2).any()  # pair lines drawn
    single = tmp_path / "one.png"
    assert main(["show", str(d / "103_1.iso"), "--out", str(single)]) == 0
    with Image.open(single) as im:
        assert im.size == (300, 400)
