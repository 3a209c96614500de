"""The station peer-sync wire protocol: frames, signatures, sessions (no I/O).

Every frame on a peer connection::

    header  magic "KP" (2) | protocol version (1) | type (1) | body length (4, big-endian)
    body    station (str8) | sender (str8) | session id (32) | seq (8) | payload
    trailer Ed25519 signature (64) over DOMAIN + header + body

``str8`` is one length byte followed by that many UTF-8 bytes.

A connection starts with a HELLO each way. The initiator's HELLO carries a
fresh 32-byte nonce; the responder answers with its own nonce and echoes the
initiator's. Both then derive the session id from both nonces and both kiosk
ids (:func:`session_id`), and every later frame carries that id and a
per-direction sequence number 1, 2, 3... So a frame recorded on the station
network and played back later is refused (wrong session), a frame played back
within a session is refused (sequence), and a frame from a key not in the
station's roll package, or for another station, is refused before its payload
is even decoded. The marks inside MARKS frames carry their own signatures by
the kiosk that made them; the frame signature only says who relayed them.

The protocol version is the header's second field, so the signed HELLO
carries it. A kiosk speaks exactly one version (:data:`PROTOCOL_VERSION`,
docs/PEERS.md says why) and refuses a peer on another one with
``version-mismatch``. To be able to say so about any past or future version,
the header, the envelope, the HELLO's type code, :data:`DOMAIN` and the
signature trailer never change: a HELLO of another version is framed, its
signer verified, and then refused before a byte of its payload is decoded.
Frames of any other type on another version are ``malformed``.

Every frame after the HELLOs carries its payload sealed with the session's
keys (:mod:`agent.peers.channel`): the envelope (station, sender, session id,
sequence) stays readable so a frame can be checked before anything is
decrypted, but list numbers, slip serials and version vectors never cross the
station network in clear. The signature covers the sealed bytes.

Payloads:

* HELLO  ``nonce (32) | echo (32) | kx (32)`` (echo all-zero from the initiator;
  kx the sender's ephemeral X25519 public key for this connection)
* VECTOR ``hlc (8) | n (2) | n x (kiosk str8, origin_seq (8)) | m (1) | m x kiosk str8
  | r (1) | r x (kiosk str8, upto_seq (8))``
  (the version vector, the kiosks the sender has a live session with, and the
  kiosks revoked by a commission with the last origin_seq still accepted)
* MARKS  ``n (2) | n x (length (2), Mark.to_bytes())``
* BYE    ``reason str8``
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from agent.peers.channel import KX_LEN, Channel, ChannelError
from agent.peers.parameters import MAX_BODY, MAX_MARKS_PER_FRAME
from agent.station.marks import Mark, MarkError

MAGIC = b"KP"
#: The peer protocol this release speaks. Bump it with every change to what a
#: peer must understand (a payload's layout or meaning, the handshake, the
#: sealing): kiosks on different versions refuse each other with a clear
#: ``version-mismatch`` instead of misreading frames. 1 was last season's
#: release (clear payloads, HELLO without a key exchange key, VECTOR without
#: ``revoked``); 2 adds the sealed session and revocations. It lives here, not
#: in parameters.py, because it is a fact of this codec, not a tuned value.
PROTOCOL_VERSION = 2
#: Signature domain tag: frozen across versions (its "v1" is a name, not the
#: protocol version), so a HELLO of any version can be verified.
DOMAIN = b"kesp-peer-v1\x00"
SESSION_DOMAIN = b"kesp-peer-session-v1\x00"
SIG_LEN = 64
NONCE_LEN = 32
NO_SESSION = bytes(32)

_HEADER = struct.Struct(">2sBBI")
HEADER_LEN = _HEADER.size
_SEQ = struct.Struct(">Q")
_U16 = struct.Struct(">H")

RejectReason = Literal[
    "malformed",
    "wrong-station",
    "untrusted-sender",
    "bad-signature",
    "replayed-hello",
    "stale-hello",
    "wrong-session",
    "out-of-sequence",
    "unexpected-frame",
    "wrong-peer",
    "too-many-connections",
    "undecryptable",
    "version-mismatch",
]


class FrameType(IntEnum):
    """What a frame carries."""

    HELLO = 1
    VECTOR = 2
    MARKS = 3
    BYE = 4


class PeerProtocolError(Exception):
    """A frame was refused; ``reason`` is a closed code for audit, ``detail`` for humans."""

    def __init__(self, reason: RejectReason, detail: str = "", sender: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: RejectReason = reason
        self.detail = detail
        self.sender = sender


class MalformedFrameError(PeerProtocolError):
    """The bytes are not a frame of this protocol."""

    def __init__(self, detail: str) -> None:
        super().__init__("malformed", detail)


class VersionMismatchError(PeerProtocolError):
    """A listed kiosk (signature verified) speaks another peer protocol version."""

    def __init__(self, sender: str, theirs: int, ours: int) -> None:
        age = "an older" if theirs < ours else "a newer"
        super().__init__(
            "version-mismatch",
            f"{sender!r} speaks {age} peer protocol (v{theirs}, this kiosk v{ours})",
            sender=sender,
        )
        self.theirs = theirs
        self.ours = ours


@dataclass(frozen=True)
class Envelope:
    """Who sent a frame, for which station, in which session, at which position."""

    station: str
    sender: str
    session: bytes
    seq: int


@dataclass(frozen=True)
class Hello:
    """Handshake: the sender's fresh nonce and (responder only) the initiator's, echoed."""

    nonce: bytes
    echo: bytes = bytes(NONCE_LEN)
    kx: bytes = bytes(KX_LEN)


@dataclass(frozen=True)
class Vector:
    """The sender's version vector (kiosk -> highest contiguous origin_seq), HLC and links.

    ``links`` are the kiosks the sender currently has a session with: a third
    kiosk relays marks to the sender only from kiosks it is not linked to.
    """

    hlc: int
    entries: Mapping[str, int]
    links: tuple[str, ...] = ()
    revoked: tuple[tuple[str, int], ...] = ()
    """Revoked kiosks known to the sender: ``(kiosk, upto_seq)`` (see MarkStore.revoke)."""


@dataclass(frozen=True)
class Marks:
    """A batch of marks, each still signed by the kiosk that made it."""

    marks: tuple[Mark, ...]


@dataclass(frozen=True)
class Bye:
    """The sender closes the connection, saying why."""

    reason: str


Payload = Hello | Vector | Marks | Bye


@dataclass(frozen=True)
class RawFrame:
    """A framed but not yet verified message: envelope parsed, payload still bytes."""

    type: FrameType
    envelope: Envelope
    payload: bytes
    signed: bytes
    signature: bytes
    version: int = PROTOCOL_VERSION
    """The protocol version in the header (another one only on a HELLO)."""

    @property
    def size(self) -> int:
        """Bytes this frame took on the wire."""
        return len(self.signed) - len(DOMAIN) + SIG_LEN


@dataclass(frozen=True)
class Frame:
    """A verified message."""

    type: FrameType
    envelope: Envelope
    payload: Payload


# -- primitive encoders ---------------------------------------------------------


def _str8(text: str) -> bytes:
    raw = text.encode("utf-8")
    if not 0 < len(raw) <= 255:
        raise ValueError(f"identifier {text!r} must be 1-255 UTF-8 bytes")
    return bytes([len(raw)]) + raw


class _Reader:
    """Bounds-checked cursor over a payload; every overrun is MalformedFrameError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise MalformedFrameError(f"truncated: wanted {n} bytes at offset {self.pos}")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u64(self) -> int:
        return int(_SEQ.unpack(self.take(8))[0])

    def str8(self) -> str:
        n = self.u8()
        if n == 0:
            raise MalformedFrameError("empty identifier")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedFrameError("identifier is not UTF-8") from exc

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MalformedFrameError(f"{len(self.data) - self.pos} trailing bytes")


# -- payloads -------------------------------------------------------------------


def encode_payload(payload: Payload) -> tuple[FrameType, bytes]:
    """The frame type and payload bytes of ``payload``."""
    if isinstance(payload, Hello):
        if len(payload.nonce) != NONCE_LEN or len(payload.echo) != NONCE_LEN:
            raise ValueError("nonces are 32 bytes")
        if len(payload.kx) != KX_LEN:
            raise ValueError(f"key exchange key is {KX_LEN} bytes")
        return FrameType.HELLO, payload.nonce + payload.echo + payload.kx
    if isinstance(payload, Vector):
        if len(payload.entries) > 0xFFFF:
            raise ValueError("too many kiosks in a vector")
        parts = [_SEQ.pack(payload.hlc), _U16.pack(len(payload.entries))]
        for kiosk in sorted(payload.entries):
            parts += [_str8(kiosk), _SEQ.pack(payload.entries[kiosk])]
        if len(payload.links) > 255:
            raise ValueError("too many links in a vector")
        parts.append(bytes([len(payload.links)]))
        parts += [_str8(k) for k in payload.links]
        if len(payload.revoked) > 255:
            raise ValueError("too many revocations in a vector")
        parts.append(bytes([len(payload.revoked)]))
        for kiosk, upto in payload.revoked:
            parts += [_str8(kiosk), _SEQ.pack(upto)]
        return FrameType.VECTOR, b"".join(parts)
    if isinstance(payload, Marks):
        if len(payload.marks) > MAX_MARKS_PER_FRAME:
            raise ValueError(f"at most {MAX_MARKS_PER_FRAME} marks per frame")
        parts = [_U16.pack(len(payload.marks))]
        for mark in payload.marks:
            raw = mark.to_bytes()
            parts += [_U16.pack(len(raw)), raw]
        return FrameType.MARKS, b"".join(parts)
    return FrameType.BYE, _str8(payload.reason[:200] or "-")


def decode_payload(ftype: FrameType, data: bytes) -> Payload:
    """Decode a verified frame's payload; MalformedFrameError on anything off."""
    r = _Reader(data)
    out: Payload
    if ftype is FrameType.HELLO:
        out = Hello(nonce=r.take(NONCE_LEN), echo=r.take(NONCE_LEN), kx=r.take(KX_LEN))
    elif ftype is FrameType.VECTOR:
        hlc = r.u64()
        entries: dict[str, int] = {}
        for _ in range(r.u16()):
            kiosk = r.str8()
            seq = r.u64()
            if kiosk in entries or seq >= 2**63:
                raise MalformedFrameError(f"bad vector entry for {kiosk!r}")
            entries[kiosk] = seq
        links = tuple(r.str8() for _ in range(r.u8()))
        revoked = tuple((r.str8(), r.u64()) for _ in range(r.u8()))
        if any(upto >= 2**63 for _k, upto in revoked):
            raise MalformedFrameError("bad revocation entry")
        out = Vector(hlc=hlc, entries=entries, links=links, revoked=revoked)
    elif ftype is FrameType.MARKS:
        count = r.u16()
        if count > MAX_MARKS_PER_FRAME:
            raise MalformedFrameError(f"{count} marks in one frame")
        marks = []
        for _ in range(count):
            raw = r.take(r.u16())
            try:
                marks.append(Mark.from_bytes(raw))
            except MarkError as exc:
                raise MalformedFrameError(f"mark does not decode: {exc}") from exc
        out = Marks(tuple(marks))
    else:
        out = Bye(reason=r.str8())
    r.end()
    return out


# -- frames ---------------------------------------------------------------------


def encode_frame(envelope: Envelope, payload: Payload, key: SigningKey,
                 channel: Channel | None = None, *, version: int = PROTOCOL_VERSION) -> bytes:
    """Sign and frame ``payload`` from ``envelope.sender`` (whose key ``key`` is),
    sealed with ``channel`` (every frame of a session; None only for the HELLOs).
    ``version`` goes in the header; only tests standing in for another release set it."""
    ftype, data = encode_payload(payload)
    if channel is not None:
        data = channel.seal(data)
    if len(envelope.session) != 32:
        raise ValueError("session id is 32 bytes")
    body = (
        _str8(envelope.station)
        + _str8(envelope.sender)
        + envelope.session
        + _SEQ.pack(envelope.seq)
        + data
    )
    if len(body) > MAX_BODY:
        raise ValueError(f"frame body of {len(body)} bytes exceeds {MAX_BODY}")
    head = _HEADER.pack(MAGIC, version, int(ftype), len(body))
    signature = key.sign(DOMAIN + head + body).signature
    return head + body + signature


class FrameDecoder:
    """Incremental framing: feed any chunks of a byte stream, get whole frames out.

    Framing errors (bad magic, type, length, a frame other than a HELLO on
    another protocol version) raise :class:`MalformedFrameError`; the stream
    is then unusable (there is no resynchronisation on a TCP stream) and the
    caller closes the connection. A HELLO on another version is passed on, so
    that :func:`verify_raw` can name the kiosk and both versions.
    """

    def __init__(self, max_body: int = MAX_BODY, version: int = PROTOCOL_VERSION) -> None:
        self._buf = bytearray()
        #: Largest body accepted; a connection lowers it until the handshake is done.
        self.max_body = max_body
        #: The protocol version this kiosk speaks (see the class docstring).
        self.version = version

    def feed(self, data: bytes) -> list[RawFrame]:
        """Append ``data``; return every frame now complete, in order."""
        self._buf += data
        frames: list[RawFrame] = []
        while len(self._buf) >= HEADER_LEN:
            magic, version, ftype, length = _HEADER.unpack_from(self._buf)
            if magic != MAGIC:
                raise MalformedFrameError(f"bad magic {bytes(magic).hex()}")
            if version != self.version and ftype != FrameType.HELLO:
                raise MalformedFrameError(
                    f"protocol version {version} {_type_name(ftype)} frame, expected "
                    f"{self.version}"
                )
            try:
                kind = FrameType(ftype)
            except ValueError as exc:
                raise MalformedFrameError(f"unknown frame type {ftype}") from exc
            if length > self.max_body:
                raise MalformedFrameError(f"body length {length} exceeds {self.max_body}")
            total = HEADER_LEN + length + SIG_LEN
            if len(self._buf) < total:
                break
            head_body = bytes(self._buf[: HEADER_LEN + length])
            signature = bytes(self._buf[HEADER_LEN + length : total])
            del self._buf[:total]
            frames.append(_split(kind, version, head_body, signature))
        return frames

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)


def _type_name(ftype: int) -> str:
    try:
        return FrameType(ftype).name
    except ValueError:
        return f"type-{ftype}"


def _split(kind: FrameType, version: int, head_body: bytes, signature: bytes) -> RawFrame:
    r = _Reader(head_body[HEADER_LEN:])
    station = r.str8()
    sender = r.str8()
    session = r.take(32)
    seq = r.u64()
    payload = head_body[HEADER_LEN + r.pos :]
    return RawFrame(
        type=kind,
        envelope=Envelope(station=station, sender=sender, session=session, seq=seq),
        payload=payload,
        signed=DOMAIN + head_body,
        signature=signature,
        version=version,
    )


def open_frame(raw: RawFrame, station: str, trusted: Mapping[str, VerifyKey],
               channel: Channel | None = None, *, version: int = PROTOCOL_VERSION) -> Frame:
    """Check station and signer, verify the signature and the protocol version,
    then unseal and decode the payload.

    The payload of an unverified frame, or of one on another protocol version,
    is never decrypted nor decoded: an attacker gets no parser surface beyond
    the envelope, and a kiosk on another release is never misread.
    """
    verify_raw(raw, station, trusted, version=version)
    return unseal_frame(raw, channel)


def verify_raw(raw: RawFrame, station: str, trusted: Mapping[str, VerifyKey], *,
               version: int = PROTOCOL_VERSION) -> None:
    """The first half of :func:`open_frame`: station, signer, signature, then version.

    The version is checked after the signature so that only a listed kiosk,
    not anyone on the station network, can be reported as being on another
    release (:class:`VersionMismatchError`).
    """
    env = raw.envelope
    if env.station != station:
        raise PeerProtocolError(
            "wrong-station", f"frame for station {env.station!r}", sender=env.sender
        )
    key = trusted.get(env.sender)
    if key is None:
        raise PeerProtocolError(
            "untrusted-sender", f"{env.sender!r} is not in the roll package", sender=env.sender
        )
    try:
        key.verify(raw.signed, raw.signature)
    except BadSignatureError as exc:
        raise PeerProtocolError(
            "bad-signature", f"frame not signed by {env.sender!r}", sender=env.sender
        ) from exc
    if raw.version != version:
        raise VersionMismatchError(env.sender, raw.version, version)


def unseal_frame(raw: RawFrame, channel: Channel | None) -> Frame:
    """The second half of :func:`open_frame`, for a frame already verified: the
    session's next sealed payload (``channel``), decoded."""
    data = raw.payload
    if channel is not None:
        try:
            data = channel.open(data)
        except ChannelError as exc:
            raise PeerProtocolError("undecryptable", str(exc), sender=raw.envelope.sender) from exc
    return Frame(type=raw.type, envelope=raw.envelope, payload=decode_payload(raw.type, data))


def session_id(initiator: str, responder: str, nonce_i: bytes, nonce_r: bytes) -> bytes:
    """The 32-byte id binding a session to both kiosks and both fresh nonces."""
    h = hashlib.blake2b(digest_size=32, person=b"kesp-peer-sess")
    for part in (SESSION_DOMAIN, _str8(initiator), _str8(responder), nonce_i, nonce_r):
        h.update(part)
    return h.digest()


def chunks(marks: Sequence[Mark], size: int = MAX_MARKS_PER_FRAME) -> list[tuple[Mark, ...]]:
    """Split ``marks`` into frame-sized batches, in order."""
    return [tuple(marks[i : i + size]) for i in range(0, len(marks), size)]
