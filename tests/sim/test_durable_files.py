"""atomic_write and new directories survive a power cut; stale temp files are removed
(agent/runtime/durable.py), checked on the forgetting disk of hardware_sim/powerfs.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runtime.durable import atomic_write, make_dirs, remove_stale_temp_files
from agent.runtime.sqlite_util import connect_durable
from hardware_sim.powerfs import PowerFs


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[PowerFs]:
    PowerFs.check_available()
    with PowerFs(tmp_path / "backing", tmp_path / "mnt") as fs:
        yield fs


def test_the_first_export_survives_a_cut_right_after(disk: PowerFs) -> None:
    state = disk.mountpoint / "state"
    atomic_write(disk.mountpoint / "state" / "export" / "close-report.json", b'{"n": 1}')
    disk.cut()
    assert (state / "export" / "close-report.json").read_bytes() == b'{"n": 1}'
    assert [p.name for p in (state / "export").iterdir()] == ["close-report.json"]


def test_a_replaced_file_is_whole_after_a_cut(disk: PowerFs) -> None:
    target = disk.mountpoint / "gallery.cache"
    atomic_write(target, b"old" * 1000)
    atomic_write(target, b"new" * 1000)
    disk.cut()
    assert target.read_bytes() == b"new" * 1000


def test_make_dirs_is_durable_at_every_level(disk: PowerFs) -> None:
    make_dirs(disk.mountpoint / "a" / "b" / "c")
    disk.cut()
    assert (disk.mountpoint / "a" / "b" / "c").is_dir()


def test_a_new_sqlite_store_keeps_its_name(disk: PowerFs) -> None:
    con = connect_durable(disk.mountpoint / "var" / "ledger.sqlite")
    con.close()
    disk.cut()
    assert (disk.mountpoint / "var" / "ledger.sqlite").exists()


def test_stale_temp_files_are_removed_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    stale = [tmp_path / ".gallery.cache.k3j_x9a2.partial", tmp_path / ".roll.pkg.ab12cd34",
             tmp_path / "export" / ".close.json.zz99yy88.partial"]
    for p in stale:
        p.write_bytes(b"x" * 1000)
    kept = [tmp_path / "gallery.cache", tmp_path / ".hidden", tmp_path / "marks.sqlite-wal",
            tmp_path / ".gallery.cache.too-long-suffix"]
    for p in kept:
        p.write_bytes(b"y")
    assert remove_stale_temp_files(tmp_path) == (3, 3000)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)
