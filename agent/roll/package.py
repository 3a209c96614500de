"""The station roll package: the CEC's signed, encrypted voter list for one station.

A pure codec (no file or network I/O). The CEC builds one package per polling
station with :func:`build_package`; every kiosk registered for that station
opens it with :func:`open_package` using its own X25519 key; anyone holding the
package can read the plain header with :func:`peek_header` and compute the
"roll hash" printed on opening and closing reports with :func:`package_hash`.
The writer and the reader of the same bytes stay in this one module (past 450
lines): it has one job, the format, and the two directions must not drift.

Wire format, version 2 (version 1 is the same without the two names, and is
still written when a roll has no names, so older kiosks read it; all integers
big-endian; ``str8``/``str16`` are UTF-8 strings prefixed by a 1- or 2-byte
length; the full description with rationale is in ``docs/PACKAGE.md``)::

    offset  size  field
    0       8     magic  b"KESPROLL"
    8       2     format version (1)
    10      2     flags (0; reserved, must be 0)
    12      4     H = length of the header section
    16      H     header section:
                    str8  election_id
                    str8  station_id
                    str8  district
                    str8  station_name   (version 2 only; as printed on slips)
                    str8  district_name  (version 2 only)
                    u32   roll_version
                    str8  created (ISO 8601 UTC, "YYYY-MM-DDTHH:MM:SSZ")
                    u32   voter_count
                    32    signer: the CEC's Ed25519 verify key
                    u16   K = number of recipient kiosks, then K times:
                            str8  device_id
                            32    Ed25519 verify key of the kiosk
                            32    X25519 public key of the kiosk
                            80    content key sealed to that X25519 key (SealedBox)
                    24    XChaCha20-Poly1305 nonce
    16+H    8     C = length of the ciphertext
    24+H    C     ciphertext: XChaCha20-Poly1305-IETF of the roll body; the
                  associated data is every byte before the ciphertext
    24+H+C  64    Ed25519 signature by the CEC over
                  b"KESP roll package v1\\0" || SHA-512(every byte before it)

Roll body (plaintext, deterministic: the same :class:`Roll` always gives the
same bytes; list numbers and finger positions strictly increasing)::

    u32 voter count, then per voter:
        u32 list_number; str8 document; str16 name_ky; str16 name_ru;
        u8 finger count, then per finger: u8 ISO position (1-10); u32 length; template

Order of checks in :func:`open_package`: framing (magic, version, lengths),
signer, signature (before anything is decrypted or parsed further), station,
recipient, key unwrap, decryption, body. Every refusal is a
:class:`PackageError` whose ``reason`` says which check failed.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

MAGIC = b"KESPROLL"
FORMAT_VERSION = 2
#: The version written for a roll without station and district names (readable by
#: agents that predate the names).
NAMELESS_VERSION = 1
READABLE_VERSIONS = (NAMELESS_VERSION, FORMAT_VERSION)
SIGNATURE_CONTEXT = b"KESP roll package v1\x00"
#: Longest station or district name, in bytes of UTF-8 (a ``str8`` field).
NAME_MAX_BYTES = 0xFF

_PREFIX = struct.Struct(">8sHHI")  # magic, version, flags, header length
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_VOTER_HEAD = struct.Struct(">IB")  # list_number, document length
_FINGER_HEAD = struct.Struct(">BI")  # position, template length
_SIG_LEN = 64
_KEY_LEN = 32
_NONCE_LEN = 24
_SEALED_KEY_LEN = 32 + 48  # content key + SealedBox overhead (ephemeral pk + MAC)
_MIN_LEN = _PREFIX.size + _U64.size + _SIG_LEN
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")  # same rule as agent.runtime.config ids
_CREATED_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_HEX32_RE = re.compile(r"^[0-9a-f]{64}$")
_TEMPLATE_MAGIC = b"FMR\x00"  # ISO 19794-2 and ANSI 378 records both start with it
_MAX_U32 = 0xFFFFFFFF

PackageErrorReason = Literal[
    "bad-magic",
    "unsupported-version",
    "truncated",
    "wrong-signer",
    "bad-signature",
    "wrong-station",
    "not-addressed",
    "decrypt-failed",
    "malformed",
    "invalid-roll",
]


class PackageError(ValueError):
    """A package cannot be built or opened; ``reason`` names the failed check.

    ``invalid-roll`` is raised by :func:`build_package` (bad input data); every
    other reason by the readers.
    """

    def __init__(self, reason: PackageErrorReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: PackageErrorReason = reason


@dataclass(frozen=True)
class Finger:
    """One finger template of a voter, as received from the population register."""

    position: int
    """ISO finger position 1-10 (1 right thumb ... 10 left little finger)."""
    template: bytes
    """ISO/IEC 19794-2:2005 or ANSI INCITS 378 record bytes, unmodified."""


@dataclass(frozen=True)
class Voter:
    """One line of the station's voter list."""

    list_number: int
    name_ky: str
    name_ru: str
    document: str
    """ID-card or passport number."""
    fingers: tuple[Finger, ...]


@dataclass(frozen=True)
class Kiosk:
    """A kiosk registered for the station; the package is encrypted to it."""

    device_id: str
    verify_key: str
    """Ed25519 public key, 64 lowercase hex digits."""
    box_key: str
    """X25519 public key, 64 lowercase hex digits."""


@dataclass(frozen=True)
class Roll:
    """The full content of a station roll package."""

    election_id: str
    station_id: str
    district: str
    roll_version: int
    created: str
    """ISO 8601 UTC, ``YYYY-MM-DDTHH:MM:SSZ``."""
    kiosks: tuple[Kiosk, ...]
    voters: tuple[Voter, ...]
    station_name: str = ""
    """The station's name as the commission knows it (e.g. "№ 5012, Ош ш., 5-мектеп")."""
    district_name: str = ""
    """The district's name (e.g. "Ош шаардык / Ошский городской")."""


@dataclass(frozen=True)
class PackageHeader:
    """What anyone can read from a package without a kiosk key."""

    format_version: int
    election_id: str
    station_id: str
    district: str
    roll_version: int
    created: str
    voter_count: int
    signer: str
    """Hex Ed25519 key the package is signed with (checked against the CEC key by callers)."""
    recipients: tuple[Kiosk, ...]
    body_size: int
    """Size of the encrypted roll body in bytes."""
    station_name: str = ""
    district_name: str = ""


# --------------------------------------------------------------------- helpers


def _invalid(message: str) -> PackageError:
    return PackageError("invalid-roll", message)


def _check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise _invalid(f"{what} {value!r} must be 1-63 lowercase letters, digits or '-'")
    return value


def _check_created(value: object) -> str:
    if not isinstance(value, str) or not _CREATED_RE.match(value):
        raise _invalid(f"created {value!r} must be ISO 8601 UTC 'YYYY-MM-DDTHH:MM:SSZ'")
    try:
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise _invalid(f"created {value!r} is not a real date/time") from exc
    return value


def _check_hex_key(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not _HEX32_RE.match(value):
        raise _invalid(f"{what} must be 64 lowercase hex digits, got {value!r}")
    return bytes.fromhex(value)


def _str8(value: str, what: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 0xFF:
        raise _invalid(f"{what} is longer than 255 bytes")
    return bytes((len(raw),)) + raw


def _sign_input(signed: bytes | memoryview) -> bytes:
    return SIGNATURE_CONTEXT + hashlib.sha512(signed).digest()


def _key_id(key: bytes) -> str:
    return key.hex()[:16]


# --------------------------------------------------------------------- body codec


def _encode_body(voters: tuple[Voter, ...]) -> bytes:
    """Serialise the voters canonically, validating every field on the way."""
    parts: list[bytes] = [_U32.pack(len(voters))]
    append = parts.append
    voter_head = _VOTER_HEAD.pack
    finger_head = _FINGER_HEAD.pack
    u16 = _U16.pack
    last_number = 0
    documents: set[str] = set()
    for voter in voters:
        number = voter.list_number
        if isinstance(number, bool) or not isinstance(number, int) or not 0 < number <= _MAX_U32:
            raise _invalid(f"list number {number!r} must be an integer 1..{_MAX_U32}")
        if number <= last_number:
            raise _invalid(
                f"list numbers must be strictly increasing: {number} comes after {last_number}"
            )
        last_number = number
        doc = voter.document.encode("utf-8")
        if not doc or len(doc) > 0xFF or voter.document != voter.document.strip():
            raise _invalid(f"voter {number}: document number {voter.document!r} is empty or bad")
        if voter.document in documents:
            raise _invalid(f"voter {number}: document {voter.document!r} appears twice")
        documents.add(voter.document)
        ky = voter.name_ky.encode("utf-8")
        ru = voter.name_ru.encode("utf-8")
        if not ky or not ru or len(ky) > 0xFFFF or len(ru) > 0xFFFF:
            raise _invalid(f"voter {number}: names must be 1..65535 bytes of UTF-8")
        fingers = voter.fingers
        if len(fingers) > 10:
            raise _invalid(f"voter {number}: {len(fingers)} fingers, at most 10")
        append(voter_head(number, len(doc)))
        append(doc)
        append(u16(len(ky)))
        append(ky)
        append(u16(len(ru)))
        append(ru)
        append(bytes((len(fingers),)))
        last_position = 0
        for finger in fingers:
            position = finger.position
            if not isinstance(position, int) or not last_position < position <= 10:
                raise _invalid(
                    f"voter {number}: finger positions must be strictly increasing in 1..10, "
                    f"got {position!r} after {last_position}"
                )
            last_position = position
            template = finger.template
            if not isinstance(template, bytes) or template[:4] != _TEMPLATE_MAGIC:
                raise _invalid(
                    f"voter {number} finger {position}: not an ISO 19794-2 / ANSI 378 record"
                )
            append(finger_head(position, len(template)))
            append(template)
    return b"".join(parts)


class _Reader:
    """Bounds-checked cursor over a buffer; running off the end is ``malformed``."""

    __slots__ = ("buf", "pos", "what")

    def __init__(self, buf: bytes | memoryview, what: str) -> None:
        self.buf = memoryview(buf)
        self.pos = 0
        self.what = what

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if end > len(self.buf):
            raise PackageError(
                "malformed", f"{self.what} ends early at byte {self.pos} (needs {n} more)"
            )
        view = self.buf[self.pos : end]
        self.pos = end
        return view

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def text(self, n: int, field: str) -> str:
        try:
            return bytes(self.take(n)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PackageError("malformed", f"{self.what}: {field} is not UTF-8") from exc

    def str8(self, field: str) -> str:
        return self.text(self.u8(), field)

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise PackageError(
                "malformed", f"{self.what} has {len(self.buf) - self.pos} trailing bytes"
            )


def _decode_body(body: bytes) -> tuple[Voter, ...]:
    """Decode the roll body; every length is bounds-checked (a tight loop: the kiosk's start).

    The generic :class:`_Reader` costs a method call per field; at 56,000
    templates per large station that doubled the agent's start time.
    """
    n = len(body)
    unpack_from = struct.unpack_from
    if n < 4:
        raise PackageError("malformed", "roll body shorter than its voter count")
    (count,) = unpack_from(">I", body, 0)
    pos = 4
    voters: list[Voter] = []
    append = voters.append
    last_number = 0
    try:
        for _ in range(count):
            if pos + 5 > n:
                raise _short(pos)
            number, doc_len = unpack_from(">IB", body, pos)
            pos += 5
            if number <= last_number:
                raise PackageError("malformed", f"list number {number} after {last_number}")
            last_number = number
            end = pos + doc_len
            if end + 2 > n:
                raise _short(pos)
            document = body[pos:end].decode("utf-8")
            (ky_len,) = unpack_from(">H", body, end)
            pos = end + 2
            end = pos + ky_len
            if end + 2 > n:
                raise _short(pos)
            name_ky = body[pos:end].decode("utf-8")
            (ru_len,) = unpack_from(">H", body, end)
            pos = end + 2
            end = pos + ru_len
            if end + 1 > n:
                raise _short(pos)
            name_ru = body[pos:end].decode("utf-8")
            n_fingers = body[end]
            pos = end + 1
            if n_fingers > 10:
                raise PackageError("malformed", f"voter {number} has {n_fingers} fingers")
            fingers: list[Finger] = []
            last_position = 0
            for _f in range(n_fingers):
                if pos + 5 > n:
                    raise _short(pos)
                position, length = unpack_from(">BI", body, pos)
                pos += 5
                if not last_position < position <= 10:
                    raise PackageError("malformed", f"voter {number}: finger position "
                                       f"{position} after {last_position}")
                last_position = position
                end = pos + length
                if end > n:
                    raise _short(pos)
                fingers.append(Finger(position, body[pos:end]))
                pos = end
            append(Voter(number, name_ky, name_ru, document, tuple(fingers)))
    except UnicodeDecodeError as exc:
        raise PackageError("malformed", f"roll body: text at byte {exc.start} is not UTF-8"
                           ) from exc
    if pos != n:
        raise PackageError("malformed", f"roll body has {n - pos} trailing bytes")
    return tuple(voters)


def _short(pos: int) -> PackageError:
    return PackageError("malformed", f"roll body ends early at byte {pos}")


# --------------------------------------------------------------------- header codec


def _validate_kiosks(kiosks: Iterable[Kiosk]) -> list[tuple[Kiosk, bytes, bytes]]:
    out: list[tuple[Kiosk, bytes, bytes]] = []
    seen_ids: set[str] = set()
    seen_box: set[bytes] = set()
    for kiosk in kiosks:
        _check_id(kiosk.device_id, "kiosk device_id")
        vk = _check_hex_key(kiosk.verify_key, f"kiosk {kiosk.device_id} verify_key")
        bk = _check_hex_key(kiosk.box_key, f"kiosk {kiosk.device_id} box_key")
        if kiosk.device_id in seen_ids:
            raise _invalid(f"kiosk {kiosk.device_id} listed twice")
        if bk in seen_box:
            raise _invalid(f"kiosk {kiosk.device_id} shares its box key with another kiosk")
        seen_ids.add(kiosk.device_id)
        seen_box.add(bk)
        out.append((kiosk, vk, bk))
    if not out:
        raise _invalid("no kiosks: nobody could open the package")
    if len(out) > 0xFFFF:
        raise _invalid("more than 65535 kiosks")
    return out


@dataclass(frozen=True)
class _Parsed:
    header: PackageHeader
    wrapped: tuple[bytes, ...]
    nonce: bytes
    aad_end: int
    body_end: int


def _parse(data: bytes) -> _Parsed:
    """Check framing and parse the header; does NOT verify the signature."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise PackageError("malformed", f"package must be bytes, not {type(data).__name__}")
    if len(data) < _PREFIX.size:
        if bytes(data[: len(MAGIC)]) != MAGIC[: len(data)]:
            raise PackageError("bad-magic", "not a KESP roll package")
        raise PackageError("truncated", f"package is only {len(data)} bytes")
    magic, version, flags, header_len = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise PackageError("bad-magic", f"not a KESP roll package (starts with {magic[:8]!r})")
    if version not in READABLE_VERSIONS:
        raise PackageError(
            "unsupported-version",
            f"package format version {version}; this agent reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}",
        )
    if flags != 0:
        raise PackageError("unsupported-version", f"unknown flags 0x{flags:04x}")
    ct_len_at = _PREFIX.size + header_len
    if len(data) < ct_len_at + _U64.size:
        raise PackageError(
            "truncated", f"package is {len(data)} bytes, header alone needs {ct_len_at + 8}"
        )
    (ct_len,) = _U64.unpack_from(data, ct_len_at)
    aad_end = ct_len_at + _U64.size
    body_end = aad_end + ct_len
    expected = body_end + _SIG_LEN
    if len(data) < expected:
        raise PackageError("truncated", f"package is {len(data)} bytes, expected {expected}")
    if len(data) > expected:
        raise PackageError(
            "malformed", f"package has {len(data) - expected} bytes after the signature"
        )

    r = _Reader(memoryview(data)[_PREFIX.size : ct_len_at], "package header")
    election_id = r.str8("election_id")
    station_id = r.str8("station_id")
    district = r.str8("district")
    station_name = r.str8("station_name") if version >= 2 else ""
    district_name = r.str8("district_name") if version >= 2 else ""
    roll_version = r.u32()
    created = r.str8("created")
    voter_count = r.u32()
    signer = bytes(r.take(_KEY_LEN))
    recipients: list[Kiosk] = []
    wrapped: list[bytes] = []
    for _ in range(r.u16()):
        device_id = r.str8("device_id")
        vk = bytes(r.take(_KEY_LEN)).hex()
        bk = bytes(r.take(_KEY_LEN)).hex()
        wrapped.append(bytes(r.take(_SEALED_KEY_LEN)))
        recipients.append(Kiosk(device_id, vk, bk))
    nonce = bytes(r.take(_NONCE_LEN))
    r.done()
    header = PackageHeader(
        format_version=version,
        election_id=election_id,
        station_id=station_id,
        district=district,
        roll_version=roll_version,
        created=created,
        voter_count=voter_count,
        signer=signer.hex(),
        recipients=tuple(recipients),
        body_size=ct_len,
        station_name=station_name,
        district_name=district_name,
    )
    return _Parsed(header, tuple(wrapped), nonce, aad_end, body_end)


def _verify(data: bytes, parsed: _Parsed, cec_verify_key: VerifyKey | None) -> None:
    signer = bytes.fromhex(parsed.header.signer)
    if cec_verify_key is not None and bytes(cec_verify_key) != signer:
        raise PackageError(
            "wrong-signer",
            f"signed by key {_key_id(signer)}…, not by the CEC key "
            f"{_key_id(bytes(cec_verify_key))}…",
        )
    view = memoryview(data)
    signature = bytes(view[parsed.body_end :])
    try:
        VerifyKey(signer).verify(_sign_input(view[: parsed.body_end]), signature)
    except (BadSignatureError, ValueError, CryptoError) as exc:
        raise PackageError(
            "bad-signature", "signature does not match: the package was altered or corrupted"
        ) from exc


# --------------------------------------------------------------------- public API


def build_package(roll: Roll, cec_key: SigningKey) -> bytes:
    """Serialise, encrypt and sign ``roll`` for every kiosk in ``roll.kiosks``.

    A fresh random content key encrypts the body (XChaCha20-Poly1305) and is
    sealed to each kiosk's X25519 key; the CEC signs the whole result. Raises
    :class:`PackageError` (reason ``invalid-roll``) naming the first bad field.
    """
    _check_id(roll.election_id, "election_id")
    _check_id(roll.station_id, "station_id")
    _check_id(roll.district, "district")
    for what in ("station_name", "district_name"):
        name = getattr(roll, what)
        if not isinstance(name, str) or any(not ch.isprintable() for ch in name):
            raise _invalid(f"{what} {name!r} must be printable text (it is printed on slips)")
    if isinstance(roll.roll_version, bool) or not 0 <= roll.roll_version <= _MAX_U32:
        raise _invalid(f"roll_version {roll.roll_version!r} must be an integer 0..{_MAX_U32}")
    _check_created(roll.created)
    kiosks = _validate_kiosks(roll.kiosks)
    return _seal(roll, kiosks, _encode_body(roll.voters), len(roll.voters), cec_key)


def _seal(
    roll: Roll,
    kiosks: list[tuple[Kiosk, bytes, bytes]],
    body: bytes,
    voter_count: int,
    cec_key: SigningKey,
) -> bytes:
    """Encrypt an already-encoded body and sign the package (fields validated by the caller)."""
    content_key = os.urandom(32)
    nonce = os.urandom(_NONCE_LEN)
    named = bool(roll.station_name or roll.district_name)
    version = FORMAT_VERSION if named else NAMELESS_VERSION
    header = [
        _str8(roll.election_id, "election_id"),
        _str8(roll.station_id, "station_id"),
        _str8(roll.district, "district"),
        *((_str8(roll.station_name, "station_name"), _str8(roll.district_name, "district_name"))
          if named else ()),
        _U32.pack(roll.roll_version),
        _str8(roll.created, "created"),
        _U32.pack(voter_count),
        bytes(cec_key.verify_key),
        _U16.pack(len(kiosks)),
    ]
    for kiosk, vk, bk in kiosks:
        try:
            sealed = SealedBox(PublicKey(bk)).encrypt(content_key)
        except CryptoError as exc:
            raise _invalid(f"kiosk {kiosk.device_id}: unusable box key") from exc
        header += [_str8(kiosk.device_id, "device_id"), vk, bk, bytes(sealed)]
    header.append(nonce)
    header_bytes = b"".join(header)
    ciphertext_len = len(body) + 16  # Poly1305 tag
    aad = (
        _PREFIX.pack(MAGIC, version, 0, len(header_bytes))
        + header_bytes
        + _U64.pack(ciphertext_len)
    )
    ciphertext = crypto_aead_xchacha20poly1305_ietf_encrypt(body, aad, nonce, content_key)
    signature = cec_key.sign(_sign_input(aad + ciphertext)).signature
    return b"".join((aad, ciphertext, signature))


def peek_header(data: bytes, cec_verify_key: VerifyKey | None = None) -> PackageHeader:
    """Read the plain header of a package after checking its signature.

    Without ``cec_verify_key`` the signature is checked against the signer key
    carried in the package: that proves the package is intact, not who made
    it (compare ``signer`` with the CEC key). With it, a different signer is
    refused (``wrong-signer``).
    """
    parsed = _parse(data)
    _verify(data, parsed, cec_verify_key)
    return parsed.header


def open_package(
    data: bytes,
    cec_verify_key: VerifyKey,
    device_box_key: PrivateKey,
    *,
    expected_station: str | None = None,
) -> Roll:
    """Verify, decrypt and decode a package for this kiosk.

    The signature is verified before anything is decrypted. Raises
    :class:`PackageError` with reason ``bad-magic``, ``unsupported-version``,
    ``truncated``, ``wrong-signer``, ``bad-signature``, ``wrong-station``,
    ``not-addressed``, ``decrypt-failed`` or ``malformed``.
    """
    parsed = _parse(data)
    _verify(data, parsed, cec_verify_key)
    header = parsed.header
    if expected_station is not None and header.station_id != expected_station:
        raise PackageError(
            "wrong-station",
            f"package is for station {header.station_id!r}, this kiosk serves "
            f"{expected_station!r}",
        )
    own = bytes(device_box_key.public_key).hex()
    index = next((i for i, k in enumerate(header.recipients) if k.box_key == own), None)
    if index is None:
        names = ", ".join(k.device_id for k in header.recipients)
        raise PackageError(
            "not-addressed",
            f"package is not encrypted to this kiosk (box key {own[:16]}…); recipients: {names}",
        )
    try:
        content_key = SealedBox(device_box_key).decrypt(parsed.wrapped[index])
        view = memoryview(data)
        body = crypto_aead_xchacha20poly1305_ietf_decrypt(
            bytes(view[parsed.aad_end : parsed.body_end]),
            bytes(view[: parsed.aad_end]),
            parsed.nonce,
            content_key,
        )
    except CryptoError as exc:
        # Only reachable if the CEC itself sealed a wrong key: the signature held.
        raise PackageError("decrypt-failed", "the content key or body does not decrypt") from exc
    voters = _decode_body(body)
    if len(voters) != header.voter_count:
        raise PackageError(
            "malformed", f"header says {header.voter_count} voters, body has {len(voters)}"
        )
    return Roll(
        election_id=header.election_id,
        station_id=header.station_id,
        district=header.district,
        roll_version=header.roll_version,
        created=header.created,
        kiosks=header.recipients,
        voters=voters,
        station_name=header.station_name,
        district_name=header.district_name,
    )


def package_hash(data: bytes) -> str:
    """Hex SHA-256 of the exact package bytes: the "roll hash" printed on reports."""
    return hashlib.sha256(data).hexdigest()
