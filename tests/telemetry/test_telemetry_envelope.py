"""Envelope codec: canonical bytes, signature over exact bytes, decode checks, privacy guard."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from agent.telemetry.envelope import (
    Envelope,
    EnvelopeError,
    PayloadError,
    PersonalDataError,
    canonical_json,
    check_payload,
    encode_body,
    open_signed,
    parse_topic,
    seal,
)
from agent.telemetry.parameters import MAX_MESSAGE_BYTES
from agent.telemetry.session import _splice_payload

KEY = SigningKey(bytes(range(32)))


def _env(**kw: object) -> Envelope:
    base: dict[str, object] = dict(
        device="osh-1001-k1", station="osh-1001", district="osh", boot=3, seq=7, n=42,
        wall_ms=1_795_000_000_000, mono_ms=123_456, sent_ms=1_795_000_000_500,
        type="turnout", historical=False,
        payload={"identified": 5, "refused": 1, "not_identified": 0, "manual": 0,
                 "by_hour": {"08": 5}},
    )
    base.update(kw)
    return Envelope(**base)  # type: ignore[arg-type]


def test_known_vector_is_canonical() -> None:
    body = encode_body(_env())
    assert body == (
        b'{"boot":3,"dev":"osh-1001-k1","dst":"osh","hist":false,"mono":123456,"n":42,'
        b'"p":{"by_hour":{"08":5},"identified":5,"manual":0,"not_identified":0,"refused":1},'
        b'"sent":1795000000500,"seq":7,"stn":"osh-1001","t":1795000000000,"type":"turnout","v":1}'
    )
    assert canonical_json({"b": "Ү", "a": 1}) == '{"a":1,"b":"Ү"}'.encode()


def test_round_trip_and_signature_over_exact_bytes() -> None:
    env = _env()
    data = seal(env, KEY)
    assert len(data) == 64 + len(encode_body(env))
    assert open_signed(data, KEY.verify_key) == env
    # one flipped bit anywhere in body or signature -> bad_signature
    for pos in (0, 63, 64, len(data) - 2):
        altered = bytearray(data)
        altered[pos] ^= 0x01
        with pytest.raises(EnvelopeError) as exc:
            open_signed(bytes(altered), KEY.verify_key)
        assert exc.value.reason == "bad_signature"
    with pytest.raises(EnvelopeError, match="bad_signature"):
        open_signed(data, SigningKey.generate().verify_key)


def test_spliced_payload_equals_full_encoding() -> None:
    env = _env()
    head = _env(payload={})
    assert _splice_payload(head, canonical_json(env.payload)) == encode_body(env)


_KEYS = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=8)


@given(st.dictionaries(_KEYS, st.integers(0, 10**6) | st.booleans() | st.none(), max_size=6))
def test_any_clean_payload_round_trips(payload: dict[str, object]) -> None:
    try:
        check_payload(payload)
    except PersonalDataError:
        return
    env = _env(type="event", payload=payload)
    assert open_signed(seal(env, KEY), KEY.verify_key).payload == payload


def test_decode_rejects_malformed_bodies() -> None:
    def signed(body: bytes) -> bytes:
        return KEY.sign(body).signature + body

    good = json.loads(encode_body(_env()))
    cases = {
        b"not json": "malformed",
        b"[1,2]": "malformed",
        canonical_json({**good, "v": 2}): "bad_version",
        canonical_json({**good, "seq": 256}): "malformed",
        canonical_json({**good, "n": -1}): "malformed",
        canonical_json({**good, "hist": 1}): "malformed",
        canonical_json({**good, "type": "hello"}): "malformed",
        canonical_json({**good, "extra": 1}): "malformed",
        canonical_json({**good, "dev": "Bad Id"}): "malformed",
        canonical_json({**good, "p": []}): "malformed",
        b"\xff\xfe": "malformed",
    }
    for body, reason in cases.items():
        with pytest.raises(EnvelopeError) as exc:
            open_signed(signed(body), KEY.verify_key)
        assert exc.value.reason == reason, body
    with pytest.raises(EnvelopeError, match="too short"):
        open_signed(b"x" * 10, KEY.verify_key)
    with pytest.raises(EnvelopeError) as exc:
        open_signed(b"x" * (MAX_MESSAGE_BYTES + 1), KEY.verify_key)
    assert exc.value.reason == "oversized"


def test_topics() -> None:
    assert _env().topic == "kesp/v1/osh/osh-1001/osh-1001-k1/turnout"
    parts = parse_topic("kesp/v1/osh/osh-1001/osh-1001-k1/health")
    assert (parts.district, parts.station, parts.device, parts.type) == (
        "osh", "osh-1001", "osh-1001-k1", "health")
    for bad in ("kesp/v1/osh/s/d", "kesp/v2/osh/s/d/event", "kesp/v1/osh/s/D!/event",
                "kesp/v1/osh/s/d/weather"):
        with pytest.raises(EnvelopeError) as exc:
            parse_topic(bad)
        assert exc.value.reason == "bad_topic"


@pytest.mark.parametrize("payload", [
    {"event": "slip.printed", "full_name": "Asan Usenov"},
    {"event": "x", "Document-Number": "AN1234567"},
    {"event": "x", "detail": {"template": "00ff"}},
    {"event": "x", "items": [{"surname": "y"}]},
    {"event": "x", "ref": "22010199000123"},  # 14-digit personal number
    {"event": "x", "line": "IDKGZAN12345678<<<<<<<<<<<<<<<<"},  # MRZ run
])
def test_personal_data_is_refused(payload: dict[str, object]) -> None:
    with pytest.raises(PersonalDataError):
        check_payload(payload)


def test_unencodable_payloads_are_refused() -> None:
    cases: list[dict[object, object]] = [
        {"x": float("nan")}, {"x": b"bytes"}, {1: 2}, {"x": 2**70},
        {"a": {"b": {"c": {"d": {"e": {"f": {"g": {}}}}}}}}]
    for bad in cases:
        with pytest.raises(PayloadError) as exc:
            check_payload(bad)
        assert not isinstance(exc.value, PersonalDataError)
    with pytest.raises(PayloadError, match="limit"):
        seal(_env(type="event", payload={"event": "x", "blob": "a" * MAX_MESSAGE_BYTES}), KEY)
