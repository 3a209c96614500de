"""A FUSE filesystem that loses, on a power cut, everything that was not synced.

It holds the kiosk's state directory during the power-loss trials
(:mod:`hardware_sim.powerloss`). Its durability model is stricter than a real
journalling filesystem, so that any missing ``fsync`` shows:

* a file's contents (and size) become durable only when the file is
  ``fsync``-ed or ``fdatasync``-ed (LazyFS semantics);
* a directory's entries (create, mkdir, rename in or out, unlink, rmdir)
  become durable only when that directory is ``fsync``-ed (what LazyFS lacks):
  a file created and synced in a directory that was never synced is gone after
  a cut, and a ``rename`` over an old file is undone.

Durable state lives in a backing directory on the host (``tree.json`` for the
directory entries, ``ino/<n>`` for each file's synced contents); everything
else exists only in this process's memory, which plays the page cache. A power
cut is: SIGKILL the agent, SIGKILL this process (its memory is gone), unmount,
mount again from the backing directory (:class:`PowerFs`). The new mount is a
new superblock, so the kernel cannot serve pages of the old one; regular files
are opened with ``direct_io`` as well, so every read of the agent comes here.
SQLite's WAL index (``*-shm``) is the exception: SQLite maps it with
``mmap(MAP_SHARED)``, which FUSE serves only through the page cache, so those
files are opened cached; SQLite never syncs them and rebuilds them from the WAL
after a crash, which is exactly what a cut checks.

Control, on the process's stdin, one command a line; answers on stdout:

* ``arm N PATTERN before|after``: freeze at the N-th sync (``fsync``,
  ``fdatasync`` or a directory sync) of a path containing PATTERN (``*``:
  any), before or after it takes effect; ``frozen PATH`` is printed. A frozen
  filesystem answers nothing any more (every request blocks until the power
  cut kills it): the power is off.
* ``freeze``: freeze now. ``syncs``: print ``syncs N`` (syncs so far).
* ``quota BYTES``: writes that would make the files larger than BYTES in total
  fail with ENOSPC (a full disk, as ``statvfs`` shows it); ``quota 0`` lifts it.
* ``enospc N [PATTERN]``: after N more writes that grow a file (of a path
  containing PATTERN, default ``*``: any), the disk is full: that write and
  every later one that grows any file fail with ENOSPC, although ``statvfs``
  still shows room (the disk filled between a check and a write); ``enospc
  off`` lifts it (the space is freed). Overwrites inside a file never fail, as
  on a real disk whose blocks are already allocated.
* ``fill N PATTERN``: the disk is full (as above) once N more syncs of a path
  containing PATTERN have taken effect: for SQLite with ``synchronous=FULL``,
  after N more commits of that store, however many writes they took.
* ``grows``: print ``grows N``, the writes and truncations that grew a file so
  far (failed ones included): what ``enospc N`` counts, so a harness can
  measure a turn in them and place the N-th (:mod:`hardware_sim.diskfull`).

Run: ``python -m hardware_sim.powerfs BACKING MOUNTPOINT`` (as root, with
``/dev/fuse``); ``ready`` is printed once mounted.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import mfusepy as fuse

PAGE = 4096
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass
class Node:
    """A file or directory as the running system sees it (the volatile view)."""

    ino: int
    mode: int
    data: bytearray = field(default_factory=bytearray)
    entries: dict[str, int] = field(default_factory=dict)
    mtime_ns: int = field(default_factory=time.time_ns)
    dirty: set[int] = field(default_factory=set)
    """Pages written since the last sync (files)."""

    @property
    def is_dir(self) -> bool:
        """Whether this node is a directory."""
        return stat.S_ISDIR(self.mode)


class Store:
    """The durable state in the backing directory."""

    def __init__(self, backing: Path) -> None:
        self.backing = backing
        (backing / "ino").mkdir(parents=True, exist_ok=True)
        tree = backing / "tree.json"
        if tree.exists():
            state = json.loads(tree.read_text())
        else:
            state = {"next": 2, "dirs": {"1": {"mode": stat.S_IFDIR | 0o755, "entries": {}}},
                     "files": {}}
        self.next_ino: int = state["next"]
        self.dirs: dict[int, tuple[int, dict[str, int]]] = {
            int(k): (v["mode"], dict(v["entries"])) for k, v in state["dirs"].items()}
        self.files: dict[int, int] = {int(k): m for k, m in state["files"].items()}

    def content(self, ino: int) -> bytes:
        """A file's synced contents."""
        p = self.backing / "ino" / str(ino)
        return p.read_bytes() if p.exists() else b""

    def sync_file(self, node: Node) -> None:
        """Make a file's contents durable (only its dirty pages are written)."""
        p = self.backing / "ino" / str(node.ino)
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            for page in sorted(node.dirty):
                chunk = bytes(node.data[page * PAGE:(page + 1) * PAGE])
                if chunk:
                    os.pwrite(fd, chunk, page * PAGE)
            os.ftruncate(fd, len(node.data))
        finally:
            os.close(fd)
        node.dirty.clear()
        if node.ino in self.files and self.files[node.ino] != node.mode:
            self.files[node.ino] = node.mode
            self.save()

    def sync_dir(self, node: Node, nodes: dict[int, Node]) -> None:
        """Make a directory's entries durable (new children appear, empty if never synced)."""
        self.dirs[node.ino] = (node.mode, dict(node.entries))
        for ino in node.entries.values():
            child = nodes[ino]
            if child.is_dir:
                self.dirs.setdefault(ino, (child.mode, {}))
            elif ino not in self.files:
                self.files[ino] = child.mode
                if not (self.backing / "ino" / str(ino)).exists():
                    (self.backing / "ino" / str(ino)).write_bytes(b"")
        self.save()

    def save(self) -> None:
        """Write the durable directory tree (host-atomic)."""
        state = {"next": self.next_ino,
                 "dirs": {str(k): {"mode": m, "entries": e} for k, (m, e) in self.dirs.items()},
                 "files": {str(k): m for k, m in self.files.items()}}
        tmp = self.backing / "tree.json.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.backing / "tree.json")

    def load(self) -> dict[int, Node]:
        """The volatile view right after power-up: what is reachable from the root."""
        nodes: dict[int, Node] = {}
        todo = [1]
        while todo:
            ino = todo.pop()
            if ino in self.dirs:
                mode, entries = self.dirs[ino]
                nodes[ino] = Node(ino, mode, entries=dict(entries))
                todo += entries.values()
            else:
                nodes[ino] = Node(ino, self.files.get(ino, stat.S_IFREG | 0o600),
                                  data=bytearray(self.content(ino)))
        return nodes


class _PowerOff(Exception):  # noqa: N818 (not an error: the power went off mid-operation)
    """Raised inside an operation the power cut interrupted; it never returns."""


def _op(method: _F) -> _F:
    """Serialise a filesystem operation; block for good once the power is off.

    An operation the cut interrupts (a sync armed ``before``) must not return,
    not even an error: its caller never learns that it did not happen.
    """
    def wrapped(self: PowerLossOps, *args: Any) -> Any:
        self.power.wait_on()
        try:
            with self.mutex:
                return method(self, *args)
        except _PowerOff:
            self.power.wait_on()  # forever: the power is off
            raise
    wrapped.__name__ = method.__name__
    wrapped.__doc__ = method.__doc__
    return wrapped  # type: ignore[return-value]


class Power:
    """The power switch: once off, every operation waits forever (until SIGKILL)."""

    def __init__(self) -> None:
        self._off = threading.Event()
        self._never = threading.Event()

    def cut(self) -> None:
        """Switch off."""
        self._off.set()

    @property
    def off(self) -> bool:
        """Whether the power is off."""
        return self._off.is_set()

    def wait_on(self) -> None:
        """Return while the power is on; block forever after a cut."""
        if self._off.is_set():
            self._never.wait()


class PowerLossOps(fuse.Operations):  # type: ignore[misc]
    """The filesystem operations over a :class:`Store`."""

    use_ns = True
    flag_nopath = True
    flag_nullpath_ok = True

    def __init__(self, backing: Path, out: Callable[[str], None]) -> None:
        self.store = Store(backing)
        self.nodes = self.store.load()
        self.mutex = threading.RLock()
        self.power = Power()
        self.out = out
        self.handles: dict[int, Node] = {}
        self.handle_paths: dict[int, str] = {}
        """The path each handle was opened by (syncs come without a path)."""
        self.next_fh = 1
        self.syncs = 0
        self.grows = 0
        """Writes (and truncations) that would grow a file, since the mount."""
        self.quota = 0
        self.enospc_after: int | None = None
        self.enospc_pattern = "*"
        self.full_now = False
        """The ``enospc`` count ran out: every growing write fails until ``enospc off``."""
        self.fill_after: tuple[int, str] | None = None
        """``fill``: syncs left of paths containing the pattern before the disk is full."""
        self.arm: tuple[int, str, str] | None = None

    # --- helpers -------------------------------------------------------------------
    def _lookup(self, path: str) -> Node:
        node = self.nodes[1]
        for part in [p for p in path.split("/") if p]:
            if not node.is_dir or part not in node.entries:
                raise fuse.FuseOSError(errno.ENOENT)
            node = self.nodes[node.entries[part]]
        return node

    def _parent(self, path: str) -> tuple[Node, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self._lookup(head or "/")
        if not parent.is_dir:
            raise fuse.FuseOSError(errno.ENOTDIR)
        return parent, name

    def _node(self, path: str | None, fh: Any) -> Node:
        handle = getattr(fh, "fh", fh)
        if handle and handle in self.handles:
            return self.handles[handle]
        if path is None:
            raise fuse.FuseOSError(errno.EBADF)
        return self._lookup(path)

    def _new(self, mode: int) -> Node:
        node = Node(self.store.next_ino, mode)
        self.store.next_ino += 1
        self.nodes[node.ino] = node
        return node

    def _open_handle(self, node: Node, path: str, fi: Any) -> int:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = node
        self.handle_paths[fh] = path
        fi.fh = fh
        # the WAL index is mmap-ed shared; everything else bypasses the page cache
        fi.direct_io = 0 if path.endswith("-shm") else 1
        return 0

    def _used(self) -> int:
        return sum(len(n.data) for n in self.nodes.values())

    def _grow_check(self, node: Node, new_size: int, path: str) -> None:
        if new_size <= len(node.data):
            return
        self.grows += 1
        if self.quota and self._used() + new_size - len(node.data) > self.quota:
            raise fuse.FuseOSError(errno.ENOSPC)
        if self.full_now:
            raise fuse.FuseOSError(errno.ENOSPC)
        if self.enospc_after is not None:
            matches = self.enospc_pattern == "*" or self.enospc_pattern in path
            if matches and self.enospc_after <= 0:
                self.full_now = True
                raise fuse.FuseOSError(errno.ENOSPC)
            if matches:
                self.enospc_after -= 1

    def _path_of(self, path: str | None, fh: Any) -> str:
        return path or self.handle_paths.get(getattr(fh, "fh", fh), "?")

    def _synced(self, path: str, effect: Callable[[], None]) -> None:
        """A sync: count it, maybe freeze before or after it takes effect."""
        self.syncs += 1
        armed = self.arm
        hit = False
        if armed is not None and (armed[1] == "*" or armed[1] in path):
            left = armed[0] - 1
            self.arm = (left, armed[1], armed[2]) if left > 0 else None
            hit = left <= 0
        if hit and armed is not None and armed[2] == "before":
            self._freeze(path)
            raise _PowerOff
        effect()
        if hit:
            self._freeze(path)
        fill = self.fill_after
        if fill is not None and (fill[1] == "*" or fill[1] in path):
            self.fill_after = (fill[0] - 1, fill[1]) if fill[0] > 1 else None
            self.full_now = self.full_now or fill[0] <= 1

    def _freeze(self, path: str) -> None:
        self.power.cut()
        self.out(f"frozen {path}")

    # --- control -------------------------------------------------------------------
    def command(self, line: str) -> None:
        """One control command (see the module docstring)."""
        words = line.split()
        if not words:
            return
        with self.mutex:
            if words[0] == "arm" and len(words) == 4:
                self.arm = (int(words[1]), words[2], words[3])
                self.out("armed")
            elif words[0] == "freeze":
                self._freeze("(now)")
            elif words[0] == "syncs":
                self.out(f"syncs {self.syncs}")
            elif words[0] == "grows":
                self.out(f"grows {self.grows}")
            elif words[0] == "enospc" and len(words) in (2, 3):
                self.enospc_after = None if words[1] == "off" else int(words[1])
                self.enospc_pattern = words[2] if len(words) == 3 else "*"
                self.full_now = False
                self.fill_after = None
                self.out(f"enospc {words[1]}")
            elif words[0] == "fill" and len(words) == 3:
                self.fill_after = (int(words[1]), words[2])
                self.full_now = int(words[1]) <= 0
                self.out(f"fill {words[1]}")
            elif words[0] == "quota":
                self.quota = int(words[1])
                self.out(f"quota {self.quota}")
            else:
                self.out(f"error unknown command {line.strip()!r}")

    # --- metadata ------------------------------------------------------------------
    @_op
    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        """stat(2)."""
        node = self._node(path, fh)
        size = 4096 if node.is_dir else len(node.data)
        return {"st_mode": node.mode, "st_nlink": 2 if node.is_dir else 1,
                "st_size": size, "st_blocks": (size + 511) // 512,
                "st_uid": os.getuid(), "st_gid": os.getgid(), "st_blksize": PAGE,
                "st_mtime": node.mtime_ns, "st_ctime": node.mtime_ns,
                "st_atime": node.mtime_ns}

    @_op
    def chmod(self, path: str, mode: int) -> int:
        """chmod(2)."""
        node = self._lookup(path)
        node.mode = (node.mode & ~0o7777) | (mode & 0o7777)
        return 0

    @_op
    def chown(self, path: str, uid: int, gid: int) -> int:
        """chown(2): owners are not modelled."""
        return 0

    @_op
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        """utimensat(2)."""
        self._lookup(path).mtime_ns = times[1] if times else time.time_ns()
        return 0

    @_op
    def statfs(self, path: str) -> dict[str, int]:
        """statvfs(2): a quota shows as a small disk."""
        total = max(1, (self.quota or 1 << 34) // PAGE)
        free = max(0, total - self._used() // PAGE)
        return {"f_bsize": PAGE, "f_frsize": PAGE, "f_blocks": total, "f_bfree": free,
                "f_bavail": free, "f_files": 1 << 20, "f_ffree": 1 << 20, "f_namemax": 255}

    # --- directories -----------------------------------------------------------------
    @_op
    def readdir(self, path: str | None, fh: int) -> list[str]:
        """The volatile entries."""
        return [".", "..", *self._node(path, fh).entries]

    @_op
    def mkdir(self, path: str, mode: int) -> int:
        """mkdir(2): durable once the parent is synced."""
        parent, name = self._parent(path)
        if name in parent.entries:
            raise fuse.FuseOSError(errno.EEXIST)
        parent.entries[name] = self._new(stat.S_IFDIR | (mode & 0o7777)).ino
        return 0

    @_op
    def rmdir(self, path: str) -> int:
        """rmdir(2)."""
        parent, name = self._parent(path)
        node = self._lookup(path)
        if node.entries:
            raise fuse.FuseOSError(errno.ENOTEMPTY)
        del parent.entries[name]
        return 0

    @_op
    def unlink(self, path: str) -> int:
        """unlink(2): open handles keep the contents until closed."""
        parent, name = self._parent(path)
        if name not in parent.entries:
            raise fuse.FuseOSError(errno.ENOENT)
        if self.nodes[parent.entries[name]].is_dir:
            raise fuse.FuseOSError(errno.EISDIR)
        del parent.entries[name]
        return 0

    @_op
    def rename(self, old: str, new: str) -> int:
        """rename(2), atomic in the volatile view; durable per directory sync."""
        src, sname = self._parent(old)
        dst, dname = self._parent(new)
        if sname not in src.entries:
            raise fuse.FuseOSError(errno.ENOENT)
        moving = self.nodes[src.entries[sname]]
        if dname in dst.entries:
            target = self.nodes[dst.entries[dname]]
            if target.is_dir and target.entries:
                raise fuse.FuseOSError(errno.ENOTEMPTY)
            if target.is_dir != moving.is_dir:
                raise fuse.FuseOSError(errno.EISDIR if target.is_dir else errno.ENOTDIR)
        del src.entries[sname]
        dst.entries[dname] = moving.ino
        return 0

    @_op
    def opendir(self, path: str) -> int:
        """opendir(3): a handle, so that syncs reach the directory without a path."""
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = self._lookup(path)
        self.handle_paths[fh] = path
        return fh

    def releasedir(self, path: str | None, fh: int) -> int:
        """closedir(3)."""
        with self.mutex:
            self.handles.pop(fh, None)
            self.handle_paths.pop(fh, None)
        return 0

    @_op
    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        """Make the directory's entries durable."""
        node = self._node(path, fh)
        where = path or self.handle_paths.get(fh, "?")
        self._synced(where, lambda: self.store.sync_dir(node, self.nodes))
        return 0

    # --- files -----------------------------------------------------------------------
    @_op
    def create(self, path: str, mode: int, fi: Any) -> int:
        """open(O_CREAT): durable once the parent is synced."""
        parent, name = self._parent(path)
        if name in parent.entries:
            node = self.nodes[parent.entries[name]]
        else:
            node = self._new(stat.S_IFREG | (mode & 0o7777))
            parent.entries[name] = node.ino
        return self._open_handle(node, path, fi)

    @_op
    def open(self, path: str, fi: Any) -> int:
        """open(2)."""
        node = self._lookup(path)
        if node.is_dir:
            raise fuse.FuseOSError(errno.EISDIR)
        if fi.flags & os.O_TRUNC:
            node.data.clear()
        return self._open_handle(node, path, fi)

    @_op
    def read(self, path: str | None, size: int, offset: int, fh: Any) -> bytes:
        """read(2) from the volatile contents."""
        return bytes(self._node(path, fh).data[offset:offset + size])

    @_op
    def write(self, path: str | None, data: bytes, offset: int, fh: Any) -> int:
        """write(2) into the volatile contents."""
        node = self._node(path, fh)
        end = offset + len(data)
        self._grow_check(node, end, self._path_of(path, fh))
        if end > len(node.data):
            old = len(node.data)
            node.data.extend(bytes(end - old))
            node.dirty.update(range(old // PAGE, (end + PAGE - 1) // PAGE))
        node.data[offset:end] = data
        node.dirty.update(range(offset // PAGE, (end + PAGE - 1) // PAGE))
        node.mtime_ns = time.time_ns()
        return len(data)

    @_op
    def truncate(self, path: str | None, length: int, fh: Any = None) -> int:
        """truncate(2)."""
        node = self._node(path, fh)
        self._grow_check(node, length, self._path_of(path, fh))
        if length < len(node.data):
            del node.data[length:]
        else:
            old = len(node.data)
            node.data.extend(bytes(length - old))
            node.dirty.update(range(old // PAGE, (length + PAGE - 1) // PAGE))
        node.dirty.add(length // PAGE)
        return 0

    @_op
    def fsync(self, path: str | None, datasync: int, fh: Any) -> int:
        """fsync/fdatasync: make the contents durable."""
        node = self._node(path, fh)
        where = path or self.handle_paths.get(getattr(fh, "fh", fh), "?")
        self._synced(where, lambda: self.store.sync_file(node))
        return 0

    def flush(self, path: str | None, fh: Any) -> int:
        """close(2) of one descriptor: nothing becomes durable."""
        self.power.wait_on()
        return 0

    def release(self, path: str | None, fh: Any) -> int:
        """The last descriptor closed."""
        with self.mutex:
            self.handles.pop(getattr(fh, "fh", fh), None)
            self.handle_paths.pop(getattr(fh, "fh", fh), None)
        return 0


class PowerFsError(RuntimeError):
    """The power-loss filesystem could not be mounted; the message says what to do."""


class PowerFs:
    """The harness's side: mount, arm, cut the power, mount again.

    ``with PowerFs(backing, mountpoint) as fs:`` mounts it; :meth:`cut` is a
    power loss of the filesystem (the caller kills the agent first).
    """

    def __init__(self, backing: Path, mountpoint: Path) -> None:
        self.backing = backing.absolute()
        self.mountpoint = mountpoint.absolute()
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str] = queue.Queue()
        self.frozen = threading.Event()
        self.cuts = 0

    @staticmethod
    def check_available() -> None:
        """Raise :class:`PowerFsError` naming what is missing for a FUSE mount."""
        if not os.path.exists("/dev/fuse"):
            raise PowerFsError("/dev/fuse is missing: the power-loss tests need FUSE "
                               "(load the fuse module or run the container with --device "
                               "/dev/fuse)")
        if shutil.which("fusermount3") is None:
            raise PowerFsError("fusermount3 is missing: run 'apt-get install fuse3'")

    def __enter__(self) -> PowerFs:
        self.mount()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmount()

    def mount(self, timeout: float = 30.0) -> None:
        """Start the filesystem process and wait until it serves the mount point."""
        self.check_available()
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.frozen.clear()
        self.lines = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hardware_sim.powerfs", str(self.backing),
             str(self.mountpoint)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log(), text=True)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        if self._expect("ready", timeout) is None:
            log = self.backing.parent / f"{self.backing.name}.log"
            err = log.read_text()[-400:] if log.exists() else ""
            self.unmount()
            raise PowerFsError(f"the power-loss filesystem did not mount on "
                               f"{self.mountpoint}: {err.strip() or 'no answer'}")

    def _log(self) -> Any:
        return (self.backing.parent / f"{self.backing.name}.log").open("a")

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.strip()
            if line.startswith("frozen"):
                self.frozen.set()
            self.lines.put(line)

    def _expect(self, prefix: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if line.startswith(prefix):
                return line

    def command(self, line: str, answer: str) -> str:
        """Send a control command and return its answer line."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        got = self._expect(answer, 10.0)
        if got is None:
            raise PowerFsError(f"the power-loss filesystem did not answer {line!r}")
        return got

    def arm(self, nth: int, pattern: str = "*", when: str = "after") -> None:
        """Freeze at the ``nth`` sync of a path containing ``pattern``."""
        self.frozen.clear()
        self.command(f"arm {nth} {pattern} {when}", "armed")

    def freeze(self) -> None:
        """The power goes off now: nothing reaches the disk any more."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write("freeze\n")
        self.proc.stdin.flush()
        self.frozen.wait(10)

    def syncs(self) -> int:
        """Syncs the filesystem has seen since it was mounted."""
        return int(self.command("syncs", "syncs").split()[1])

    def fill(self, syncs: int, pattern: str = "*") -> None:
        """The disk is full once ``syncs`` more syncs of a path containing ``pattern``
        took effect (a store's commits); :meth:`enospc` (None) frees it."""
        self.command(f"fill {syncs} {pattern}", "fill")

    def grows(self) -> int:
        """Writes that grew a file since the filesystem was mounted (what ``enospc`` counts)."""
        return int(self.command("grows", "grows").split()[1])

    def quota(self, size: int) -> None:
        """A full disk above ``size`` bytes of file contents (0: no limit)."""
        self.command(f"quota {size}", "quota")

    def enospc(self, after: int | None, pattern: str = "*") -> None:
        """The disk is full after ``after`` more growing writes (of a path containing
        ``pattern``): from then on every growing write fails with ENOSPC. None: the
        space is freed."""
        self.command(f"enospc {'off' if after is None else after} {pattern}", "enospc")

    def unmount(self) -> None:
        """Kill the filesystem process (dropping all it held in memory) and unmount."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)
            for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()
            self.proc = None
        if os.path.ismount(self.mountpoint) or _stale_mount(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)],
                           capture_output=True, check=False)

    def cut(self) -> None:
        """Power loss of the disk: drop everything unsynced, mount again."""
        self.unmount()
        self.cuts += 1
        self.mount()


def _stale_mount(path: Path) -> bool:
    """A FUSE mount whose process died (stat fails with ENOTCONN)."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


class _Fuse(fuse.FUSE):  # type: ignore[misc]
    """mfusepy's FUSE, passing the file handle to ``truncate`` (ftruncate of an open file
    has no path when paths are not computed for handle operations)."""

    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        fh = fip.contents.fh if fip else None
        decoded = None if path is None else path.decode(self.encoding, self.errors)
        return int(self.operations.truncate(decoded, length, fh))


def serve(backing: Path, mountpoint: Path) -> None:
    """Mount (foreground, threaded) and serve control commands from stdin."""
    def out(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    ops = PowerLossOps(backing, out)

    def control() -> None:
        for line in sys.stdin:
            ops.command(line)

    def announce() -> None:
        while not os.path.ismount(mountpoint):
            time.sleep(0.01)
        out("ready")

    threading.Thread(target=control, daemon=True).start()
    threading.Thread(target=announce, daemon=True).start()
    _Fuse(ops, str(mountpoint), foreground=True, raw_fi=True, hard_remove=True,
              debug=bool(os.environ.get("POWERFS_DEBUG")), fsname="powerfs",
              attr_timeout=0, entry_timeout=0, negative_timeout=0)


def main(argv: list[str] | None = None) -> int:
    """``python -m hardware_sim.powerfs BACKING MOUNTPOINT``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m hardware_sim.powerfs BACKING MOUNTPOINT", file=sys.stderr)
        return 2
    serve(Path(args[0]), Path(args[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
