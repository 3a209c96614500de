"""Kiosk side: ``device init``, ``request``, ``install-roll`` and the roll loader the agent uses.

Files on a provisioned kiosk (defaults; ``--config-dir``/``--state-dir`` move them)::

    /etc/kesp/agent.json         validated configuration (0644)
    /etc/kesp/ca.crt             CA that signed the broker's certificate (0644)
    /etc/kesp/keys/              0700, owned by the service user
        device.sign device.box   the kiosk's Ed25519 / X25519 keys (0600)
        broker.pass              the kiosk's broker password (0600)
        cec.pub                  the CEC's public key: the only roll signer trusted
    /var/lib/kesp/roll.pkg       the installed package, still encrypted (0640)

Every step validates all its input before writing anything; files are written
to a temporary name and renamed; ``init`` builds everything in a staging
directory and commits by writing ``agent.json`` last.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from nacl.signing import VerifyKey

from agent.roll.package import (
    PackageError,
    PackageHeader,
    Roll,
    open_package,
    package_hash,
    peek_header,
)
from agent.runtime.config import (
    CONFIG_FILE,
    AgentConfig,
    ConfigError,
    load_config,
    parse_config,
    save_config,
)
from agent.runtime.durable import atomic_write
from agent.runtime.keys import BOX_FILE, SIGN_FILE, KeyFileError, generate_keys, load_keys
from agent.station.lifecycle import Phase, read_phase
from provisioning.common import Owner, ProvisionError, hand_over, require_user
from provisioning.keyfiles import CEC_PUB_FILE, load_cec_verify_key, read_public_key
from provisioning.request import REQUEST_FORMAT, RegistrationRequest, mosquitto_hash, sign_request

DEFAULT_CONFIG_DIR = Path("/etc/kesp")
DEFAULT_STATE_DIR = Path("/var/lib/kesp")
ROLL_FILE = "roll.pkg"
BROKER_PASS_FILE = "broker.pass"
CA_FILE = "ca.crt"


@dataclass(frozen=True)
class InitOptions:
    """Everything ``device init`` is told on the command line."""

    device_id: str
    station_id: str
    district: str
    broker_url: str
    cec_key: Path
    ca_file: Path | None = None
    config_dir: Path = DEFAULT_CONFIG_DIR
    state_dir: Path = DEFAULT_STATE_DIR
    settings: Path | None = None
    """Optional JSON with more configuration fields (sensor, printer...), validated."""
    user: str = "kesp"
    ops_key: Path | None = None
    """ops.pub: commands from ops must be signed by it (see :mod:`provisioning.keyfiles`)."""


def config_path(config_dir: Path) -> Path:
    """Where ``agent.json`` lives in ``config_dir``."""
    return config_dir / CONFIG_FILE


def load_device_config(config_dir: Path) -> AgentConfig:
    """Load the kiosk configuration or refuse with the reason."""
    path = config_path(config_dir)
    try:
        return load_config(path)
    except ConfigError as exc:
        text = str(exc)
        raise ProvisionError(text if str(path) in text else f"configuration {path}: {text}"
                             ) from exc
    except UnicodeDecodeError as exc:
        raise ProvisionError(f"configuration {path} is not UTF-8 text (binary data at byte "
                             f"{exc.start}): restore it, or re-provision the kiosk") from exc


def _compose_config(opts: InitOptions) -> AgentConfig:
    key_dir = opts.config_dir / "keys"
    data: dict[str, Any] = {}
    if opts.settings is not None:
        try:
            data = json.loads(opts.settings.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ProvisionError(f"cannot read settings {opts.settings}: {exc.strerror}") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProvisionError(f"settings {opts.settings} are not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ProvisionError(f"settings {opts.settings} must be a JSON object")
        owned = {"device_id", "station_id", "district", "key_dir", "state_dir"}
        clash = sorted(owned & set(data))
        if clash:
            raise ProvisionError(
                f"settings {opts.settings} may not set {', '.join(clash)}: use the options"
            )
    broker = dict(data.get("broker", {})) if isinstance(data.get("broker"), dict) else {}
    if "broker" in data and not isinstance(data["broker"], dict):
        raise ProvisionError("settings: broker must be an object")
    if opts.ops_key is not None:
        broker["ops_verify_key"] = _read_ops_key(opts.ops_key)
    broker.update(
        url=opts.broker_url,
        ca_file=str(opts.config_dir / CA_FILE) if opts.ca_file else "",
        username=opts.device_id,
        password_file=str(key_dir / BROKER_PASS_FILE),
    )
    data = {
        **data,
        "device_id": opts.device_id,
        "station_id": opts.station_id,
        "district": opts.district,
        "key_dir": str(key_dir),
        "state_dir": str(opts.state_dir),
        "broker": broker,
    }
    try:
        cfg = parse_config(json.dumps(data))
    except ConfigError as exc:
        where = f" (with the settings of {opts.settings})" if opts.settings else ""
        raise ProvisionError(f"configuration refused{where}: {exc}") from exc
    if cfg.broker_tls and opts.ca_file is None:
        raise ProvisionError(f"{opts.broker_url} uses TLS: give the broker's CA with --ca")
    return cfg


def _read_ops_key(path: Path) -> str:
    return bytes(read_public_key(path, "ops")).hex()


def _check_ca(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProvisionError(f"cannot read CA file {path}: {exc.strerror}") from exc
    try:
        ssl.create_default_context(cadata=data.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        raise ProvisionError(f"{path} is not a PEM CA certificate: {exc}") from exc
    return data


def init_device(opts: InitOptions) -> AgentConfig:
    """Generate the kiosk's keys and write its configuration.

    Refuses (changing nothing) when the kiosk is already initialised, when a
    previous init was interrupted, when run as the wrong user, or on any bad
    input: a malformed broker URL, an unknown setting, a missing or wrong CEC
    key, an unreadable CA.
    """
    owner = require_user(opts.user)
    target = config_path(opts.config_dir)
    if target.exists():
        try:
            old = load_config(target)
            what = f"as kiosk {old.device_id} for station {old.station_id}"
        except ConfigError:
            what = "(its configuration is unreadable)"
        raise ProvisionError(
            f"this kiosk is already initialised {what} ({target}); keys are never replaced "
            "in place: to re-provision, wipe the kiosk and start from a blank image"
        )
    key_dir = opts.config_dir / "keys"
    leftovers = [p for p in (key_dir / SIGN_FILE, key_dir / BOX_FILE) if p.exists()]
    if leftovers:
        raise ProvisionError(
            f"found keys without a configuration in {key_dir}: a previous init was interrupted; "
            f"they were never registered, remove {key_dir} and run init again"
        )
    cfg = _compose_config(opts)
    cec = read_public_key(opts.cec_key, "cec")
    if cfg.broker.ops_verify_key == bytes(cec).hex():
        raise ProvisionError(
            f"--cec-key {opts.cec_key} and --ops-key {opts.ops_key} are the same key: one of "
            "them is wrong; compare both with the key ids the CEC and ops announced")
    ca = _check_ca(opts.ca_file) if opts.ca_file else None

    opts.config_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".init-", dir=opts.config_dir))
    try:
        staged_keys = stage / "keys"
        keys = generate_keys(staged_keys)
        atomic_write(staged_keys / CEC_PUB_FILE, (bytes(cec).hex() + "\n").encode(), 0o644)
        atomic_write(staged_keys / BROKER_PASS_FILE, secrets.token_urlsafe(32).encode(), 0o600)
        for p in (staged_keys, *staged_keys.iterdir()):
            hand_over(p, owner)
        if ca is not None:
            atomic_write(stage / CA_FILE, ca, mode=0o644)
        _prepare_state_dir(opts.state_dir, owner)
        os.rename(staged_keys, key_dir)
        if ca is not None:
            os.replace(stage / CA_FILE, opts.config_dir / CA_FILE)
        save_config(cfg, target)  # the commit point
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    del keys
    return cfg


def _prepare_state_dir(state_dir: Path, owner: Owner) -> None:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    hand_over(state_dir, owner)


def device_serial() -> str:
    """The board's serial: Raspberry Pi CPU serial, else DMI serial, else machine-id."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("Serial"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    for candidate in (Path("/sys/class/dmi/id/product_serial"), Path("/etc/machine-id")):
        try:
            value = candidate.read_text().strip()
        except OSError:
            continue
        if value:
            return value
    return "unknown"


def make_request(config_dir: Path) -> RegistrationRequest:
    """The signed registration request of this kiosk (deterministic for a given kiosk)."""
    cfg = load_device_config(config_dir)
    try:
        keys = load_keys(cfg.key_dir)
    except KeyFileError as exc:
        raise ProvisionError(str(exc)) from exc
    try:
        password = Path(cfg.broker.password_file).read_text().strip()
    except OSError as exc:
        raise ProvisionError(
            f"cannot read broker password {cfg.broker.password_file}: {exc.strerror}"
        ) from exc
    # Salt derived from the public key: unique per kiosk, and re-running
    # 'request' prints the same QR code.
    salt = bytes(keys.signing.verify_key)[:12]
    req = RegistrationRequest(
        format=REQUEST_FORMAT,
        device_id=cfg.device_id,
        station_id=cfg.station_id,
        district=cfg.district,
        serial=device_serial(),
        verify_key=keys.verify_key_hex,
        box_key=keys.box_public_hex,
        broker_username=cfg.broker.username or cfg.device_id,
        broker_password_hash=mosquitto_hash(password, salt),
        created=_key_created(Path(cfg.key_dir)),
    )
    return sign_request(req, keys.signing)


def _key_created(key_dir: Path) -> str:
    st = (key_dir / SIGN_FILE).stat()
    return datetime.fromtimestamp(st.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_cec_key(cfg: AgentConfig) -> VerifyKey:
    """The CEC key this kiosk trusts (``cec.pub`` in the key directory)."""
    return load_cec_verify_key(Path(cfg.key_dir) / CEC_PUB_FILE)


def load_installed_roll(cfg: AgentConfig) -> tuple[Roll, str]:
    """Re-verify and open ``<state_dir>/roll.pkg``: the roll and its hash (for the agent's start).

    Raises :class:`ProvisionError` when no roll is installed, or with the
    :class:`~agent.roll.package.PackageError` reason when it no longer verifies.
    """
    path = cfg.state_path / ROLL_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ProvisionError(f"no roll installed ({path}); run 'device install-roll'") from exc
    try:
        keys = load_keys(cfg.key_dir)
    except KeyFileError as exc:
        raise ProvisionError(str(exc)) from exc
    try:
        roll = open_package(data, load_cec_key(cfg), keys.box, expected_station=cfg.station_id)
    except PackageError as exc:
        raise ProvisionError(f"installed roll {path}: {exc}") from exc
    return roll, package_hash(data)


InstallStatus = Literal["installed", "unchanged"]


@dataclass(frozen=True)
class InstallResult:
    """What ``install-roll`` did."""

    status: InstallStatus
    header: PackageHeader
    voters: int
    roll_hash: str
    replaced: str
    """Hash of the package it replaced ("" if none)."""


def install_roll(config_dir: Path, package: Path, *, user: str, new_election: bool = False
                 ) -> InstallResult:
    """Verify a package fully (signature, station, this kiosk's key, body) and install it.

    Refuses a package of an older or equal version with different content
    (replaying an old roll), or of another election unless ``new_election``.
    Installing the identical package again changes nothing.
    """
    owner = require_user(user)
    cfg = load_device_config(config_dir)
    try:
        data = package.read_bytes()
    except OSError as exc:
        raise ProvisionError(f"cannot read package {package}: {exc.strerror}") from exc
    try:
        keys = load_keys(cfg.key_dir)
    except KeyFileError as exc:
        raise ProvisionError(str(exc)) from exc
    cec = load_cec_key(cfg)
    try:
        roll = open_package(data, cec, keys.box, expected_station=cfg.station_id)
    except PackageError as exc:
        raise ProvisionError(f"{package}: {exc}") from exc
    header = peek_header(data, cec)
    new_hash = package_hash(data)
    target = cfg.state_path / ROLL_FILE
    lifecycle_db = cfg.state_path / "lifecycle.sqlite"
    if lifecycle_db.exists() and target.exists() and package_hash(target.read_bytes()) != new_hash:
        phase = read_phase(lifecycle_db)
        if phase not in (Phase.UNPROVISIONED, Phase.PROVISIONED) and not new_election:
            raise ProvisionError(
                f"the station is {phase.value}: its roll cannot be replaced during the day "
                "(marks and slips refer to it); pass --new-election only for a new election"
            )
    replaced = ""
    if target.exists():
        old = target.read_bytes()
        replaced = package_hash(old)
        if replaced == new_hash:
            return InstallResult("unchanged", header, len(roll.voters), new_hash, replaced)
        try:
            old_header: PackageHeader | None = peek_header(old, cec)
        except PackageError:
            old_header = None  # a corrupt installed roll may be replaced by a good one
        if old_header is not None:
            if old_header.election_id != header.election_id and not new_election:
                raise ProvisionError(
                    f"installed roll is for election {old_header.election_id!r}, this one for "
                    f"{header.election_id!r}; pass --new-election if that is intended"
                )
            if (old_header.election_id == header.election_id
                    and header.roll_version <= old_header.roll_version):
                raise ProvisionError(
                    f"installed roll version {old_header.roll_version} is not older than "
                    f"{header.roll_version}: refusing to go back or to replace a roll with a "
                    "different one of the same version"
                )
    atomic_write(target, data, mode=0o640)
    hand_over(target, owner)
    return InstallResult("installed", header, len(roll.voters), new_hash, replaced)
