"""The kiosk's MQTT session: Sparkplug-style birth/death, ordered QoS 1 drain of the outbox.

One background thread owns the paho client and drives it with its own
``select`` loop (paho's documented external-loop API: ``socket()``,
``loop_read()``, ``loop_write()``, ``loop_misc()``), so publishing, PUBACK
handling and outbox updates never race, and :meth:`Telemetry.emit` wakes the
thread through a pipe instead of waiting for a poll tick.

Session model (see docs/TELEMETRY.md):

* every connection increments the persisted ``boot`` (bdSeq) and registers a
  signed *death* for that boot as the MQTT will;
* the first publish of a session is a *birth* (seq 0) that repeats the boot,
  the highest counter value and the oldest retained one;
* outbox rows follow in counter order, seq 1, 2, ... 255, 0, 1, ...; rows
  recorded outside the current session are flagged ``hist``;
* a row is marked acknowledged only after its PUBACK; on disconnect every
  unacknowledged row is sent again in the next session (ops deduplicates by
  ``n``);
* ops may send signed commands: ``rebirth`` (publish a new birth, seq 0) and
  ``resend`` (publish retained rows ``from``..``to`` again, historical).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import random
import select
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
from nacl.signing import VerifyKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent import __version__
from agent.runtime.config import AgentConfig
from agent.runtime.durable import is_disk_full
from agent.runtime.keys import DeviceKeys
from agent.telemetry.envelope import (
    Envelope,
    EnvelopeError,
    MessageType,
    PayloadError,
    TelemetryError,
    canonical_json,
    check_payload,
    open_signed,
    seal,
    sign_body,
    topic_for,
)
from agent.telemetry.health import sample_system
from agent.telemetry.outbox import Outbox, OutboxRow
from agent.telemetry.parameters import MAX_MESSAGE_BYTES, TelemetryTuning

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.sqlite"
_BIRTH = -1
_NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK reason code
_ENVELOPE_OVERHEAD = 512  # signature + header fields, generous


class Uplink(enum.Enum):
    """State of the link to the broker, as shown on the kiosk and in health."""

    IDLE = "idle"
    """Not started."""
    CONNECTING = "connecting"
    CONNECTED = "connected"
    """Birth published; records flow."""
    DISCONNECTED = "disconnected"
    """Waiting (backoff with jitter) before the next attempt; records queue up."""
    STOPPED = "stopped"


class TelemetryStoppedError(TelemetryError):
    """``emit`` was called after :meth:`Telemetry.stop`."""


class TelemetryConfigError(TelemetryError):
    """The broker settings cannot be used (missing CA for TLS, unreadable password...)."""


@dataclass(frozen=True)
class TelemetryStatus:
    """A snapshot for the kiosk's status screen and for tests."""

    uplink: Uplink
    boot: int
    outbox_depth: int
    last_ack_wall_ms: int | None
    published: int
    commands_accepted: int
    commands_refused: int


def backoff_delay(attempt: int, tuning: TelemetryTuning, rng: random.Random) -> float:
    """Exponential backoff with jitter: the ``attempt``-th delay (0-based), in seconds.

    ``base = min(max, initial * 2**attempt)``; the delay is uniformly drawn from
    ``[base * (1 - jitter), base]`` so a fleet desynchronises after an outage.
    """
    base = min(tuning.backoff_max_s, tuning.backoff_initial_s * (2 ** min(attempt, 30)))
    return float(base * (1.0 - tuning.backoff_jitter * rng.random()))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _mono_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class Telemetry:
    """Signed, durable telemetry of one kiosk (the station application's only telemetry API).

    ``health`` is called from the telemetry thread every ``cfg.health_interval_s``
    (and must not block for long); its mapping is sent as the ``app`` part of
    the health sample. Opening a corrupt outbox raises :class:`OutboxError`.
    """

    def __init__(
        self,
        cfg: AgentConfig,
        keys: DeviceKeys,
        health: Callable[[], Mapping[str, object]],
        *,
        tuning: TelemetryTuning | None = None,
        outbox_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.keys = keys
        self.tuning = tuning or TelemetryTuning()
        self._health = health
        self._password = self._read_password()
        if cfg.broker_tls and not cfg.broker.ca_file:
            raise TelemetryConfigError("broker.ca_file is required for mqtts:// (the CA is pinned)")
        self._ops_key: VerifyKey | None = None
        if cfg.broker.ops_verify_key:
            try:
                self._ops_key = VerifyKey(bytes.fromhex(cfg.broker.ops_verify_key))
            except ValueError as exc:
                raise TelemetryConfigError(f"broker.ops_verify_key is not a key: {exc}") from exc
        self.outbox = Outbox(
            outbox_path or cfg.state_path / OUTBOX_FILE,
            retain_acked_rows=self.tuning.retain_acked_rows,
        )
        self._rng = random.Random()
        self._uplink = Uplink.IDLE
        self._live_boot = -1
        self._boot = 0
        self._pointer = 0  # highest n handed to the broker in this session
        self._stopping = threading.Event()
        self._graceful = True
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._acked = threading.Condition()
        self._last_ack_ms: int | None = None
        self._published = 0
        self._cmd_ok = 0
        self._cmd_refused = 0
        self._next_health = time.monotonic()
        self._final_depth: int | None = None  # set by stop(), when the outbox closes
        # Filled by paho callbacks (run on our own thread inside loop_read).
        self._connack: ReasonCode | None = None
        self._link_up = False
        self._puback: list[tuple[int, int]] = []
        self._commands: list[bytes] = []

    # ---------------------------------------------------------------- public API

    @property
    def uplink(self) -> Uplink:
        """Current link state."""
        return self._uplink

    def status(self) -> TelemetryStatus:
        """A consistent-enough snapshot of counters for display."""
        return TelemetryStatus(
            uplink=self._uplink,
            boot=self._boot,
            outbox_depth=self.outbox_depth(),
            last_ack_wall_ms=self._last_ack_ms,
            published=self._published,
            commands_accepted=self._cmd_ok,
            commands_refused=self._cmd_refused,
        )

    def start(self) -> None:
        """Start the background publisher (idempotent)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="kesp-telemetry", daemon=True)
        self._thread.start()

    def emit(self, kind: Literal["event", "turnout"], payload: Mapping[str, object]) -> int:
        """Queue a record durably (committed and fsynced) and return its counter value.

        Raises :class:`PersonalDataError` for a payload with a forbidden key
        and :class:`PayloadError` for a payload that cannot be encoded.
        """
        if kind not in ("event", "turnout"):
            raise PayloadError(f"kind {kind!r} is not 'event' or 'turnout'", "kind")
        if self._final_depth is not None:
            raise TelemetryStoppedError("telemetry was stopped; the outbox is closed")
        return self._append(kind, payload)

    def outbox_depth(self) -> int:
        """Records recorded but not yet acknowledged by the broker (as of stop, once stopped)."""
        if self._final_depth is not None:
            return self._final_depth
        return self.outbox.depth()

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued record has been acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._acked:
            while self.outbox.depth() > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._acked.wait(min(left, 0.1))
        return True

    def stop(self, graceful: bool = True) -> None:
        """Stop publishing. ``graceful``: publish the signed death, then disconnect cleanly.

        ``graceful=False`` drops the TCP connection without DISCONNECT, so the
        broker publishes the registered will (what a power cut looks like).
        """
        self._graceful = graceful
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            t = self.tuning
            self._thread.join(t.graceful_death_timeout_s + t.connect_timeout_s + 5)
            self._thread = None
        self._uplink = Uplink.STOPPED
        if self._final_depth is None:
            self._final_depth = self.outbox.depth()
            self.outbox.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # ---------------------------------------------------------------- recording

    def _append(
        self, kind: Literal["event", "turnout", "health"], payload: Mapping[str, object]
    ) -> int:
        check_payload(payload)
        body = canonical_json(payload)
        if len(body) + _ENVELOPE_OVERHEAD > MAX_MESSAGE_BYTES:
            raise PayloadError(f"payload is {len(body)} bytes; limit is about "
                               f"{MAX_MESSAGE_BYTES - _ENVELOPE_OVERHEAD}")
        coalesce = self.tuning.coalesce_depth if kind == "health" else None
        n = self.outbox.append(
            kind, body, _now_ms(), _mono_ms(), self._live_boot,
            coalesce_depth=coalesce, coalesce_above_n=self._pointer,
        )
        self._wake()
        return n

    def _health_payload(self) -> dict[str, object]:
        sample: dict[str, object] = {"system": sample_system(self.cfg.state_dir)}
        try:
            sample["app"] = dict(self._health())
        except Exception as exc:  # the app's probe must never stop telemetry
            log.warning("health callable failed: %s", exc)
            sample["app"] = {"error": type(exc).__name__}
        sample["software"] = __version__
        sample["outbox_depth"] = self.outbox.depth()
        sample["last_ack_ms"] = self._last_ack_ms
        sample["uplink"] = self._uplink.value
        return sample

    def _maybe_health(self) -> float:
        """Queue a health sample when due; return seconds until the next one."""
        now = time.monotonic()
        if now >= self._next_health:
            self._next_health = now + self.cfg.health_interval_s
            try:
                self._append("health", self._health_payload())
            except TelemetryError as exc:
                log.error("health sample refused: %s", exc)
        return max(0.0, self._next_health - now)

    def health_soon(self) -> None:
        """Queue a health sample now rather than at the next interval (a device
        came or went: ops should not wait a minute to see it)."""
        self._next_health = time.monotonic()
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    # ---------------------------------------------------------------- thread

    def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self._session()
            except Exception as exc:  # keep the kiosk's uplink alive whatever paho does
                if is_disk_full(exc):  # the station's storage guard says what to do
                    log.error("telemetry session paused: disk full (%s)", exc)
                else:
                    log.exception("telemetry session failed")
            self._live_boot = -1
            if self._stopping.is_set():
                break
            if time.monotonic() - started >= self.tuning.stable_session_s:
                attempt = 0
            self._uplink = Uplink.DISCONNECTED
            deadline = time.monotonic() + backoff_delay(attempt, self.tuning, self._rng)
            attempt += 1
            while not self._stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._stopping.wait(min(left, self._maybe_health()))
        self._uplink = Uplink.STOPPED

    def _read_password(self) -> str | None:
        if not self.cfg.broker.password_file:
            return None
        try:
            return Path(self.cfg.broker.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TelemetryConfigError(
                f"broker.password_file {self.cfg.broker.password_file}: {exc.strerror}"
            ) from exc

    def _envelope(self, kind: MessageType, seq: int, n: int, payload: Mapping[str, Any],
                  wall_ms: int | None = None, mono_ms: int | None = None,
                  historical: bool = False) -> Envelope:
        now = _now_ms()
        return Envelope(
            device=self.cfg.device_id, station=self.cfg.station_id, district=self.cfg.district,
            boot=self._boot, seq=seq, n=n, wall_ms=now if wall_ms is None else wall_ms,
            mono_ms=_mono_ms() if mono_ms is None else mono_ms, sent_ms=now, type=kind,
            historical=historical, payload=payload,
        )

    def _row_message(self, row: OutboxRow, seq: int) -> tuple[str, bytes]:
        hist = row.acked or row.live_boot != self._boot
        # The stored payload is already canonical JSON: splice it into the
        # body instead of parsing and re-encoding it.
        head = self._envelope(row.kind, seq, row.n, {}, row.wall_ms, row.mono_ms, hist)
        body = _splice_payload(head, row.payload)
        return topic_for(self.cfg.district, self.cfg.station_id, self.cfg.device_id, row.kind), \
            sign_body(body, self.keys.signing)

    def _make_client(self, death: bytes) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.cfg.device_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.connect_timeout = self.tuning.connect_timeout_s
        client.max_inflight_messages_set(self.tuning.inflight_window + 8)
        client.will_set(self._topic("death"), death, qos=1, retain=False)
        username = self.cfg.broker.username or self.cfg.device_id
        client.username_pw_set(username, self._password)
        if self.cfg.broker_tls:
            client.tls_set(
                ca_certs=self.cfg.broker.ca_file,
                certfile=self.cfg.broker.cert_file or None,
                keyfile=self.cfg.broker.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _topic(self, kind: str) -> str:
        return topic_for(self.cfg.district, self.cfg.station_id, self.cfg.device_id, kind)

    # paho callbacks: invoked from loop_read/loop_write on our own thread.
    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode,
                    _p: Properties | None) -> None:
        self._connack = rc
        self._link_up = not rc.is_failure

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode,
                       _p: Properties | None) -> None:
        self._link_up = False

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, rc: ReasonCode,
                    _p: Properties | None) -> None:
        self._puback.append((mid, int(rc.value)))

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self._commands.append(bytes(msg.payload))

    def _io(self, client: mqtt.Client, timeout: float) -> bool:
        """One select round; False when the link is gone."""
        sock = client.socket()
        if sock is None:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            timeout = 0.0
        want = [sock] if client.want_write() else []
        try:
            readable, writable, _ = select.select([sock, self._wake_r], want, [], timeout)
        except (OSError, ValueError):
            return False
        if self._wake_r in readable:
            self._drain_wake()
        readable_now = sock in readable or (isinstance(sock, ssl.SSLSocket) and sock.pending())
        if readable_now and client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        if sock in writable and client.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        if client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        return client.socket() is not None

    def _session(self) -> None:
        self._uplink = Uplink.CONNECTING
        self._boot = self.outbox.next_boot()
        death = seal(self._envelope("death", 0, self.outbox.last_n(), {"bdseq": self._boot}),
                     self.keys.signing)
        client = self._make_client(death)
        self._connack = None
        self._link_up = False
        self._puback.clear()
        self._commands.clear()
        try:
            client.connect(self.cfg.broker_host, self.cfg.broker_port,
                           keepalive=self.cfg.broker.keepalive_s, clean_start=True)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.info("broker %s unreachable: %s", self.cfg.broker.url, exc)
            return
        try:
            deadline = time.monotonic() + self.tuning.connect_timeout_s
            while self._connack is None and time.monotonic() < deadline:
                if not self._io(client, min(0.2, self.tuning.connect_timeout_s)):
                    break
            if self._connack is None or not self._link_up:
                log.warning("broker refused or did not answer CONNECT: %s", self._connack)
                return
            self._connected_loop(client, death)
        finally:
            self._live_boot = -1
            # Whatever happened, this session's socket is done. If no DISCONNECT
            # was sent (crash-like stop, refused publish) the broker sends the will.
            sock = client.socket()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
            self._link_up = False

    def _publish_birth(self, client: mqtt.Client) -> int:
        payload = {
            "bdseq": self._boot,
            "last_n": self.outbox.last_n(),
            "oldest_n": self.outbox.oldest_retained(),
            "software": __version__,
            "health_interval_s": self.cfg.health_interval_s,
        }
        data = seal(self._envelope("birth", 0, self.outbox.last_n(), payload), self.keys.signing)
        return client.publish(self._topic("birth"), data, qos=1).mid

    def _connected_loop(self, client: mqtt.Client, death: bytes) -> None:
        client.subscribe(self._topic("cmd"), qos=1)
        inflight: dict[int, int] = {}  # mid -> n (0: resend, _BIRTH: birth)
        inflight[self._publish_birth(client)] = _BIRTH
        seq = 1
        hold_until = 0.0  # no subscriber: wait before publishing more
        birth_again = False
        self._pointer = 0
        self._live_boot = self._boot
        self._uplink = Uplink.CONNECTED
        resend: deque[int] = deque()
        log.info("telemetry connected, boot %d", self._boot)
        while not self._stopping.is_set():
            # PUBACKs -> outbox
            if self._puback:
                done, self._puback = self._puback, []
                ok_ns = []
                unheard: list[int] = []
                for mid, code in done:
                    n = inflight.pop(mid, 0)
                    if code >= 0x80:
                        log.error("broker refused publish n=%d (reason %#x); reconnecting", n, code)
                        return
                    if code == _NO_MATCHING_SUBSCRIBERS:
                        # Accepted by the broker but nobody (no ops) subscribed: it
                        # would be dropped, so keep it queued and try again.
                        if n == _BIRTH:
                            birth_again = True
                        elif n > 0:
                            unheard.append(n)
                    elif n > 0:
                        ok_ns.append(n)
                if unheard or birth_again:
                    self._pointer = min([self._pointer, *(u - 1 for u in unheard)])
                    hold_until = time.monotonic() + self.tuning.unheard_retry_s
                if ok_ns:
                    self.outbox.ack(ok_ns)
                    self._last_ack_ms = _now_ms()
                    with self._acked:
                        self._acked.notify_all()
            # signed commands
            if self._commands:
                cmds, self._commands = self._commands, []
                for data in cmds:
                    action = self._verify_command(data)
                    if action is None:
                        continue
                    if action[0] == "rebirth":
                        inflight[self._publish_birth(client)] = _BIRTH
                        seq = 1
                    else:
                        resend.extend(
                            r.n for r in self.outbox.resend_rows(action[1], action[2], 10_000)
                        )
            # fill the window: resend requests first, then new rows
            room = self.tuning.inflight_window - len(inflight)
            if time.monotonic() < hold_until:
                room = 0
            elif birth_again:
                birth_again = False
                inflight[self._publish_birth(client)] = _BIRTH
                seq = 1
            while room > 0 and resend:
                rows = self.outbox.resend_rows(resend[0], resend[0], 1)
                resend.popleft()
                if rows:
                    topic, data = self._row_message(rows[0], seq)
                    inflight[client.publish(topic, data, qos=1).mid] = 0
                    seq = (seq + 1) % 256
                    room -= 1
            if room > 0:
                flying = set(inflight.values())
                for row in self.outbox.pending(self._pointer, room):
                    if row.n in flying:
                        self._pointer = row.n
                        continue
                    topic, data = self._row_message(row, seq)
                    info = client.publish(topic, data, qos=1)
                    if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        return
                    inflight[info.mid] = row.n
                    self._pointer = row.n
                    self._published += 1
                    seq = (seq + 1) % 256
            wait = min(self.tuning.idle_tick_s, self._maybe_health())
            if hold_until > time.monotonic():
                wait = min(wait, hold_until - time.monotonic())
            if not self._io(client, wait) or not self._link_up:
                log.info("telemetry link lost (boot %d)", self._boot)
                return
        if self._graceful:
            self._goodbye(client, death)

    def _goodbye(self, client: mqtt.Client, death: bytes) -> None:
        mid = client.publish(self._topic("death"), death, qos=1).mid
        deadline = time.monotonic() + self.tuning.graceful_death_timeout_s
        while time.monotonic() < deadline:
            if any(m == mid for m, _ in self._puback):
                break
            if not self._io(client, 0.05):
                return
        client.disconnect()
        deadline = time.monotonic() + 1.0
        while client.want_write() and time.monotonic() < deadline:
            if not self._io(client, 0.05):
                break
        self._link_up = False

    def _verify_command(self, data: bytes) -> tuple[str, int, int] | None:
        """A verified ops command as (action, from_n, to_n), or None (refused, counted)."""
        if self._ops_key is None:
            log.warning("command refused: no ops key configured, unsigned commands are ignored")
            self._cmd_refused += 1
            return None
        try:
            env = open_signed(data, self._ops_key)
        except EnvelopeError as exc:
            log.warning("command refused: %s", exc.reason)
            self._cmd_refused += 1
            return None
        cmd = env.payload.get("cmd")
        now, window_ms = _now_ms(), int(self.tuning.command_window_s * 1000)
        ok = (
            env.type == "cmd"
            and env.device == self.cfg.device_id
            and env.station == self.cfg.station_id
            and env.district == self.cfg.district
            and abs(now - env.sent_ms) <= window_ms
        )
        if ok and cmd == "rebirth":
            action: tuple[str, int, int] | None = ("rebirth", 0, 0)
        elif ok and cmd == "resend":
            lo, hi = env.payload.get("from"), env.payload.get("to")
            valid = isinstance(lo, int) and isinstance(hi, int) and 0 < lo <= hi
            action = ("resend", int(lo), min(int(hi), self.outbox.last_n())) if valid else None  # type: ignore[arg-type]
        else:
            action = None
        # The replay guard is persisted (outbox database) before the command is
        # carried out, so a capture replayed after a restart is still refused.
        if action is None or not self.outbox.accept_command(data[:64], env.sent_ms,
                                                            now - 2 * window_ms):
            log.warning("command refused: wrong target, stale, replayed or unknown")
            self._cmd_refused += 1
            return None
        self._cmd_ok += 1
        return action


def _splice_payload(head: Envelope, payload_json: bytes) -> bytes:
    """Canonical body of ``head`` with ``p`` replaced by already-canonical JSON bytes."""
    body = canonical_json({
        "v": head.version, "dev": head.device, "stn": head.station, "dst": head.district,
        "boot": head.boot, "seq": head.seq, "n": head.n, "t": head.wall_ms,
        "mono": head.mono_ms, "sent": head.sent_ms, "type": head.type, "hist": head.historical,
        "p": 0,
    })
    marker = b',"p":0,'
    i = body.index(marker)
    return body[:i] + b',"p":' + payload_json + body[i + len(marker) - 1:]

