"""The registration request a kiosk prints for ops: who it is, its public keys, signed by itself.

The request is canonical JSON (sorted keys, no spaces, UTF-8) with an Ed25519
``signature`` by the kiosk's own signing key over the canonical JSON of every
other field: ops can check the request was made by the holder of the key and
was not altered on the way (typed in, photographed as a QR code, emailed).

The broker password never leaves the kiosk: the request carries only its
Mosquitto PBKDF2-SHA512 hash (``$7$`` format), which goes into the broker's
password file.
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
        """Canonical JSON of the whole request (what the QR code holds)."""
        return canonical_json(asdict(self)).decode("utf-8")


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


def parse_request(text: str) -> RegistrationRequest:
    """Parse, validate and verify a request; raise :class:`RequestError` naming the problem."""
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
