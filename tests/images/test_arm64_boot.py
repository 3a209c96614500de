"""Slow: boot the arm64 kiosk image with systemd as PID 1 and serve one voter.

The arm64 root filesystem runs as a container (``systemd-nspawn --boot``,
every arm64 binary through qemu-user), so the real units run: the technician
provisions the kiosk with the image's ``kesp-provision`` (in a chroot, onto
a state directory that plays the state partition), the container boots
with that directory as ``/data`` and the simulated sensor and printer (host
ptys) as ``/dev/kesp-sensor`` and ``/dev/kesp-printer``; ``kesp-firstboot``
completes, ``kesp-agent`` reaches READY under its hardened unit, the
commission opens the station, a voter on the roll is identified and gets a
slip, and the container powers off with the agent stopping cleanly.

Emulation makes everything 10-30 times slower, so the test's drop-in raises
the unit's start time-out (the unit on a Pi keeps 90 s), and turns
PrivateUsers= off (qemu-user cannot set up a user namespace); every other
hardening setting of the unit applies. The root is an overlay so the tree
stays pristine. Every kesp-provision step runs with the image's own tools, so
key and package formats are the image's. What only a real arm64 kernel
shows (the read-only ext4 root, fstab, systemd-repart of the state
partition, udev naming of USB devices, the seccomp system-call filter, which
qemu-user refuses so systemd skips SystemCallFilter= here) is checked by
``test_arm64_vm.py`` on qemu-system-aarch64; the Pi's own boot path
(firmware, device tree) cannot be emulated either way. Under qemu-user in a container, units that
set up credentials (systemd-sysusers, systemd-tmpfiles-setup: "Failed to set
up credentials: Invalid argument") and systemd-remount-fs (no kesp-root
device) fail; the kiosk's own units do not depend on them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from arm64 import present_until_slip, run, target_cpu, write_roll_inputs

from agent.drivers.printer.profiles import SIMULATOR_DEFAULT_PROFILE
from agent.runtime.control import ControlError, request
from hardware_sim.escpos_sim import EscposPrinterSimulator
from hardware_sim.grow_sim import GrowSensorSimulator
from hardware_sim.mosquitto import PrivateMosquitto
from hardware_sim.rig import slip_kind

pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400),
              pytest.mark.skipif(shutil.which("systemd-nspawn") is None,
                                 reason="apt-get install systemd-container")]

KP = "/opt/kesp/venv/bin/kesp-provision"
#: Emulation only: importing NumPy/Numba and loading the kernels take minutes under qemu-user.
#: qemu-user cannot set up a user namespace ("Failed to set up user namespacing: Invalid
#: argument"), so PrivateUsers= is off in the container; the kiosk keeps PrivateUsers=yes.
EMULATED_DROPIN = "[Service]\nTimeoutStartSec=30min\nWatchdogSec=10min\nPrivateUsers=no\n"
VOTERS = 4


def _provision(cmd: list[str], root: Path, binds: dict[Path, str]) -> str:
    # The image's Numba cache, keyed as the unit keys it (cec build prepares templates).
    env = {"HOME": "/root", "NUMBA_CACHE_DIR": "/usr/lib/kesp/numba-cache",
           "NUMBA_CPU_NAME": target_cpu()["KESP_PI4_CPU"],
           "NUMBA_CPU_FEATURES": target_cpu()["KESP_PI4_FEATURES"]}
    r = run(root, [KP, *cmd], binds=binds, env=env, timeout=1800)
    assert r.returncode == 0, f"{cmd}: {r.stdout}\n{r.stderr}"
    return r.stdout


def _wait(what: str, predicate: Callable[[], bool], timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _container_init(nspawn: subprocess.Popen[str]) -> int:
    """PID of the container's PID 1 (the nspawn process's child running systemd)."""
    for _ in range(600):
        kids = Path(f"/proc/{nspawn.pid}/task/{nspawn.pid}/children").read_text().split()
        for kid in kids:
            if "systemd" in Path(f"/proc/{kid}/cmdline").read_bytes().decode(errors="replace"):
                return int(kid)
        time.sleep(0.5)
    raise AssertionError("the container's init did not start")


def _inside(pid: int, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", *argv],
                          capture_output=True, text=True, check=False, timeout=600)


def test_boot_ready_identify_print_stop(arm64_rootfs: Path, tmp_path: Path) -> None:
    root = arm64_rootfs
    kesp_uid = int(next(line.split(":")[2] for line in
                        (root / "etc/passwd").read_text().splitlines()
                        if line.startswith("kesp:")))
    state = tmp_path / "data"  # the state partition
    for d in ("etc-kesp", "lib-kesp", "cache-kesp", "timesync"):
        (state / d).mkdir(parents=True)
    usb = tmp_path / "usb"
    usb.mkdir()
    t_start = time.monotonic()
    timings: dict[str, float] = {}
    with PrivateMosquitto() as broker, \
            GrowSensorSimulator("normal", link=tmp_path / "sensor.tty") as sensor, \
            EscposPrinterSimulator(tmp_path / "printer",
                                   profile=SIMULATOR_DEFAULT_PROFILE) as printer:
        assert sensor.path and printer.path
        # Every kesp-provision step with the image's own tools (CEC, ops and the
        # technician at the kiosk), so the package formats are the image's.
        (usb / "settings.json").write_text(json.dumps({
            "sensor": {"port": "/dev/kesp-sensor"},
            "printer": {"port": "/dev/kesp-printer", "profile": SIMULATOR_DEFAULT_PROFILE}}))
        work = tmp_path / "work"  # the CEC's and ops's workstations
        work.mkdir()
        write_roll_inputs(work, VOTERS)  # /srv/voters.csv, /srv/templates
        binds = {state / "etc-kesp": "/etc/kesp", state / "lib-kesp": "/var/lib/kesp",
                 usb: "/media/usb", work: "/srv"}
        t0 = time.monotonic()
        _provision(["cec", "keygen", "--out-dir", "/srv/cec"], root, binds)
        shutil.copy(work / "cec" / "cec.pub", usb / "cec.pub")
        _provision(["device", "init", "--device-id", "arm-k1", "--station", "s-1017",
                    "--district", "osh-city", "--broker", broker.url,
                    "--cec-key", "/media/usb/cec.pub", "--settings", "/media/usb/settings.json"],
                   root, binds)
        _provision(["device", "request", "--out", "/media/usb/request.json", "--no-qr"],
                   root, binds)
        _provision(["ops", "register", "/media/usb/request.json", "--registry",
                    "/srv/registry.json"], root, binds)
        _provision(["cec", "build", "--key", "/srv/cec/cec.sign", "--voters", "/srv/voters.csv",
                    "--templates", "/srv/templates", "--registry", "/srv/registry.json",
                    "--election", "pres-2026", "--roll-version", "1", "--station", "s-1017",
                    "--out-dir", "/srv/out", "--jobs", "1"], root, binds)
        shutil.copy(work / "out" / "s-1017.pkg", usb / "s-1017.pkg")
        out = _provision(["device", "install-roll", "/media/usb/s-1017.pkg"], root, binds)
        assert f"{VOTERS} voters" in out, out
        timings["provision, every step emulated"] = time.monotonic() - t0
        # What 99-kesp.rules does for the real devices.
        for tty in (sensor.path, printer.path):
            os.chown(os.path.realpath(tty), kesp_uid, kesp_uid)
        dropin = tmp_path / "emulated.conf"
        dropin.write_text(EMULATED_DROPIN)

        log = (tmp_path / "console.log").open("w")
        t_boot = time.monotonic()
        nspawn = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--boot", "--directory", str(root),
             "--volatile=overlay", "--register=no", "--keep-unit", "--machine=kesp-arm64",
             "--console=pipe", f"--bind={state}:/data",
             f"--bind={os.path.realpath(sensor.path)}:/dev/kesp-sensor",
             f"--bind={os.path.realpath(printer.path)}:/dev/kesp-printer",
             f"--bind-ro={dropin}:/etc/systemd/system/kesp-agent.service.d/emulated.conf"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            pid = _container_init(nspawn)
            sock = Path(f"/proc/{pid}/root/run/kesp/agent.sock")

            def agent_state() -> str:
                r = _inside(pid, "/bin/systemctl", "show", "-P", "ActiveState",
                            "kesp-agent.service")
                return r.stdout.strip()

            def firstboot_done() -> bool:
                return (state / ".kesp-firstboot-done").exists()

            timings["first boot unit done"] = _wait("kesp-firstboot", firstboot_done, 1800)
            timings["kesp-agent READY (active)"] = _wait(
                "kesp-agent to report READY", lambda: agent_state() == "active", 3000)
            r = _inside(pid, "/bin/systemctl", "show", "-P", "Result", "kesp-firstboot.service")
            assert r.stdout.strip() == "success", r.stdout + r.stderr
            # The commission opens the station: the zero report is printed.
            docs = len(printer.documents)
            request(sock, "open", timeout_s=600)
            printer.wait_for_documents(docs + 1, timeout=600)
            # Voter 1 (list number 1) presents impressions not in the roll until a slip.
            t0 = time.monotonic()
            slip = present_until_slip(sensor, printer)
            timings["finger to slip (emulated)"] = time.monotonic() - t0
            assert slip_kind(slip) == "identified", slip
            status = request(sock, "status", timeout_s=600)
            assert status["counts"]["identified"] == 1, status
            # The agent stops as systemd stops it at shutdown: SIGTERM, exit 0.
            t0 = time.monotonic()
            r = _inside(pid, "/bin/systemctl", "stop", "kesp-agent.service")
            assert r.returncode == 0, r.stderr
            r = _inside(pid, "/bin/systemctl", "show", "-P", "Result", "kesp-agent.service")
            code = _inside(pid, "/bin/systemctl", "show", "-P", "ExecMainStatus",
                           "kesp-agent.service")
            assert (r.stdout.strip(), code.stdout.strip()) == ("success", "0"), (r, code)
            timings["agent stop"] = time.monotonic() - t0
        except (AssertionError, ControlError):
            r = _inside(pid, "/bin/journalctl", "--no-pager", "-n", "200") \
                if nspawn.poll() is None else None
            print(r.stdout if r else "", file=sys.stderr)
            raise
        finally:
            t0 = time.monotonic()
            if nspawn.poll() is None:
                # A clean poweroff from inside: nspawn's own SIGRTMIN+4 does not reach an
                # emulated systemd (qemu-user renumbers real-time signals).
                _inside(pid, "/bin/systemctl", "poweroff")
                try:
                    nspawn.wait(timeout=900)
                except subprocess.TimeoutExpired:
                    nspawn.kill()
                    nspawn.wait(60)
            timings["clean poweroff"] = time.monotonic() - t0
            log.close()
    console = (tmp_path / "console.log").read_text(errors="replace")
    assert nspawn.returncode == 0, console[-4000:]
    timings["whole test"] = time.monotonic() - t_start
    timings["boot to slip"] = time.monotonic() - t_boot
    report = tmp_path.parent / "arm64-boot-timings.json"
    report.write_text(json.dumps(timings, indent=1))
    print(json.dumps(timings, indent=1))
    shutil.copy(tmp_path / "console.log", tmp_path.parent / "arm64-boot-console.log")
