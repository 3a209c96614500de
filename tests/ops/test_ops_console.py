"""kesp-ops watch / report and the Prometheus exposition, on a store filled by real envelopes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from ops_helpers import signed

from ops.audit_watch import AuditWatch
from ops.board import build_board
from ops.cli import main
from ops.metrics import render_metrics
from ops.parameters import BoardTuning, OpsTuning
from ops.registry import load_registry, register_device
from ops.report import load_zone
from ops.service import OpsService

KEYS = {d: SigningKey.generate() for d in ("a-1", "a-2", "b-1")}
PLACE = {"a-1": ("osh", "osh-1"), "a-2": ("osh", "osh-1"), "b-1": ("bishkek", "bsk-7")}


def _env(device: str, n: int, kind: str, payload: dict[str, object]) -> tuple[str, bytes, int]:
    return signed(KEYS[device], PLACE[device], device, n, kind, payload)


@pytest.fixture
def store(tmp_path: Path) -> str:
    reg = tmp_path / "devices.json"
    for d, k in KEYS.items():
        register_device(reg, d, PLACE[d][1], PLACE[d][0], bytes(k.verify_key).hex())
    path = str(tmp_path / "ops.sqlite")
    svc = OpsService("mqtt://127.0.0.1:1", reg, path)
    msgs = []
    for d, (h8, h9) in {"a-1": (10, 5), "a-2": (3, 4), "b-1": (20, 0)}.items():
        msgs.append(_env(d, 1, "turnout", {"identified": h8 + h9, "refused": 1,
                                           "not_identified": 0, "manual": 0,
                                           "by_hour": {"08": h8, "09": h9}}))
    msgs.append(_env("a-1", 2, "health", {"app": {"printer": {"status": "paper_near_end"},
                                                  "sensor": "error"}}))
    assert svc.process_messages(msgs) == ["accepted"] * 4
    svc.process_messages([("kesp/v1/osh/osh-1/a-1/event", b"junk", 0)])
    svc.store.close()
    return path


def test_watch_once(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--store", store, "watch", "--once"]) == 0
    out = capsys.readouterr().out
    assert "osh-1" in out and "bsk-7" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("osh "))
    assert row.split()[1:] == ["22", "2", "0", "0"]
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("alerts ("))
    shown = {tuple(line.split()[:2]) for line in lines[start + 1:] if line.startswith("  ")}
    # the dashboard's words; no birth was received, so every kiosk is offline too
    assert shown == {("paper_low", "a-1"), ("sensor_fault", "a-1"), ("offline", "a-1"),
                     ("offline", "a-2"), ("offline", "b-1")}, out
    assert "malformed 1" in out


def test_prometheus_exposition(store: str) -> None:
    from ops.store import open_store

    s = open_store(store)  # exists: made by the fixture's service
    registry = load_registry(Path(store).parent / "devices.json")
    text = render_metrics(build_board(s, registry, AuditWatch(), load_zone("Asia/Bishkek"),
                                      BoardTuning(), OpsTuning()))
    s.close()
    lines = text.splitlines()
    assert 'kesp_turnout{district="osh",station="osh-1",outcome="identified"} 22' in lines
    assert 'kesp_messages_rejected_total{reason="malformed"} 1' in lines
    assert "kesp_messages_accepted_total 4" in lines
    assert 'kesp_alerts{kind="paper_low"} 1' in lines
    for line in lines:  # every sample line is "name{labels} value"
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_serve_ingests_and_exposes_metrics(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    from ops_helpers import FAST, until

    from agent.runtime.config import AgentConfig, BrokerConfig
    from agent.runtime.keys import generate_keys
    from agent.telemetry import Telemetry
    from hardware_sim.mosquitto import PrivateMosquitto, free_port

    (tmp_path / "m").mkdir()
    with PrivateMosquitto(workdir=tmp_path / "m") as broker:
        keys = generate_keys(tmp_path / "keys")
        reg = tmp_path / "devices.json"
        register_device(reg, "k-1", "st-1", "d-1", keys.verify_key_hex)
        port = free_port()
        assert main(["--store", str(tmp_path / "ops.sqlite"), "init"]) == 0
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "--store", str(tmp_path / "ops.sqlite"), "serve",
             "--port", str(port), "--broker", broker.url, "--registry", str(reg)],
            env={**os.environ, "PYTHONPATH": os.getcwd()},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            def metrics() -> str:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
                        return str(r.read().decode())
                except OSError:
                    return ""

            assert until(lambda: "kesp_messages_accepted_total" in metrics(), 15)
            time.sleep(1.0)  # ops subscribed
            cfg = AgentConfig(device_id="k-1", station_id="st-1", district="d-1",
                              state_dir=str(tmp_path / "state"),
                              broker=BrokerConfig(url=broker.url))
            tel = Telemetry(cfg, keys, dict, tuning=FAST)
            tel.start()
            tel.emit("turnout", {"identified": 7, "refused": 0, "not_identified": 0,
                                 "manual": 0, "by_hour": {"08": 7}})
            assert tel.flush(10)
            line = 'kesp_turnout{district="d-1",station="st-1",outcome="identified"} 7'
            assert until(lambda: line in metrics().splitlines(), 15), metrics()
            assert 'kesp_devices{state="online"} 1' in metrics().splitlines()
            assert "kesp_ops_broker_connected 1" in metrics().splitlines()
            tel.stop()
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
