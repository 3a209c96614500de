"""ops broker-config: the generated files run a real TLS mosquitto that admits the kiosks."""

from __future__ import annotations

import json
from pathlib import Path

from kiosk_helpers import ME, MakeKiosk, kp, make_ca, ok

from agent.runtime.config import load_config
from hardware_sim.mosquitto import PrivateMosquitto, free_port
from provisioning.selftest import check_broker


def test_broker_config_lets_kiosks_in_and_revoked_out(tmp_path: Path, make_kiosk: MakeKiosk,
                                                      registry: Path) -> None:
    ca, cert, key = make_ca(tmp_path / "pki")
    port = free_port()
    url = f"mqtts://127.0.0.1:{port}"
    a = make_kiosk("kiosk-a", broker=url, extra=("--ca", str(ca)))
    b = make_kiosk("kiosk-b", broker=url, extra=("--ca", str(ca)))
    out = tmp_path / "broker"
    argv: list[str | Path] = [
        "ops", "broker-config", "--registry", registry, "--out-dir", out, "--cert", cert,
        "--cert-key", key, "--ca", ca, "--port", str(port), "--bind", "127.0.0.1"]
    r = ok(*argv)
    assert "2 active kiosk(s)" in r.out and "created the password of ops user ops" in r.out
    ops_pw = (out / "ops.pass").read_text()
    assert (out / "passwd").stat().st_mode & 0o077 == 0
    passwd = (out / "passwd").read_text()
    for kiosk in (a, b):
        pw = (kiosk.etc / "keys" / "broker.pass").read_text()
        assert pw not in passwd  # only hashes leave the kiosk
    assert "user kiosk-a" in (out / "acl").read_text()

    broker = PrivateMosquitto(port, listener_config=(out / "listener.conf").read_text()
                              + "user root\n", workdir=tmp_path / "mosq")
    broker.workdir.mkdir()
    broker.start()
    try:
        cfg_a = load_config(a.etc / "agent.json")
        cfg_b = load_config(b.etc / "agent.json")
        assert check_broker(cfg_a).status == "ok"
        assert check_broker(cfg_b).status == "ok"
        ok("ops", "revoke", "kiosk-b", "--registry", registry)
        r = ok(*argv)
        assert "1 active kiosk(s)" in r.out and "locked out: kiosk-b" in r.out
        assert (out / "ops.pass").read_text() == ops_pw  # reused, not regenerated
        broker.stop()
        broker.start()
        assert check_broker(cfg_a).status == "ok"
        refused = check_broker(cfg_b)
        assert refused.status == "fail", refused
    finally:
        broker.close()


def test_broker_config_refusals(tmp_path: Path, make_kiosk: MakeKiosk, registry: Path) -> None:
    ca, cert, key = make_ca(tmp_path / "pki")
    make_kiosk("kiosk-a")
    base: list[str | Path] = [
        "ops", "broker-config", "--registry", registry, "--out-dir", tmp_path / "out",
        "--cert", cert, "--ca", ca]
    r = kp(*base, "--cert-key", tmp_path / "nope.key")
    assert r.code == 1 and "nope.key not found" in r.err
    r = kp(*base, "--cert-key", key, "--ops-user", "kiosk-a")
    assert r.code == 1 and "same name as a kiosk" in r.err
    r = kp(*base, "--cert-key", key, "--ops-user", "bad user")
    assert r.code == 1 and "cannot be used in mosquitto files" in r.err
    assert not (tmp_path / "out").exists()
    r = kp("ops", "broker-config", "--registry", tmp_path / "none.json", "--out-dir",
           tmp_path / "out", "--cert", cert, "--cert-key", key, "--ca", ca)
    assert r.code == 1 and "not found" in r.err


def test_ops_key_reaches_the_kiosk(tmp_path: Path, make_kiosk: MakeKiosk) -> None:
    r = ok("ops", "keygen", "--out-dir", tmp_path / "opskeys")
    assert "ops.pub" in r.out
    pub = (tmp_path / "opskeys" / "ops.pub").read_text().split()[-1]
    assert (tmp_path / "opskeys" / "ops.sign").stat().st_mode & 0o077 == 0
    assert kp("ops", "keygen", "--out-dir", tmp_path / "opskeys").code == 1
    k = make_kiosk("kiosk-a", register=False,
                   extra=("--ops-key", str(tmp_path / "opskeys" / "ops.pub")))
    assert load_config(k.etc / "agent.json").broker.ops_verify_key == pub
    (tmp_path / "bad.pub").write_text(json.dumps({"k": 1}))
    r = kp("device", "init", "--device-id", "kiosk-b", "--station", "s-1", "--district", "d",
           "--broker", "mqtt://h:1", "--cec-key", tmp_path / "cec" / "cec.pub", "--ops-key",
           tmp_path / "bad.pub", "--config-dir", tmp_path / "b" / "etc", "--state-dir",
           tmp_path / "b" / "var", "--user", ME)
    assert r.code == 1 and "not an ops public key" in r.err
