"""Device registry file: register, revoke, validation, round trip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from ops.registry import (
    RegistryError,
    create_ops_key,
    load_ops_key,
    load_registry,
    parse_registry,
    register_device,
    revoke_device,
)


def _key() -> str:
    return bytes(SigningKey.generate().verify_key).hex()


def test_register_then_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "reg" / "devices.json"
    k1, k2 = _key(), _key()
    rec = register_device(path, "osh-1001-k1", "osh-1001", "osh", k1)
    register_device(path, "osh-1001-k2", "osh-1001", "osh", k2)
    reg = load_registry(path)
    assert reg.get("osh-1001-k1") == rec
    assert rec.active and rec.registered_at.endswith("Z")
    assert bytes(rec.key()).hex() == k1
    assert reg.stations() == {"osh-1001": ("osh", ["osh-1001-k1", "osh-1001-k2"])}
    assert parse_registry(reg.to_json()) == reg
    # idempotent re-registration returns the same record
    assert register_device(path, "osh-1001-k1", "osh-1001", "osh", k1) == rec


def test_conflicting_registration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    k1 = _key()
    register_device(path, "a-1", "s-1", "d", k1)
    with pytest.raises(RegistryError, match="another key"):
        register_device(path, "a-1", "s-1", "d", _key())
    with pytest.raises(RegistryError, match="already registered to a-1"):
        register_device(path, "a-2", "s-1", "d", k1)
    with pytest.raises(RegistryError, match="64 lowercase hex"):
        register_device(path, "a-3", "s-1", "d", "zz")
    with pytest.raises(RegistryError, match="device_id"):
        register_device(path, "A 3", "s-1", "d", _key())


def test_revoke_keeps_history_and_blocks_reuse(tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    k1 = _key()
    register_device(path, "a-1", "s-1", "d", k1)
    rec = revoke_device(path, "a-1", "stolen")
    assert not rec.active and rec.revoke_reason == "stolen"
    assert revoke_device(path, "a-1") == rec  # idempotent
    assert load_registry(path).get("a-1") == rec
    with pytest.raises(RegistryError, match="revoked"):
        register_device(path, "a-1", "s-1", "d", k1)
    with pytest.raises(RegistryError, match="not registered"):
        revoke_device(path, "nobody")


def test_malformed_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="not found"):
        load_registry(tmp_path / "missing.json")
    assert load_registry(tmp_path / "missing.json", missing_ok=True).devices == {}
    with pytest.raises(RegistryError, match="not valid JSON"):
        parse_registry("{")
    with pytest.raises(RegistryError, match="not a kesp-device-registry"):
        parse_registry(json.dumps({"format": "x"}))
    with pytest.raises(RegistryError, match="version"):
        parse_registry(json.dumps({"format": "kesp-device-registry", "version": 9}))
    entry = {"device_id": "a-1", "station_id": "s", "district": "d", "verify_key": _key(),
             "registered_at": "t", "revoked_at": None, "revoke_reason": ""}
    doc = {"format": "kesp-device-registry", "version": 1, "devices": [entry, entry]}
    with pytest.raises(RegistryError, match="listed twice"):
        parse_registry(json.dumps(doc))
    doc["devices"] = [{**entry, "extra": 1}]
    with pytest.raises(RegistryError, match="extra"):
        parse_registry(json.dumps(doc))


def test_ops_key_file(tmp_path: Path) -> None:
    path = tmp_path / "ops.sign"
    key = create_ops_key(path)
    assert load_ops_key(path).verify_key == key.verify_key
    with pytest.raises(RegistryError, match="already exists"):
        create_ops_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(RegistryError, match="group/others"):
        load_ops_key(path)
