"""The device end of a serial cable: a raw pty behind a stable symlink.

Every pty simulator (Grow sensor, ESC/POS printer, document reader) plugs and
unplugs the same way, as a USB-serial adapter does: plugging creates a fresh
pty and points the symlink (what a udev ``SYMLINK+=`` rule would give the
host) at its slave side; unplugging closes both ends, so the host's reads and
writes fail with EIO, and removes the symlink. The symlink is replaced
atomically, so a host that polls for it never sees a half-made link.

:class:`PtyLink` holds no lock: each simulator already serialises plugging
with its own I/O under its own lock, and adding a second lock here would only
invite lock-order bugs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import tty
from pathlib import Path


class PtyLink:
    """A pty that can be plugged and unplugged behind the symlink :attr:`path`.

    ``path`` None: the symlink is ``name`` in a private temporary directory,
    removed by :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 prefix: str = "kesp-", name: str = "tty", nonblocking: bool = False) -> None:
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        if path is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix=prefix)
            path = Path(self._tmpdir.name) / name
        self.path = Path(path)
        self._nonblocking = nonblocking
        self._master: int | None = None
        self._slave: int | None = None

    @property
    def master(self) -> int | None:
        """The simulator's end of the pty, or None while unplugged."""
        return self._master

    @property
    def plugged(self) -> bool:
        """Whether the pty exists now."""
        return self._master is not None

    def plug(self) -> bool:
        """Create a fresh pty behind :attr:`path`; False if it was already plugged."""
        if self._master is not None:
            return False
        master, slave = os.openpty()
        # Raw from the start: no echo or CR/LF translation before the host
        # configures the port (pyserial makes it raw too, but only on open).
        tty.setraw(slave)
        if self._nonblocking:
            os.set_blocking(master, False)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.path)
        self._master, self._slave = master, slave
        return True

    def unplug(self) -> bool:
        """Close both ends and remove :attr:`path`; False if it was not plugged."""
        if self._master is None:
            return False
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        return True

    def close(self) -> None:
        """Unplug, and remove the temporary directory if this link made one."""
        self.unplug()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
