"""The signed telemetry envelope: pure encode / sign / verify / decode, no I/O.

Wire format of one MQTT payload::

    signature (64 bytes, Ed25519 over body) || body (canonical JSON, UTF-8)

The body is *canonical JSON*: object keys sorted, no insignificant
whitespace (``","`` and ``":"`` separators), UTF-8 without ``\\u`` escapes
for non-ASCII, integers for all envelope fields, no NaN/Infinity. The
signature covers the exact bytes, so a verifier never re-encodes anything: it
checks the signature first and only then parses.

Body fields (schema version 1)::

    v     schema version (1)            type  birth|death|health|turnout|event|cmd
    dev   device id                     stn   station id        dst  district
    boot  bdSeq: session counter, +1 on every MQTT connection (persisted)
    seq   0..255 per session, birth is 0, wraps (gap detection, Sparkplug style)
    n     persisted 64-bit message counter (data: this message; birth/death:
          the highest n allocated so far)
    t     wall time the record was made, ms since the epoch (UTC)
    mono  CLOCK_MONOTONIC at that moment, ms (orders records across clock jumps)
    sent  wall time the envelope was signed for publishing, ms
    hist  true when the record was buffered and is replayed later
    p     payload object
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from agent.telemetry.parameters import (
    MAX_MESSAGE_BYTES,
    MAX_PAYLOAD_DEPTH,
    SCHEMA_VERSION,
    SIGNATURE_BYTES,
    TOPIC_ROOT,
)

MessageType = Literal["birth", "death", "health", "turnout", "event", "cmd"]
MESSAGE_TYPES: tuple[MessageType, ...] = get_args(MessageType)
DATA_TYPES: frozenset[str] = frozenset({"health", "turnout", "event"})
"""Types that go through the outbox and carry their own counter value ``n``."""

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_U64 = 2**64 - 1

# Defence in depth: the station application never puts personal data in a
# payload, but if a future change tries, the kiosk refuses to sign it.
# Keys are compared after lower-casing and dropping "_", "-" and spaces.
FORBIDDEN_KEYS: frozenset[str] = frozenset(
    {
        "name", "firstname", "lastname", "surname", "fullname", "givenname",
        "familyname", "middlename", "patronymic", "voter", "voterid", "voterpin",
        "document", "documentnumber", "documentno", "docnumber", "docno",
        "passport", "passportnumber", "idnumber", "idcard", "pin", "inn", "tin",
        "personalnumber", "personalid", "nationalid", "template", "templates",
        "minutiae", "fingerprint", "fingerprints", "image", "photo",
        "portrait", "face", "mrz", "birthdate", "dateofbirth", "dob", "address",
        "phone",
    }
)
# The same in Russian and Kyrgyz (a key is normalised as above): full name, first
# name, patronymic (ru "отчество", ky "атасынын аты"), personal number (ky "ЖИН"),
# taxpayer number, passport and document numbers, birth date, address, photo...
FORBIDDEN_KEYS_CYRILLIC: frozenset[str] = frozenset(
    {
        "фио", "имя", "аты", "атыжөнү", "пин", "инн", "жин", "атасынынаты",
        "номер", "номерпаспорта", "номердокумента", "паспортномери", "документномери",
    }
)
# Stems: a Cyrillic key containing any of these is refused (any case ending).
FORBIDDEN_STEMS_CYRILLIC: tuple[str, ...] = (
    "фамил", "отчеств", "паспорт", "документ", "рожден", "туулган", "адрес", "дарек",
    "телефон", "отпечат", "манжаизи", "шаблон", "фото", "сүрөт", "личн", "жеке",
)
# A Kyrgyz personal identification number (PIN) is 14 digits: refused as a whole
# string, as a 14-digit run anywhere inside text ("voter 21234567890123") when not
# part of a longer token (a hash or serial), and as an integer of 14 digits.
_PIN_RE = re.compile(r"(?<![0-9A-Za-z])\d{14}(?![0-9A-Za-z])")
_PIN_INT = range(10**13, 10**14)
# a run of MRZ characters with at least one '<' filler (every real MRZ line has
# them), so that hashes such as the audit chain's 64-zero genesis are not flagged
_MRZ_RE = re.compile(r"(?=[A-Z0-9<]{25,})[A-Z0-9]*<[A-Z0-9<]*")


class TelemetryError(Exception):
    """Base of the telemetry package's errors."""


class PayloadError(TelemetryError, ValueError):
    """A payload cannot be encoded (wrong type, non-finite float, too deep or too big).

    ``path`` names the offending element, e.g. ``p.by_hour.08``.
    """

    def __init__(self, message: str, path: str = "p") -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class PersonalDataError(PayloadError):
    """A payload contains a key or value that looks like personal data."""


class EnvelopeError(TelemetryError):
    """A received message is not a valid envelope; ``reason`` is a stable metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class Envelope:
    """One telemetry message, before signing or after verification."""

    device: str
    station: str
    district: str
    boot: int
    seq: int
    n: int
    wall_ms: int
    mono_ms: int
    sent_ms: int
    type: MessageType
    historical: bool
    payload: Mapping[str, Any] = field(default_factory=dict)
    version: int = SCHEMA_VERSION

    @property
    def topic(self) -> str:
        """``kesp/v1/<district>/<station>/<device>/<type>``."""
        return topic_for(self.district, self.station, self.device, self.type)


def topic_for(district: str, station: str, device: str, kind: str) -> str:
    """The MQTT topic of a message of ``kind`` from ``device``."""
    return f"{TOPIC_ROOT}/{district}/{station}/{device}/{kind}"


@dataclass(frozen=True)
class TopicParts:
    """A kiosk topic split into its fields."""

    district: str
    station: str
    device: str
    type: MessageType


def parse_topic(topic: str) -> TopicParts:
    """Split a kiosk topic, or raise :class:`EnvelopeError` (reason ``bad_topic``)."""
    parts = topic.split("/")
    if len(parts) != 6 or "/".join(parts[:2]) != TOPIC_ROOT:
        raise EnvelopeError("bad_topic", f"not {TOPIC_ROOT}/<district>/<station>/<device>/<type>")
    district, station, device, kind = parts[2:]
    for value in (district, station, device):
        if not _ID_RE.match(value):
            raise EnvelopeError("bad_topic", f"bad id {value[:70]!r} in topic")
    if kind not in MESSAGE_TYPES:
        raise EnvelopeError("bad_topic", f"unknown message type {kind[:20]!r}")
    return TopicParts(district, station, device, kind)


def _norm_key(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "").replace(" ", "")


def _forbidden_key(key: str) -> bool:
    if key in FORBIDDEN_KEYS or key in FORBIDDEN_KEYS_CYRILLIC:
        return True
    return any(stem in key for stem in FORBIDDEN_STEMS_CYRILLIC)


def check_payload(value: object, path: str = "p", depth: int = 0) -> None:
    """Validate a payload tree: JSON types only, finite floats, no personal data.

    Raises :class:`PersonalDataError` for a forbidden key or a value shaped
    like a personal number / MRZ, :class:`PayloadError` for anything else.
    """
    if depth > MAX_PAYLOAD_DEPTH:
        raise PayloadError(f"nested deeper than {MAX_PAYLOAD_DEPTH}", path)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadError(f"key {key!r} is not a string", path)
            if _forbidden_key(_norm_key(key)):
                raise PersonalDataError(f"key {key!r} is not allowed in telemetry", path)
            check_payload(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_payload(item, f"{path}[{i}]", depth + 1)
    elif isinstance(value, str):
        if _PIN_RE.search(value) or _MRZ_RE.search(value):
            raise PersonalDataError("value looks like a personal number or MRZ", path)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if abs(value) > _U64:
            raise PayloadError("integer out of 64-bit range", path)
        if abs(value) in _PIN_INT:
            raise PersonalDataError("integer looks like a personal number (14 digits)", path)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError("float is not finite", path)
    else:
        raise PayloadError(f"{type(value).__name__} is not a JSON type", path)


def canonical_json(value: object) -> bytes:
    """Canonical JSON bytes (sorted keys, compact, UTF-8, no NaN)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def encode_body(env: Envelope) -> bytes:
    """The canonical body of ``env`` (what the signature covers)."""
    return canonical_json(
        {
            "v": env.version,
            "dev": env.device,
            "stn": env.station,
            "dst": env.district,
            "boot": env.boot,
            "seq": env.seq,
            "n": env.n,
            "t": env.wall_ms,
            "mono": env.mono_ms,
            "sent": env.sent_ms,
            "type": env.type,
            "hist": env.historical,
            "p": env.payload,
        }
    )


def sign_body(body: bytes, key: SigningKey) -> bytes:
    """``signature || body``: the MQTT payload."""
    out = key.sign(body).signature + body
    if len(out) > MAX_MESSAGE_BYTES:
        raise PayloadError(f"signed message is {len(out)} bytes, limit {MAX_MESSAGE_BYTES}")
    return out


def seal(env: Envelope, key: SigningKey) -> bytes:
    """Encode and sign ``env``; the payload must already have passed :func:`check_payload`."""
    return sign_body(encode_body(env), key)


def split_signed(data: bytes) -> tuple[bytes, bytes]:
    """(signature, body) of a received message, or ``oversized``/``malformed`` errors."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise EnvelopeError("oversized", f"{len(data)} bytes > {MAX_MESSAGE_BYTES}")
    if len(data) <= SIGNATURE_BYTES + 2:
        raise EnvelopeError("malformed", f"{len(data)} bytes is too short for an envelope")
    return data[:SIGNATURE_BYTES], data[SIGNATURE_BYTES:]


def verify_signed(data: bytes, key: VerifyKey) -> bytes:
    """Check the signature and return the body, or raise ``bad_signature``."""
    sig, body = split_signed(data)
    try:
        key.verify(body, sig)
    except BadSignatureError as exc:
        raise EnvelopeError("bad_signature", "Ed25519 signature does not verify") from exc
    return body


def _int_field(obj: Mapping[str, Any], name: str, lo: int, hi: int) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise EnvelopeError("malformed", f"field {name!r} must be an integer in [{lo}, {hi}]")
    return value


def _id_field(obj: Mapping[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise EnvelopeError("malformed", f"field {name!r} must be an id")
    return value


_FIELDS = frozenset({"v", "dev", "stn", "dst", "boot", "seq", "n", "t", "mono", "sent", "type",
                     "hist", "p"})


def decode_body(body: bytes) -> Envelope:
    """Parse and range-check a (verified) body; ``malformed``/``bad_version`` on failure."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise EnvelopeError("malformed", f"body is not UTF-8 JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise EnvelopeError("malformed", "body is not a JSON object")
    if obj.get("v") != SCHEMA_VERSION:
        raise EnvelopeError("bad_version", f"schema version {obj.get('v')!r} is not supported")
    if set(obj) != _FIELDS:
        raise EnvelopeError("malformed", f"fields {sorted(set(obj) ^ _FIELDS)} wrong")
    kind = obj["type"]
    if kind not in MESSAGE_TYPES:
        raise EnvelopeError("malformed", f"unknown type {str(kind)[:20]!r}")
    if not isinstance(obj["hist"], bool):
        raise EnvelopeError("malformed", "field 'hist' must be a boolean")
    payload = obj["p"]
    if not isinstance(payload, dict):
        raise EnvelopeError("malformed", "field 'p' must be an object")
    return Envelope(
        device=_id_field(obj, "dev"),
        station=_id_field(obj, "stn"),
        district=_id_field(obj, "dst"),
        boot=_int_field(obj, "boot", 0, _U64),
        seq=_int_field(obj, "seq", 0, 255),
        n=_int_field(obj, "n", 0, _U64),
        wall_ms=_int_field(obj, "t", 0, _U64),
        mono_ms=_int_field(obj, "mono", 0, _U64),
        sent_ms=_int_field(obj, "sent", 0, _U64),
        type=kind,
        historical=obj["hist"],
        payload=payload,
    )


def open_signed(data: bytes, key: VerifyKey) -> Envelope:
    """Verify then decode a received message (the signature is checked before parsing)."""
    return decode_body(verify_signed(data, key))
