"""Run docs/TECHNICIAN.md: every kesp-provision command in it, in order, in a scratch root.

The inputs the guide says come from elsewhere (the broker's CA, the voters
file and templates from the register, the stations file as the guide shows it)
are made here; the manual copies it
describes (cec.pub and the package onto the USB stick) are done between the
commands that need them. Paths are moved under tmp_path; device commands get
``--config-dir``/``--state-dir`` pointing there and ``--user`` the test's user.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

from kiosk_helpers import ME, fvc_templates, kp, make_ca, write_csv

from hardware_sim.mosquitto import PrivateMosquitto, free_port

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "TECHNICIAN.md"
MOVED = ("/srv/", "/media/usb/", "/etc/kesp", "/var/lib/kesp")
IMAGE_COMMAND = "images/build-rootfs.sh kesp-kiosk-rootfs.tar"


def doc_commands() -> list[str]:
    """Every ``$ ...`` line of the guide's console blocks, ``sudo`` dropped."""
    commands = []
    for block in re.findall(r"```console\n(.*?)```", DOC.read_text(), re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append(line[2:].removeprefix("sudo ").strip())
    return commands


def test_every_command_is_covered() -> None:
    cmds = doc_commands()
    others = [c for c in cmds if not c.startswith("kesp-provision ")]
    assert others == [IMAGE_COMMAND]  # run by test_image.py (slow)
    image_test = (Path(__file__).with_name("test_image.py")).read_text()
    assert "build-rootfs.sh" in image_test
    groups = {tuple(c.split()[1:3]) for c in cmds if c.startswith("kesp-provision ")}
    assert groups == {("cec", "keygen"), ("cec", "build"), ("cec", "verify"), ("ops", "keygen"),
                      ("device", "init"), ("device", "request"), ("device", "install-roll"),
                      ("device", "selftest"), ("ops", "register"), ("ops", "broker-config"),
                      ("ops", "revoke")}


def _move(arg: str, root: Path) -> str:
    for prefix in MOVED:
        if arg.startswith(prefix):
            return str(root / arg.lstrip("/"))
    return arg


def test_walkthrough(tmp_path: Path) -> None:
    root = tmp_path / "root"
    usb = root / "media" / "usb"
    usb.mkdir(parents=True)
    ca, cert, key = make_ca(root / "srv" / "ops" / "pki")
    shutil.move(cert, cert.with_name("broker.crt"))
    shutil.move(key, key.with_name("broker.key"))
    shutil.copy(ca, usb / "ca.crt")
    cec_dir = root / "srv" / "cec"
    rows = fvc_templates(cec_dir / "templates", 3)
    write_csv(cec_dir / "voters.csv", "station_id,list_number,name_ky,name_ru,document",
              [("s-1017", *r) for r in rows])
    # the guide's own example of a stations file
    example = re.search(r"```text\n(station_id,district,station_name,district_name\n.*?)```",
                        DOC.read_text(), re.S)
    assert example is not None
    (cec_dir / "stations.csv").write_text(example.group(1), encoding="utf-8")
    etc = root / "etc" / "kesp"

    port = free_port()
    broker: PrivateMosquitto | None = None
    outputs: dict[str, str] = {}
    try:
        for command in doc_commands():
            if command == IMAGE_COMMAND:
                continue
            argv = [_move(a, root) for a in shlex.split(command)[1:]]
            # the documented broker is replaced by a private one on a free local port
            argv = [a.replace("telemetry.kesp.kg:8883", f"127.0.0.1:{port}") for a in argv]
            group, sub = argv[0], argv[1]
            if group == "device":
                argv += ["--config-dir", str(etc)]
                if sub == "init":
                    argv += ["--state-dir", str(root / "var" / "lib" / "kesp")]
                if sub in ("init", "install-roll"):
                    argv += ["--user", ME]
            if sub == "request":
                argv.append("--no-qr")
            if sub == "broker-config":
                argv += ["--port", str(port), "--bind", "127.0.0.1"]
            result = kp(*argv)
            outputs[f"{group} {sub}"] = result.out
            if (group, sub) == ("device", "selftest"):
                # no sensor or printer here (test_selftest.py runs the simulators);
                # keys, roll and the broker deployed from broker-config must pass
                assert result.code == 3, result
                for check in ("keys", "roll", "disk", "broker"):
                    assert re.search(rf"^OK\s+{check}\s", result.out, re.M), result.out
                assert "3 voters" in result.out and "login as osh-1017-a accepted" in result.out
                continue
            assert result.code == 0, (command, result)
            # the manual steps between commands
            if (group, sub) == ("cec", "keygen"):
                shutil.copy(cec_dir / "keys" / "cec.pub", usb / "cec.pub")
            if (group, sub) == ("ops", "keygen"):
                shutil.copy(root / "srv" / "ops" / "keys" / "ops.pub", usb / "ops.pub")
            if (group, sub) == ("ops", "broker-config"):
                listener = (root / "srv" / "ops" / "broker" / "listener.conf").read_text()
                broker = PrivateMosquitto(port, listener_config=listener + "user root\n",
                                          workdir=tmp_path / "mosq")
                broker.workdir.mkdir()
                broker.start()
            if (group, sub) == ("cec", "verify"):
                shutil.copy(cec_dir / "out-v1" / "s-1017.pkg", usb / "s-1017.pkg")
    finally:
        if broker is not None:
            broker.close()

    key_id = re.search(r"CEC key id ([0-9a-f]{16})", outputs["cec keygen"])
    assert key_id and key_id.group(1) in outputs["device init"]
    manifest = (cec_dir / "out-v1" / "manifest.csv").read_text().splitlines()[1]
    roll_hash = manifest.rsplit(",", 1)[1]
    assert f"roll hash (sha256) {roll_hash}" in outputs["device install-roll"]
    assert "registered osh-1017-a for station s-1017" in outputs["ops register"]
    assert "named 'Ош ш., 5-мектеп / г. Ош, школа № 5' in 'Ош шаары / город Ош'" in \
        outputs["cec verify"]
    assert "revoked osh-1017-a" in outputs["ops revoke"]
    assert "ops.pub" in outputs["ops keygen"]
