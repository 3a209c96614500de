"""The forgetting disk: what a power cut keeps and drops (hardware_sim/powerfs.py).

Each test writes through a real FUSE mount, cuts the power (the filesystem
process is SIGKILLed, its memory with it, and the disk is mounted again) and
reads back through the kernel. Where /dev/fuse is missing these tests FAIL
and say so: the power-loss guarantees cannot be checked without it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardware_sim.powerfs import PowerFs


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[PowerFs]:
    PowerFs.check_available()  # raises, naming what is missing
    with PowerFs(tmp_path / "backing", tmp_path / "mnt") as fs:
        yield fs


def _write(path: Path, data: bytes, *, sync: bool) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_unsynced_contents_are_lost_and_the_kernel_rereads(disk: PowerFs) -> None:
    m = disk.mountpoint
    _write(m / "kept", b"synced", sync=True)
    _sync_dir(m)
    _write(m / "kept", b"overwritten, never synced", sync=False)
    assert (m / "kept").read_bytes() == b"overwritten, never synced"  # the page cache view
    disk.cut()
    assert (m / "kept").read_bytes() == b"synced"


def test_fdatasync_is_enough_for_contents(disk: PowerFs) -> None:
    m = disk.mountpoint
    fd = os.open(m / "f", os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b"abc")
    os.fdatasync(fd)
    os.write(fd, b"def")
    os.close(fd)
    _sync_dir(m)
    disk.cut()
    assert (m / "f").read_bytes() == b"abc"


def test_a_new_file_needs_its_directory_synced(disk: PowerFs) -> None:
    m = disk.mountpoint
    _write(m / "orphan", b"contents synced, name not", sync=True)
    disk.cut()
    assert not (m / "orphan").exists()


def test_mkdir_needs_the_parent_synced(disk: PowerFs) -> None:
    m = disk.mountpoint
    (m / "export").mkdir()
    _write(m / "export" / "a.json", b"{}", sync=True)
    _sync_dir(m / "export")  # the file's entry is durable, but not the directory itself
    disk.cut()
    assert not (m / "export").exists()


def test_rename_and_unlink_are_undone_until_the_directory_is_synced(disk: PowerFs) -> None:
    m = disk.mountpoint
    _write(m / "cfg", b"old", sync=True)
    _write(m / "gone", b"x", sync=True)
    _sync_dir(m)
    _write(m / ".cfg.tmp", b"new", sync=True)
    _sync_dir(m)  # e.g. another file's atomic write in the same directory
    os.replace(m / ".cfg.tmp", m / "cfg")
    (m / "gone").unlink()
    assert (m / "cfg").read_bytes() == b"new"
    disk.cut()
    assert (m / "cfg").read_bytes() == b"old"
    assert (m / "gone").exists()
    assert (m / ".cfg.tmp").read_bytes() == b"new"  # the temp file an atomic write leaves


_WRITER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
assert con.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
con.execute("PRAGMA synchronous=" + sys.argv[2])
con.execute("CREATE TABLE t (x INTEGER)")
for i in range(50):
    con.execute("INSERT INTO t VALUES (?)", (i,))
print("committed", flush=True)
time.sleep(600)
"""


def test_sqlite_wal_survives_with_full_sync_and_loses_with_off(disk: PowerFs) -> None:
    m = disk.mountpoint
    writers = []
    for name, sync in (("full.sqlite", "FULL"), ("off.sqlite", "OFF")):
        w = subprocess.Popen([sys.executable, "-c", _WRITER, str(m / name), sync],
                             stdout=subprocess.PIPE, text=True)
        assert w.stdout is not None and w.stdout.readline().strip() == "committed"
        assert (m / f"{name}-shm").exists()  # the WAL index is mmap-ed on FUSE
        writers.append(w)
    _sync_dir(m)
    for w in writers:  # the power goes: the writers die with their connections open
        w.kill()
        w.wait()
        assert w.stdout is not None
        w.stdout.close()
    disk.cut()
    full = sqlite3.connect(m / "full.sqlite")
    assert full.execute("SELECT COUNT(*) FROM t").fetchone() == (50,)
    full.close()
    off = sqlite3.connect(m / "off.sqlite")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        off.execute("SELECT COUNT(*) FROM t").fetchone()
    off.close()


def test_a_frozen_disk_keeps_nothing_after_the_armed_sync(disk: PowerFs) -> None:
    m = disk.mountpoint
    disk.arm(1, "target", "before")
    fd = os.open(m / "target", os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b"never durable")
    told, tell = os.pipe()
    pid = os.fork()
    if pid == 0:  # the writer blocks in fsync for good: the power is off
        os.fsync(fd)
        os.write(tell, b"fsync returned")
        os._exit(0)
    os.close(tell)
    assert disk.frozen.wait(10)
    time.sleep(0.3)
    os.set_blocking(told, False)
    with pytest.raises(BlockingIOError):
        os.read(told, 100)  # the interrupted fsync never returned to the writer
    os.close(told)
    os.kill(pid, 9)
    disk.unmount()  # only a dead filesystem lets the blocked writer die
    os.waitpid(pid, 0)
    with contextlib.suppress(OSError):
        os.close(fd)  # ENOTCONN: that mount is gone
    disk.mount()
    assert not (m / "target").exists()


def test_quota_makes_writes_fail_with_enospc(disk: PowerFs) -> None:
    m = disk.mountpoint
    disk.quota(64 * 1024)
    with pytest.raises(OSError) as err:
        _write(m / "big", bytes(128 * 1024), sync=True)
    assert err.value.errno == 28  # ENOSPC


def test_enospc_from_the_nth_growing_write_until_freed(disk: PowerFs) -> None:
    m = disk.mountpoint
    _write(m / "a.sqlite-wal", bytes(100), sync=True)
    _write(m / "b", bytes(100), sync=True)
    grows = disk.grows()
    disk.enospc(1, "a.sqlite")  # the second growing write of a.sqlite* fills the disk
    fd = os.open(m / "b", os.O_WRONLY)
    os.write(fd, b"x" * 50)  # an overwrite grows nothing: never refused
    os.lseek(fd, 0, os.SEEK_END)
    os.write(fd, b"grows b, not counted")
    fa = os.open(m / "a.sqlite-wal", os.O_WRONLY | os.O_APPEND)
    os.write(fa, b"first growing write of a")
    with pytest.raises(OSError) as err:
        os.write(fa, b"second: the disk is full")
    assert err.value.errno == 28  # ENOSPC
    with pytest.raises(OSError):
        os.write(fd, b"full for every file now")
    assert disk.grows() == grows + 4  # the refused writes are counted too
    disk.enospc(None)  # space freed
    os.write(fd, b"room again")
    os.write(fa, b"room again")
    os.close(fd)
    os.close(fa)
    assert (m / "b").read_bytes().endswith(b"grows b, not countedroom again")


def test_fill_after_the_nth_sync_of_a_path(disk: PowerFs) -> None:
    m = disk.mountpoint
    disk.fill(2, "store")
    _write(m / "store-wal", b"commit 1", sync=True)
    _write(m / "other", b"syncs of other paths do not count", sync=True)
    fd = os.open(m / "store-wal", os.O_WRONLY | os.O_APPEND)
    os.write(fd, b", commit 2")
    os.fsync(fd)  # the second sync of store: full from now on
    with pytest.raises(OSError) as err:
        os.write(fd, b", commit 3")
    assert err.value.errno == 28  # ENOSPC
    disk.enospc(None)
    os.write(fd, b", commit 3")
    os.close(fd)
    assert (m / "store-wal").read_bytes() == b"commit 1, commit 2, commit 3"
