"""Slow: the kiosk's SD card booted on an emulated arm64 machine, a technician's two visits.

Where ``test_arm64_boot.py`` runs the root filesystem as a container
(qemu-user, the host's kernel, a host directory as the state partition),
this boots ``images/build-sdcard.sh``'s card on qemu-system-aarch64 with the
image's own arm64 kernel (tests/images/vm.py says how the devices are
wired), so what only a real kernel shows is exercised: the read-only ext4
root mounted by label, ``kesp-firstboot`` appending and formatting the state
partition with systemd-repart and the fstab bind mounts on it, the image's
udev rule naming the USB-serial printer, the USB stick mounted on demand at
``/media/usb``, the agent's unit with its user namespace and system-call
filter in force, and a Cortex-A72 whose cpuinfo is not a Pi's (QEMU's model
has the crypto extensions), so the cache key set by the unit's drop-in is
what makes the image's Numba cache load.

Visit 1, blank kiosk: first boot, ``kesp-provision device init`` and
``device request`` at the console from the stick, power off. Commands are
typed as docs/TECHNICIAN.md writes them (``sudo kesp-provision ...``). At the
centre (this host, the same code on x86): ``ops register`` and ``cec
build``. Visit 2: power on, ``device install-roll``, start the agent, the
commission opens, one voter is identified and gets a slip, the agent stops
cleanly, power off.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from arm64 import present_until_slip, write_roll_inputs
from vm import Console, make_card, make_stick, put_on_stick, qemu_argv, take_from_stick

from agent.drivers.printer.profiles import SIMULATOR_DEFAULT_PROFILE
from hardware_sim.escpos_sim import EscposPrinterSimulator
from hardware_sim.grow_sim import GrowSensorSimulator
from hardware_sim.mosquitto import PrivateMosquitto
from hardware_sim.rig import slip_kind

pytestmark = [pytest.mark.slow, pytest.mark.timeout(7200),
              pytest.mark.skipif(shutil.which("qemu-system-aarch64") is None,
                                 reason="apt-get install qemu-system-arm")]

VOTERS = 4
CARD_BYTES = 4 << 30  # the smallest card a kiosk takes
KP = "kesp-provision"


def _host_provision(*argv: str) -> str:
    exe = Path(sys.executable).with_name(KP)
    r = subprocess.run([str(exe), *argv], capture_output=True, text=True, check=False,
                       timeout=1800)
    assert r.returncode == 0, f"{argv}: {r.stdout}\n{r.stderr}"
    return r.stdout


class Machine:
    """One power-on of the kiosk: QEMU running, its console logged in."""

    def __init__(self, argv: list[str], sock: Path, log: Path) -> None:
        sock.unlink(missing_ok=True)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log.open("ab"),
                                     stderr=subprocess.STDOUT)
        self.console = Console(sock, timeout=120)

    def power_off(self, timeout: float = 900) -> float:
        """``systemctl poweroff`` at the console; seconds until the machine is off."""
        t0 = time.monotonic()
        self.console.send("systemctl poweroff")
        try:
            rc = self.proc.wait(timeout)
        finally:
            self.console.close()
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(60)
        assert rc == 0, f"qemu exited {rc}"
        return time.monotonic() - t0


def test_card_boots_provisions_and_serves_a_voter(arm64_rootfs: Path, tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    t_start = time.monotonic()
    card, kernel, initrd = make_card(arm64_rootfs, tmp_path, CARD_BYTES)
    timings["card made (copy, rig files, build-sdcard.sh)"] = time.monotonic() - t_start
    work = tmp_path / "centre"  # the CEC's and ops's workstations (this host)
    templates = write_roll_inputs(work, VOTERS)
    _host_provision("cec", "keygen", "--out-dir", str(work / "cec"))
    settings = {"sensor": {"port": "/dev/kesp-sensor"},
                "printer": {"port": "/dev/kesp-printer", "profile": SIMULATOR_DEFAULT_PROFILE}}
    stick = tmp_path / "stick.img"
    make_stick(stick, {"cec.pub": (work / "cec" / "cec.pub").read_bytes(),
                       "settings.json": json.dumps(settings).encode()})
    sock, log = tmp_path / "console.sock", tmp_path / "console.log"

    with PrivateMosquitto() as broker, \
            GrowSensorSimulator("normal", link=tmp_path / "sensor.tty") as sensor, \
            EscposPrinterSimulator(tmp_path / "printer",
                                   profile=SIMULATOR_DEFAULT_PROFILE) as printer:
        assert sensor.path and printer.path
        argv = qemu_argv(card=card, kernel=kernel, initrd=initrd, stick=stick,
                         console_sock=sock, console_log=log,
                         sensor_tty=str(Path(sensor.path).resolve()),
                         printer_tty=str(Path(printer.path).resolve()))
        broker_url = f"mqtt://10.0.2.2:{broker.port}"

        # --- visit 1: a blank kiosk's first boot, initialised from the stick
        t0 = time.monotonic()
        m = Machine(argv, sock, log)
        try:
            timings["visit 1: power on to console"] = m.console.login(timeout=3600)
            c = m.console
            c.ok("until test -e /data/.kesp-firstboot-done; do sleep 2; done", timeout=1800)
            timings["visit 1: power on to first boot done"] = time.monotonic() - t0
            assert c.ok("systemctl show -P Result kesp-firstboot.service") == "success"
            # Every unit of the image starts on the read-only root.
            c.ok("systemctl is-system-running --wait >/dev/null || true", timeout=1800)
            failed = c.ok("systemctl list-units --failed --plain --no-legend")
            assert failed == "", failed
            assert c.ok("findmnt -no OPTIONS /").split(",")[0] == "ro"
            assert c.ok("lsblk -no LABEL /dev/vda3") == "kesp-state"
            assert c.ok("findmnt -no SOURCE /data") == "/dev/vda3"
            for m_point in ("/etc/kesp", "/var/lib/kesp", "/var/cache/kesp"):
                c.ok(f"mountpoint -q {m_point}")
            assert c.ok("readlink -f /dev/kesp-printer").startswith("/dev/ttyUSB")
            assert c.ok("readlink -f /dev/kesp-sensor").startswith("/dev/ttyS")
            # A blank kiosk: the agent's unit waits for a configuration.
            assert c.ok("systemctl show -P ConditionResult kesp-agent.service") == "no"
            t1 = time.monotonic()
            c.ok(f"sudo {KP} device init --device-id arm-k1 --station s-1017 --district osh-city "
                 f"--broker {broker_url} --cec-key /media/usb/cec.pub "
                 "--settings /media/usb/settings.json", timeout=1800)
            c.ok(f"sudo {KP} device request --out /media/usb/request.json --no-qr", timeout=1800)
            c.ok("sync; umount /media/usb")
            timings["visit 1: device init + request"] = time.monotonic() - t1
            timings["visit 1: power off"] = m.power_off()
        except BaseException:
            print(log.read_text(errors="replace")[-6000:], file=sys.stderr)
            raise

        # --- at the centre: register the kiosk, build the station's roll for it
        (work / "request.json").write_bytes(take_from_stick(stick, "request.json"))
        _host_provision("ops", "register", str(work / "request.json"),
                        "--registry", str(work / "registry.json"))
        _host_provision("cec", "build", "--key", str(work / "cec" / "cec.sign"),
                        "--voters", str(work / "voters.csv"), "--templates", str(templates),
                        "--registry", str(work / "registry.json"), "--election", "pres-2026",
                        "--roll-version", "1", "--station", "s-1017",
                        "--out-dir", str(work / "out"), "--jobs", "1")
        put_on_stick(stick, "s-1017.pkg", (work / "out" / "s-1017.pkg").read_bytes())

        # --- visit 2: install the roll, the agent up, one voter, power off
        t0 = time.monotonic()
        m = Machine(argv, sock, log)
        try:
            timings["visit 2: power on to console"] = m.console.login(timeout=3600)
            c = m.console
            out = c.ok(f"sudo {KP} device install-roll /media/usb/s-1017.pkg", timeout=1800)
            assert f"{VOTERS} voters" in out, out
            t1 = time.monotonic()
            c.ok("systemctl start kesp-agent.service", timeout=2400)  # Type=notify: READY
            timings["visit 2: agent start to READY"] = time.monotonic() - t1
            # QEMU's Cortex-A72 has the crypto extensions a Pi 4 lacks, so LLVM's own
            # detection would give another cache key than the image's ...
            assert " aes " in c.ok("grep -m1 '^Features' /proc/cpuinfo") + " "
            # ... yet the image's cache, keyed by the drop-in, was loaded: nothing compiled.
            fresh = c.ok("find /var/cache/kesp/numba -type f -newer /data/.kesp-firstboot-done"
                         " | wc -l")
            assert fresh == "0", f"{fresh} cache files written: kernels were compiled"
            pid = c.ok("systemctl show -P MainPID kesp-agent.service")
            status = c.ok(f"grep -E '^(Seccomp|NoNewPrivs):' /proc/{pid}/status")
            assert "Seccomp:\t2" in status and "NoNewPrivs:\t1" in status, status
            assert c.ok(f"readlink /proc/{pid}/ns/user") != c.ok("readlink /proc/1/ns/user")
            docs = len(printer.documents)
            c.ok("sudo kesp-agent open", timeout=600)
            printer.wait_for_documents(docs + 1, timeout=600)
            assert slip_kind(printer.documents[-1].text) == "zero-report"
            t1 = time.monotonic()
            assert slip_kind(present_until_slip(sensor, printer)) == "identified"
            timings["visit 2: finger to slip"] = time.monotonic() - t1
            t1 = time.monotonic()
            c.ok("systemctl stop kesp-agent.service", timeout=600)
            assert c.ok("systemctl show -P Result kesp-agent.service") == "success"
            assert c.ok("systemctl show -P ExecMainStatus kesp-agent.service") == "0"
            timings["visit 2: agent stop"] = time.monotonic() - t1
            timings["visit 2: power off"] = m.power_off()
        except BaseException:
            print(log.read_text(errors="replace")[-6000:], file=sys.stderr)
            raise
        timings["visit 2: power on to power off"] = time.monotonic() - t0
    timings["whole test"] = time.monotonic() - t_start
    (tmp_path.parent / "arm64-vm-timings.json").write_text(json.dumps(timings, indent=1))
    shutil.copy(log, tmp_path.parent / "arm64-vm-console.log")
    print(json.dumps(timings, indent=1))
