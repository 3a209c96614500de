"""The central ops service: subscribe, verify, deduplicate, keep state, ask for resends.

Threads: paho's network loop only queues received messages; one ingest
thread verifies them in batches, commits the batch to the store and only
then acknowledges them to the broker (``manual_ack``), so a message is
either in the store or still owned by the broker, never lost in between. A
maintenance step in the same thread reloads the registry when its file
changes and, Sparkplug style, asks kiosks for a rebirth (data from a session
whose birth ops never saw) or for a resend (a gap in the counter that the
reorder timeout did not fill).
"""

from __future__ import annotations

import logging
import queue
import ssl
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from nacl.signing import SigningKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.telemetry.envelope import Envelope, canonical_json, seal, topic_for
from agent.telemetry.parameters import TOPIC_ROOT
from ops.broker_link import BrokerLink, describe_connect_error
from ops.parameters import BoardTuning, OpsTuning
from ops.registry import Registry, load_registry
from ops.store import DeviceState, StateStore, Stats, TurnoutSummary, open_store
from ops.verify import Accepted, Rejected, Verifier

log = logging.getLogger(__name__)

SHARED_SUBSCRIPTION = f"$share/ops/{TOPIC_ROOT}/#"
STATE_TOPIC = "kesp/state"


@dataclass(frozen=True)
class _Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_ms: int


class OpsError(RuntimeError):
    """The ops service cannot start (bad broker URL, unreadable registry or store)."""


def _paho_only_when_debugging(record: logging.LogRecord) -> bool:
    """paho's own log lines ("Client is not connected. Socket: None") mean nothing
    to an operator: the connection state is said in words by ``_set_link``. They
    are kept for ``--debug``."""
    return log.isEnabledFor(logging.DEBUG)


class OpsService:
    """One ops instance. Several instances with the same PostgreSQL store share the load."""

    def __init__(
        self,
        broker_url: str,
        registry_path: str | Path,
        store: str | StateStore,
        *,
        ops_key: SigningKey | None = None,
        tuning: OpsTuning | None = None,
        client_id: str = "kesp-ops-1",
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        prefix: str = "kesp_",
    ) -> None:
        try:
            parsed = urlsplit(broker_url)
            port = parsed.port
        except ValueError:
            port = None
        if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname or not port:
            raise OpsError(f"broker URL {broker_url!r} is not mqtt://host:port or "
                           "mqtts://host:port: check --broker")
        self.host, self.port = parsed.hostname, port
        self.url = broker_url
        self.tls = parsed.scheme == "mqtts"
        self.tuning = tuning or OpsTuning()
        self.registry_path = Path(registry_path)
        self._registry_mtime = 0.0
        self.verifier = Verifier(self._load_registry(), self.tuning)
        # A service given a path is the one that fills the store: it may create it.
        self.store = store if isinstance(store, StateStore) else open_store(
            store, prefix=prefix, instance=client_id, create=True)
        self.ops_key = ops_key
        self.client_id = client_id
        self._queue: queue.Queue[_Incoming] = queue.Queue()
        self._generation = 0
        self._busy = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = threading.Event()
        self.recent_rejections: deque[Rejected] = deque(maxlen=200)
        self._data_boot: dict[str, tuple[int, float]] = {}
        self._gap_since: dict[str, tuple[int, float]] = {}
        self._last_cmd: dict[str, float] = {}
        self.commands_sent = 0
        self._link = BrokerLink(broker_url, False, "", time.time_ns() // 1_000_000)
        self._link_lock = threading.Lock()
        self._client = self._make_client(username, password, ca_file)

    # ------------------------------------------------------------------ setup

    def _load_registry(self) -> Registry:
        try:
            self._registry_mtime = self.registry_path.stat().st_mtime
        except FileNotFoundError:
            self._registry_mtime = 0.0
        return load_registry(self.registry_path, missing_ok=True)

    def _make_client(self, username: str | None, password: str | None,
                     ca_file: str | None) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True,
        )
        client.reconnect_delay_set(self.tuning.reconnect_min_s, self.tuning.reconnect_max_s)
        paho_log = logging.getLogger(f"ops.paho.{self.client_id}")
        paho_log.addFilter(_paho_only_when_debugging)
        client.enable_logger(paho_log)
        if username:
            client.username_pw_set(username, password)
        if self.tls:
            try:
                client.tls_set(ca_certs=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise OpsError(f"CA file {ca_file}: {getattr(exc, 'strerror', None) or exc}; "
                               "check --ca-file") from exc
        client.will_set(f"{STATE_TOPIC}/{self.client_id}", canonical_json({"online": False}),
                        qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        return client

    def start(self) -> None:
        """Connect (asynchronously, retrying) and start ingesting."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.tuning.session_expiry_s
        self._client.connect_async(self.host, self.port, keepalive=self.tuning.keepalive_s,
                                   clean_start=False, properties=props)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._ingest_loop, name="kesp-ops-ingest",
                                        daemon=True)
        self._thread.start()

    def wait_connected(self, timeout_s: float) -> bool:
        """True once subscribed to the shared subscription."""
        return self._connected.wait(timeout_s)

    def broker_link(self) -> BrokerLink:
        """The current state of the connection to the broker."""
        with self._link_lock:
            return self._link

    def _set_link(self, connected: bool, problem: str) -> None:
        """Record a change of the broker connection; say it in one line when it changes."""
        with self._link_lock:
            old = self._link
            if (old.connected, old.problem) == (connected, problem):
                return
            self._link = BrokerLink(self.url, connected, problem, time.time_ns() // 1_000_000)
        if self._stop.is_set():
            return
        if connected:
            if old.problem:
                log.warning("broker %s: connected again", self.url)
        else:
            log.warning("broker %s: %s; retrying (kiosks keep their data meanwhile)",
                        self.url, problem)

    def stop(self) -> None:
        """Process what is queued, mark the host offline and disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        if self._client.is_connected():
            self._client.publish(f"{STATE_TOPIC}/{self.client_id}",
                                 canonical_json({"online": False}), qos=1, retain=True)
            self._client.disconnect()
        self._client.loop_stop()
        self.store.close()

    # ------------------------------------------------------------------ paho

    def _on_connect(self, client: mqtt.Client, _u: object, flags: mqtt.ConnectFlags,
                    rc: ReasonCode, _p: Properties | None) -> None:
        if rc.is_failure:
            self._set_link(False, f"the broker refused ops' login ({rc}): check --username "
                           "and --password-file")
            return
        self._set_link(True, "")
        self._generation += 1
        if not flags.session_present:
            # A resumed session keeps its subscription; subscribing again to a
            # restored shared subscription stalls delivery on mosquitto 2.0.
            client.subscribe(SHARED_SUBSCRIPTION, qos=1)
        client.publish(f"{STATE_TOPIC}/{self.client_id}",
                       canonical_json({"online": True, "t": int(time.time() * 1000)}),
                       qos=1, retain=True)
        self._connected.set()

    def _on_connect_fail(self, _c: mqtt.Client, _u: object) -> None:
        # paho calls this from inside its ``except OSError`` block without the
        # exception itself; sys.exception() is that OSError.
        self._set_link(False, describe_connect_error(sys.exception(), self.host))

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode,
                       _p: Properties | None) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            self._set_link(False, f"connection lost ({rc})")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self._queue.put(_Incoming(msg.topic, bytes(msg.payload), msg.mid, msg.qos,
                                  self._generation, time.time_ns() // 1_000_000))

    # ------------------------------------------------------------------ ingest

    def _ingest_loop(self) -> None:
        next_maintenance = 0.0
        while True:
            batch: list[_Incoming] = []
            try:
                batch.append(self._queue.get(timeout=0.1))
                self._busy = True
                deadline = time.monotonic() + self.tuning.batch_wait_s
                while len(batch) < self.tuning.batch_max:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    batch.append(self._queue.get(timeout=left))
            except queue.Empty:
                pass
            while batch:
                try:
                    self._process(batch)
                    break
                except Exception:
                    # Not acknowledged yet. Retry (the store may be restarting);
                    # on stop the broker redelivers them to the next session.
                    log.exception("ingest of %d messages failed; retrying", len(batch))
                    if self._stop.wait(self.tuning.retry_s):
                        return
            self._busy = False
            if time.monotonic() >= next_maintenance:
                next_maintenance = time.monotonic() + min(1.0, self.tuning.reorder_timeout_s / 2)
                try:
                    self._maintenance()
                except Exception:
                    log.exception("maintenance failed")
            if self._stop.is_set() and self._queue.empty():
                return

    def process_messages(self, messages: list[tuple[str, bytes, int]]) -> list[str]:
        """Verify and store (topic, payload, received_ms) messages; reasons or "accepted".

        The same path the MQTT loop uses, for tools and benchmarks that feed
        messages without a broker.
        """
        return self._process([_Incoming(t, p, 0, 0, -1, r) for t, p, r in messages])

    def _process(self, batch: list[_Incoming]) -> list[str]:
        accepted: list[Accepted] = []
        rejected: dict[str, int] = {}
        outcome: list[str] = []
        for m in batch:
            if m.topic.endswith("/cmd"):
                outcome.append("ignored")  # our own commands to kiosks
                continue
            verdict = self.verifier.check(m.topic, m.payload, m.received_ms)
            if isinstance(verdict, Rejected) and verdict.reason == "unknown_device" \
                    and self._reload_registry_if_changed():
                # Provisioning may have registered it a moment ago.
                verdict = self.verifier.check(m.topic, m.payload, m.received_ms)
            if isinstance(verdict, Rejected):
                rejected[verdict.reason] = rejected.get(verdict.reason, 0) + 1
                self.recent_rejections.append(verdict)
                log.info("rejected %s from %s: %s", verdict.reason, verdict.device, verdict.detail)
                outcome.append(verdict.reason)
            else:
                accepted.append(verdict)
                outcome.append("")
        fresh = iter(self.store.ingest(accepted, rejected))
        now = time.monotonic()
        for acc in accepted:
            env = acc.env
            if env.type in ("health", "turnout", "event"):
                prev = self._data_boot.get(env.device)
                if prev is None or env.boot > prev[0]:
                    self._data_boot[env.device] = (env.boot, now)
        outcome = [o or ("accepted" if next(fresh) else "duplicate") for o in outcome]
        for m in batch:
            if m.qos > 0 and m.generation == self._generation:
                self._client.ack(m.mid, m.qos)
        return outcome

    def _reload_registry_if_changed(self) -> bool:
        try:
            mtime = self.registry_path.stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if mtime == self._registry_mtime:
            return False
        self.verifier.set_registry(self._load_registry())
        log.info("registry reloaded: %d devices", len(self.verifier.registry.devices))
        return True

    def _maintenance(self) -> None:
        self._reload_registry_if_changed()
        if self.ops_key is None or not self._connected.is_set():
            return
        now = time.monotonic()
        for dev in self.store.devices():
            boot = self._data_boot.get(dev.device)
            if boot is not None and boot[0] > dev.birth_boot and \
                    now - boot[1] >= self.tuning.reorder_timeout_s:
                self.request_rebirth(dev.device)
                continue
            target = max(dev.max_n, dev.birth_last_n)
            if dev.contig_n >= target:
                self._gap_since.pop(dev.device, None)
                continue
            contig, target = self.store.advance_contiguous(dev.device)
            if contig >= target:
                self._gap_since.pop(dev.device, None)
                continue
            since = self._gap_since.get(dev.device)
            if since is None or since[0] != contig:
                self._gap_since[dev.device] = (contig, now)
            elif now - since[1] >= self.tuning.reorder_timeout_s:
                self.request_resend(dev.device, contig + 1, target)

    # ------------------------------------------------------------------ commands

    def _command(self, device: str, payload: dict[str, Any]) -> bool:
        rec = self.verifier.registry.get(device)
        if self.ops_key is None or rec is None or not rec.active:
            return False
        now = time.monotonic()
        if now - self._last_cmd.get(device, -1e9) < self.tuning.command_interval_s:
            return False
        self._last_cmd[device] = now
        wall = time.time_ns() // 1_000_000
        env = Envelope(device=device, station=rec.station_id, district=rec.district, boot=0,
                       seq=0, n=0, wall_ms=wall, mono_ms=time.monotonic_ns() // 1_000_000,
                       sent_ms=wall, type="cmd", historical=False, payload=payload)
        self._client.publish(topic_for(rec.district, rec.station_id, device, "cmd"),
                             seal(env, self.ops_key), qos=1)
        self.commands_sent += 1
        log.info("sent %s to %s", payload, device)
        return True

    def request_rebirth(self, device: str) -> bool:
        """Ask a kiosk to publish a new birth (signed by the ops key); False if rate-limited."""
        return self._command(device, {"cmd": "rebirth"})

    def request_resend(self, device: str, from_n: int, to_n: int) -> bool:
        """Ask a kiosk to publish retained records ``from_n..to_n`` again (historical)."""
        return self._command(device, {"cmd": "resend", "from": from_n, "to": to_n})

    # ------------------------------------------------------------------ views

    def idle(self) -> bool:
        """Nothing queued and no batch in progress."""
        return self._queue.empty() and not self._busy

    def wait_idle(self, timeout_s: float, settle_s: float = 0.3) -> bool:
        """Wait until idle for ``settle_s`` in a row (messages may still be in flight)."""
        deadline = time.monotonic() + timeout_s
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            if self.idle():
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= settle_s:
                    return True
            else:
                quiet_since = None
            time.sleep(0.02)
        return False

    def stats(self) -> Stats:
        """Accepted count and rejected counts by reason (all instances of the store)."""
        return self.store.stats()

    def turnout(self) -> TurnoutSummary:
        """Latest cumulative turnout per kiosk, station and district."""
        return self.store.turnout()

    def devices(self) -> list[DeviceState]:
        """Per-kiosk state (online, health, counters)."""
        return self.store.devices()

    def render_watch(self) -> str:
        """The ``kesp-ops watch`` screen for the current state (for demos and logs)."""
        from ops.audit_watch import AuditWatch
        from ops.board import build_board
        from ops.report import DEFAULT_TIMEZONE, load_zone
        from ops.view import render_watch

        board = build_board(self.store, self.verifier.registry, AuditWatch(),
                            load_zone(DEFAULT_TIMEZONE), BoardTuning(), self.tuning)
        return render_watch(board, broker=self.broker_link())
