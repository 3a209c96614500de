"""The SD card layout: GPT that the first boot's systemd-repart can extend.

``images/build-sdcard.sh`` is run on a small stand-in root tree (the layout
does not depend on what the tree holds); the partition table is read back
with ``sfdisk --json``. Where this machine can (root, systemd-repart), the
image's own repart definition is then applied to the card grown to a card's
size, as ``kesp-firstboot`` does on the kiosk: the state partition must be
appended. On an MBR card systemd-repart refuses ("has no GPT disk label")
and a kiosk would never get its state partition.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "images" / "build-sdcard.sh"
BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
ROOT_ARM64 = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("sfdisk", "mkfs.vfat", "mcopy", "mke2fs")),
    reason="needs fdisk, dosfstools, mtools, e2fsprogs (apt-get install fdisk dosfstools mtools)")


def _table(image: Path) -> dict[str, object]:
    out = subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, text=True,
                         check=True)
    table: dict[str, object] = json.loads(out.stdout)["partitiontable"]
    return table


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("sdcard")
    root = base / "rootfs"
    (root / "boot" / "firmware").mkdir(parents=True)
    (root / "boot" / "firmware" / "config.txt").write_text("arm_64bit=1\n")
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("kesp\n")
    image = base / "kesp.img"
    proc = subprocess.run(["sh", str(SCRIPT), str(root), str(image)], capture_output=True,
                          text=True, check=False, timeout=300,
                          env={**os.environ, "SOURCE_DATE_EPOCH": "1764979200"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {image}"), proc.stdout
    return image


def test_card_is_gpt_with_boot_and_read_only_root(card: Path) -> None:
    table = _table(card)
    assert table["label"] == "gpt"
    parts = table["partitions"]
    assert isinstance(parts, list)
    assert [(p["type"], p["name"]) for p in parts] == [(BASIC_DATA, "KESP-BOOT"),
                                                       (ROOT_ARM64, "kesp-root")]
    # Fixed ids: two builds of one tree give the same table.
    assert parts[0]["uuid"] == "4B455350-0000-4000-8000-626F6F740000"
    blkid = subprocess.run(["blkid", "-p", "-o", "export", "--offset", str(4 << 20), str(card)],
                           capture_output=True, text=True, check=False)
    if blkid.returncode == 0:  # util-linux's low-level probe of the FAT at 4 MiB
        assert "LABEL=KESP-BOOT" in blkid.stdout and "TYPE=vfat" in blkid.stdout


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("systemd-repart") is None,
                    reason="needs root and systemd-repart (formats through a loop device)")
def test_first_boot_repart_appends_the_state_partition(card: Path, tmp_path: Path) -> None:
    grown = tmp_path / "card.img"
    shutil.copy(card, grown)
    os.truncate(grown, 2 << 30)  # written to a 2 GB card
    proc = subprocess.run(
        ["systemd-repart", "--dry-run=no", "--no-pager", "--pretty=no",
         f"--definitions={REPO / 'images' / 'files' / 'repart.d'}", str(grown)],
        capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    parts = _table(grown)["partitions"]
    assert isinstance(parts, list)
    assert [p["name"] for p in parts] == ["KESP-BOOT", "kesp-root", "kesp-state"]
    # The state partition fills the card (minus GPT's backup header).
    assert parts[2]["start"] + parts[2]["size"] > (2 << 30) // 512 - 2048
    verify = subprocess.run(["sfdisk", "--verify", str(grown)], capture_output=True, text=True,
                            check=False)
    assert "No errors detected" in verify.stdout, verify.stdout + verify.stderr
