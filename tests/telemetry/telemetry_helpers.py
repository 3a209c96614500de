"""Helpers of the device-side telemetry tests: fast tuning, the ops test key, a spy subscriber."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
from nacl.signing import SigningKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.telemetry.parameters import TelemetryTuning
from hardware_sim.mosquitto import PrivateMosquitto

FAST = TelemetryTuning(connect_timeout_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.3,
                       stable_session_s=1.0, graceful_death_timeout_s=1.0, idle_tick_s=0.1,
                       unheard_retry_s=0.2)
OPS_KEY = SigningKey(bytes(range(100, 132)))


class Spy:
    """A plain subscriber to ``kesp/v1/#`` recording (topic, payload)."""

    def __init__(self, broker: PrivateMosquitto) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="spy",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe("kesp/v1/#", qos=1)
        self.client.on_message = lambda _c, _u, m: self.got.append((m.topic, bytes(m.payload)))
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda _c, _u, _m, _rc, _p: self.subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def topics(self) -> list[str]:
        return [t.rsplit("/", 1)[1] for t, _ in self.got]


