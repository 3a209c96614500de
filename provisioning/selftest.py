"""``device selftest``: is this kiosk ready for election day?

Each check returns a :class:`Check` with a closed status: ``ok``, ``warn``
(works, but a technician should look), ``offline`` (the broker cannot be
reached from here: the station works offline and sends its data when the
network is back) or ``fail`` (broken: not ready). The broker check is a real
TLS handshake (CA pinned to the configured file) followed by an MQTT 3.1.1
CONNECT with the kiosk's credentials, so a wrong CA, a revoked device or a
wrong password (broken) are told apart from no network (offline).
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from agent.runtime.config import AgentConfig, ConfigError
from agent.runtime.keys import KeyFileError, load_keys
from provisioning.common import ProvisionError
from provisioning.device import load_cec_key, load_installed_roll

CheckStatus = Literal["ok", "warn", "offline", "fail"]

MIN_FREE_BYTES = 512 * 2**20
"""Marks, audit log and outbox for a 5,610-voter day fit in far less; below this, warn."""
EARLIEST_SANE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
"""A clock before this is an unset RTC (Pis have none): marks would carry wrong times."""
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")


@dataclass(frozen=True)
class Check:
    """One line of the selftest report."""

    name: str
    status: CheckStatus
    detail: str


def check_keys(cfg: AgentConfig) -> Check:
    """The device keys load with safe permissions, and the CEC key is present."""
    try:
        keys = load_keys(cfg.key_dir)
        cec = load_cec_key(cfg)
    except (KeyFileError, ProvisionError) as exc:
        return Check("keys", "fail", str(exc))
    return Check("keys", "ok", f"device key {keys.verify_key_hex[:16]}…, CEC key "
                 f"{bytes(cec).hex()[:16]}…")


def check_roll(cfg: AgentConfig) -> Check:
    """The installed roll re-verifies and opens for this kiosk and station."""
    try:
        roll, digest = load_installed_roll(cfg)
    except ProvisionError as exc:
        return Check("roll", "fail", str(exc))
    return Check("roll", "ok", f"{roll.election_id} station {roll.station_id} v{roll.roll_version}:"
                 f" {len(roll.voters)} voters, hash {digest[:16]}…")


def check_disk(cfg: AgentConfig) -> Check:
    """The state directory is writable (with fsync) and has room."""
    d = cfg.state_path
    probe = d / f".selftest-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"kesp")
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
        free = shutil.disk_usage(d).free
    except OSError as exc:
        return Check("disk", "fail", f"{d} is not writable: {exc.strerror}")
    status: CheckStatus = "ok" if free >= MIN_FREE_BYTES else "warn"
    return Check("disk", status, f"{d} writable, {free / 2**20:.0f} MiB free")


def check_clock(now: datetime | None = None, timesync_flag: Path = TIMESYNC_FLAG) -> Check:
    """The clock is plausible, and synchronised if systemd-timesyncd can say so."""
    t = now or datetime.now(UTC)
    if t < EARLIEST_SANE_TIME:
        return Check("clock", "fail", f"clock reads {t:%Y-%m-%d %H:%M} UTC: not set")
    if timesync_flag.exists():
        return Check("clock", "ok", f"{t:%Y-%m-%d %H:%M:%S} UTC, synchronised (NTP)")
    return Check("clock", "warn", f"{t:%Y-%m-%d %H:%M:%S} UTC, not confirmed synchronised; "
                 "check it against a trusted clock")


def _mqtt_connect_packet(client_id: str, username: str, password: str, keepalive: int) -> bytes:
    def s(v: str) -> bytes:
        raw = v.encode("utf-8")
        return struct.pack(">H", len(raw)) + raw

    flags = 0x02  # clean session
    payload = s(client_id)
    if username:
        flags |= 0x80
        payload += s(username)
    if password:
        flags |= 0x40
        payload += s(password)
    variable = s("MQTT") + bytes((4, flags)) + struct.pack(">H", keepalive)
    body = variable + payload
    length = b""
    n = len(body)
    while True:
        byte, n = n % 128, n // 128
        length += bytes((byte | (0x80 if n else 0),))
        if not n:
            break
    return b"\x10" + length + body


_CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password (is the kiosk registered and the broker config deployed?)",
    5: "not authorised (revoked, or not in the broker's password file)",
}


def check_broker(cfg: AgentConfig, timeout_s: float = 5.0) -> Check:
    """TLS (if ``mqtts``) with the configured CA, then MQTT CONNECT with the kiosk's login."""
    host, port = cfg.broker_host, cfg.broker_port
    try:
        password = (Path(cfg.broker.password_file).read_text().strip()
                    if cfg.broker.password_file else "")
    except OSError as exc:
        return Check("broker", "fail", f"cannot read {cfg.broker.password_file}: {exc.strerror}")
    t0 = time.monotonic()
    try:
        raw = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        return Check("broker", "offline", f"{host}:{port} unreachable ({_reason(exc)}): the "
                     "station works offline and sends its data once the network is back; if "
                     "this kiosk is online, check the broker address in its configuration")
    sock: socket.socket | ssl.SSLSocket = raw
    try:
        if cfg.broker_tls:
            try:
                ctx = ssl.create_default_context(cafile=cfg.broker.ca_file or None)
                sock = ctx.wrap_socket(raw, server_hostname=host)
            except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
                return Check("broker", "fail", f"TLS with {host}:{port} failed: {exc}")
        sock.settimeout(timeout_s)
        sock.sendall(_mqtt_connect_packet(f"{cfg.device_id}-selftest", cfg.broker.username,
                                          password, cfg.broker.keepalive_s))
        reply = b""
        while len(reply) < 4:
            chunk = sock.recv(4 - len(reply))
            if not chunk:
                break
            reply += chunk
        if len(reply) < 4 or reply[0] != 0x20:
            return Check("broker", "fail", f"{host}:{port} closed the connection without CONNACK"
                         " (credentials refused or not an MQTT broker)")
        code = reply[3]
        if code != 0:
            return Check("broker", "fail", f"broker refused: {_CONNACK_REASONS.get(code, code)}")
        sock.sendall(b"\xe0\x00")  # DISCONNECT
    except OSError as exc:
        return Check("broker", "fail", f"{host}:{port}: {exc}")
    finally:
        sock.close()
    tls = "TLS, CA verified, " if cfg.broker_tls else "plain TCP (no TLS!), "
    status: CheckStatus = "ok" if cfg.broker_tls else "warn"
    return Check("broker", status,
                 f"{host}:{port} {tls}login as {cfg.broker.username or '(anonymous)'} accepted in "
                 f"{(time.monotonic() - t0) * 1000:.0f} ms")


def _reason(exc: BaseException) -> str:
    """The innermost cause of ``exc`` in a few words (drivers wrap OS errors twice)."""
    seen: set[int] = set()
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(exc))
        exc = inner
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    code = getattr(exc, "errno", None)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return "not connected"
    if code == errno.EACCES:
        return "permission denied"
    if code == errno.EBUSY:
        return "in use by another program"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


_DEVICE_FIX = {
    "not connected": "check its cable",
    "permission denied": "the udev rules of the image give the kesp user access: re-flash",
    "in use by another program": "stop the agent first (systemctl stop kesp-agent)",
}


def _device_fail(name: str, where: str, reason: str) -> Check:
    fix = _DEVICE_FIX.get(reason)
    return Check(name, "fail", f"{where}: {reason}" + (f": {fix}" if fix else ""))


def check_sensor(cfg: AgentConfig, *, usb_backend: object = None) -> Check:
    """Open the fingerprint sensor and read its status (``usb_backend``: a simulator's)."""
    try:
        from agent.drivers.sensor.service import open_sensor
        from agent.drivers.sensor.types import SensorDisconnected, SensorError, SensorState
    except ImportError as exc:
        return Check("sensor", "warn", f"sensor driver not available: {exc}")
    where = f"{cfg.sensor.kind} at {cfg.sensor.port}" if cfg.sensor.port else cfg.sensor.kind
    try:
        sensor = open_sensor(cfg.sensor, usb_backend=usb_backend)
    except SensorDisconnected as exc:
        if exc.instead:  # another device is plugged: name it, the expected one and the fix
            return Check("sensor", "fail", f"{where}: {exc}")
        return _device_fail("sensor", where, _reason(exc))
    except (SensorError, OSError) as exc:
        return _device_fail("sensor", where, _reason(exc))
    try:
        status = sensor.status()
    except (SensorError, OSError) as exc:
        return _device_fail("sensor", where, _reason(exc))
    finally:
        sensor.close()
    ok = status.state is SensorState.READY
    return Check("sensor", "ok" if ok else "fail",
                 f"{where}: {status.state.value} {status.detail}".rstrip())


def check_printer(cfg: AgentConfig, *, usb_backend: object = None) -> Check:
    """Open the receipt printer and read its real-time status (paper, cover, errors).

    ``usb_backend`` is a pyusb backend (a simulator's; None: libusb).
    """
    from agent.drivers.printer.printer import open_printer
    from agent.drivers.printer.status import PrinterState

    where = f"{cfg.printer.kind} at {cfg.printer.port}"
    try:
        printer = open_printer(cfg.printer, usb_backend=usb_backend)
    except ConfigError as exc:
        return Check("printer", "fail", str(exc))
    try:
        status = printer.status()
    except OSError as exc:
        return _device_fail("printer", where, _reason(exc))
    finally:
        printer.close()
    if status.state is PrinterState.WRONG_DEVICE:
        return Check("printer", "fail", f"{where}: {status.detail}")
    if status.state is PrinterState.DISCONNECTED and status.instead:
        return Check("printer", "fail", f"{where}: not connected; {status.instead}")
    if status.state is PrinterState.DISCONNECTED:
        # the driver's detail repeats the port in every wrapped error; say it once
        reason = "permission denied" if "Permission denied" in status.detail else \
            "in use by another program" if "busy" in status.detail.lower() else "not connected"
        return _device_fail("printer", where, reason)
    text = f"{where}: {status.state.value} {status.detail}".rstrip()
    if status.state is PrinterState.PAPER_NEAR_END:
        return Check("printer", "warn", text + " (load a new roll)")
    return Check("printer", "ok" if status.state is PrinterState.READY else "fail", text)


def run_selftest(cfg: AgentConfig, *, broker_timeout_s: float = 5.0) -> list[Check]:
    """Every check, in the order a technician fixes them."""
    return [
        check_keys(cfg),
        check_roll(cfg),
        check_disk(cfg),
        check_clock(),
        check_broker(cfg, broker_timeout_s),
        check_sensor(cfg),
        check_printer(cfg),
    ]
