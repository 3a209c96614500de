"""The broker cuts off oversized publishes before they reach ops (#20: a 40 MiB one did)."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt

from hardware_sim.mosquitto import PrivateMosquitto, free_port
from ops.broker_config import MAX_PACKET_SIZE


def _client(port: int, name: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def test_publish_over_max_packet_size_never_reaches_a_subscriber(tmp_path: Path) -> None:
    port = free_port()
    broker = PrivateMosquitto(port, workdir=tmp_path / "mosq")
    broker.workdir.mkdir()
    broker.start()
    got: list[int] = []
    arrived = threading.Event()
    try:
        ops = _client(port, "ops")
        ops.on_message = lambda _c, _u, msg: (got.append(len(msg.payload)), arrived.set())
        ops.subscribe("kesp/#", 1)
        kiosk = _client(port, "kiosk")
        cut = threading.Event()
        kiosk.on_disconnect = lambda *_a: cut.set()
        kiosk.publish("kesp/big", b"x" * (MAX_PACKET_SIZE * 4), qos=1)
        assert cut.wait(10)  # mosquitto drops the client that sent it
        small = _client(port, "kiosk-2")
        small.publish("kesp/small", b"y" * 1000, qos=1).wait_for_publish(10)
        assert arrived.wait(10)
        kiosk.loop_stop()  # no reconnect and resend of the big one
        assert got == [1000]  # the oversized one was dropped at the broker
    finally:
        for c in (locals().get("ops"), locals().get("kiosk"), locals().get("small")):
            if c is not None:
                c.loop_stop()
                c.disconnect()
        broker.close()
