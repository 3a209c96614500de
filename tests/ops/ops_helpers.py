"""Helpers of the end-to-end ops tests: fast tunings, polling, a small world of kiosks and ops."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nacl.signing import SigningKey

from agent.runtime.config import AgentConfig, BrokerConfig
from agent.runtime.keys import DeviceKeys, generate_keys
from agent.telemetry import Telemetry
from agent.telemetry.envelope import Envelope, seal
from agent.telemetry.parameters import TelemetryTuning
from hardware_sim.mosquitto import PrivateMosquitto
from ops.parameters import OpsTuning
from ops.registry import register_device
from ops.service import OpsService
from ops.store import StateStore

FAST = TelemetryTuning(
    connect_timeout_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.4, stable_session_s=1.0,
    graceful_death_timeout_s=1.0, idle_tick_s=0.1, command_window_s=60.0, unheard_retry_s=0.3,
)
OPS_FAST = OpsTuning(reorder_timeout_s=0.8, command_interval_s=0.8, batch_wait_s=0.01,
                     reconnect_min_s=1, reconnect_max_s=1)


def signed(key: SigningKey, place: tuple[str, str], device: str, n: int, kind: str,
           payload: dict[str, object]) -> tuple[str, bytes, int]:
    """(topic, sealed bytes, now) of a live message of ``device`` at (district, station)."""
    now = time.time_ns() // 1_000_000
    district, station = place
    env = Envelope(device=device, station=station, district=district, boot=1, seq=n % 256, n=n,
                   wall_ms=now, mono_ms=1, sent_ms=now, type=kind,  # type: ignore[arg-type]
                   historical=False, payload=payload)
    return env.topic, seal(env, key), now


def until(pred: Callable[[], bool], timeout: float = 20.0, step: float = 0.05) -> bool:
    """Poll ``pred`` until true or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def turnout(i: int, refused: int = 0) -> dict[str, object]:
    """A cumulative turnout payload after ``i`` identifications."""
    return {"identified": i, "refused": refused, "not_identified": 0, "manual": 0,
            "by_hour": {"08": i}}


@dataclass
class World:
    tmp: Path
    broker: PrivateMosquitto
    ops_key: SigningKey
    registry: Path
    kiosks: list[Telemetry] = field(default_factory=list)
    services: list[OpsService] = field(default_factory=list)
    keys: dict[str, DeviceKeys] = field(default_factory=dict)

    def config(self, device: str, station: str = "st-1", district: str = "d-1",
               url: str | None = None) -> AgentConfig:
        if device not in self.keys:
            self.keys[device] = generate_keys(self.tmp / "keys" / device)
            register_device(self.registry, device, station, district,
                            self.keys[device].verify_key_hex)
        return AgentConfig(
            device_id=device, station_id=station, district=district,
            state_dir=str(self.tmp / "state" / device),
            broker=BrokerConfig(url=url or self.broker.url,
                                ops_verify_key=bytes(self.ops_key.verify_key).hex()),
            health_interval_s=30.0,
        )

    def kiosk(self, device: str, station: str = "st-1", district: str = "d-1",
              tuning: TelemetryTuning = FAST, url: str | None = None) -> Telemetry:
        tel = Telemetry(self.config(device, station, district, url), self.keys[device],
                        lambda: {"printer": {"status": "ok"}, "sensor": {"status": "ready"}},
                        tuning=tuning)
        tel.start()
        self.kiosks.append(tel)
        return tel

    def ops(self, store: str | StateStore | None = None, client_id: str = "kesp-ops-1",
            tuning: OpsTuning = OPS_FAST) -> OpsService:
        svc = OpsService(self.broker.url, self.registry, store or str(self.tmp / "ops.sqlite"),
                         ops_key=self.ops_key, tuning=tuning, client_id=client_id)
        svc.start()
        assert svc.wait_connected(10)
        self.services.append(svc)
        return svc




class FlakyLink:
    """A TCP proxy in front of the broker whose connections the test can cut.

    ``cut()`` drops every open connection (both directions, as a dead cellular
    link does); while ``down`` new connections are accepted and closed at once.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.down = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(16)
        self.port = int(self._srv.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._srv.close()
