"""The registration request a kiosk prints for ops: who it is, its public keys, signed by itself.

The request is canonical JSON (sorted keys, no spaces, UTF-8) with an Ed25519
``signature`` by the kiosk's own signing key over the canonical JSON of every
other field: ops can check the request was made by the holder of the key and
was not altered on the way (typed in, photographed as a QR code, emailed).

The broker password never leaves the kiosk: the request carries only its
Mosquitto PBKDF2-SHA512 hash (``$7$`` format), which goes into the broker's
password file.

The QR code holds the same request in a compact form that fits an 80-column
console: ``KESP1:`` followed by the base45 text (RFC 9285, QR's alphanumeric
mode) of the fields packed as bytes (strings length-prefixed, keys and
signature raw). :func:`parse_request` reads both forms and verifies both the
same way, so a scanned QR code can be registered like the JSON file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

REQUEST_FORMAT = "kesp-registration-request/1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_PWHASH = re.compile(r"^\$7\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$")
MOSQUITTO_PBKDF2_ITERATIONS = 101
"""mosquitto_passwd's default iteration count for ``$7$`` hashes."""


QR_PREFIX = "KESP1:"
_QR_STRINGS = ("device_id", "station_id", "district", "serial", "created")
"""Packed as length + UTF-8. broker_username is device_id (parse_request insists);
the password hash's salt and digest are packed as bytes."""
_QR_RAW = ("verify_key", "box_key", "signature")
_QR_RAW_SIZES = (32, 32, 64)
_B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


def b45encode(data: bytes) -> str:
    """RFC 9285 base45: two bytes become three characters of QR's alphanumeric set."""
    out = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        out += [_B45[n % 45], _B45[n // 45 % 45], _B45[n // 2025]]
    if len(data) % 2:
        out += [_B45[data[-1] % 45], _B45[data[-1] // 45]]
    return "".join(out)


def b45decode(text: str) -> bytes:
    """Inverse of :func:`b45encode`; ValueError on a character or value out of range."""
    values = [_B45.index(c) for c in text]  # ValueError for a foreign character
    if len(values) % 3 == 1:
        raise ValueError("base45 text has a dangling character")
    out = bytearray()
    for i in range(0, len(values), 3):
        chunk = values[i:i + 3]
        n = sum(v * 45 ** k for k, v in enumerate(chunk))
        if n >= (65536 if len(chunk) == 3 else 256):
            raise ValueError("base45 value out of range")
        out += n.to_bytes(2 if len(chunk) == 3 else 1, "big")
    return bytes(out)


class RequestError(ValueError):
    """A registration request is malformed or its signature does not hold."""


@dataclass(frozen=True)
class RegistrationRequest:
    """What a kiosk tells ops about itself at registration."""

    format: str
    device_id: str
    station_id: str
    district: str
    serial: str
    verify_key: str
    box_key: str
    broker_username: str
    broker_password_hash: str
    created: str
    signature: str = ""

    def signed_part(self) -> bytes:
        """Canonical JSON of every field but the signature."""
        data = asdict(self)
        del data["signature"]
        return canonical_json(data)

    def to_json(self) -> str:
        """Canonical JSON of the whole request (what ``--out`` writes)."""
        return canonical_json(asdict(self)).decode("utf-8")

    def to_qr_text(self) -> str:
        """The whole request in the compact form the QR code holds."""
        _, seven, iterations, salt, digest = self.broker_password_hash.split("$")
        parts = [getattr(self, name).encode("utf-8") for name in _QR_STRINGS]
        parts += [f"{seven}${iterations}".encode(), base64.b64decode(salt),
                  base64.b64decode(digest)]
        packed = bytearray()
        for raw in parts:
            packed += bytes((len(raw),)) + raw
        for name in _QR_RAW:
            packed += bytes.fromhex(getattr(self, name))
        return QR_PREFIX + b45encode(bytes(packed))


def canonical_json(data: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes that are signed."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def mosquitto_hash(password: str, salt: bytes) -> str:
    """The ``$7$`` PBKDF2-SHA512 line mosquitto's password file accepts."""
    digest = hashlib.pbkdf2_hmac(
        "sha512", password.encode("utf-8"), salt, MOSQUITTO_PBKDF2_ITERATIONS
    )
    b64 = base64.b64encode
    return f"$7${MOSQUITTO_PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def sign_request(req: RegistrationRequest, key: SigningKey) -> RegistrationRequest:
    """Return ``req`` with its signature by ``key`` (the kiosk's own signing key)."""
    sig = key.sign(req.signed_part()).signature.hex()
    return RegistrationRequest(**{**asdict(req), "signature": sig})


def _from_qr_text(text: str) -> dict[str, Any]:
    try:
        packed = b45decode(text.removeprefix(QR_PREFIX))
    except ValueError as exc:
        raise RequestError(f"QR text after {QR_PREFIX} is not base45: {exc}") from exc
    data: dict[str, Any] = {"format": REQUEST_FORMAT}
    at = 0
    try:
        parts: list[bytes] = []
        for _ in range(len(_QR_STRINGS) + 3):
            size = packed[at]
            parts.append(packed[at + 1:at + 1 + size])
            at += 1 + size
        for name, raw in zip(_QR_STRINGS, parts, strict=False):
            data[name] = raw.decode("utf-8")
        scheme, salt, digest = parts[len(_QR_STRINGS):]
        b64 = base64.b64encode
        data["broker_password_hash"] = \
            f"${scheme.decode()}${b64(salt).decode()}${b64(digest).decode()}"
        data["broker_username"] = data["device_id"]
        for name, size in zip(_QR_RAW, _QR_RAW_SIZES, strict=True):
            if at + size > len(packed):
                raise IndexError(name)
            data[name] = packed[at:at + size].hex()
            at += size
    except (IndexError, UnicodeDecodeError) as exc:
        raise RequestError("QR text is cut short or damaged: scan it again") from exc
    if at != len(packed):
        raise RequestError("QR text has extra data: scan it again")
    return data


def parse_request(text: str) -> RegistrationRequest:
    """Parse, validate and verify a request (JSON, or the QR code's text).

    Raises :class:`RequestError` naming the problem.
    """
    text = text.strip()
    if text.startswith(QR_PREFIX):
        data: Any = _from_qr_text(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RequestError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RequestError("must be a JSON object")
    names = {f.name for f in fields(RegistrationRequest)}
    unknown = sorted(set(data) - names)
    missing = sorted(names - set(data))
    if unknown or missing:
        raise RequestError(
            f"unknown field(s) {unknown}, missing field(s) {missing}".replace(
                "unknown field(s) [], ", ""
            ).replace(", missing field(s) []", "")
        )
    if not all(isinstance(v, str) for v in data.values()):
        raise RequestError("every field must be a string")
    req = RegistrationRequest(**data)
    if req.format != REQUEST_FORMAT:
        raise RequestError(f"format {req.format!r}, expected {REQUEST_FORMAT!r}")
    for name in ("device_id", "station_id", "district"):
        if not _ID.match(getattr(req, name)):
            raise RequestError(f"{name} {getattr(req, name)!r} is not a valid id")
    for name in ("verify_key", "box_key"):
        if not _HEX64.match(getattr(req, name)):
            raise RequestError(f"{name} must be 64 lowercase hex digits")
    if req.broker_username != req.device_id:
        raise RequestError("broker_username must equal device_id (the broker ACL relies on it)")
    if not _PWHASH.match(req.broker_password_hash):
        raise RequestError("broker_password_hash is not a mosquitto $7$ hash")
    try:
        VerifyKey(bytes.fromhex(req.verify_key)).verify(
            req.signed_part(), bytes.fromhex(req.signature)
        )
    except (BadSignatureError, ValueError) as exc:
        raise RequestError(
            f"signature of the request from {req.device_id} does not match its key: "
            "the request was altered or mistyped"
        ) from exc
    return req
