"""The kiosk's own keys, generated on the device and never leaving it.

* ``device.sign`` - Ed25519 seed: signs telemetry, audit checkpoints and marks.
* ``device.box``  - X25519 private key: opens the roll package the CEC
  encrypted to this kiosk.

Both files are 32 raw bytes, mode 0600. Loading refuses a key file that is
readable by group or others, so a mis-provisioned kiosk fails loudly instead
of running with an exposed key. Key material is never logged.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from agent.runtime.durable import atomic_write

SIGN_FILE = "device.sign"
BOX_FILE = "device.box"


class KeyFileError(Exception):
    """A key file is missing, malformed or too permissive."""


@dataclass(frozen=True)
class DeviceKeys:
    """The device's signing and box keys."""

    signing: SigningKey
    box: PrivateKey

    @property
    def verify_key_hex(self) -> str:
        """Public Ed25519 key, hex."""
        return bytes(self.signing.verify_key).hex()

    @property
    def box_public_hex(self) -> str:
        """Public X25519 key, hex."""
        return bytes(self.box.public_key).hex()


def generate_keys(key_dir: str | os.PathLike[str], *, overwrite: bool = False) -> DeviceKeys:
    """Create fresh keys in ``key_dir`` (0700) as 0600 files.

    Refuses to replace existing keys unless ``overwrite``: replacing a
    registered kiosk's key silently would orphan its registration.
    """
    d = Path(key_dir)
    if not overwrite and ((d / SIGN_FILE).exists() or (d / BOX_FILE).exists()):
        raise KeyFileError(f"keys already exist in {d}; refusing to replace them")
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    signing = SigningKey.generate()
    box = PrivateKey.generate()
    atomic_write(d / SIGN_FILE, bytes(signing), mode=0o600)
    atomic_write(d / BOX_FILE, bytes(box), mode=0o600)
    return DeviceKeys(signing=signing, box=box)


def _read_secret(path: Path) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise KeyFileError(f"key file {path} not found; run 'kesp-provision device init'") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"key file {path} is accessible by group/others; chmod 600 it")
    data = path.read_bytes()
    if len(data) != 32:
        raise KeyFileError(f"key file {path} is not a 32-byte key")
    return data


def load_keys(key_dir: str | os.PathLike[str]) -> DeviceKeys:
    """Load the device keys, checking permissions and sizes."""
    d = Path(key_dir)
    return DeviceKeys(
        signing=SigningKey(_read_secret(d / SIGN_FILE)),
        box=PrivateKey(_read_secret(d / BOX_FILE)),
    )
