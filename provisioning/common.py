"""What every provisioning step shares: the error type, exit codes, users and key files."""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey, VerifyKey

from agent.runtime.config import atomic_write

EXIT_OK = 0
EXIT_REFUSED = 1
"""Bad input or an unsafe step: nothing was changed."""
EXIT_USAGE = 2
"""argparse's own code for a malformed command line."""
EXIT_CHECK_FAILED = 3
"""``device selftest`` or ``cec verify`` ran and found a problem."""

SERVICE_USER = "kesp"
"""The dedicated user the agent runs as (created by the image, see systemd/)."""

CEC_SIGN_FILE = "cec.sign"
CEC_PUB_FILE = "cec.pub"


class ProvisionError(Exception):
    """A step refuses to run; the message names the problem and what to do."""


@dataclass(frozen=True)
class Owner:
    """Who must own the files a step writes (the agent must be able to read them)."""

    name: str
    uid: int
    gid: int


def require_user(user: str) -> Owner:
    """Refuse unless running as root or as ``user``; return ``user``'s ids.

    Root writes files and hands them to ``user``; ``user`` itself may run
    steps on directories it owns (development, the tests). Anyone else would
    leave files the agent cannot read, so they are refused up front.
    """
    try:
        entry = pwd.getpwnam(user)
    except KeyError as exc:
        raise ProvisionError(
            f"service user {user!r} does not exist on this machine "
            "(the kiosk image creates 'kesp'; pass --user to choose another)"
        ) from exc
    euid = os.geteuid()
    if euid not in (0, entry.pw_uid):
        me = pwd.getpwuid(euid).pw_name if _uid_known(euid) else str(euid)
        raise ProvisionError(f"running as {me!r}: run this step as root (sudo) or as {user!r}")
    return Owner(user, entry.pw_uid, entry.pw_gid)


def _uid_known(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def hand_over(path: Path, owner: Owner) -> None:
    """Give ``path`` to ``owner`` when we are root (no-op otherwise: already ours)."""
    if os.geteuid() == 0:
        os.chown(path, owner.uid, owner.gid)


def write_cec_keypair(out_dir: Path) -> SigningKey:
    """Create ``cec.sign`` (0600, raw 32-byte seed) and ``cec.pub`` (hex) in ``out_dir``."""
    sign_path, pub_path = out_dir / CEC_SIGN_FILE, out_dir / CEC_PUB_FILE
    for p in (sign_path, pub_path):
        if p.exists():
            raise ProvisionError(
                f"{p} already exists; refusing to replace the CEC key "
                "(every kiosk trusts the existing one)"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    atomic_write(sign_path, bytes(key), mode=0o600)
    atomic_write(pub_path, (bytes(key.verify_key).hex() + "\n").encode(), mode=0o644)
    return key


def load_cec_signing_key(path: Path) -> SigningKey:
    """Read the CEC secret key, refusing a file others could read."""
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise ProvisionError(f"CEC key {path} not found; create it with 'cec keygen'") from exc
    data = path.read_bytes()
    if len(data) != 32:
        if _looks_like_hex_key(data):
            raise ProvisionError(f"{path} is a public key (cec.pub); building needs cec.sign")
        raise ProvisionError(f"{path} is not a CEC signing key (expected 32 raw bytes)")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ProvisionError(f"CEC key {path} is readable by group/others; chmod 600 it")
    return SigningKey(data)


def _looks_like_hex_key(data: bytes) -> bool:
    text = data.strip()
    return len(text) == 64 and all(c in b"0123456789abcdefABCDEF" for c in text)


def load_cec_verify_key(path: Path) -> VerifyKey:
    """Read a CEC public key file (64 hex digits)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ProvisionError(f"CEC public key {path} not found") from exc
    if not _looks_like_hex_key(data):
        if len(data) == 32:
            raise ProvisionError(
                f"{path} looks like the CEC *secret* key; give the kiosk cec.pub, and keep "
                "cec.sign off every kiosk"
            )
        raise ProvisionError(f"{path} is not a CEC public key (expected 64 hex digits)")
    return VerifyKey(bytes.fromhex(data.strip().decode()))


def key_id(key: VerifyKey) -> str:
    """Short fingerprint of a public key, as shown to technicians (first 16 hex digits)."""
    return bytes(key).hex()[:16]
