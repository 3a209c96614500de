"""Ops side: register and revoke kiosks, and the CEC's view of each station's kiosks.

The device registry itself is :mod:`ops.registry` (one JSON file of device
id, station, district and Ed25519 key). A kiosk's X25519 box key (needed by
the CEC to encrypt the roll) and its broker password hash are not part of
that file: ``ops register`` keeps the kiosk's whole signed registration
request next to it, in ``<registry>.requests/<device_id>.json``. The request
is signed by the device key the registry holds, so the box key is as
trustworthy as the registry entry; every reader re-verifies it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

from agent.roll.package import Kiosk
from agent.runtime.durable import atomic_write
from ops.broker_config import (
    BrokerConfigError,
    TlsFiles,
    acl_text,
    hash_password,
    listener_text,
)
from ops.registry import (
    Registry,
    RegistryError,
    create_ops_key,
    load_registry,
    register_device,
    revoke_device,
)
from provisioning.common import ProvisionError
from provisioning.keyfiles import public_key_text
from provisioning.request import RegistrationRequest, RequestError, parse_request


def requests_dir(registry: Path) -> Path:
    """Where the signed registration requests are kept, next to the registry."""
    return registry.with_name(registry.name + ".requests")


def read_request_file(path: Path) -> RegistrationRequest:
    """Read and verify a registration request file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProvisionError(f"cannot read request {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ProvisionError(f"{path} is not a registration request (binary data): give the "
                             "JSON file 'kesp-provision device request --out' wrote") from exc
    try:
        return parse_request(text)
    except RequestError as exc:
        raise ProvisionError(f"request {path}: {exc}") from exc


def register(registry: Path, request: Path) -> str:
    """Register the kiosk of ``request``; a repeat of the same request changes nothing."""
    req = read_request_file(request)
    stored = requests_dir(registry) / f"{req.device_id}.json"
    if stored.exists():
        old = read_request_file(stored)
        if old.verify_key != req.verify_key:
            raise ProvisionError(
                f"{req.device_id} is already registered with another key; revoke it and "
                "register the new kiosk under a new id"
            )
    before = _load(registry, missing_ok=True).get(req.device_id)
    try:
        rec = register_device(registry, req.device_id, req.station_id, req.district,
                              req.verify_key)
    except RegistryError as exc:
        raise ProvisionError(f"registry refused: {exc}") from exc
    # The registry entry exists now; the request file completes it (written
    # after, so a crash leaves a registry entry the next identical call repairs).
    atomic_write(stored, (req.to_json() + "\n").encode(), mode=0o644)
    if before is not None:
        return f"{rec.device_id} was already registered for station {rec.station_id}; unchanged"
    return (f"registered {rec.device_id} for station {rec.station_id} ({rec.district}), "
            f"key {rec.verify_key[:16]}…, serial {req.serial}")


def revoke(registry: Path, device_id: str, reason: str) -> str:
    """Revoke a kiosk: its telemetry is rejected and it gets no further roll packages."""
    before = _load(registry).get(device_id)
    try:
        rec = revoke_device(registry, device_id, reason)
    except RegistryError as exc:
        raise ProvisionError(f"registry refused: {exc}") from exc
    if before is not None and not before.active:
        return f"{device_id} was already revoked at {rec.revoked_at}; unchanged"
    return (f"revoked {device_id} (station {rec.station_id}) at {rec.revoked_at}; regenerate the "
            "broker configuration and rebuild the station's roll")


def _load(registry: Path, *, missing_ok: bool = False) -> Registry:
    try:
        return load_registry(registry, missing_ok=missing_ok)
    except RegistryError as exc:
        raise ProvisionError(str(exc)) from exc


def active_requests(registry: Path) -> Iterator[RegistrationRequest]:
    """The verified request of every active device, cross-checked against the registry."""
    reg = _load(registry)
    for device_id, rec in sorted(reg.devices.items()):
        if not rec.active:
            continue
        req = read_request_file(requests_dir(registry) / f"{device_id}.json")
        if (req.verify_key, req.station_id, req.district) != (
            rec.verify_key, rec.station_id, rec.district
        ):
            raise ProvisionError(
                f"{device_id}: stored request does not match the registry entry "
                "(key, station or district differ); re-register the kiosk"
            )
        yield req


def station_kiosks(registry: Path) -> dict[str, tuple[str, tuple[Kiosk, ...]]]:
    """station_id -> (district, active kiosks with both public keys), for ``cec build``."""
    out: dict[str, tuple[str, list[Kiosk]]] = {}
    for req in active_requests(registry):
        district, kiosks = out.setdefault(req.station_id, (req.district, []))
        if district != req.district:
            raise ProvisionError(
                f"station {req.station_id} has kiosks in districts {district} and {req.district}"
            )
        kiosks.append(Kiosk(req.device_id, req.verify_key, req.box_key))
    return {s: (d, tuple(k)) for s, (d, k) in out.items()}


def broker_config(
    registry: Path, out_dir: Path, *, tls: TlsFiles, ops_users: list[str], port: int,
    bind: str = "0.0.0.0",
) -> list[str]:
    """Write mosquitto's listener block, password file and ACL for the active kiosks.

    The listener and ACL come from :mod:`ops.broker_config` (each kiosk may
    write only its own topics). Kiosk password lines are the hashes from the
    kiosks' signed requests: the passwords themselves never left the kiosks.
    Each ops user's password is kept in ``<out_dir>/<user>.pass`` (0600,
    created on first run, reused after) for ``kesp-ops --password-file``.
    Re-running after a registration or revocation rewrites the three files.
    """
    reg = _load(registry)
    requests = list(active_requests(registry))
    for path in (tls.cafile, tls.certfile, tls.keyfile):
        if not Path(path).is_file():
            raise ProvisionError(f"TLS file {path} not found")
    passwd, acl, listener = out_dir / "passwd", out_dir / "acl", out_dir / "listener.conf"
    try:  # validates every name before anything is written
        acl_body = acl_text(reg, ops_users)
        listener_body = listener_text(port, bind, passwd, acl, tls)
    except BrokerConfigError as exc:
        raise ProvisionError(str(exc)) from exc
    clash = [u for u in ops_users if reg.get(u) is not None]
    if clash:
        raise ProvisionError(f"ops user {clash[0]!r} has the same name as a kiosk")
    out_dir.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    entries: dict[str, str] = {}
    for user in ops_users:
        pw_file = out_dir / f"{user}.pass"
        if pw_file.exists():
            password = pw_file.read_text().strip()
        else:
            password = secrets.token_urlsafe(32)
            atomic_write(pw_file, password.encode(), mode=0o600)
            lines.append(f"created the password of ops user {user} in {pw_file}")
        try:
            entries[user] = hash_password(password)
        except BrokerConfigError as exc:
            raise ProvisionError(f"{pw_file}: {exc}") from exc
    for req in requests:
        entries[req.broker_username] = req.broker_password_hash
    atomic_write(passwd, "".join(f"{u}:{h}\n" for u, h in sorted(entries.items())).encode(),
                 mode=0o600)
    atomic_write(acl, acl_body.encode(), mode=0o644)
    atomic_write(listener, listener_body.encode(), mode=0o644)
    revoked = sorted(d for d, r in reg.devices.items() if not r.active)
    lines.append(f"wrote {listener}, {passwd} and {acl}: {len(requests)} active kiosk(s), "
                 f"ops user(s) {', '.join(ops_users)}"
                 + (f"; revoked and locked out: {', '.join(revoked)}" if revoked else ""))
    lines.append("deploy them to the broker (include listener.conf from mosquitto.conf, "
                 "with per_listener_settings false) and reload it")
    return lines


def ops_keygen(out_dir: Path) -> list[str]:
    """Create the ops command-signing key (``ops.sign``) and its public half (``ops.pub``)."""
    sign, pub = out_dir / "ops.sign", out_dir / "ops.pub"
    if pub.exists():
        raise ProvisionError(f"{pub} already exists; refusing to replace the ops key")
    try:
        key = create_ops_key(sign)
    except RegistryError as exc:
        raise ProvisionError(str(exc)) from exc
    atomic_write(pub, public_key_text("ops", key.verify_key), mode=0o644)
    return [f"created {sign} (secret, 0600) and {pub}: give ops.pub to the kiosks "
            "('device init --ops-key') so they accept ops' signed commands"]
