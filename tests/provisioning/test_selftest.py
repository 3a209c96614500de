"""device selftest against a real TLS mosquitto and the sensor/printer simulators."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kiosk_helpers import ME, Kiosk, MakeKiosk, fvc_templates, kp, make_ca, ok, write_csv

from agent.drivers.printer.profiles import SIMULATOR_DEFAULT_PROFILE
from agent.runtime.config import load_config
from hardware_sim.escpos_sim import EscposPrinterSimulator
from hardware_sim.grow_sim import GrowSensorSimulator
from hardware_sim.mosquitto import PrivateMosquitto, free_port
from provisioning.request import parse_request
from provisioning.selftest import check_clock


@dataclass
class Site:
    kiosk: Kiosk
    broker: PrivateMosquitto
    sensor: GrowSensorSimulator
    printer: EscposPrinterSimulator
    password_file: Path
    ca: Path


@pytest.fixture
def site(tmp_path: Path, make_kiosk: MakeKiosk) -> Iterator[Site]:
    ca, cert, key = make_ca(tmp_path / "pki")
    port = free_port()
    sensor = GrowSensorSimulator("normal", link=tmp_path / "sensor.tty").start()
    printer = EscposPrinterSimulator(tmp_path / "printer").start()
    (tmp_path / "printer").mkdir(exist_ok=True)
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({
        "sensor": {"kind": "grow-serial", "port": str(sensor.path)},
        "printer": {"kind": "escpos-serial", "port": str(printer.path),
                    "profile": SIMULATOR_DEFAULT_PROFILE},
    }))
    kiosk = make_kiosk("kiosk-a", broker=f"mqtts://127.0.0.1:{port}",
                       extra=("--ca", str(ca), "--settings", str(settings)))
    req = parse_request(kiosk.request.read_text())
    pw = tmp_path / "passwd"
    pw.write_text(f"{req.broker_username}:{req.broker_password_hash}\n")
    pw.chmod(0o600)
    broker = PrivateMosquitto(port, listener_config=(
        f"listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        f"allow_anonymous false\npassword_file {pw}\n"
        # as root mosquitto would drop to user mosquitto, who cannot read tmp_path
        "user root\n"), workdir=tmp_path / "mosq")
    broker.workdir.mkdir()
    broker.start()
    try:
        yield Site(kiosk, broker, sensor, printer, pw, ca)
    finally:
        broker.close()
        sensor.stop()
        printer.stop()


def lines(out: str) -> dict[str, str]:
    """check name -> status from the selftest report."""
    result = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("OK", "WARN", "OFFLINE", "FAIL"):
            result[parts[1]] = parts[0]
    return result


def test_selftest_ready(site: Site, tmp_path: Path) -> None:
    pkg_dir = tmp_path / "out"
    tpl = tmp_path / "tpl"
    csv = write_csv(tmp_path / "v.csv", "list_number,name_ky,name_ru,document",
                    fvc_templates(tpl, 2))
    ok("cec", "build", "--key", tmp_path / "cec" / "cec.sign", "--voters", csv, "--templates",
       tpl, "--registry", tmp_path / "ops" / "registry.json", "--election", "pres-2026",
       "--roll-version", "1", "--station", "s-1017", "--out-dir", pkg_dir, "--jobs", "1")
    r = kp("device", "selftest", "--config-dir", site.kiosk.etc)
    assert r.code == 3 and lines(r.out)["roll"] == "FAIL" and "no roll installed" in r.out
    ok("device", "install-roll", pkg_dir / "s-1017.pkg", "--config-dir", site.kiosk.etc,
       "--user", ME)
    r = kp("device", "selftest", "--config-dir", site.kiosk.etc)
    status = lines(r.out)
    assert status == {"keys": "OK", "roll": "OK", "disk": "OK", "clock": status["clock"],
                      "broker": "OK", "sensor": "OK", "printer": "OK"}, r.out
    assert "TLS, CA verified, login as kiosk-a accepted" in r.out
    assert "2 voters" in r.out
    assert r.code == 0 and "READY" in r.out


def test_selftest_broker_failures(site: Site, tmp_path: Path) -> None:
    etc = site.kiosk.etc
    # wrong password on the broker: as if the kiosk was revoked from the password file
    site.password_file.write_text("someone-else:$7$101$AAAA$BBBB\n")
    site.broker.stop()
    site.broker.start()
    r = kp("device", "selftest", "--config-dir", etc, "--timeout", "3")
    assert r.code == 3 and lines(r.out)["broker"] == "FAIL"
    assert "broker refused" in r.out or "without CONNACK" in r.out
    site.broker.stop()
    r = kp("device", "selftest", "--config-dir", etc, "--timeout", "2")
    # no broker is no network for the kiosk: it works offline, that is not a failure
    assert lines(r.out)["broker"] == "OFFLINE" and "unreachable" in r.out
    assert "works offline" in r.out and "NOT READY: fix roll (" in r.out
    # a CA that did not sign the broker's certificate
    other_ca, _, _ = make_ca(tmp_path / "other-pki")
    cfg = load_config(etc / "agent.json")
    Path(cfg.broker.ca_file).write_bytes(other_ca.read_bytes())
    site.broker.start()
    r = kp("device", "selftest", "--config-dir", etc, "--timeout", "3")
    assert lines(r.out)["broker"] == "FAIL" and "TLS with 127.0.0.1" in r.out
    assert "NOT READY" in r.out


def test_selftest_devices_fail(site: Site) -> None:
    site.sensor.unplug()
    site.printer.stop()
    r = kp("device", "selftest", "--config-dir", site.kiosk.etc)
    status = lines(r.out)
    assert status["sensor"] == "FAIL" and status["printer"] == "FAIL", r.out
    assert r.code == 3
    for name, port in (("sensor", site.sensor.path), ("printer", site.printer.path)):
        line = next(x for x in r.out.splitlines() if x.split()[1:2] == [name])
        # the cause once, in words, with what to do (drivers wrap the OS error twice)
        assert line.count(str(port)) == 1, line
        assert line.endswith(": not connected: check its cable"), line


def test_selftest_paper_out(tmp_path: Path, site: Site) -> None:
    site.printer.stop()
    out = tmp_path / "printer2"
    out.mkdir()
    printer = EscposPrinterSimulator(out, scenario="paper-out").start()
    try:
        cfg_path = site.kiosk.etc / "agent.json"
        doc = json.loads(cfg_path.read_text())
        doc["printer"]["port"] = str(printer.path)
        cfg_path.write_text(json.dumps(doc))
        r = kp("device", "selftest", "--config-dir", site.kiosk.etc)
        assert lines(r.out)["printer"] == "FAIL" and "paper-out" in r.out
    finally:
        printer.stop()


def test_clock_check(tmp_path: Path) -> None:
    assert check_clock(datetime(1970, 1, 1, tzinfo=UTC)).status == "fail"
    flag = tmp_path / "synchronized"
    now = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
    assert check_clock(now, flag).status == "warn"
    flag.touch()
    assert check_clock(now, flag).status == "ok"


def test_selftest_uninitialised(tmp_path: Path) -> None:
    r = kp("device", "selftest", "--config-dir", tmp_path / "blank")
    assert r.code == 1 and "device init" in r.err
