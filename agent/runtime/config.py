"""Site configuration of one kiosk, validated once at start-up.

Written by ``kesp-provision device init`` as JSON (``agent.json`` in the
configuration directory) and read by every agent process. Unknown fields, a
malformed broker URL or a wrong type are refused with :class:`ConfigError`
naming the field: a typo must not silently fall back to a default on election
day. Tuned algorithm constants are *not* here; they live in
``agent.match.parameters``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.runtime.durable import atomic_write

CONFIG_FILE = "agent.json"
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def mdns_installed() -> bool:
    """Whether the optional ``[mdns]`` extra (zeroconf, ifaddr) that ``peer_mdns`` needs is here."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("zeroconf", "ifaddr"))
    except (ImportError, ValueError):  # a module entry present but unusable
        return False


SensorKind = Literal["grow-serial", "nb1010-usb", "aes3500-usb"]
PrinterKind = Literal["escpos-serial", "escpos-usb"]


class ConfigError(ValueError):
    """The configuration is missing, unreadable or invalid; ``field`` names the culprit."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


@dataclass(frozen=True)
class SensorConfig:
    """Which fingerprint sensor and where."""

    kind: SensorKind = "grow-serial"
    port: str = "/dev/kesp-sensor"
    baud: int = 57600
    password: int = 0
    address: int = 0xFFFFFFFF
    #: Seconds one command may wait for the module's reply (2 s suits a real R30x/R503).
    reply_timeout_s: float = 2.0


@dataclass(frozen=True)
class PrinterConfig:
    """Which receipt printer, where, and its capability profile."""

    kind: PrinterKind = "escpos-serial"
    port: str = "/dev/kesp-printer"
    baud: int = 19200
    profile: str = "generic-58"


@dataclass(frozen=True)
class BrokerConfig:
    """The central MQTT broker. ``url`` is ``mqtt://host:port`` or ``mqtts://host:port``."""

    url: str = "mqtts://telemetry.kesp.invalid:8883"
    ca_file: str = ""
    username: str = ""
    password_file: str = ""
    keepalive_s: int = 30
    cert_file: str = ""
    """Client certificate (PEM) when the broker identifies kiosks by certificate."""
    key_file: str = ""
    """Private key (PEM) of ``cert_file``."""
    ops_verify_key: str = ""
    """Hex Ed25519 public key of central ops; commands (rebirth, resend) must be signed by it."""


@dataclass(frozen=True)
class AgentConfig:
    """Everything site-specific about one kiosk."""

    device_id: str
    station_id: str
    district: str
    state_dir: str = "/var/lib/kesp"
    key_dir: str = "/etc/kesp/keys"
    sensor: SensorConfig = field(default_factory=SensorConfig)
    printer: PrinterConfig = field(default_factory=PrinterConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    document_reader: str = ""
    control_socket: str = "/run/kesp/agent.sock"
    health_interval_s: float = 60.0
    #: Longest pause between two attempts to open an absent device (the first is 0.5 s,
    #: then doubled): how long a replugged cable may wait before it is used.
    device_retry_max_s: float = 5.0
    peers: tuple[str, ...] = ()
    #: ``host:port`` this kiosk accepts station peers on (agent.peers; see docs/PEERS.md).
    peer_listen: str = "0.0.0.0:7341"
    #: Also find station peers by mDNS/DNS-SD (``_kesp-peer._tcp``) besides ``peers``.
    peer_mdns: bool = False
    #: A peer's mark stamped more than this ahead of this kiosk's clock is quarantined.
    peer_max_clock_ahead_s: float = 300.0
    language_order: tuple[str, ...] = ("ky", "ru")
    #: IANA time zone of the times on slips and reports (the commission's local time).
    timezone: str = "Asia/Bishkek"

    def __post_init__(self) -> None:
        for name in ("device_id", "station_id", "district"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _ID_RE.match(value):
                raise ConfigError(
                    f"{value!r} must be 1-63 lowercase letters, digits or '-'", field=name
                )
        parsed = urlsplit(self.broker.url)
        if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
            raise ConfigError(
                f"{self.broker.url!r} is not mqtt://host:port or mqtts://host:port",
                field="broker.url",
            )
        try:
            port = parsed.port
        except ValueError as exc:
            raise ConfigError(f"bad port in {self.broker.url!r}", field="broker.url") from exc
        if port is None:
            raise ConfigError(f"{self.broker.url!r} has no port", field="broker.url")
        if self.health_interval_s <= 0:
            raise ConfigError("must be positive", field="health_interval_s")
        if self.device_retry_max_s <= 0:
            raise ConfigError("must be positive", field="device_retry_max_s")
        if self.sensor.reply_timeout_s <= 0:
            raise ConfigError("must be positive", field="sensor.reply_timeout_s")
        if not 1.0 <= self.peer_max_clock_ahead_s <= 86_400.0:
            raise ConfigError("must be between 1 and 86400 seconds",
                              field="peer_max_clock_ahead_s")
        if self.peer_mdns and not mdns_installed():
            raise ConfigError(
                "is true but mDNS support is not installed: "
                "pip install 'kesp-kiosk-agent[mdns]' (the kiosk image has it) or set it to false",
                field="peer_mdns",
            )
        self.zone()

    def zone(self) -> ZoneInfo:
        """The configured time zone (from the system's tzdata; Debian package ``tzdata``)."""
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(
                f"unknown time zone {self.timezone!r}: use an IANA name such as Asia/Bishkek "
                "(and install the tzdata package if even that is unknown)", field="timezone"
            ) from exc

    @property
    def broker_host(self) -> str:
        """Host name of the broker."""
        host = urlsplit(self.broker.url).hostname
        if host is None:  # unreachable: validated in __post_init__
            raise ConfigError("no host", field="broker.url")
        return host

    @property
    def broker_port(self) -> int:
        """TCP port of the broker."""
        port = urlsplit(self.broker.url).port
        if port is None:  # unreachable: validated in __post_init__
            raise ConfigError("no port", field="broker.url")
        return port

    @property
    def broker_tls(self) -> bool:
        """Whether the broker connection uses TLS."""
        return urlsplit(self.broker.url).scheme == "mqtts"

    @property
    def state_path(self) -> Path:
        """The writable state directory as a path."""
        return Path(self.state_dir)

    def to_json(self) -> str:
        """Canonical JSON form (sorted keys), as written to disk."""
        return json.dumps(asdict(self), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


T = TypeVar("T")


def _build(cls: type[T], data: Any, prefix: str) -> T:
    if not isinstance(data, dict):
        raise ConfigError("must be an object", field=prefix or "<root>")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(unknown)}", field=prefix or "<root>")
    kwargs: dict[str, Any] = {}
    for name, raw in data.items():
        value = raw
        path = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        if is_dataclass(hint):
            kwargs[name] = _build(hint, value, path)  # type: ignore[arg-type]
            continue
        origin = get_origin(hint)
        if origin is Literal:
            if value not in get_args(hint):
                allowed = ", ".join(map(str, get_args(hint)))
                raise ConfigError(f"{value!r} is not one of {allowed}", field=path)
        elif origin is tuple:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError("must be a list of strings", field=path)
            value = tuple(value)
        elif hint is bool:
            if not isinstance(value, bool):
                raise ConfigError("must be true or false", field=path)
        elif hint is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError("must be a number", field=path)
            value = float(value)
        elif hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError("must be an integer", field=path)
        elif hint is str and not isinstance(value, str):
            raise ConfigError("must be a string", field=path)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(str(exc), field=prefix or "<root>") from exc


def parse_config(text: str) -> AgentConfig:
    """Parse and validate the JSON text of a configuration."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc}") from exc
    return _build(AgentConfig, data, "")


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read and validate a configuration file, or raise :class:`ConfigError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            f"configuration {p} not found; run 'kesp-provision device init' first"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {p}: {exc.strerror}") from exc
    try:
        return parse_config(text)
    except ConfigError as exc:
        named = ConfigError(f"{p}: {exc}")  # the file is named: a kiosk may have several
        named.field = exc.field
        raise named from exc


def save_config(cfg: AgentConfig, path: str | os.PathLike[str]) -> None:
    """Write a configuration atomically (0644: it holds no secret)."""
    atomic_write(path, cfg.to_json().encode("utf-8"), mode=0o644)
