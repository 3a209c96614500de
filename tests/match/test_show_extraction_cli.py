"""``python -m agent.match show-extraction IMG --out X.png``."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from agent.match.__main__ import main


def test_show_extraction_draws_a_png(ref_data: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.png"
    assert main(["show-extraction", str(ref_data / "fvc2002" / "DB1_B" / "101_2.png"),
                 "--out", str(out)]) == 0
    assert "minutiae, capture quality" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.size[0] >= 300 and im.mode in ("RGB", "RGBA")


def test_show_extraction_refuses_what_is_not_a_fingerprint_image(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = tmp_path / "tiny.png"
    Image.new("L", (10, 10)).save(tiny)
    assert main(["show-extraction", str(tiny), "--out", str(tmp_path / "o.png")]) == 2
    assert "error:" in capsys.readouterr().err
