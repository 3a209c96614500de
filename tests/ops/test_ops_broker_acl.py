"""Generated broker configuration against a real mosquitto: TLS, passwords, per-device ACL.

TLS material is made with the ``openssl`` CLI (test CA, server certificate for
127.0.0.1); identity is username + password (the kiosk's device id).
"""

from __future__ import annotations

import functools
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from nacl.signing import SigningKey
from ops_helpers import FAST, OPS_FAST, until
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.runtime.config import AgentConfig, BrokerConfig
from agent.runtime.keys import generate_keys
from agent.telemetry import Telemetry, Uplink
from agent.telemetry.envelope import Envelope, seal
from hardware_sim.mosquitto import PrivateMosquitto, free_port
from ops.broker_config import TlsFiles, hash_password, write_broker_config
from ops.registry import load_registry, register_device
from ops.service import OpsService


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    d = tmp_path / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"), "-subj", "/CN=kesp test CA")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "server.key"),
             "-out", str(d / "server.csr"), "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.crt"),
             "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
             "-out", str(d / "server.crt"), "-extfile", str(d / "ext.cnf"))
    return d


class Secure:
    def __init__(self, tmp: Path, tls_dir: Path) -> None:
        self.tmp = tmp
        self.ca = str(tls_dir / "ca.crt")
        self.registry = tmp / "devices.json"
        self.keys = {d: generate_keys(tmp / "keys" / d) for d in ("k-1", "k-2")}
        for d, k in self.keys.items():
            register_device(self.registry, d, "st-1", "d-1", k.verify_key_hex)
        self.passwords = {"k-1": "pw-one", "k-2": "pw-two"}
        port = free_port()
        files = write_broker_config(
            tmp / "broker", load_registry(self.registry), self.passwords, {"ops": "ops-pw"},
            port=port, bind="127.0.0.1",
            tls=TlsFiles(self.ca, str(tls_dir / "server.crt"), str(tls_dir / "server.key")))
        (tmp / "mosq").mkdir()
        self.broker = PrivateMosquitto(port, listener_config=files.listener_config.read_text(),
                                       workdir=tmp / "mosq",
                                       # tests run as root with 0700 temp dirs; keep root so
                                       # the broker can read them (production: user mosquitto)
                                       extra_config="user root\n")
        self.url = f"mqtts://127.0.0.1:{port}"

    def client(self, user: str | None, password: str | None, *,
               tls: bool = True) -> tuple[mqtt.Client, list[mqtt.MQTTMessage], list[int]]:
        got: list[mqtt.MQTTMessage] = []
        connack: list[int] = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        if user:
            c.username_pw_set(user, password)
        if tls:
            c.tls_set(ca_certs=self.ca, cert_reqs=ssl.CERT_REQUIRED)
        c.on_message = lambda _c, _u, m: got.append(m)
        c.on_connect = lambda _c, _u, _f, rc, _p: connack.append(int(rc.value))
        return c, got, connack


@pytest.fixture
def secure(tmp_path: Path, tls_dir: Path) -> Iterator[Secure]:
    s = Secure(tmp_path, tls_dir)
    s.broker.start()
    try:
        yield s
    finally:
        s.broker.close()


def test_password_hash_format() -> None:
    h = hash_password("secret", salt=b"\x00" * 12)
    assert h.startswith("$7$101$AAAAAAAAAAAAAAAA$") and len(h.split("$")) == 5


def test_kiosk_over_tls_with_password_reaches_ops(secure: Secure) -> None:
    ops = OpsService(secure.url, secure.registry, str(secure.tmp / "ops.sqlite"),
                     tuning=OPS_FAST, username="ops", password="ops-pw", ca_file=secure.ca)
    ops.start()
    try:
        assert ops.wait_connected(10)
        pwfile = secure.tmp / "k-1.pw"
        pwfile.write_text("pw-one\n")
        cfg = AgentConfig(device_id="k-1", station_id="st-1", district="d-1",
                          state_dir=str(secure.tmp / "state"),
                          broker=BrokerConfig(url=secure.url, ca_file=secure.ca,
                                              password_file=str(pwfile)))
        tel = Telemetry(cfg, secure.keys["k-1"], dict, tuning=FAST)
        tel.start()
        n = tel.emit("event", {"event": "station.opened"})
        assert tel.flush(10)
        assert until(lambda: [e for e, _, _ in ops.store.events("k-1")] == [n], 10)
        tel.stop()
    finally:
        ops.stop()


def test_wrong_or_missing_credentials_cannot_connect(secure: Secure) -> None:
    for user, pw, tls in ((None, None, True), ("k-1", "wrong", True), ("nobody", "x", True)):
        c, _, connack = secure.client(user, pw, tls=tls)
        c.connect("127.0.0.1", secure.broker.port)
        c.loop_start()
        assert until(functools.partial(bool, connack), 5)
        c.loop_stop()
        assert connack[0] >= 0x80, (user, connack)  # not authorised / bad user name or password
        c.disconnect()
    # plaintext MQTT against the TLS listener never gets a CONNACK
    c, _, connack = secure.client("k-1", "pw-one", tls=False)
    c.connect("127.0.0.1", secure.broker.port)
    c.loop_start()
    time.sleep(1.0)
    c.loop_stop()
    assert connack == []


def test_device_cannot_publish_into_another_devices_topics(secure: Secure) -> None:
    spy, seen, _ = secure.client("ops", "ops-pw")
    subscribed = threading.Event()
    spy.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe("kesp/v1/#", qos=1)
    spy.on_subscribe = lambda _c, _u, _m, _rc, _p: subscribed.set()
    spy.connect("127.0.0.1", secure.broker.port)
    spy.loop_start()
    k1, _, connack = secure.client("k-1", "pw-one")
    k1.connect("127.0.0.1", secure.broker.port)
    k1.loop_start()
    try:
        assert until(lambda: connack == [0], 5)
        assert subscribed.wait(5)
        key: SigningKey = secure.keys["k-1"].signing
        now = time.time_ns() // 1_000_000
        for dev in ("k-2", "k-1"):  # the forged one first, then a control message
            env = Envelope(device=dev, station="st-1", district="d-1", boot=1, seq=1, n=1,
                           wall_ms=now, mono_ms=1, sent_ms=now, type="event", historical=False,
                           payload={"event": "x"})
            k1.publish(env.topic, seal(env, key), qos=1).wait_for_publish(5)
        k1.publish("kesp/v1/d-1/st-1/k-1/cmd", b"x", qos=1).wait_for_publish(5)
        k1.publish("kesp/v1/d-9/st-9/k-1/event", b"x", qos=1).wait_for_publish(5)
        assert until(lambda: any(m.topic.endswith("/k-1/event") for m in seen), 5)
        time.sleep(0.3)
        assert [m.topic for m in seen] == ["kesp/v1/d-1/st-1/k-1/event"]
    finally:
        k1.loop_stop()
        spy.loop_stop()


def test_revoked_device_is_locked_out_after_regeneration(secure: Secure, tmp_path: Path) -> None:
    from ops.registry import revoke_device

    revoke_device(secure.registry, "k-2", "lost")
    files = write_broker_config(tmp_path / "b2", load_registry(secure.registry),
                                {"k-1": "pw-one"}, {"ops": "ops-pw"})
    assert "k-2" not in files.password_file.read_text()
    assert "k-2" not in files.acl_file.read_text()
    assert "topic write kesp/v1/d-1/st-1/k-1/turnout" in files.acl_file.read_text()
    assert Uplink.CONNECTED.value == "connected"


def _client_cert(pki: Path, cn: str) -> tuple[str, str]:
    key, csr, crt = pki / f"{cn}.key", pki / f"{cn}.csr", pki / f"{cn}.crt"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", f"/CN={cn}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"),
             "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", "2", "-out", str(crt))
    return str(crt), str(key)


def test_client_certificate_identity(tmp_path: Path, tls_dir: Path) -> None:
    """With require_certificate the CN is the user name; no certificate, no connection."""
    registry = tmp_path / "devices.json"
    keys = generate_keys(tmp_path / "keys")
    register_device(registry, "k-1", "st-1", "d-1", keys.verify_key_hex)
    port = free_port()
    ca = str(tls_dir / "ca.crt")
    files = write_broker_config(
        tmp_path / "broker", load_registry(registry), {}, {"ops": "unused-with-certificates"},
        port=port, bind="127.0.0.1",
        tls=TlsFiles(ca, str(tls_dir / "server.crt"), str(tls_dir / "server.key"),
                     require_certificate=True))
    (tmp_path / "mosq").mkdir()
    broker = PrivateMosquitto(port, listener_config=files.listener_config.read_text(),
                              workdir=tmp_path / "mosq", extra_config="user root\n")
    broker.start()
    try:
        k1_cert, k1_key = _client_cert(tls_dir, "k-1")
        ops_cert, ops_key = _client_cert(tls_dir, "ops")
        seen: list[str] = []
        spy = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        spy.tls_set(ca_certs=ca, certfile=ops_cert, keyfile=ops_key)
        spy.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe("kesp/v1/#", qos=1)
        spy.on_message = lambda _c, _u, m: seen.append(m.topic)
        spy.connect("127.0.0.1", port)
        spy.loop_start()
        cfg = AgentConfig(device_id="k-1", station_id="st-1", district="d-1",
                          state_dir=str(tmp_path / "state"),
                          broker=BrokerConfig(url=f"mqtts://127.0.0.1:{port}", ca_file=ca,
                                              cert_file=k1_cert, key_file=k1_key))
        time.sleep(0.5)
        tel = Telemetry(cfg, keys, dict, tuning=FAST)
        tel.start()
        tel.emit("event", {"event": "station.opened"})
        assert tel.flush(10)
        assert until(lambda: "kesp/v1/d-1/st-1/k-1/event" in seen, 5)
        tel.stop()
        spy.loop_stop()
        # the same kiosk without its certificate cannot even finish the handshake
        bare = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        bare.tls_set(ca_certs=ca)
        bare.username_pw_set("k-1", "anything")
        with pytest.raises((ssl.SSLError, OSError)):
            bare.connect("127.0.0.1", port)
            for _ in range(20):  # TLS 1.3 reports the missing certificate on first read
                if bare.loop(0.1) != 0:
                    raise OSError("connection closed by the broker")
    finally:
        broker.close()
