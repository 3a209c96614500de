"""Telemetry benchmarks: sign+queue rate, ops verification rate, loopback latency, offline drain.

* sign+queue: ``Telemetry.emit`` (payload check, canonical JSON, SQLite
  commit with fsync) on one core, and the pure envelope seal alone;
* ops verification: ``Verifier.check`` (topic, registry, Ed25519, decode,
  window, payload) per core, and with the SQLite store in batches of 500;
* loopback end to end: emit on a kiosk -> private mosquitto -> OpsService
  committed, p50/p99 from the envelope's record time to commit;
* one hour offline at the peak rate of a 5,610-voter station: outbox size and
  drain time once the broker returns.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from nacl.signing import SigningKey

from agent.runtime.config import AgentConfig, BrokerConfig
from agent.runtime.keys import generate_keys
from agent.telemetry import Telemetry
from agent.telemetry.envelope import Envelope, seal
from agent.telemetry.outbox import Outbox
from agent.telemetry.parameters import TelemetryTuning
from benchmarks.results import write_section
from hardware_sim.mosquitto import PrivateMosquitto
from ops.parameters import OpsTuning
from ops.registry import load_registry, register_device
from ops.service import OpsService
from ops.verify import Verifier

# 5,610 voters; assume a third of the day's turnout arrives in the peak two
# hours at 100 % turnout: ~935 voters/h, each an event and a turnout update.
PEAK_VOTERS_PER_HOUR = 935
RECORDS_PER_VOTER = 2


def _turnout(i: int) -> dict[str, object]:
    return {"identified": i, "refused": 0, "not_identified": 0, "manual": 0,
            "by_hour": {"08": i // 3, "09": i - i // 3}}


def _cfg(tmp: Path, url: str) -> AgentConfig:
    return AgentConfig(device_id="k-1", station_id="st-1", district="d-1",
                       state_dir=str(tmp / "state"), broker=BrokerConfig(url=url),
                       health_interval_s=3600.0)


def bench_sign_queue(tmp: Path) -> tuple[float, float]:
    key = SigningKey.generate()
    env = Envelope("k-1", "st-1", "d-1", 1, 1, 1, 1, 1, 1, "turnout", False, _turnout(100))
    n = 5000
    t0 = time.perf_counter()
    for _ in range(n):
        seal(env, key)
    seal_rate = n / (time.perf_counter() - t0)
    keys = generate_keys(tmp / "keys")
    tel = Telemetry(_cfg(tmp, "mqtt://127.0.0.1:1"), keys, dict)  # not started: queue only
    n = 1000
    t0 = time.perf_counter()
    for i in range(n):
        tel.emit("turnout", _turnout(i))
    emit_rate = n / (time.perf_counter() - t0)
    tel.stop()
    return seal_rate, emit_rate


def bench_verify(tmp: Path) -> tuple[float, float, float]:
    key = SigningKey.generate()
    reg = tmp / "devices.json"
    register_device(reg, "k-1", "st-1", "d-1", bytes(key.verify_key).hex())
    now = time.time_ns() // 1_000_000
    msgs = []
    for i in range(1, 20_001):
        env = Envelope("k-1", "st-1", "d-1", 1, i % 256, i, now, i, now, "turnout", False,
                       _turnout(i))
        msgs.append((env.topic, seal(env, key), now))
    # Baseline in the same run: libsodium's Ed25519 verify alone, no parsing.
    vk = key.verify_key
    t0 = time.perf_counter()
    for _, data, _ in msgs:
        vk.verify(data[64:], data[:64])
    raw_rate = len(msgs) / (time.perf_counter() - t0)
    verifier = Verifier(load_registry(reg))
    t0 = time.perf_counter()
    for topic, data, rec in msgs:
        verifier.check(topic, data, rec)
    verify_rate = len(msgs) / (time.perf_counter() - t0)
    svc = OpsService("mqtt://127.0.0.1:1", reg, str(tmp / "ops.sqlite"))
    t0 = time.perf_counter()
    for i in range(0, len(msgs), 500):
        svc.process_messages(msgs[i:i + 500])
    stored_rate = len(msgs) / (time.perf_counter() - t0)
    svc.store.close()
    return raw_rate, verify_rate, stored_rate


def bench_latency(tmp: Path) -> tuple[float, float, int]:
    (tmp / "m").mkdir()
    with PrivateMosquitto(workdir=tmp / "m") as broker:
        keys = generate_keys(tmp / "lk")
        reg = tmp / "lat.json"
        register_device(reg, "k-1", "st-1", "d-1", keys.verify_key_hex)
        ops = OpsService(broker.url, reg, str(tmp / "lat.sqlite"),
                         tuning=OpsTuning(batch_wait_s=0.0))
        ops.start()
        ops.wait_connected(10)
        tel = Telemetry(_cfg(tmp / "lat", broker.url), keys, dict)
        tel.start()
        time.sleep(1.0)
        lat = []
        for i in range(300):
            t0 = time.perf_counter()
            tel.emit("event", {"event": "slip.printed", "i": i})
            while len(ops.store.events("k-1")) <= i:
                time.sleep(0.0005)
            lat.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.01)
        tel.stop()
        ops.stop()
    lat.sort()
    return statistics.median(lat), lat[int(len(lat) * 0.99) - 1], len(lat)


def bench_offline_hour(tmp: Path) -> tuple[int, int, float]:
    (tmp / "m2").mkdir()
    records = PEAK_VOTERS_PER_HOUR * RECORDS_PER_VOTER + 60  # + one health sample a minute
    ob = Outbox(tmp / "off" / "outbox.sqlite")
    for i in range(PEAK_VOTERS_PER_HOUR):
        ob.append("event", b'{"event":"slip.printed","kiosk_no":%d}' % i, i, i, -1)
        ob.append("turnout", b'{"by_hour":{"08":%d},"identified":%d,"manual":0,'
                  b'"not_identified":0,"refused":0}' % (i, i), i, i, -1)
        if i % 16 == 0:
            ob.append("health", b'{"system":{"load":[0.5,0.4]}}', i, i, -1, coalesce_depth=500)
    depth, size = ob.depth(), ob.size_bytes()
    ob.close()
    with PrivateMosquitto(workdir=tmp / "m2") as broker:
        keys = generate_keys(tmp / "ok")
        reg = tmp / "off.json"
        register_device(reg, "k-1", "st-1", "d-1", keys.verify_key_hex)
        ops = OpsService(broker.url, reg, str(tmp / "off.sqlite"))
        ops.start()
        ops.wait_connected(10)
        tel = Telemetry(_cfg(tmp / "off", broker.url), keys, dict,
                        tuning=TelemetryTuning(), outbox_path=tmp / "off" / "outbox.sqlite")
        t0 = time.perf_counter()
        tel.start()
        tel.flush(300)
        drained = time.perf_counter() - t0
        tel.stop()
        ops.stop()
    assert depth <= records
    return depth, size, drained


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="kesp-bench-tel-") as d:
        tmp = Path(d)
        seal_rate, emit_rate = bench_sign_queue(tmp)
        raw_rate, verify_rate, stored_rate = bench_verify(tmp)
        p50, p99, samples = bench_latency(tmp)
        depth, size, drained = bench_offline_hour(tmp)
    rows = [
        ("envelope seal (canonical JSON + Ed25519), one core", f"{seal_rate:,.0f} /s", ""),
        ("`Telemetry.emit` (check, encode, SQLite commit + fsync), one core",
         f"{emit_rate:,.0f} /s", ""),
        ("baseline: libsodium Ed25519 verify alone (PyNaCl), one core",
         f"{raw_rate:,.0f} /s", ""),
        ("ops `Verifier.check` (registry, Ed25519 verify, decode, window), one core",
         f"{verify_rate:,.0f} msgs/s", ">= 20,000"),
        ("ops verify + SQLite store, batches of 500 (fsync per batch)",
         f"{stored_rate:,.0f} msgs/s", ""),
        (f"loopback e2e emit -> mosquitto -> ops committed, p50 / p99 ({samples} events)",
         f"{p50:.1f} / {p99:.1f} ms", "p99 <= 50 ms"),
        (f"outbox after 1 h offline at peak ({PEAK_VOTERS_PER_HOUR} voters/h, event + turnout"
         " each, health every 16 voters)", f"{depth:,} records, {size / 1024:,.0f} KiB (db+WAL)",
         ""),
        ("drain of that outbox to ops once the broker is back", f"{drained:.1f} s", ""),
    ]
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    body = f"""| measure | result | target |
|---|---|---|
{table}

Peak rate assumption: a 5,610-voter station at full turnout with a third of
the day's voters in the two busiest hours (~935 voters/h). Verification is
bounded by the Ed25519 verify itself (baseline row, same run): the pipeline
adds {100 * (raw_rate / verify_rate - 1):.0f} % on top of it. Ops instances on the
shared subscription scale it across cores and machines (the figures above
come from a 2-core machine shared with other jobs).
"""
    print(body)
    write_section("telemetry", "Telemetry and ops (issue 6)", body)


if __name__ == "__main__":
    main()
