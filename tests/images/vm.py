"""The kiosk's SD card booted as a whole arm64 machine (qemu-system-aarch64, slow tests).

The card is ``images/build-sdcard.sh``'s, made from a copy of the arm64 root
filesystem with what a deployment adds for this rig (see
:func:`rig_additions`), and booted on QEMU's ``virt`` board with a Cortex-A72
model and the image's own Debian arm64 kernel and initramfs (the Pi's
firmware and device tree cannot be emulated, so the kernel is loaded
directly). Devices as the kiosk sees them:

* the card: a virtio disk, so ``kesp-firstboot`` finds the root's disk with
  ``lsblk`` and appends the state partition as on the SD card;
* the receipt printer: the host's ESC/POS simulator behind QEMU's emulated
  FTDI FT232 USB-serial bridge (0403:6001), named ``/dev/kesp-printer`` by
  the image's own udev rule;
* the fingerprint sensor: the host's Grow simulator on QEMU's PCI 16550
  UART (a ``ttyS`` with modem lines, as a USB-serial bridge has), named by a
  site rule as docs/TECHNICIAN.md allows for a kiosk wired otherwise (QEMU
  emulates no CH340 or CP2102 bridge, and a virtio console passed no byte
  to the sensor);
* the technician's USB stick: a FAT image labelled ``KESP-USB`` on USB
  mass storage; the network: QEMU's user-mode network (the host is
  10.0.2.2, where the test's broker listens).

The technician's console is the board's UART, reached through a socket;
:class:`Console` types commands there as a technician would.
"""

from __future__ import annotations

import codecs
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: What this rig adds to the image (a deployment's console login, the sensor's
#: site rule, the emulation's start time-out). Everything else is the image's.
RIG_FILES = {
    # The deployment's console login: root on the UART without a password.
    "etc/systemd/system/serial-getty@ttyAMA0.service.d/autologin.conf":
        "[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --noclear "
        "--keep-baud 115200,57600,38400,9600 %I $TERM\n",
    # The sensor on QEMU's PCI UART (1b36:0002): the site rule of a kiosk wired otherwise.
    "etc/udev/rules.d/98-kesp-site.rules":
        'SUBSYSTEM=="tty", ATTRS{vendor}=="0x1b36", ATTRS{device}=="0x0002", GROUP="kesp", '
        'MODE="0660", SYMLINK+="kesp-sensor"\n',
    # Every instruction is emulated (about 20-50 times slower than a Pi).
    "etc/systemd/system/kesp-agent.service.d/emulated.conf":
        "[Service]\nTimeoutStartSec=30min\nWatchdogSec=10min\n",
}


def rig_additions(root: Path) -> None:
    """Add this rig's files (:data:`RIG_FILES`) to a copy of the root."""
    for rel, text in RIG_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def make_card(rootfs: Path, work: Path, size_bytes: int) -> tuple[Path, Path, Path]:
    """The SD card of ``rootfs`` plus this rig's additions: (card, kernel, initrd)."""
    tree = work / "rootfs"
    subprocess.run(["cp", "-a", str(rootfs), str(tree)], check=True, timeout=1800)
    rig_additions(tree)
    card = work / "card.img"
    subprocess.run(["sh", str(REPO / "images" / "build-sdcard.sh"), str(tree), str(card)],
                   check=True, timeout=1800, capture_output=True, text=True)
    os.truncate(card, size_bytes)  # written to a card larger than the image
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    initrds = sorted((tree / "boot").glob("initrd.img-*"))
    assert kernels and initrds, f"{rootfs} has no kernel: build it without KESP_NO_KERNEL"
    kernel, initrd = work / "vmlinuz", work / "initrd.img"
    shutil.copy(kernels[-1], kernel)
    shutil.copy(initrds[-1], initrd)
    shutil.rmtree(tree)
    return card, kernel, initrd


def make_stick(path: Path, files: dict[str, bytes]) -> None:
    """A 32 MiB FAT USB stick labelled KESP-USB holding ``files``."""
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate(32 << 20)
    subprocess.run(["mkfs.vfat", "-n", "KESP-USB", str(path)], check=True, capture_output=True)
    for name, data in files.items():
        put_on_stick(path, name, data)


def put_on_stick(stick: Path, name: str, data: bytes) -> None:
    """Write one file onto the stick (the machine must be off)."""
    src = stick.parent / f".stick-{name}"
    src.write_bytes(data)
    subprocess.run(["mcopy", "-o", "-i", str(stick), str(src), f"::{name}"], check=True)
    src.unlink()


def take_from_stick(stick: Path, name: str) -> bytes:
    """Read one file from the stick (the machine must be off)."""
    out = subprocess.run(["mcopy", "-n", "-i", str(stick), f"::{name}", "-"], check=True,
                         capture_output=True)
    return out.stdout


def qemu_argv(*, card: Path, kernel: Path, initrd: Path, stick: Path, console_sock: Path,
              console_log: Path, sensor_tty: str, printer_tty: str) -> list[str]:
    """The machine: QEMU ``virt`` with a Cortex-A72, 2 cores, 2 GB (a Pi 4's smallest)."""
    return [
        "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "2048",
        "-display", "none", "-monitor", "none", "-no-reboot",
        "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "root=LABEL=kesp-root rootfstype=ext4 ro fsck.repair=yes rootwait "
                   "console=ttyAMA0 loglevel=3 systemd.show_status=error",
        "-drive", f"if=none,id=card,file={card},format=raw",
        "-device", "virtio-blk-pci,drive=card",
        "-device", "virtio-rng-pci",
        "-device", "qemu-xhci,id=xhci",
        "-drive", f"if=none,id=stick,file={stick},format=raw",
        "-device", "usb-storage,bus=xhci.0,drive=stick",
        "-chardev", f"tty,id=printer,path={printer_tty}",
        "-device", "usb-serial,bus=xhci.0,chardev=printer",
        "-chardev", f"tty,id=sensor,path={sensor_tty}",
        "-device", "pci-serial,chardev=sensor",
        "-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0",
        "-chardev", f"socket,id=con,path={console_sock},server=on,wait=off,"
                    f"logfile={console_log},logappend=on",
        "-serial", "chardev:con",
    ]


class Console:
    """The machine's serial console as a technician uses it: type a command, read its answer."""

    def __init__(self, path: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.connect(str(path))
                break
            except OSError:
                self._sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self._buf = ""
        self._n = 0
        # A character of Kyrgyz or Russian may be split between two reads.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def close(self) -> None:
        self._sock.close()

    def _read_until(self, pattern: re.Pattern[str], timeout: float,
                    poke: float | None = None) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        next_poke = time.monotonic() + (poke or 0)
        while True:
            found = pattern.search(self._buf)
            if found:
                self._buf = self._buf[found.end():]
                return found
            now = time.monotonic()
            if now > deadline:
                raise AssertionError(f"console: no {pattern.pattern!r} in {timeout:.0f} s; "
                                     f"last output: {self._buf[-2000:]!r}")
            if poke is not None and now > next_poke:
                self._sock.sendall(b"\r")
                next_poke = now + poke
            self._sock.settimeout(1.0)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise AssertionError("console: the machine went away")
            self._buf += self._decoder.decode(chunk)

    def login(self, timeout: float) -> float:
        """Wait for the auto-logged-in root shell; seconds it took."""
        t0 = time.monotonic()
        self._read_until(re.compile(r"root@[\w-]+:[^\n]*# ?$", re.M), timeout, poke=10.0)
        # A quiet shell: no echo, no prompt, so every answer is just the output.
        self._sock.sendall(b"stty -echo; export PS1= PS2= TERM=dumb SYSTEMD_PAGER=cat; "
                           b"bind 'set enable-bracketed-paste off'\r")
        self.run("true", timeout=120)
        return time.monotonic() - t0

    def run(self, command: str, timeout: float = 600) -> tuple[int, str]:
        """``command`` at the root shell: (exit status, output)."""
        self._n += 1
        n = self._n
        self._sock.sendall(f"echo KESP-BEGIN-{n}; {command}; echo KESP-RC-{n}=$?\r".encode())
        # At a line's end (the typed command, were it echoed, has a ";" after it;
        # readline's escapes may come before it).
        self._read_until(re.compile(rf"KESP-BEGIN-{n}\r?$", re.M), timeout)
        end = self._read_until(re.compile(rf"KESP-RC-{n}=(\d+)"), timeout)
        # _read_until consumed up to the match; the output is what came before it.
        return int(end.group(1)), self._last_output(end)

    def _last_output(self, end: re.Match[str]) -> str:
        return end.string[:end.start()].replace("\r", "").strip("\n")

    def ok(self, command: str, timeout: float = 600) -> str:
        """``command`` must succeed; its output."""
        rc, out = self.run(command, timeout)
        assert rc == 0, f"{command!r} exited {rc}: {out}"
        return out

    def send(self, line: str) -> None:
        """Type ``line`` without waiting for an answer (``systemctl poweroff``)."""
        self._sock.sendall(f"{line}\r".encode())
