"""Slow: build the amd64 variant of the kiosk root filesystem and start the agent inside it.

Runs ``images/build-rootfs.sh`` (mmdebstrap, needs root and network; a few
minutes), then checks the agent, units, rules and Numba cache are in place,
and provisions the image like a technician would (``device init``,
``request``, ``install-roll`` run *inside* the image with its default paths)
before starting ``kesp-agent`` inside it as the ``kesp`` user against the
simulated sensor and printer and a private broker, waiting for its
``READY=1`` on a notify socket exactly as systemd would.

Not in the default suite: ``pytest -m slow tests/provisioning/test_image.py``.
``KESP_IMAGE_MIRROR`` overrides the apt source (default deb.debian.org).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kiosk_helpers import fvc_templates, kp, ok, write_csv

from agent.drivers.printer.profiles import SIMULATOR_DEFAULT_PROFILE
from hardware_sim.escpos_sim import EscposPrinterSimulator
from hardware_sim.grow_sim import GrowSensorSimulator
from hardware_sim.mosquitto import PrivateMosquitto

REPO = Path(__file__).resolve().parents[2]
MIRROR = os.environ.get("KESP_IMAGE_MIRROR", "deb http://deb.debian.org/debian bookworm main")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(os.geteuid() != 0, reason="building a root filesystem needs root"),
    pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="apt-get install mmdebstrap"),
]


@pytest.fixture(scope="module")
def rootfs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The marker alone does not keep it out of a plain `pytest` run (addopts has
    # no -m); only an explicit `-m slow` (or KESP_SLOW=1) builds the image.
    markexpr = str(request.config.getoption("markexpr") or "")
    if "slow" not in markexpr.replace("not slow", "") and os.environ.get("KESP_SLOW") != "1":
        pytest.skip("builds an OS image: run with -m slow")
    root = tmp_path_factory.mktemp("image") / "rootfs"
    env = {**os.environ, "KESP_ARCH": "amd64", "KESP_NO_KERNEL": "1", "KESP_MIRROR": MIRROR,
           "PYTHON": str(REPO / ".venv" / "bin" / "python")}
    proc = subprocess.run(["sh", str(REPO / "images" / "build-rootfs.sh"), str(root)], env=env,
                          capture_output=True, text=True, check=False, timeout=1700)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root


def test_agent_units_and_rules_in_place(rootfs: Path) -> None:
    venv = rootfs / "opt" / "kesp" / "venv" / "bin"
    for tool in ("kesp-agent", "kesp-provision", "python"):
        assert (venv / tool).exists(), tool
    etc = rootfs / "etc"
    assert (etc / "systemd/system/kesp-agent.service").read_bytes() == (
        REPO / "systemd/kesp-agent.service").read_bytes()
    wants = etc / "systemd/system/multi-user.target.wants/kesp-agent.service"
    assert wants.is_symlink()
    assert (etc / "systemd/system/local-fs.target.wants/kesp-firstboot.service").is_symlink()
    # time-sync.target waits for NTP (bounded, so an offline station still opens)
    assert (etc / "systemd/system/sysinit.target.wants/systemd-time-wait-sync.service"
            ).is_symlink()
    assert "TimeoutStartSec=" in (
        etc / "systemd/system/systemd-time-wait-sync.service.d/kesp.conf").read_text()
    assert (etc / "udev/rules.d/99-kesp.rules").read_bytes() == (
        REPO / "systemd/99-kesp.rules").read_bytes()
    assert (rootfs / "usr/lib/tmpfiles.d/kesp.conf").exists()
    assert (rootfs / "usr/lib/sysusers.d/kesp.conf").exists()
    # Nothing of the build host: its name and its name servers stay behind.
    assert (etc / "hostname").read_text() == "kesp\n"
    assert os.readlink(etc / "resolv.conf") == "../run/systemd/resolve/stub-resolv.conf"
    # The technician's commands as the guide writes them: on the PATH, through sudo.
    for tool in ("kesp-agent", "kesp-provision"):
        assert os.readlink(rootfs / "usr/local/bin" / tool) == f"/opt/kesp/venv/bin/{tool}"
    assert (rootfs / "usr/bin/sudo").exists()
    # The state directories of base services exist on the read-only root.
    for d in ("linger", "rfkill", "backlight"):
        assert (rootfs / "var/lib/systemd" / d).is_dir(), d
    assert (rootfs / "media/usb").is_dir()
    assert any(line.startswith("kesp:") for line in (etc / "passwd").read_text().splitlines())
    dropin = (etc / "systemd/system/kesp-agent.service.d/image.conf").read_text()
    assert "NUMBA_CPU_NAME=x86-64-v2" in dropin and "RequiresMountsFor=" in dropin
    assert "NUMBA_CPU_FEATURES=+cx16,+popcnt," in dropin
    fstab = (etc / "fstab").read_text()
    assert " / " in fstab and "ro," in fstab.split(" / ", 1)[1].split("\n")[0]
    assert (etc / "machine-id").read_text() == ""
    cache = rootfs / "usr/lib/kesp/numba-cache"
    assert list(cache.rglob("*.nbi")) and list(cache.rglob("*.nbc"))


def test_units_verify_inside_the_image(rootfs: Path) -> None:
    for unit in ("kesp-agent.service", "kesp-firstboot.service"):
        proc = subprocess.run(["systemd-analyze", "verify", f"--root={rootfs}", unit],
                              capture_output=True, text=True, check=False, timeout=120)
        assert proc.returncode == 0 and unit not in proc.stderr, proc.stderr


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, timeout=30)


@pytest.fixture
def mounted(rootfs: Path) -> Iterator[Path]:
    """/dev (with the simulators' ptys) and /proc inside the image, like a booted system."""
    _mount("--rbind", "/dev", str(rootfs / "dev"))
    _mount("--make-rslave", str(rootfs / "dev"))
    _mount("-t", "proc", "proc", str(rootfs / "proc"))
    try:
        yield rootfs
    finally:
        subprocess.run(["umount", "-R", str(rootfs / "dev")], check=False, timeout=30)
        subprocess.run(["umount", str(rootfs / "proc")], check=False, timeout=30)


def _inside(root: Path, *argv: str, user: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["chroot", *([f"--userspec={user}:{user}"] if user else []), str(root),
           "/usr/bin/env", "-i", "PATH=/usr/bin:/bin", *(f"{k}={v}" for k, v in
                                                        (env or {}).items()), *argv]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)


def test_agent_starts_inside_the_image(mounted: Path, tmp_path: Path) -> None:
    root = mounted
    sim = root / "run" / "kesp-sim"
    sim.mkdir(parents=True, exist_ok=True)
    kp_bin = "/opt/kesp/venv/bin/kesp-provision"
    ok("cec", "keygen", "--out-dir", tmp_path / "cec")
    shutil.copy(tmp_path / "cec" / "cec.pub", root / "tmp" / "cec.pub")
    with PrivateMosquitto() as broker, \
            GrowSensorSimulator("normal", link=sim / "sensor.tty") as sensor, \
            EscposPrinterSimulator(sim / "printer") as printer:
        settings = root / "tmp" / "settings.json"
        settings.write_text(json.dumps({
            "sensor": {"port": "/run/kesp-sim/sensor.tty"},
            "printer": {"port": "/run/kesp-sim/printer/printer.tty",
                        "profile": SIMULATOR_DEFAULT_PROFILE}}))
        assert sensor.path and printer.path
        # the technician's steps, inside the image with its default paths and user
        r = _inside(root, kp_bin, "device", "init", "--device-id", "img-k1", "--station",
                    "s-1017", "--district", "osh-city", "--broker", broker.url,
                    "--cec-key", "/tmp/cec.pub", "--settings", "/tmp/settings.json")
        assert r.returncode == 0, r.stderr
        r = _inside(root, kp_bin, "device", "request", "--out", "/tmp/request.json", "--no-qr")
        assert r.returncode == 0, r.stderr
        keys = root / "etc" / "kesp" / "keys"
        kesp_uid = int(next(line.split(":")[2] for line in
                            (root / "etc" / "passwd").read_text().splitlines()
                            if line.startswith("kesp:")))
        assert keys.stat().st_uid == kesp_uid and (keys / "device.box").stat().st_uid == kesp_uid
        registry = tmp_path / "registry.json"
        ok("ops", "register", root / "tmp" / "request.json", "--registry", registry)
        tpl = tmp_path / "tpl"
        csv = write_csv(tmp_path / "v.csv", "list_number,name_ky,name_ru,document",
                        fvc_templates(tpl, 4))
        ok("cec", "build", "--key", tmp_path / "cec" / "cec.sign", "--voters", csv,
           "--templates", tpl, "--registry", registry, "--election", "pres-2026",
           "--roll-version", "1", "--station", "s-1017", "--out-dir", tmp_path / "out",
           "--jobs", "1")
        shutil.copy(tmp_path / "out" / "s-1017.pkg", root / "tmp" / "s-1017.pkg")
        r = _inside(root, kp_bin, "device", "install-roll", "/tmp/s-1017.pkg")
        assert r.returncode == 0 and "4 voters" in r.stdout, r.stderr
        assert (root / "var/lib/kesp/roll.pkg").stat().st_uid == kesp_uid
        # what kesp-firstboot does on the state partition: the warmed cache, writable
        cache = root / "var/cache/kesp/numba"
        shutil.rmtree(cache, ignore_errors=True)
        shutil.copytree(root / "usr/lib/kesp/numba-cache", cache)
        subprocess.run(["chown", "-R", f"{kesp_uid}:{kesp_uid}", str(cache)], check=True)
        (root / "run" / "kesp").mkdir(exist_ok=True)  # RuntimeDirectory= under systemd
        os.chown(root / "run" / "kesp", kesp_uid, kesp_uid)
        # what 99-kesp.rules does for the real devices: group access for kesp
        for tty in (sensor.path, printer.path):
            os.chown(os.path.realpath(tty), kesp_uid, kesp_uid)

        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify_path = sim / "notify"
        notify.bind(str(notify_path))
        os.chmod(notify_path, 0o666)
        notify.settimeout(1.0)
        env = {"NOTIFY_SOCKET": "/run/kesp-sim/notify", "NUMBA_CACHE_DIR":
               "/var/cache/kesp/numba", "NUMBA_CPU_NAME": "x86-64-v2",
               "NUMBA_CPU_FEATURES": "+cx16,+popcnt,+sahf,+sse3,+sse4.1,+sse4.2,+ssse3",
               "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/var/lib/kesp"}
        cmd = ["chroot", f"--userspec={kesp_uid}:{kesp_uid}", str(root), "/usr/bin/env", "-i",
               *(f"{k}={v}" for k, v in env.items()),
               "/opt/kesp/venv/bin/kesp-agent", "--config", "/etc/kesp/agent.json", "run"]
        agent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
        messages: list[str] = []
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and not any("READY=1" in m for m in messages):
                if agent.poll() is not None:
                    break
                try:
                    messages.append(notify.recv(4096).decode())
                except TimeoutError:
                    continue
            ready = any("READY=1" in m for m in messages)
            agent.send_signal(signal.SIGTERM)
            out, _ = agent.communicate(timeout=60)
        finally:
            if agent.poll() is None:
                agent.kill()
            notify.close()
        assert ready, f"no READY=1 from the agent (notify {messages}):\n{out[-4000:]}"
        assert agent.returncode == 0, out[-4000:]
        written = [p for p in (root / "var/lib/kesp").iterdir() if p.name != "roll.pkg"]
        assert written and all(p.stat().st_uid == kesp_uid for p in written)
    assert kp("cec", "verify", tmp_path / "out" / "s-1017.pkg", "--cec-key",
              tmp_path / "cec" / "cec.pub").code == 0
