"""kesp-provision end to end: every step, its output, exit code and refusals."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from kiosk_helpers import ME, MakeKiosk, fvc_templates, kp, ok, write_csv
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from agent.roll.package import Kiosk as PkgKiosk
from agent.roll.package import Roll, build_package, open_package
from agent.runtime.config import load_config
from agent.runtime.keys import load_keys
from agent.station.lifecycle import Command, Lifecycle
from provisioning.device import load_installed_roll
from provisioning.keyfiles import read_public_key
from provisioning.opscmd import requests_dir, station_kiosks
from provisioning.request import parse_request
from provisioning.synthetic import synthetic_voters

HEADER = "list_number,name_ky,name_ru,document"


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes (to prove a refusal changed nothing)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# ------------------------------------------------------------------ cec keygen


def test_cec_keygen_modes_and_refuses_second_run(cec: Path) -> None:
    assert mode(cec / "cec.sign") == 0o600
    pub = read_public_key(cec / "cec.pub", "cec")
    assert SigningKey((cec / "cec.sign").read_bytes()).verify_key == pub
    last_line = (cec / "cec.pub").read_text().splitlines()[-1]
    assert last_line == f"kesp-public-key cec {bytes(pub).hex()}"
    before = tree(cec)
    r = kp("cec", "keygen", "--out-dir", cec)
    assert r.code == 1 and "already exists" in r.err and "cec.sign" in r.err
    assert tree(cec) == before


# ------------------------------------------------------------------ device init


def test_device_init_writes_validated_config_and_private_keys(make_kiosk: MakeKiosk,
                                                              cec: Path) -> None:
    k = make_kiosk("kiosk-a", register=False)
    cfg = load_config(k.etc / "agent.json")
    assert (cfg.device_id, cfg.station_id, cfg.district) == ("kiosk-a", "s-1017", "osh-city")
    assert cfg.broker.username == "kiosk-a"
    keys = Path(cfg.key_dir)
    assert mode(keys) == 0o700
    for name in ("device.sign", "device.box", "broker.pass"):
        assert mode(keys / name) == 0o600, name
    # the kiosk keeps the bare hex digits the agent reads
    cec_hex = bytes(read_public_key(cec / "cec.pub", "cec")).hex()
    assert (keys / "cec.pub").read_text() == cec_hex + "\n"
    load_keys(keys)  # permissions and sizes acceptable to the agent
    assert not [p for p in k.etc.iterdir() if p.name.startswith(".init-")]
    assert k.var.is_dir()


def test_device_init_twice_is_refused_and_changes_nothing(make_kiosk: MakeKiosk,
                                                          cec: Path) -> None:
    k = make_kiosk("kiosk-a", register=False)
    before = tree(k.etc)
    r = kp("device", "init", "--device-id", "kiosk-z", "--station", "s-9", "--district", "x",
           "--broker", "mqtt://h:1", "--cec-key", cec / "cec.pub", "--config-dir", k.etc,
           "--state-dir", k.var, "--user", ME)
    assert r.code == 1
    assert "already initialised as kiosk kiosk-a for station s-1017" in r.err
    assert tree(k.etc) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--broker", "http://broker:8883"), "broker.url"),
        (("--broker", "mqtts://broker"), "has no port"),
        (("--broker", "mqtt://broker:99999"), "bad port"),
        (("--device-id", "Kiosk A"), "device_id"),
        (("--station", ""), "station_id"),
        (("--broker", "mqtts://broker:8883"), "give the broker's CA with --ca"),
    ],
)
def test_device_init_bad_input_refused_nothing_written(
    tmp_path: Path, cec: Path, args: tuple[str, ...], message: str
) -> None:
    base = {"--device-id": "kiosk-a", "--station": "s-1", "--district": "osh",
            "--broker": "mqtt://broker:1883"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = [x for kv in base.items() for x in kv]
    r = kp("device", "init", *argv, "--cec-key", cec / "cec.pub",
           "--config-dir", tmp_path / "etc", "--state-dir", tmp_path / "var", "--user", ME)
    assert r.code == 1, r
    assert message in r.err
    assert tree(tmp_path / "etc") == {}


def test_device_init_refuses_unknown_setting_and_accepts_known(tmp_path: Path,
                                                               cec: Path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"sensor": {"kind": "grow-serial", "prot": "/dev/x"}}))
    argv: list[str | Path] = [
            "device", "init", "--device-id", "kiosk-a", "--station", "s-1", "--district", "osh",
            "--broker", "mqtt://b:1883", "--cec-key", cec / "cec.pub",
            "--config-dir", tmp_path / "etc", "--state-dir", tmp_path / "var", "--user", ME,
            "--settings", settings]
    r = kp(*argv)
    assert r.code == 1 and "sensor: unknown field(s) prot" in r.err
    assert tree(tmp_path / "etc") == {}
    settings.write_text(json.dumps({"station_id": "s-2"}))
    r = kp(*argv)
    assert r.code == 1 and "may not set station_id" in r.err
    settings.write_text(json.dumps({"sensor": {"port": "/dev/ttyUSB1"}, "peers": ["10.0.0.2"]}))
    ok(*argv)
    cfg = load_config(tmp_path / "etc" / "agent.json")
    assert cfg.sensor.port == "/dev/ttyUSB1" and cfg.peers == ("10.0.0.2",)


def test_device_init_key_problems(tmp_path: Path, cec: Path) -> None:
    argv: list[str | Path] = [
            "device", "init", "--device-id", "kiosk-a", "--station", "s-1", "--district", "osh",
            "--broker", "mqtt://b:1883", "--config-dir", tmp_path / "etc",
            "--state-dir", tmp_path / "var", "--user", ME]
    r = kp(*argv, "--cec-key", tmp_path / "nope.pub")
    assert r.code == 1 and "not found" in r.err
    r = kp(*argv, "--cec-key", cec / "cec.sign")
    assert r.code == 1 and "*secret* key" in r.err
    (tmp_path / "junk.pub").write_text("hello\n")
    r = kp(*argv, "--cec-key", tmp_path / "junk.pub")
    assert r.code == 1 and "not a CEC public key" in r.err
    assert tree(tmp_path / "etc") == {}


def test_device_init_bad_ca(tmp_path: Path, cec: Path) -> None:
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    r = kp("device", "init", "--device-id", "kiosk-a", "--station", "s-1", "--district", "osh",
           "--broker", "mqtts://b:8883", "--ca", tmp_path / "ca.crt", "--cec-key",
           cec / "cec.pub", "--config-dir", tmp_path / "etc", "--state-dir", tmp_path / "var",
           "--user", ME)
    assert r.code == 1 and "is not a PEM CA certificate" in r.err
    assert tree(tmp_path / "etc") == {}


def test_interrupted_init_is_named(tmp_path: Path, cec: Path) -> None:
    keys = tmp_path / "etc" / "keys"
    keys.mkdir(parents=True)
    (keys / "device.sign").write_bytes(b"\x00" * 32)
    r = kp("device", "init", "--device-id", "kiosk-a", "--station", "s-1", "--district", "osh",
           "--broker", "mqtt://b:1883", "--cec-key", cec / "cec.pub", "--config-dir",
           tmp_path / "etc", "--state-dir", tmp_path / "var", "--user", ME)
    assert r.code == 1 and "previous init was interrupted" in r.err


def test_wrong_user_is_refused(tmp_path: Path, cec: Path) -> None:
    """A real process running as 'nobody' is refused before it touches anything."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start a process as another user")
    tmp_path.chmod(0o755)
    (cec / "cec.pub").parent.chmod(0o755)
    code = ("import sys; from provisioning.cli import main; sys.exit(main(sys.argv[1:]))")
    argv = ["device", "init", "--device-id", "kiosk-a", "--station", "s-1", "--district",
            "osh", "--broker", "mqtt://b:1883", "--cec-key", str(cec / "cec.pub"),
            "--config-dir", str(tmp_path / "etc"), "--state-dir", str(tmp_path / "var"),
            "--user", "root"]
    proc = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         sys.executable, "-c", code, *argv],
        check=False, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "HOME": "/"}, timeout=60,
    )
    assert proc.returncode == 1, proc
    assert "running as 'nobody': run this step as root (sudo) or as 'root'" in proc.stderr
    assert not (tmp_path / "etc").exists()
    # the service user itself may run steps, but not write where only root can
    proc = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         sys.executable, "-c", code, *argv[:-1], "nobody"],
        check=False, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "HOME": "/"}, timeout=60,
    )
    assert proc.returncode == 1, proc
    assert "refused: Permission denied: " in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "etc").exists()
    r = kp(*argv[:-1], "no-such-user-kesp")
    assert r.code == 1 and "service user 'no-such-user-kesp' does not exist" in r.err


# ------------------------------------------------------------------ request / ops


def test_request_is_signed_deterministic_and_complete(make_kiosk: MakeKiosk) -> None:
    k = make_kiosk("kiosk-a", register=False)
    req = parse_request(k.request.read_text())
    keys = load_keys(k.etc / "keys")
    assert req.verify_key == keys.verify_key_hex and req.box_key == keys.box_public_hex
    assert req.broker_username == "kiosk-a" and req.broker_password_hash.startswith("$7$101$")
    again = ok("device", "request", "--config-dir", k.etc)
    assert req.to_json() in again.out
    assert "█" in again.out or "▀" in again.out  # the QR code
    assert keys.box_public_hex in again.out


def test_request_pw_hash_matches_mosquitto(make_kiosk: MakeKiosk) -> None:
    """The hash is the one mosquitto computes: the broker accepts the kiosk's password."""
    import base64
    import hashlib

    k = make_kiosk("kiosk-a", register=False)
    req = parse_request(k.request.read_text())
    _, _, iters, salt, digest = req.broker_password_hash.split("$")
    password = (k.etc / "keys" / "broker.pass").read_bytes().strip()
    assert base64.b64decode(digest) == hashlib.pbkdf2_hmac(
        "sha512", password, base64.b64decode(salt), int(iters))
    assert password.decode() not in k.request.read_text()


def test_ops_register_twice_and_tampered_request(make_kiosk: MakeKiosk, registry: Path,
                                                 tmp_path: Path) -> None:
    k = make_kiosk("kiosk-a")
    r = ok("ops", "register", k.request, "--registry", registry)
    assert "already registered" in r.out and "unchanged" in r.out
    doc = json.loads(k.request.read_text())
    doc["station_id"] = "s-9999"
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(doc))
    before = tree(registry.parent)
    r = kp("ops", "register", forged, "--registry", registry)
    assert r.code == 1 and "signature of the request from kiosk-a does not match" in r.err
    doc["extra"] = 1
    forged.write_text(json.dumps(doc))
    r = kp("ops", "register", forged, "--registry", registry)
    assert r.code == 1 and "unknown field(s) ['extra']" in r.err
    assert tree(registry.parent) == before


def test_ops_register_other_kiosk_same_id_refused(make_kiosk: MakeKiosk, registry: Path,
                                                  tmp_path: Path, cec: Path) -> None:
    make_kiosk("kiosk-a")
    impostor = make_kiosk("kiosk-a-2", register=False)
    # a second kiosk initialised with the same id at another path
    root = tmp_path / "dup"
    ok("device", "init", "--device-id", "kiosk-a", "--station", "s-1017", "--district",
       "osh-city", "--broker", "mqtt://b:1883", "--cec-key", cec / "cec.pub", "--config-dir",
       root / "etc", "--state-dir", root / "var", "--user", ME)
    ok("device", "request", "--config-dir", root / "etc", "--out", root / "r.json", "--no-qr")
    r = kp("ops", "register", root / "r.json", "--registry", registry)
    assert r.code == 1 and "already registered with another key" in r.err
    assert impostor.device_id == "kiosk-a-2"


def test_revoke_removes_kiosk_from_the_roll(make_kiosk: MakeKiosk, registry: Path) -> None:
    make_kiosk("kiosk-a")
    make_kiosk("kiosk-b")
    assert [k.device_id for k in station_kiosks(registry)["s-1017"][1]] == ["kiosk-a", "kiosk-b"]
    r = ok("ops", "revoke", "kiosk-b", "--registry", registry, "--reason", "stolen")
    assert "revoked kiosk-b" in r.out
    r = ok("ops", "revoke", "kiosk-b", "--registry", registry)
    assert "already revoked" in r.out
    assert [k.device_id for k in station_kiosks(registry)["s-1017"][1]] == ["kiosk-a"]
    r = kp("ops", "revoke", "kiosk-zz", "--registry", registry)
    assert r.code == 1 and "not registered" in r.err


def test_stored_request_altered_is_detected(make_kiosk: MakeKiosk, registry: Path) -> None:
    make_kiosk("kiosk-a")
    stored = requests_dir(registry) / "kiosk-a.json"
    doc = json.loads(stored.read_text())
    doc["box_key"] = bytes(PrivateKey.generate().public_key).hex()
    stored.write_text(json.dumps(doc))
    with pytest.raises(Exception, match="signature of the request from kiosk-a"):
        station_kiosks(registry)


# ------------------------------------------------------------------ cec build / verify


@pytest.fixture
def built(tmp_path: Path, make_kiosk: MakeKiosk, cec: Path, registry: Path) -> dict[str, Path]:
    """Two stations, three kiosks, real FVC2002 templates, built with two workers."""
    make_kiosk("kiosk-a")
    make_kiosk("kiosk-b")
    make_kiosk("kiosk-c", station="s-2001", district="naryn")
    tpl = tmp_path / "templates"
    rows = fvc_templates(tpl, 6)
    csv = write_csv(tmp_path / "voters.csv", "station_id," + HEADER,
                    [("s-1017" if i < 4 else "s-2001", *r) for i, r in enumerate(rows)])
    r = ok("cec", "build", "--key", cec / "cec.sign", "--voters", csv, "--templates", tpl,
           "--registry", registry, "--election", "pres-2026", "--roll-version", "1",
           "--created", "2026-11-27T05:00:00Z", "--out-dir", tmp_path / "out", "--jobs", "2")
    assert "2 package(s), 6 voters" in r.out
    return {"out": tmp_path / "out", "csv": csv, "templates": tpl}


def test_cec_build_packages_and_manifest(built: dict[str, Path], tmp_path: Path,
                                         cec: Path) -> None:
    out = built["out"]
    manifest = (out / "manifest.csv").read_text().splitlines()
    assert manifest[0] == ("station_id,district,station_name,district_name,voters,kiosks,"
                           "roll_version,bytes,sha256")
    assert manifest[1].startswith("s-1017,osh-city,,,4,2,1,")  # no --stations: no names
    assert manifest[2].startswith("s-2001,naryn,,,2,1,1,")
    box = load_keys(tmp_path / "kiosk-c" / "etc" / "keys").box
    cec_pub = read_public_key(cec / "cec.pub", "cec")
    roll = open_package((out / "s-2001.pkg").read_bytes(), cec_pub, box)
    assert [v.list_number for v in roll.voters] == [5, 6]
    assert roll.voters[0].name_ky == "Үсөн кызы Айгүл 4"
    src = built["templates"] / roll.voters[0].document / "2.iso"
    assert roll.voters[0].fingers[1].template == src.read_bytes()
    r = ok("cec", "verify", out / "s-1017.pkg", out / "s-2001.pkg", "--cec-key", cec / "cec.pub")
    assert r.out.count("OK ") == 2 and "kiosks [kiosk-a, kiosk-b]" in r.out
    sha = manifest[1].rsplit(",", 1)[1]
    assert sha in r.out


def test_cec_build_refuses_existing_output(built: dict[str, Path], cec: Path,
                                           registry: Path) -> None:
    before = tree(built["out"])
    r = kp("cec", "build", "--key", cec / "cec.sign", "--voters", built["csv"], "--templates",
           built["templates"], "--registry", registry, "--election", "pres-2026",
           "--roll-version", "2", "--out-dir", built["out"])
    assert r.code == 1 and "already holds packages" in r.err
    assert tree(built["out"]) == before


def test_cec_verify_failures(built: dict[str, Path], tmp_path: Path, cec: Path) -> None:
    pkg = built["out"] / "s-1017.pkg"
    bad = tmp_path / "bad.pkg"
    data = bytearray(pkg.read_bytes())
    data[len(data) // 2] ^= 1
    bad.write_bytes(bytes(data))
    r = kp("cec", "verify", bad, "--cec-key", cec / "cec.pub")
    assert r.code == 3 and "bad-signature" in r.out
    ok("cec", "keygen", "--out-dir", tmp_path / "other")
    r = kp("cec", "verify", pkg, "--cec-key", tmp_path / "other" / "cec.pub")
    assert r.code == 3 and "wrong-signer" in r.out
    r = kp("cec", "verify", pkg, "--cec-key", cec / "cec.pub", "--station", "s-2001")
    assert r.code == 3 and "for station 's-1017', not 's-2001'" in r.out


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("list_number,name_ky,document\n1,a,ID1000\n", "missing column(s) name_ru"),
        (HEADER + ",colour\n1,a,b,ID1000,red\n", "unknown column(s) colour"),
        (HEADER + "\nx,a,b,ID1000\n", "voters.csv:2: list_number 'x' is not a number"),
        (HEADER + "\n1,a,b,NOPE\n", "voters.csv:2: no template folder"),
        (HEADER + "\n1,a,b,../etc\n", "empty or unsafe"),
        (HEADER + "\n1,a,b,ID1000\n1,c,d,ID1001\n", "strictly increasing"),
        (HEADER + "\n1,a,b,GARBAGE\n", "not an ISO 19794-2:2005 or ANSI 378 template"),
        (HEADER + "\n1,a,b,SHORT\n", "record length field does not match"),
        (HEADER + "\n1,a,b\n", "wrong number of fields"),
    ],
)
def test_cec_build_bad_csv(tmp_path: Path, make_kiosk: MakeKiosk, cec: Path, registry: Path,
                           csv_text: str, message: str) -> None:
    make_kiosk("kiosk-a")
    tpl = tmp_path / "templates"
    fvc_templates(tpl, 2)
    (tpl / "GARBAGE").mkdir()
    (tpl / "GARBAGE" / "1.iso").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    (tpl / "SHORT").mkdir()
    good = (tpl / "ID1000" / "1.iso").read_bytes()
    (tpl / "SHORT" / "1.iso").write_bytes(good[:-10])
    csv = tmp_path / "voters.csv"
    csv.write_text(csv_text, encoding="utf-8")
    r = kp("cec", "build", "--key", cec / "cec.sign", "--voters", csv, "--templates", tpl,
           "--registry", registry, "--election", "pres-2026", "--roll-version", "1",
           "--station", "s-1017", "--out-dir", tmp_path / "out", "--jobs", "1")
    assert r.code == 1, r
    assert message in r.err
    assert not (tmp_path / "out" / "s-1017.pkg").exists()
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_cec_build_needs_registered_kiosks_and_secret_key(tmp_path: Path, make_kiosk: MakeKiosk,
                                                          cec: Path, registry: Path) -> None:
    make_kiosk("kiosk-a")
    tpl = tmp_path / "templates"
    csv = write_csv(tmp_path / "v.csv", HEADER, fvc_templates(tpl, 1))
    argv: list[str | Path] = ["--voters", csv, "--templates", tpl, "--registry", registry,
                              "--election", "e-1", "--roll-version", "1",
                              "--out-dir", tmp_path / "out"]
    r = kp("cec", "build", "--key", cec / "cec.sign", *argv, "--station", "s-4040")
    assert r.code == 1 and "no active kiosks registered for station(s) s-4040" in r.err
    r = kp("cec", "build", "--key", cec / "cec.pub", *argv, "--station", "s-1017")
    assert r.code == 1 and "is a public key" in r.err
    (cec / "cec.sign").chmod(0o644)
    r = kp("cec", "build", "--key", cec / "cec.sign", *argv, "--station", "s-1017")
    assert r.code == 1 and "readable by group/others" in r.err


# ------------------------------------------------------------------ install-roll


def _other_package(tmp_path: Path, station: str, kiosks: tuple[PkgKiosk, ...],
                   signer: SigningKey, version: int = 1, election: str = "pres-2026") -> Path:
    roll = Roll(election, station, "osh-city", version, "2026-11-27T05:00:00Z", kiosks,
                synthetic_voters(3, seed=5))
    path = tmp_path / f"{station}-{version}-{os.urandom(3).hex()}.pkg"
    path.write_bytes(build_package(roll, signer))
    return path


def test_install_roll_and_every_refusal(built: dict[str, Path], tmp_path: Path, cec: Path,
                                        registry: Path) -> None:
    etc = tmp_path / "kiosk-a" / "etc"
    var = tmp_path / "kiosk-a" / "var"
    pkg = built["out"] / "s-1017.pkg"
    r = ok("device", "install-roll", pkg, "--config-dir", etc, "--user", ME)
    assert "installed roll v1 of pres-2026 for station s-1017: 4 voters" in r.out
    assert mode(var / "roll.pkg") == 0o640
    assert (var / "roll.pkg").read_bytes() == pkg.read_bytes()
    r = ok("device", "install-roll", pkg, "--config-dir", etc, "--user", ME)
    assert "already installed" in r.out and "nothing changed" in r.out
    cfg = load_config(etc / "agent.json")
    roll, digest = load_installed_roll(cfg)
    assert len(roll.voters) == 4 and digest in r.out

    installed = tree(var)
    cec_key = SigningKey((cec / "cec.sign").read_bytes())
    kiosks = station_kiosks(registry)
    mine = kiosks["s-1017"][1]
    refusals = [
        (built["out"] / "s-2001.pkg", "wrong-station"),
        (_other_package(tmp_path, "s-1017", mine, SigningKey.generate(), 2), "wrong-signer"),
        (_other_package(tmp_path, "s-1017", kiosks["s-2001"][1], cec_key, 2), "not-addressed"),
        (_other_package(tmp_path, "s-1017", mine, cec_key, 1), "not older than 1"),
        (_other_package(tmp_path, "s-1017", mine, cec_key, 5, "local-2027"), "--new-election"),
        (tmp_path / "missing.pkg", "cannot read package"),
    ]
    tampered = tmp_path / "tampered.pkg"
    data = bytearray(pkg.read_bytes())
    data[-5] ^= 0x10
    tampered.write_bytes(bytes(data))
    refusals.append((tampered, "bad-signature"))
    for path, message in refusals:
        r = kp("device", "install-roll", path, "--config-dir", etc, "--user", ME)
        assert r.code == 1, (path, r)
        assert message in r.err, (message, r.err)
        assert tree(var) == installed
    newer = _other_package(tmp_path, "s-1017", mine, cec_key, 2)
    r = ok("device", "install-roll", newer, "--config-dir", etc, "--user", ME)
    assert "installed roll v2" in r.out and "replaced the previous roll" in r.out
    r = ok("device", "install-roll",
           _other_package(tmp_path, "s-1017", mine, cec_key, 1, "local-2027"),
           "--config-dir", etc, "--user", ME, "--new-election")
    assert "installed roll v1 of local-2027" in r.out


def test_install_roll_uninitialised_kiosk(tmp_path: Path, built: dict[str, Path]) -> None:
    r = kp("device", "install-roll", built["out"] / "s-1017.pkg", "--config-dir",
           tmp_path / "blank", "--user", ME)
    assert r.code == 1 and "run 'kesp-provision device init' first" in r.err


def test_usage_error_exit_code() -> None:
    assert kp("device", "frobnicate").code == 2
    assert kp().code == 2


def test_cec_build_failure_in_one_station_leaves_nothing(tmp_path: Path, make_kiosk: MakeKiosk,
                                                          cec: Path, registry: Path) -> None:
    """Parallel build, one station's template is garbage: no package of any station stays."""
    make_kiosk("kiosk-a")
    make_kiosk("kiosk-c", station="s-2001", district="naryn")
    tpl = tmp_path / "templates"
    rows = fvc_templates(tpl, 4)
    (tpl / rows[3][3] / "2.iso").write_bytes(b"not a template at all")
    csv = write_csv(tmp_path / "voters.csv", "station_id," + HEADER,
                    [("s-1017" if i < 2 else "s-2001", *r) for i, r in enumerate(rows)])
    out = tmp_path / "out"
    r = kp("cec", "build", "--key", cec / "cec.sign", "--voters", csv, "--templates", tpl,
           "--registry", registry, "--election", "pres-2026", "--roll-version", "1",
           "--out-dir", out, "--jobs", "2")
    assert r.code == 1 and "voters.csv:5 finger 2" in r.err and "not an ISO" in r.err
    assert not out.exists()  # not even the folder the build made


def test_reading_steps_refuse_other_users(make_kiosk: MakeKiosk) -> None:
    """request and selftest read the kiosk's keys: another user gets a named refusal."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start a process as another user")
    k = make_kiosk("kiosk-a", register=False)
    code = "import sys; from provisioning.cli import main; sys.exit(main(sys.argv[1:]))"
    for step in ("request", "selftest"):
        proc = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
             "-c", code, "device", step, "--config-dir", str(k.etc), "--user", "root"],
            check=False, capture_output=True, text=True,
            cwd=Path(__file__).resolve().parents[2], env={**os.environ, "HOME": "/"},
            timeout=60,
        )
        assert proc.returncode == 1, proc
        assert "running as 'nobody'" in proc.stderr, proc.stderr


def test_install_roll_refused_once_the_station_has_opened(
    built: dict[str, Path], tmp_path: Path, cec: Path, registry: Path
) -> None:
    etc = tmp_path / "kiosk-a" / "etc"
    var = tmp_path / "kiosk-a" / "var"
    ok("device", "install-roll", built["out"] / "s-1017.pkg", "--config-dir", etc, "--user", ME)
    life = Lifecycle(var / "lifecycle.sqlite")
    life.apply(Command.INSTALL)
    life.apply(Command.OPEN)
    life.close()
    cec_key = SigningKey((cec / "cec.sign").read_bytes())
    newer = _other_package(tmp_path, "s-1017", station_kiosks(registry)["s-1017"][1], cec_key, 2)
    installed = tree(var)
    r = kp("device", "install-roll", newer, "--config-dir", etc, "--user", ME)
    assert r.code == 1 and "the station is open" in r.err
    assert tree(var) == installed
