"""The peer wire codec: byte vectors, round trips, framing faults, verification."""

from __future__ import annotations

import os
import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from agent.peers.channel import Channel, KxKeys
from agent.peers.parameters import MAX_MARKS_PER_FRAME
from agent.peers.wire import (
    DOMAIN,
    HEADER_LEN,
    NO_SESSION,
    PROTOCOL_VERSION,
    SIG_LEN,
    Bye,
    Envelope,
    FrameDecoder,
    FrameType,
    Hello,
    MalformedFrameError,
    Marks,
    PeerProtocolError,
    Vector,
    VersionMismatchError,
    encode_frame,
    open_frame,
    session_id,
)
from agent.station.marks import Mark
from hardware_sim.fuzz import mutate_peer_hello

KEY = SigningKey(bytes(range(32)))
OTHER = SigningKey(bytes(range(1, 33)))
TRUSTED = {"kiosk-1": KEY.verify_key}
ENV = Envelope("st-1", "kiosk-1", bytes(range(32)), 7)


def _mark(voter: int, seq: int) -> Mark:
    hlc = (1_700_000_000_000 << 16) | seq
    unsigned = Mark(voter, "kiosk-1", seq, "identify", f"S-{voter}", hlc)
    return Mark(
        unsigned.voter, unsigned.kiosk, seq, unsigned.method, unsigned.slip_serial,
        unsigned.hlc, KEY.sign(unsigned.signed_bytes()).signature,
    )


def _one(data: bytes) -> PeerProtocolError | object:
    frames = FrameDecoder().feed(data)
    assert len(frames) == 1
    return open_frame(frames[0], "st-1", TRUSTED)


def test_hello_known_bytes() -> None:
    data = encode_frame(Envelope("st-1", "kiosk-1", NO_SESSION, 0), Hello(bytes(32) + b""), KEY)
    body_len = 1 + 4 + 1 + 7 + 32 + 8 + 64 + 32  # nonce, echo, key exchange key
    assert data[:HEADER_LEN] == b"KP\x02\x01" + struct.pack(">I", body_len)
    assert data[HEADER_LEN : HEADER_LEN + 13] == b"\x04st-1\x07kiosk-1"
    assert len(data) == HEADER_LEN + body_len + SIG_LEN


@pytest.mark.parametrize(
    "payload",
    [
        Hello(os.urandom(32), os.urandom(32)),
        Hello(os.urandom(32), os.urandom(32), os.urandom(32)),
        Vector(123, {"kiosk-1": 5, "kiosk-2": 0}, ("kiosk-2",)),
        Vector(9, {"kiosk-1": 5}, (), (("kiosk-3", 17),)),
        Vector(0, {}),
        Marks((_mark(1, 1), _mark(2, 2))),
        Marks(()),
        Bye("stopping"),
    ],
)
def test_round_trip(payload: object) -> None:
    data = encode_frame(ENV, payload, KEY)  # type: ignore[arg-type]
    frame = _one(data)
    assert frame.payload == payload  # type: ignore[union-attr]
    assert frame.envelope == ENV  # type: ignore[union-attr]


def test_byte_at_a_time_and_back_to_back() -> None:
    stream = encode_frame(ENV, Vector(1, {"a": 1}), KEY) + encode_frame(ENV, Bye("x"), KEY)
    dec = FrameDecoder()
    got = []
    for b in stream:
        got += dec.feed(bytes([b]))
    assert [f.type for f in got] == [FrameType.VECTOR, FrameType.BYE]
    assert dec.buffered == 0
    assert got[0].size + got[1].size == len(stream)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: b"XX" + d[2:], "bad magic"),
        (lambda d: d[:2] + b"\x09" + d[3:], "protocol version"),
        (lambda d: d[:3] + b"\x63" + d[4:], "unknown frame type"),
        (lambda d: d[:4] + struct.pack(">I", 1 << 24) + d[8:], "exceeds"),
    ],
)
def test_framing_faults(mutate: object, message: str) -> None:
    data = encode_frame(ENV, Bye("x"), KEY)
    with pytest.raises(MalformedFrameError, match=message):
        FrameDecoder().feed(mutate(data))  # type: ignore[operator]


def test_signature_station_and_signer_are_checked() -> None:
    data = bytearray(encode_frame(ENV, Vector(1, {"kiosk-1": 3}), KEY))
    data[HEADER_LEN + 60] ^= 1  # inside the payload
    with pytest.raises(PeerProtocolError) as exc:
        _one(bytes(data))
    assert exc.value.reason == "bad-signature"
    with pytest.raises(PeerProtocolError) as exc:
        _one(encode_frame(ENV, Bye("x"), OTHER))
    assert exc.value.reason == "bad-signature" and exc.value.sender == "kiosk-1"
    foreign = Envelope("st-2", "kiosk-1", ENV.session, 1)
    with pytest.raises(PeerProtocolError) as exc:
        _one(encode_frame(foreign, Bye("x"), KEY))
    assert exc.value.reason == "wrong-station"
    stranger = Envelope("st-1", "kiosk-9", ENV.session, 1)
    with pytest.raises(PeerProtocolError) as exc:
        _one(encode_frame(stranger, Bye("x"), OTHER))
    assert exc.value.reason == "untrusted-sender"


def test_signed_payload_that_does_not_decode_is_malformed() -> None:
    # A listed kiosk signing garbage (bug or compromise) is still refused, typed.
    from agent.peers import wire

    head_body = bytearray(encode_frame(ENV, Bye("x"), KEY)[:-SIG_LEN])
    head_body[3] = FrameType.VECTOR  # claims VECTOR, carries a BYE payload
    sig = KEY.sign(wire.DOMAIN + bytes(head_body)).signature
    with pytest.raises(MalformedFrameError, match=r"truncated|trailing"):
        _one(bytes(head_body) + sig)


def test_marks_frame_limits() -> None:
    with pytest.raises(ValueError, match="at most"):
        encode_frame(ENV, Marks(tuple(_mark(v, v) for v in range(1, MAX_MARKS_PER_FRAME + 2))), KEY)


def test_session_id_binds_both_nonces_and_both_kiosks() -> None:
    a, b = os.urandom(32), os.urandom(32)
    base = session_id("kiosk-1", "kiosk-2", a, b)
    assert len(base) == 32
    assert base != session_id("kiosk-2", "kiosk-1", a, b)
    assert base != session_id("kiosk-1", "kiosk-2", b, a)
    assert base != session_id("kiosk-1", "kiosk-3", a, b)
    assert base == session_id("kiosk-1", "kiosk-2", a, b)


@given(
    entries=st.dictionaries(
        st.text(min_size=1, max_size=20).filter(lambda s: len(s.encode()) <= 255),
        st.integers(0, 2**63 - 1),
        max_size=20,
    ),
    hlc=st.integers(0, 2**64 - 1),
)
def test_vector_round_trip_property(entries: dict[str, int], hlc: int) -> None:
    v = Vector(hlc, entries, tuple(sorted(entries))[:3])
    frame = _one(encode_frame(ENV, v, KEY))
    assert frame.payload == v  # type: ignore[union-attr]


@given(st.binary(max_size=400))
def test_garbage_never_escapes_as_another_exception(data: bytes) -> None:
    try:
        for raw in FrameDecoder().feed(data):
            open_frame(raw, "st-1", TRUSTED)
    except PeerProtocolError:
        pass


def _channels() -> tuple[Channel, Channel]:
    sid = bytes(range(32))
    a, b = KxKeys(), KxKeys()
    return (a.channel(b.public, initiator=True, session=sid),
            b.channel(a.public, initiator=False, session=sid))


def test_sealed_frames_round_trip_and_hide_the_marks() -> None:
    tx, rx = _channels()
    payloads = [Marks((_mark(1, 1), _mark(2, 2))), Vector(5, {"kiosk-1": 2}), Bye("x")]
    frames = [encode_frame(ENV, p, KEY, tx) for p in payloads]
    assert b"KMK1" not in frames[0] and b"S-1" not in frames[0]
    decoder = FrameDecoder()
    got = [open_frame(f, "st-1", TRUSTED, rx).payload for f in decoder.feed(b"".join(frames))]
    assert got == payloads


def test_sealed_frames_altered_replayed_or_of_another_session_are_refused() -> None:
    tx, rx = _channels()
    first = encode_frame(ENV, Bye("a"), KEY, tx)
    second = encode_frame(ENV, Bye("b"), KEY, tx)
    (raw1,) = FrameDecoder().feed(first)
    (raw2,) = FrameDecoder().feed(second)
    other_tx, other_rx = _channels()  # fresh ephemeral keys: another session's
    with pytest.raises(PeerProtocolError) as exc:
        open_frame(raw1, "st-1", TRUSTED, other_rx)
    assert exc.value.reason == "undecryptable"
    assert open_frame(raw1, "st-1", TRUSTED, rx).payload == Bye("a")
    with pytest.raises(PeerProtocolError) as exc:  # the same sealed payload again
        open_frame(raw1, "st-1", TRUSTED, rx)
    assert exc.value.reason == "undecryptable"
    # A listed key re-signing altered ciphertext still cannot get it decrypted.
    tx2, rx2 = _channels()
    good = encode_frame(ENV, Bye("c"), KEY, tx2)
    (raw,) = FrameDecoder().feed(good)
    body = bytearray(raw.signed[len(DOMAIN):])
    body[-1] ^= 1
    forged = bytes(body) + KEY.sign(DOMAIN + bytes(body)).signature
    (raw_forged,) = FrameDecoder().feed(forged)
    with pytest.raises(PeerProtocolError) as exc:
        open_frame(raw_forged, "st-1", TRUSTED, rx2)
    assert exc.value.reason == "undecryptable"
    assert open_frame(raw2, "st-1", TRUSTED, rx).payload == Bye("b")
    del other_tx


# -- protocol versions ------------------------------------------------------------


def _hello_of_version(version: int, payload: bytes, key: SigningKey = KEY,
                      station: str = "st-1") -> bytes:
    """A HELLO as a release speaking ``version`` frames it: the frozen header,
    envelope and signature around whatever payload that release puts in it."""
    body = bytes([len(station)]) + station.encode() + b"\x07kiosk-1" + NO_SESSION + bytes(8)
    body += payload
    head = b"KP" + bytes([version, FrameType.HELLO]) + struct.pack(">I", len(body))
    return head + body + key.sign(DOMAIN + head + body).signature


def test_last_seasons_hello_is_refused_as_an_older_version_naming_both() -> None:
    # Last season's release (v1): HELLO = nonce | echo, no key exchange key. Read
    # as v2 it would be "truncated"; now it is refused for what it is.
    with pytest.raises(VersionMismatchError) as exc:
        _one(_hello_of_version(1, os.urandom(64)))
    err = exc.value
    assert (err.reason, err.sender, err.theirs, err.ours) == ("version-mismatch", "kiosk-1", 1, 2)
    assert err.detail == "'kiosk-1' speaks an older peer protocol (v1, this kiosk v2)"


def test_a_future_versions_hello_is_refused_before_its_payload_is_read() -> None:
    # v3 may have changed the HELLO entirely; nothing of it is decoded (this
    # payload would be "trailing bytes" as v2).
    with pytest.raises(VersionMismatchError) as exc:
        _one(_hello_of_version(3, os.urandom(500)))
    assert exc.value.theirs == 3 and "a newer peer protocol (v3, this kiosk v2)" in str(exc.value)
    # A tester's stand-in for that release: our own codec told to speak v3.
    stand_in = encode_frame(ENV, Hello(os.urandom(32)), KEY, version=3)
    with pytest.raises(VersionMismatchError):
        _one(stand_in)
    (raw,) = FrameDecoder(version=3).feed(stand_in)
    assert open_frame(raw, "st-1", TRUSTED, version=3).payload.nonce  # type: ignore[union-attr]


def test_another_version_is_named_only_for_a_verified_listed_kiosk() -> None:
    # Anyone on the station network could claim a version: only a HELLO signed
    # by the listed key is reported as a mismatch, so the operator is never told
    # to update a kiosk on a forged claim.
    for data, reason in [
        (_hello_of_version(1, bytes(64), key=OTHER), "bad-signature"),
        (_hello_of_version(1, bytes(64), station="st-2"), "wrong-station"),
    ]:
        with pytest.raises(PeerProtocolError) as exc:
            _one(data)
        assert exc.value.reason == reason


@pytest.mark.parametrize("ftype", [FrameType.VECTOR, FrameType.MARKS, FrameType.BYE, 99])
def test_other_frames_of_another_version_are_malformed_at_framing(ftype: int) -> None:
    head_body = bytearray(encode_frame(ENV, Bye("x"), KEY)[:-SIG_LEN])
    head_body[2:4] = bytes([3, ftype])
    data = bytes(head_body) + KEY.sign(DOMAIN + bytes(head_body)).signature
    with pytest.raises(MalformedFrameError, match=r"protocol version 3 .* expected 2"):
        FrameDecoder().feed(data)


@given(version=st.integers(0, 255).filter(lambda v: v != PROTOCOL_VERSION),
       payload=st.binary(max_size=900))
def test_any_other_version_hello_is_a_mismatch_whatever_it_carries(
    version: int, payload: bytes
) -> None:
    with pytest.raises(VersionMismatchError) as exc:
        _one(_hello_of_version(version, payload))
    assert exc.value.theirs == version and exc.value.sender == "kiosk-1"


def test_fuzzed_hellos_of_every_version_are_refused_cleanly() -> None:
    """Mutated HELLOs (v1, v2, v3): only typed refusals, and a payload is
    decoded only from a verified HELLO of this kiosk's version."""
    rng = random.Random(20261206)
    seeds = [_hello_of_version(1, os.urandom(64)),
             encode_frame(Envelope("st-1", "kiosk-1", NO_SESSION, 0),
                          Hello(os.urandom(32), kx=os.urandom(32)), KEY),
             _hello_of_version(3, os.urandom(120))]
    outcomes: dict[str, int] = {}
    for i in range(10_000):
        data = mutate_peer_hello(rng, seeds[i % 3])
        try:
            for raw in FrameDecoder(max_body=1024).feed(data):
                frame = open_frame(raw, "st-1", TRUSTED)
                assert raw.version == PROTOCOL_VERSION and isinstance(frame.payload, Hello)
                outcomes["opened"] = outcomes.get("opened", 0) + 1
        except PeerProtocolError as exc:
            outcomes[exc.reason] = outcomes.get(exc.reason, 0) + 1
    # The mutations reach every stage: framing, signature and the version check.
    assert {"malformed", "bad-signature", "version-mismatch"} <= set(outcomes)
