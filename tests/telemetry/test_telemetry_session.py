"""The kiosk's MQTT session against a real broker: birth/death, history flag, commands, guards."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from telemetry_helpers import FAST, OPS_KEY, Spy

from agent.runtime.config import AgentConfig, BrokerConfig
from agent.runtime.keys import DeviceKeys
from agent.telemetry import (
    PayloadError,
    PersonalDataError,
    Telemetry,
    TelemetryConfigError,
    TelemetryStoppedError,
    Uplink,
)
from agent.telemetry.envelope import Envelope, open_signed, seal
from agent.telemetry.parameters import TelemetryTuning
from agent.telemetry.session import backoff_delay
from hardware_sim.mosquitto import PrivateMosquitto


def until(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def _envs(spy: Spy, keys: DeviceKeys, kind: str | None = None) -> list[Envelope]:
    out = [open_signed(p, keys.signing.verify_key) for t, p in spy.got if not t.endswith("/cmd")]
    return [e for e in out if kind is None or e.type == kind]


def _command(payload: dict[str, object], key: SigningKey = OPS_KEY, device: str = "k-1",
             sent: int | None = None, district: str = "d-1") -> bytes:
    now = time.time_ns() // 1_000_000
    env = Envelope(device=device, station="st-1", district=district, boot=0, seq=0, n=0,
                   wall_ms=now, mono_ms=0, sent_ms=sent or now, type="cmd", historical=False,
                   payload=payload)
    return seal(env, key)


def test_backoff_grows_with_jitter_and_caps() -> None:
    t = TelemetryTuning(backoff_initial_s=1.0, backoff_max_s=60.0, backoff_jitter=0.5)
    rng = random.Random(7)
    delays = [backoff_delay(a, t, rng) for a in range(10)]
    for a, d in enumerate(delays):
        base = min(60.0, 2.0**a)
        assert base * 0.5 <= d <= base
    assert len({round(d, 6) for d in delays}) == 10  # jittered, not lock-step


def test_birth_then_records_live_and_historical(
    cfg: AgentConfig, keys: DeviceKeys, spy: Spy, mosquitto: PrivateMosquitto
) -> None:
    tel = Telemetry(cfg, keys, lambda: {"printer": "ok"}, tuning=FAST)
    assert tel.uplink is Uplink.IDLE
    offline_n = tel.emit("event", {"event": "station.opened"})  # before start: buffered
    tel.start()
    assert until(lambda: tel.uplink is Uplink.CONNECTED)
    live_n = tel.emit("event", {"event": "slip.printed"})
    assert tel.flush(5)
    # the broker acknowledges to the kiosk and delivers to the spy concurrently
    assert until(lambda: {offline_n, live_n} <= {e.n for e in _envs(spy, keys, "event")})
    births = _envs(spy, keys, "birth")
    assert len(births) == 1 and births[0].seq == 0 and births[0].boot == 1
    assert births[0].payload["last_n"] >= offline_n
    events = {e.n: e for e in _envs(spy, keys, "event")}
    assert events[offline_n].historical and not events[live_n].historical
    seqs = [e.seq for e in _envs(spy, keys)]
    assert seqs == list(range(len(seqs)))  # birth 0, then 1, 2, ... in publish order
    health = _envs(spy, keys, "health")
    assert health and health[0].payload["app"] == {"printer": "ok"}
    tel.stop(graceful=True)
    assert until(lambda: len(_envs(spy, keys, "death")) == 1)
    death = _envs(spy, keys, "death")[0]
    assert death.boot == 1 and death.payload == {"bdseq": 1}
    time.sleep(0.3)
    assert len(_envs(spy, keys, "death")) == 1  # the will was not published as well
    assert tel.status().uplink is Uplink.STOPPED
    assert tel.outbox_depth() == 0
    with pytest.raises(TelemetryStoppedError):
        tel.emit("event", {"event": "late"})


def test_abrupt_loss_publishes_the_signed_will(
    cfg: AgentConfig, keys: DeviceKeys, spy: Spy
) -> None:
    tel = Telemetry(cfg, keys, dict, tuning=FAST)
    tel.start()
    assert until(lambda: tel.uplink is Uplink.CONNECTED)
    tel.stop(graceful=False)  # socket dropped without DISCONNECT: the broker sends the will
    assert until(lambda: len(_envs(spy, keys, "death")) == 1, 5)
    assert _envs(spy, keys, "death")[0].boot == 1


def test_only_signed_commands_for_this_kiosk_are_obeyed(
    cfg: AgentConfig, keys: DeviceKeys, spy: Spy
) -> None:
    tel = Telemetry(cfg, keys, dict, tuning=FAST)
    tel.start()
    assert until(lambda: tel.uplink is Uplink.CONNECTED)
    topic = "kesp/v1/d-1/st-1/k-1/cmd"
    stale = time.time_ns() // 1_000_000 - 3_600_000
    bad = [
        b"rebirth please",  # unsigned
        _command({"cmd": "rebirth"}, key=SigningKey.generate()),  # forged
        _command({"cmd": "rebirth"}, device="k-2"),  # someone else's
        _command({"cmd": "rebirth"}, sent=stale),  # stale
        _command({"cmd": "format-disk"}),  # unknown
    ]
    for data in bad:
        spy.client.publish(topic, data, qos=1)
    assert until(lambda: tel.status().commands_refused == len(bad))
    assert len(_envs(spy, keys, "birth")) == 1
    good = _command({"cmd": "rebirth"})
    spy.client.publish(topic, good, qos=1)
    assert until(lambda: len(_envs(spy, keys, "birth")) == 2)
    spy.client.publish(topic, good, qos=1)  # replay of the same command
    assert until(lambda: tel.status().commands_refused == len(bad) + 1)
    births = _envs(spy, keys, "birth")
    assert [b.boot for b in births] == [1, 1] and births[1].seq == 0
    assert tel.status().commands_accepted == 1
    tel.stop()


def test_a_command_replayed_after_a_restart_or_for_another_district_is_refused(
    cfg: AgentConfig, keys: DeviceKeys, spy: Spy
) -> None:
    topic = "kesp/v1/d-1/st-1/k-1/cmd"
    good = _command({"cmd": "rebirth"})
    tel = Telemetry(cfg, keys, dict, tuning=FAST)
    tel.start()
    assert until(lambda: tel.uplink is Uplink.CONNECTED)
    spy.client.publish(topic, good, qos=1)
    assert until(lambda: tel.status().commands_accepted == 1)
    tel.stop()
    again = Telemetry(cfg, keys, dict, tuning=FAST)  # the kiosk restarted
    again.start()
    assert until(lambda: again.uplink is Uplink.CONNECTED)
    spy.client.publish(topic, good, qos=1)  # the captured command, replayed
    spy.client.publish(topic, _command({"cmd": "rebirth"}, district="d-2"), qos=1)
    assert until(lambda: again.status().commands_refused == 2)
    assert again.status().commands_accepted == 0
    again.stop()


def test_resend_command_republishes_retained_records_as_historical(
    cfg: AgentConfig, keys: DeviceKeys, spy: Spy
) -> None:
    tel = Telemetry(cfg, keys, dict, tuning=FAST)
    tel.start()
    ns = [tel.emit("event", {"event": "slip.printed", "i": i}) for i in range(5)]
    assert tel.flush(5)
    spy.client.publish("kesp/v1/d-1/st-1/k-1/cmd",
                       _command({"cmd": "resend", "from": ns[1], "to": ns[3]}), qos=1)
    assert until(lambda: len(_envs(spy, keys, "event")) == 8)
    again = _envs(spy, keys, "event")[5:]
    assert [e.n for e in again] == ns[1:4] and all(e.historical for e in again)
    tel.stop()


def test_emit_guards(cfg: AgentConfig, keys: DeviceKeys) -> None:
    tel = Telemetry(cfg, keys, dict, tuning=FAST)
    with pytest.raises(PersonalDataError):
        tel.emit("event", {"event": "slip.printed", "surname": "Usenov"})
    with pytest.raises(PayloadError):
        tel.emit("health", {"x": 1})  # type: ignore[arg-type]
    with pytest.raises(PayloadError):
        tel.emit("event", {"event": "x", "blob": "a" * 20_000})
    assert tel.outbox_depth() == 0  # nothing refused was queued
    tel.stop()


def test_config_errors(tmp_path: Path, keys: DeviceKeys) -> None:
    def make(url: str, password_file: str = "", ops_verify_key: str = "") -> None:
        broker = BrokerConfig(url=url, password_file=password_file, ops_verify_key=ops_verify_key)
        cfg = AgentConfig(device_id="k-1", station_id="st-1", district="d-1",
                          state_dir=str(tmp_path / "s"), broker=broker)
        Telemetry(cfg, keys, dict).stop()

    with pytest.raises(TelemetryConfigError, match="ca_file"):
        make(url="mqtts://broker.example:8883")
    with pytest.raises(TelemetryConfigError, match="password_file"):
        make(url="mqtt://broker.example:1883", password_file=str(tmp_path / "missing"))
    with pytest.raises(TelemetryConfigError, match="ops_verify_key"):
        make(url="mqtt://broker.example:1883", ops_verify_key="zz")
