"""The device registry: which kiosks exist, where they stand and their public keys.

One JSON file, written atomically (temp file, fsync, rename) under an
exclusive lock so ``kesp-provision ops register`` and a running ops console
never see half a file::

    {
      "format": "kesp-device-registry",
      "version": 1,
      "devices": [
        {"device_id": "osh-1001-k1", "station_id": "osh-1001", "district": "osh",
         "verify_key": "<64 hex>", "registered_at": "2026-11-27T05:00:00Z",
         "revoked_at": null, "revoke_reason": ""}
      ]
    }

Devices are listed sorted by id. A revoked device stays in the file (its
messages are then rejected with reason ``revoked_device``) so the history of
which key was trusted when is kept.

The ops signing key (rebirth/resend commands) is a 32-byte Ed25519 seed file,
mode 0600, handled by :func:`create_ops_key` / :func:`load_ops_key`.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from agent.runtime.durable import atomic_write

FORMAT = "kesp-device-registry"
VERSION = 1
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_HEX_KEY_RE = re.compile(r"^[0-9a-f]{64}$")


class RegistryError(ValueError):
    """The registry file is invalid, or a register/revoke request is not allowed."""

    def __init__(self, message: str, device_id: str = "") -> None:
        super().__init__(f"{device_id}: {message}" if device_id else message)
        self.device_id = device_id


@dataclass(frozen=True)
class DeviceRecord:
    """One registered kiosk."""

    device_id: str
    station_id: str
    district: str
    verify_key: str
    """Hex Ed25519 public key (``DeviceKeys.verify_key_hex``)."""
    registered_at: str
    revoked_at: str | None = None
    revoke_reason: str = ""

    @property
    def active(self) -> bool:
        """True unless revoked."""
        return self.revoked_at is None

    def key(self) -> VerifyKey:
        """The public key as a PyNaCl object."""
        return VerifyKey(bytes.fromhex(self.verify_key))


@dataclass(frozen=True)
class Registry:
    """An immutable view of the registry file."""

    devices: Mapping[str, DeviceRecord]

    def get(self, device_id: str) -> DeviceRecord | None:
        """The record of ``device_id`` or None."""
        return self.devices.get(device_id)

    def stations(self) -> dict[str, tuple[str, list[str]]]:
        """station_id -> (district, [active device ids])."""
        out: dict[str, tuple[str, list[str]]] = {}
        for rec in sorted(self.devices.values(), key=lambda r: r.device_id):
            if rec.active:
                out.setdefault(rec.station_id, (rec.district, []))[1].append(rec.device_id)
        return out

    def to_json(self) -> str:
        """The canonical file text."""
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "devices": [asdict(self.devices[k]) for k in sorted(self.devices)],
        }
        return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_id(value: object, what: str, device_id: str = "") -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise RegistryError(f"{what} {value!r} must be 1-63 lowercase letters, digits or '-'",
                            device_id)
    return value


def check_verify_key(hex_key: object, device_id: str = "") -> str:
    """Validate a hex Ed25519 public key (64 lowercase hex digits, a valid point)."""
    if not isinstance(hex_key, str) or not _HEX_KEY_RE.match(hex_key):
        raise RegistryError("verify_key must be 64 lowercase hex digits", device_id)
    try:
        VerifyKey(bytes.fromhex(hex_key))
    except (CryptoError, ValueError) as exc:
        raise RegistryError(f"verify_key is not an Ed25519 public key: {exc}", device_id) from exc
    return hex_key


def _record(obj: Any) -> DeviceRecord:
    if not isinstance(obj, dict):
        raise RegistryError("device entry is not an object")
    device_id = _check_id(obj.get("device_id"), "device_id")
    expected = {"device_id", "station_id", "district", "verify_key", "registered_at",
                "revoked_at", "revoke_reason"}
    if set(obj) != expected:
        raise RegistryError(f"fields {sorted(set(obj) ^ expected)} wrong", device_id)
    revoked = obj["revoked_at"]
    if revoked is not None and not isinstance(revoked, str):
        raise RegistryError("revoked_at must be null or a timestamp", device_id)
    if not isinstance(obj["registered_at"], str) or not isinstance(obj["revoke_reason"], str):
        raise RegistryError("registered_at / revoke_reason must be strings", device_id)
    return DeviceRecord(
        device_id=device_id,
        station_id=_check_id(obj["station_id"], "station_id", device_id),
        district=_check_id(obj["district"], "district", device_id),
        verify_key=check_verify_key(obj["verify_key"], device_id),
        registered_at=obj["registered_at"],
        revoked_at=revoked,
        revoke_reason=obj["revoke_reason"],
    )


def parse_registry(text: str) -> Registry:
    """Parse and validate registry JSON text."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryError(f"not valid JSON ({exc}): is it the device registry?") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RegistryError(f"not a {FORMAT} file (no \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise RegistryError(f"registry version {doc.get('version')!r} is not {VERSION}")
    entries = doc.get("devices")
    if not isinstance(entries, list):
        raise RegistryError("'devices' must be a list")
    devices: dict[str, DeviceRecord] = {}
    keys: dict[str, str] = {}
    for entry in entries:
        rec = _record(entry)
        if rec.device_id in devices:
            raise RegistryError("listed twice", rec.device_id)
        if rec.verify_key in keys:
            raise RegistryError(f"same verify_key as {keys[rec.verify_key]}", rec.device_id)
        devices[rec.device_id] = rec
        keys[rec.verify_key] = rec.device_id
    return Registry(devices)


def load_registry(path: str | os.PathLike[str], *, missing_ok: bool = False) -> Registry:
    """Read the registry; a missing file is an empty registry only with ``missing_ok``."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError as exc:
        if missing_ok:
            return Registry({})
        raise RegistryError(f"registry {p} not found: check the path (it is created by "
                            "'kesp-provision ops register')") from exc
    except IsADirectoryError as exc:
        raise RegistryError(f"registry {p} is a folder: give the registry file, e.g. "
                            f"{p / 'registry.json'}") from exc
    except OSError as exc:
        raise RegistryError(f"cannot read registry {p}: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RegistryError(f"{p} is not a device registry (binary data at byte {exc.start}): "
                            "check the path") from exc
    try:
        return parse_registry(text)
    except RegistryError as exc:
        raise RegistryError(f"registry {p}: {exc}") from exc


def save_registry(registry: Registry, path: str | os.PathLike[str]) -> None:
    """Write the registry atomically (0644: it holds public keys only)."""
    atomic_write(path, registry.to_json().encode("utf-8"), mode=0o644)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def register_device(
    path: str | os.PathLike[str],
    device_id: str,
    station_id: str,
    district: str,
    verify_key_hex: str,
) -> DeviceRecord:
    """Add a kiosk to the registry file (creating the file if needed).

    Registering the same device again with the same station and key is a
    no-op that returns the existing record. A different key, station or
    district for an existing id, a key already used by another device, or a
    revoked id is refused with :class:`RegistryError`: re-keying a kiosk is a
    revoke plus a registration under a new id, never a silent replacement.
    """
    _check_id(device_id, "device_id")
    _check_id(station_id, "station_id", device_id)
    _check_id(district, "district", device_id)
    check_verify_key(verify_key_hex, device_id)
    p = Path(path)
    with _locked(p):
        reg = load_registry(p, missing_ok=True)
        existing = reg.get(device_id)
        if existing is not None:
            if not existing.active:
                raise RegistryError("device was revoked; register it under a new id", device_id)
            if (existing.station_id, existing.district, existing.verify_key) == (
                station_id, district, verify_key_hex
            ):
                return existing
            raise RegistryError("already registered with another key or station", device_id)
        for other in reg.devices.values():
            if other.verify_key == verify_key_hex:
                raise RegistryError(f"key already registered to {other.device_id}", device_id)
        rec = DeviceRecord(device_id, station_id, district, verify_key_hex, _utc_now())
        save_registry(Registry({**reg.devices, device_id: rec}), p)
        return rec


def revoke_device(path: str | os.PathLike[str], device_id: str, reason: str = "") -> DeviceRecord:
    """Mark a kiosk revoked (its messages are rejected from now on); idempotent."""
    p = Path(path)
    with _locked(p):
        reg = load_registry(p)
        rec = reg.get(device_id)
        if rec is None:
            raise RegistryError("not registered", device_id)
        if not rec.active:
            return rec
        rec = replace(rec, revoked_at=_utc_now(), revoke_reason=reason)
        save_registry(Registry({**reg.devices, device_id: rec}), p)
        return rec


def create_ops_key(path: str | os.PathLike[str], *, overwrite: bool = False) -> SigningKey:
    """Create the ops command-signing key (32-byte seed, 0600); refuses to replace one."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise RegistryError(f"ops key {p} already exists; refusing to replace it")
    key = SigningKey.generate()
    atomic_write(p, bytes(key), mode=0o600)
    return key


def load_ops_key(path: str | os.PathLike[str]) -> SigningKey:
    """Load the ops signing key, refusing a file readable by group or others."""
    p = Path(path)
    if p.name == "cec.sign":
        raise RegistryError(f"{p} is the CEC's secret key: give --ops-key the ops key ops.sign")
    try:
        st = p.stat()
        data = p.read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read ops key {p}: {exc.strerror}: check --ops-key") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RegistryError(f"ops key {p} is accessible by group/others; chmod 600 it")
    if len(data) != 32:
        raise RegistryError(f"ops key {p} is not a 32-byte seed")
    return SigningKey(data)
