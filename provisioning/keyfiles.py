"""Key files carried between the CEC, ops and the kiosks, and the role of each public key.

A kiosk trusts two public keys for its whole life (replacing them means
re-flashing it): the CEC's, which signs roll packages, and ops', which signs
commands to kiosks. Both are Ed25519 keys of the same shape, so the file says
which one it is. ``cec keygen`` and ``ops keygen`` write (UTF-8 text)::

    # KESP CEC public key: kiosks install only roll packages signed by it.
    # Give it to 'kesp-provision device init --cec-key'.
    kesp-public-key cec <64 hex digits>

Lines starting with ``#`` are comments. A file holding only the 64 hex
digits (how keys were written before roles were) is still read; its role is
then unknown, and it is refused when its name is the other role's file name
(``ops.pub`` given as the CEC key). ``device init`` also refuses the same key
given for both roles.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from agent.runtime.durable import atomic_write
from provisioning.common import ProvisionError

CEC_SIGN_FILE = "cec.sign"
CEC_PUB_FILE = "cec.pub"
KeyRole = Literal["cec", "ops"]
_TAG = "kesp-public-key"
_LABELLED = re.compile(rf"^{_TAG} (\S+) ([0-9a-f]{{64}})$", re.M)
_BARE = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class _Role:
    name: str
    article: str
    signs: str
    option: str
    public_file: str
    secret_file: str


ROLES: dict[KeyRole, _Role] = {
    "cec": _Role("CEC", "a", "roll packages", "--cec-key", "cec.pub", "cec.sign"),
    "ops": _Role("ops", "an", "commands to kiosks", "--ops-key", "ops.pub", "ops.sign"),
}


def public_key_text(role: KeyRole, key: VerifyKey) -> bytes:
    """The labelled file text of ``key`` in ``role``."""
    r = ROLES[role]
    return (f"# KESP {r.name} public key: kiosks accept only {r.signs} signed by it.\n"
            f"# Give it to 'kesp-provision device init {r.option}'.\n"
            f"{_TAG} {role} {bytes(key).hex()}\n").encode()


def read_public_key(path: Path, role: KeyRole) -> VerifyKey:
    """Read the public key file given for ``role``; refuse another role's key, by name.

    Raises :class:`ProvisionError` naming the file, what is wrong and what to give instead.
    """
    r = ROLES[role]
    want = f"give {r.option} the {r.name}'s {r.public_file}"
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ProvisionError(f"{r.name} public key {path} not found: {want}") from exc
    except OSError as exc:
        raise ProvisionError(f"cannot read {r.name} public key {path}: {exc.strerror}") from exc
    if len(data) == 32:  # no text format is 32 bytes long
        raise ProvisionError(
            f"{path} looks like a *secret* key (32 raw bytes, like {r.secret_file}): {want}, "
            f"and keep {r.secret_file} off every kiosk")
    try:
        lines = [line.strip() for line in data.decode("utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise ProvisionError(f"{path} is not a public key file (binary data): {want}") from exc
    lines = [line for line in lines if line and not line.startswith("#")]
    if len(lines) == 1 and _BARE.match(lines[0]):
        found: str | None = None
        hex_key = lines[0].lower()
    elif len(lines) == 1 and (m := _LABELLED.match(lines[0])):
        found, hex_key = m.group(1), m.group(2)
    else:
        raise ProvisionError(f"{path} is not {r.article} {r.name} public key (expected "
                             f"'{_TAG} {role} <64 hex digits>'): {want}")
    others = {k: v for k, v in ROLES.items() if k != role}
    if found is not None and found != role:
        other = next((v for k, v in ROLES.items() if k == found), None)
        what = f"the {other.name} public key (it signs {other.signs})" if other else \
            f"a key for {found!r}"
        raise ProvisionError(f"{path} is {what}, not the {r.name} key: {want}")
    if found is None:
        for other in others.values():
            if path.name == other.public_file:
                raise ProvisionError(
                    f"{path} is named like the {other.name} public key but was given as "
                    f"{r.option}: {want} (the two are easily swapped)")
    try:
        return VerifyKey(bytes.fromhex(hex_key))
    except (CryptoError, ValueError) as exc:
        raise ProvisionError(f"{path} does not hold a valid Ed25519 public key: {want}") from exc


def write_cec_keypair(out_dir: Path) -> SigningKey:
    """Create ``cec.sign`` (0600, raw 32-byte seed) and ``cec.pub`` (labelled) in ``out_dir``."""
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
    atomic_write(pub_path, public_key_text("cec", key.verify_key), mode=0o644)
    return key


def load_cec_signing_key(path: Path) -> SigningKey:
    """Read the CEC secret key, refusing a file others could read."""
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise ProvisionError(f"CEC key {path} not found; create it with 'cec keygen'") from exc
    if path.name == ROLES["ops"].secret_file:
        raise ProvisionError(f"{path} is the ops secret key: building needs the CEC's cec.sign")
    data = path.read_bytes()
    if len(data) != 32:
        if _LABELLED.search(data.decode("latin-1")) or _looks_like_hex_key(data):
            raise ProvisionError(f"{path} is a public key (cec.pub); building needs cec.sign")
        raise ProvisionError(f"{path} is not a CEC signing key (expected 32 raw bytes)")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ProvisionError(f"CEC key {path} is readable by group/others; chmod 600 it")
    return SigningKey(data)


def _looks_like_hex_key(data: bytes) -> bool:
    text = data.strip()
    return len(text) == 64 and all(c in b"0123456789abcdefABCDEF" for c in text)


def load_cec_verify_key(path: Path) -> VerifyKey:
    """Read a CEC public key file (labelled, or the 64 hex digits a kiosk keeps)."""
    return read_public_key(path, "cec")


def key_id(key: VerifyKey) -> str:
    """Short fingerprint of a public key, as shown to technicians (first 16 hex digits)."""
    return bytes(key).hex()[:16]
