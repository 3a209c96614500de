"""The installed station roll, verified and decrypted in memory at every start.

On disk the roll stays exactly as the CEC sent it (``<state_dir>/roll.pkg``):
signed by the CEC and encrypted to this kiosk, so biometric data is never
stored in clear. :func:`load_roll` re-verifies the signature, decrypts it and
packs every finger template into one matching gallery. A template that does
not decode is skipped and counted (the voter's other fingers still work); the
count is part of the ``roll-verified`` audit event.

Decoding 56,000 templates and building their cylinders takes about 6 s on the
2-core development machine (113 us per template, benchmarks/RESULTS.md) and
longer on a Pi-class CPU: too long for every power cycle. The prepared gallery is
therefore cached in ``gallery.cache``, encrypted with a key derived from this
kiosk's private box key (XChaCha20-Poly1305, the cipher of the roll package's
body; libsodium's secretbox wrapper in PyNaCl copied the 180 MB three times)
and bound to the package hash: a cache from another roll, another matcher
version or another kiosk does not open and is rebuilt. Templates themselves
are decoded on demand, only for the voter an ID document names.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path

import numpy as np
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt as aead_decrypt
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt as aead_encrypt
from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey
from numpy.typing import NDArray

from agent.match import Gallery, Matcher, Template, TemplateError, load_template
from agent.match.matcher import GalleryFileError
from agent.roll.package import PackageError, Roll, Voter, open_package, package_hash
from agent.runtime.durable import atomic_write, is_disk_full
from agent.runtime.keys import DeviceKeys

log = logging.getLogger(__name__)

ROLL_FILE = "roll.pkg"
CEC_KEY_FILE = "cec.pub"
GALLERY_CACHE = "gallery.cache"
_CACHE_MAGIC = b"KESPGAL1"
_CACHE_FILE_MAGIC = b"KESPGC02"
"""First bytes of ``gallery.cache`` (in clear; also authenticated as associated data)."""
_CACHE_NONCE_LEN = 24


class RollError(RuntimeError):
    """No usable roll: missing, unreadable, or refused by verification."""


@dataclass(frozen=True)
class LoadedRoll:
    """The decrypted roll with its matching gallery and look-up indexes."""

    roll: Roll
    package_hash: str
    owners: NDArray[np.int32]
    """``owners[i]`` is the voter index (into ``roll.voters``) of gallery template ``i``."""
    gallery: Gallery
    by_list_number: dict[int, int]
    by_document: dict[str, int]
    bad_templates: int
    from_cache: bool = False

    def voter(self, index: int) -> Voter:
        """The voter at ``index`` in ``roll.voters``."""
        return self.roll.voters[index]

    def persist_cache(self, state_dir: Path, keys: DeviceKeys, *, keep_free: int = 0) -> bool:
        """Write the encrypted gallery cache (no-op when it was loaded from one); True
        when it is on disk.

        The cache only saves time (it is rebuilt from the roll), and a large
        station's is ~180 MB: it is not written when that would leave less than
        ``keep_free`` bytes for the stores, nor when the disk fills while writing.
        """
        if self.from_cache:
            return True
        blob = _sealed_cache(keys, self.package_hash, self.owners, self.bad_templates,
                             self.gallery)
        path = state_dir / GALLERY_CACHE
        try:
            free = shutil.disk_usage(state_dir).free
            if keep_free and free - len(blob) < keep_free:
                log.warning("gallery cache (%.0f MB) not written: %.0f MB free under %s, "
                            "%.0f MB are kept for the stores; the next start rebuilds it",
                            len(blob) / 1e6, free / 1e6, state_dir, keep_free / 1e6)
                return False
            atomic_write(path, blob, mode=0o600)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            log.warning("gallery cache not written under %s (%s): the next start rebuilds "
                        "it", state_dir, exc)
            return False
        return True

    def templates_of(self, index: int) -> list[Template]:
        """The decodable templates of voter ``index`` (decoded now, kept nowhere)."""
        return _decode(self.roll.voters[index])[0]


def _decode(voter: Voter) -> tuple[list[Template], int]:
    good: list[Template] = []
    bad = 0
    for finger in voter.fingers:
        try:
            good.append(load_template(finger.template))
        except TemplateError:
            bad += 1
    return good, bad


def load_cec_key(key_dir: Path) -> VerifyKey:
    """The CEC's verify key stored at ``device init`` (raw 32 bytes or hex)."""
    path = key_dir / CEC_KEY_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise RollError(f"CEC key {path} not found; run 'kesp-provision device init'") from exc
    text = raw.strip()
    if len(raw) == 32:
        return VerifyKey(raw)
    try:
        return VerifyKey(bytes.fromhex(text.decode("ascii")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RollError(f"CEC key {path} is neither 32 raw bytes nor 64 hex digits") from exc


def _cache_key(keys: DeviceKeys) -> bytes:
    return blake2b(bytes(keys.box), digest_size=32, person=b"kesp-gallery-v1").digest()


def _sealed_cache(keys: DeviceKeys, digest: str, owners: NDArray[np.int32], bad: int,
                  gallery: Gallery) -> bytes:
    """The gallery cache file's bytes: the prepared gallery, encrypted to this kiosk."""
    buf = io.BytesIO()
    gallery.save(buf)
    owners_bytes = np.ascontiguousarray(owners, dtype="<i4").tobytes()
    plain = (_CACHE_MAGIC + bytes.fromhex(digest) + struct.pack(">QI", len(owners_bytes), bad)
             + owners_bytes + buf.getvalue())
    nonce = os.urandom(_CACHE_NONCE_LEN)
    sealed = aead_encrypt(plain, _CACHE_FILE_MAGIC, nonce, _cache_key(keys))
    return _CACHE_FILE_MAGIC + nonce + sealed


def _read_cache(path: Path, keys: DeviceKeys, digest: str, matcher: Matcher
                ) -> tuple[NDArray[np.int32], int, Gallery] | None:
    """The cached gallery of this exact package, or None (absent, stale, foreign, damaged)."""
    try:
        with path.open("rb") as fh:
            marker = fh.read(len(_CACHE_FILE_MAGIC) + _CACHE_NONCE_LEN)
            if marker[:len(_CACHE_FILE_MAGIC)] != _CACHE_FILE_MAGIC:
                return None  # absent format marker: an older cache or not ours
            # Read the sealed part on its own: no slice copy of 180 MB before decrypting.
            sealed = fh.read()
        plain = aead_decrypt(sealed, _CACHE_FILE_MAGIC, marker[len(_CACHE_FILE_MAGIC):],
                             _cache_key(keys))
    except (OSError, CryptoError, ValueError):
        return None
    head = len(_CACHE_MAGIC) + 32 + 12
    if len(plain) < head or plain[:8] != _CACHE_MAGIC or plain[8:40] != bytes.fromhex(digest):
        return None
    n_bytes, bad = struct.unpack(">QI", plain[40:head])
    if n_bytes % 4 or head + n_bytes > len(plain):
        return None
    owners = np.frombuffer(plain[head:head + n_bytes], dtype="<i4").astype(np.int32)
    try:
        gallery = Gallery.load(matcher, memoryview(plain)[head + n_bytes:])
    except GalleryFileError:
        return None  # built by another matcher version: rebuild
    if len(gallery) != len(owners):
        return None
    return owners, int(bad), gallery


def load_roll(
    state_dir: Path,
    keys: DeviceKeys,
    cec_key: VerifyKey,
    station_id: str,
    matcher: Matcher,
    *,
    write_cache: bool = True,
    before_build: Callable[[], object] = lambda: None,
) -> LoadedRoll:
    """Verify, decrypt and index the installed roll; :class:`RollError` if unusable.

    With ``write_cache=False`` a freshly built gallery is not cached yet: the
    agent calls :meth:`LoadedRoll.persist_cache` once every start-up check has
    passed, so a refused start leaves nothing behind. ``before_build`` runs
    before the gallery is built from templates (no usable cache): the agent
    waits there for its kernel warm-up, so two parallel kernels never run at
    once (not every Numba threading layer allows it).
    """
    path = state_dir / ROLL_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise RollError(
            f"no roll installed at {path}; run 'kesp-provision device install-roll PACKAGE'"
        ) from exc
    except OSError as exc:
        raise RollError(f"cannot read roll {path}: {exc.strerror}") from exc
    try:
        roll = open_package(data, cec_key, keys.box, expected_station=station_id)
    except PackageError as exc:
        raise RollError(f"roll {path} refused: {exc}") from exc
    digest = package_hash(data)
    cache = state_dir / GALLERY_CACHE
    cached = _read_cache(cache, keys, digest, matcher)
    if cached is not None:
        owners, bad, gallery = cached
        if len(owners) and int(owners.max()) >= len(roll.voters):
            cached = None
    if cached is None:
        templates: list[Template] = []
        owner_list: list[int] = []
        bad = 0
        for index, voter in enumerate(roll.voters):
            good, bad_here = _decode(voter)
            templates.extend(good)
            owner_list.extend([index] * len(good))
            bad += bad_here
        owners = np.asarray(owner_list, dtype=np.int32)
        before_build()
        gallery = matcher.gallery(templates)
    loaded = LoadedRoll(
        roll=roll,
        package_hash=digest,
        owners=owners,
        gallery=gallery,
        by_list_number={v.list_number: i for i, v in enumerate(roll.voters)},
        by_document={v.document: i for i, v in enumerate(roll.voters)},
        bad_templates=bad,
        from_cache=cached is not None,
    )
    if write_cache:
        loaded.persist_cache(state_dir, keys)
    return loaded
