"""The roll package codec: round trip, and every refusal with its precise reason."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from agent.roll.package import (
    FORMAT_VERSION,
    MAGIC,
    NAMELESS_VERSION,
    Finger,
    Kiosk,
    PackageError,
    Roll,
    Voter,
    build_package,
    open_package,
    package_hash,
    peek_header,
)
from provisioning.synthetic import synthetic_voters

CEC = SigningKey(b"\x01" * 32)
K1 = PrivateKey(b"\x02" * 32)
K2 = PrivateKey(b"\x03" * 32)
STRANGER = PrivateKey(b"\x04" * 32)


def kiosk(device_id: str, box: PrivateKey) -> Kiosk:
    verify = bytes(SigningKey.generate().verify_key).hex()
    return Kiosk(device_id, verify, bytes(box.public_key).hex())


def make_roll(n: int = 12, **changes: object) -> Roll:
    roll = Roll(
        election_id="pres-2026",
        station_id="s-1017",
        district="osh-city",
        roll_version=3,
        created="2026-11-27T05:00:00Z",
        kiosks=(kiosk("kiosk-a", K1), kiosk("kiosk-b", K2)),
        voters=synthetic_voters(n, seed=7),
    )
    return dataclasses.replace(roll, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def roll() -> Roll:
    return make_roll()


@pytest.fixture(scope="module")
def package(roll: Roll) -> bytes:
    return build_package(roll, CEC)


def reason(exc: pytest.ExceptionInfo[PackageError]) -> str:
    return exc.value.reason


def test_round_trip_for_every_recipient(roll: Roll, package: bytes) -> None:
    assert open_package(package, CEC.verify_key, K1, expected_station="s-1017") == roll
    assert open_package(package, CEC.verify_key, K2) == roll
    assert package[:8] == MAGIC
    assert struct.unpack(">H", package[8:10])[0] == NAMELESS_VERSION  # no names: old readers


def test_station_and_district_names_need_version_2(roll: Roll) -> None:
    named = dataclasses.replace(roll, station_name="№ 5012, Ош ш., 5-мектеп",
                                district_name="Ош шаардык / Ошский городской")
    package = build_package(named, CEC)
    assert struct.unpack(">H", package[8:10])[0] == FORMAT_VERSION == 2
    assert open_package(package, CEC.verify_key, K1) == named
    header = peek_header(package)
    assert header.station_name == named.station_name and header.district_name.startswith("Ош")
    with pytest.raises(PackageError) as exc:
        build_package(dataclasses.replace(roll, station_name="a\x1bb"), CEC)
    assert reason(exc) == "invalid-roll" and "station_name" in str(exc.value)


def test_kyrgyz_names_and_templates_survive_byte_exact(roll: Roll, package: bytes) -> None:
    got = open_package(package, CEC.verify_key, K1)
    assert "Ө" in got.voters[0].name_ky and "Ң" in got.voters[0].name_ky
    assert got.voters[5].fingers[9].template == roll.voters[5].fingers[9].template
    assert got.voters[5].fingers[9].position == 10


def test_body_is_encrypted(roll: Roll, package: bytes) -> None:
    doc = roll.voters[0].document.encode()
    assert doc not in package
    assert roll.voters[0].fingers[0].template not in package
    assert "Нурланович".encode() not in package


def test_peek_header_without_device_key(roll: Roll, package: bytes) -> None:
    h = peek_header(package)
    assert (h.station_id, h.election_id, h.district) == ("s-1017", "pres-2026", "osh-city")
    assert (h.roll_version, h.voter_count, h.created) == (3, 12, "2026-11-27T05:00:00Z")
    assert h.signer == bytes(CEC.verify_key).hex()
    assert [k.device_id for k in h.recipients] == ["kiosk-a", "kiosk-b"]
    assert h.recipients == roll.kiosks
    assert peek_header(package, CEC.verify_key) == h


def test_package_hash_is_sha256_of_exact_bytes(package: bytes) -> None:
    import hashlib

    assert package_hash(package) == hashlib.sha256(package).hexdigest()
    # Two builds of the same roll are different packages (fresh keys, nonce).
    assert package_hash(build_package(make_roll(), CEC)) != package_hash(package)


def test_body_serialisation_is_deterministic(roll: Roll) -> None:
    from agent.roll.package import _encode_body

    assert _encode_body(roll.voters) == _encode_body(make_roll().voters)


@pytest.mark.parametrize("offset", [0, 9, 11, 20, 40, 200, -100, -70, -1])
def test_any_altered_byte_is_refused(package: bytes, offset: int) -> None:
    bad = bytearray(package)
    bad[offset] ^= 0x01
    with pytest.raises(PackageError) as exc:
        open_package(bytes(bad), CEC.verify_key, K1)
    assert reason(exc) in {"bad-magic", "unsupported-version", "bad-signature", "truncated",
                           "malformed", "wrong-signer"}


def test_every_byte_flip_in_header_and_tail_is_caught(package: bytes) -> None:
    """Flip each byte of the first 400 and last 100: none may open."""
    positions = [*range(400), *range(len(package) - 100, len(package))]
    for i in positions:
        bad = bytearray(package)
        bad[i] ^= 0x80
        with pytest.raises(PackageError):
            open_package(bytes(bad), CEC.verify_key, K1)


def test_altered_ciphertext_is_bad_signature_not_decrypt(package: bytes) -> None:
    bad = bytearray(package)
    bad[len(package) // 2] ^= 0xFF
    with pytest.raises(PackageError) as exc:
        open_package(bytes(bad), CEC.verify_key, K1)
    assert reason(exc) == "bad-signature"
    with pytest.raises(PackageError) as exc:
        peek_header(bytes(bad))
    assert reason(exc) == "bad-signature"


def test_wrong_signer(roll: Roll) -> None:
    forged = build_package(roll, SigningKey(b"\x09" * 32))
    with pytest.raises(PackageError, match="not by the CEC key") as exc:
        open_package(forged, CEC.verify_key, K1)
    assert reason(exc) == "wrong-signer"
    with pytest.raises(PackageError) as exc:
        peek_header(forged, CEC.verify_key)
    assert reason(exc) == "wrong-signer"


def test_signer_key_swapped_in_header_is_bad_signature(package: bytes) -> None:
    """An attacker replacing the embedded signer key with the CEC's own still fails."""
    other = build_package(make_roll(), SigningKey(b"\x09" * 32))
    h = peek_header(other)
    at = other.index(bytes.fromhex(h.signer))
    swapped = other[:at] + bytes(CEC.verify_key) + other[at + 32 :]
    with pytest.raises(PackageError) as exc:
        open_package(swapped, CEC.verify_key, K1)
    assert reason(exc) == "bad-signature"


def test_wrong_device(package: bytes) -> None:
    with pytest.raises(PackageError, match="recipients: kiosk-a, kiosk-b") as exc:
        open_package(package, CEC.verify_key, STRANGER)
    assert reason(exc) == "not-addressed"


def test_wrong_station(package: bytes) -> None:
    with pytest.raises(PackageError, match=r"'s-1017'.*'s-2000'") as exc:
        open_package(package, CEC.verify_key, K1, expected_station="s-2000")
    assert reason(exc) == "wrong-station"


def test_truncated_and_extended(package: bytes) -> None:
    for cut in (0, 5, 15, 100, len(package) - 1):
        with pytest.raises(PackageError) as exc:
            open_package(package[:cut], CEC.verify_key, K1)
        assert reason(exc) in {"truncated", "bad-magic"}, cut
    with pytest.raises(PackageError) as exc:
        open_package(package + b"\x00", CEC.verify_key, K1)
    assert reason(exc) == "malformed"


def test_bad_magic_and_version(package: bytes) -> None:
    with pytest.raises(PackageError) as exc:
        peek_header(b"PK\x03\x04" + package[4:])
    assert reason(exc) == "bad-magic"
    with pytest.raises(PackageError, match="version 3") as exc:
        peek_header(package[:8] + b"\x00\x03" + package[10:])
    assert reason(exc) == "unsupported-version"


def test_malformed_body_signed_by_cec_is_caught() -> None:
    """A CEC bug producing a bad body is still refused, not half-read."""
    from agent.roll import package as rp

    roll = make_roll(2)
    good_body = rp._encode_body(roll.voters)
    # header claims 2 voters, body holds one: build by hand with the real primitives
    one = rp._encode_body(roll.voters[:1])
    assert one != good_body
    pkg = _build_with_body(roll, one)
    with pytest.raises(PackageError, match="header says 2 voters") as exc:
        open_package(pkg, CEC.verify_key, K1)
    assert reason(exc) == "malformed"
    pkg = _build_with_body(roll, good_body + b"\x00")
    with pytest.raises(PackageError, match="trailing") as exc:
        open_package(pkg, CEC.verify_key, K1)
    assert reason(exc) == "malformed"


def _build_with_body(roll: Roll, body: bytes) -> bytes:
    """Seal a hand-made body with the codec's own sealing stage (header claims the roll's count)."""
    from agent.roll import package as rp

    return rp._seal(roll, rp._validate_kiosks(roll.kiosks), body, len(roll.voters), CEC)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"station_id": "S 1017"}, "station_id"),
        ({"election_id": ""}, "election_id"),
        ({"created": "2026-11-27 05:00"}, "created"),
        ({"created": "2026-02-30T05:00:00Z"}, "real date"),
        ({"roll_version": -1}, "roll_version"),
        ({"kiosks": ()}, "no kiosks"),
    ],
)
def test_build_refuses_bad_roll(changes: dict[str, object], message: str) -> None:
    with pytest.raises(PackageError, match=message) as exc:
        build_package(make_roll(2, **changes), CEC)
    assert reason(exc) == "invalid-roll"


def test_build_refuses_bad_voters_and_kiosks() -> None:
    v = synthetic_voters(3, seed=1)
    cases: list[tuple[object, str]] = [
        ((v[1], v[0]), "strictly increasing"),
        ((v[0], dataclasses.replace(v[1], document=v[0].document)), "appears twice"),
        ((dataclasses.replace(v[0], document=""),), "document"),
        ((dataclasses.replace(v[0], name_ru=""),), "names"),
        ((dataclasses.replace(v[0], list_number=0),), "list number"),
        ((dataclasses.replace(v[0], fingers=(v[0].fingers[1], v[0].fingers[0])),), "positions"),
        ((dataclasses.replace(v[0], fingers=(Finger(11, v[0].fingers[0].template),)),), "1..10"),
        ((dataclasses.replace(v[0], fingers=(Finger(1, b"GARBAGE!"),)),), "ISO 19794-2"),
    ]
    for voters, message in cases:
        with pytest.raises(PackageError, match=message):
            build_package(make_roll(0, voters=voters), CEC)
    k = kiosk("kiosk-a", K1)
    for kiosks, message in [
        ((k, k), "listed twice"),
        ((k, dataclasses.replace(k, device_id="kiosk-z")), "shares its box key"),
        ((dataclasses.replace(k, box_key="zz" * 32),), "box_key"),
        ((dataclasses.replace(k, verify_key=k.verify_key.upper()),), "verify_key"),
    ]:
        with pytest.raises(PackageError, match=message):
            build_package(make_roll(1, kiosks=kiosks), CEC)


def test_voter_without_fingers_and_empty_roll_round_trip() -> None:
    v = Voter(1, "Асан", "Асан", "AN1234567", ())
    roll = make_roll(0, voters=(v,))
    assert open_package(build_package(roll, CEC), CEC.verify_key, K1) == roll
    empty = make_roll(0)
    assert open_package(build_package(empty, CEC), CEC.verify_key, K2).voters == ()


_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40
).filter(lambda s: s == s.strip() and len(s.encode()) <= 255)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 2**32 - 1),
            _text,
            _text,
            st.lists(st.binary(max_size=64), max_size=10),
        ),
        max_size=8,
        unique_by=lambda t: t[0],
    )
)
def test_round_trip_property(rows: list[tuple[int, str, str, list[bytes]]]) -> None:
    rows.sort(key=lambda r: r[0])
    voters = tuple(
        Voter(
            number,
            ky,
            ru,
            f"D{number}",
            tuple(Finger(i + 1, b"FMR\x00" + t) for i, t in enumerate(tpls)),
        )
        for number, ky, ru, tpls in rows
    )
    roll = make_roll(0, voters=voters)
    assert open_package(build_package(roll, CEC), CEC.verify_key, K1) == roll


def _voter_bytes(number: int, doc: bytes = b"D1", ky: bytes = b"a", ru: bytes = b"b",
                 fingers: bytes = b"\x00") -> bytes:
    return (struct.pack(">IB", number, len(doc)) + doc + struct.pack(">H", len(ky)) + ky
            + struct.pack(">H", len(ru)) + ru + fingers)


_FINGER = struct.pack(">BI", 1, 8) + b"FMR\x00 20\x00"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x00\x00", "shorter than its voter count"),
        (struct.pack(">I", 1) + _voter_bytes(1)[:7], "ends early"),
        (struct.pack(">I", 1) + _voter_bytes(1, fingers=b"\x01" + _FINGER[:-1]), "ends early"),
        (struct.pack(">I", 1) + _voter_bytes(1, ky=b"\xff\xfe"), "not UTF-8"),
        (struct.pack(">I", 2) + _voter_bytes(2) + _voter_bytes(1, doc=b"D2"), "after 2"),
        (struct.pack(">I", 1) + _voter_bytes(1, fingers=b"\x0b"), "11 fingers"),
        (struct.pack(">I", 1) + _voter_bytes(1, fingers=b"\x02" + _FINGER + _FINGER),
         "position 1 after 1"),
        (struct.pack(">I", 1) + _voter_bytes(1, fingers=b"\x01" + struct.pack(">BI", 0, 0)),
         "position 0 after 0"),
    ],
)
def test_malformed_bodies(body: bytes, message: str) -> None:
    """Signed by the CEC but inconsistent: refused with the place of the fault."""
    roll = make_roll(0, voters=(Voter(1, "a", "b", "D1", ()),))  # header only; body is ours
    from agent.roll import package as rp

    pkg = rp._seal(roll, rp._validate_kiosks(roll.kiosks), body, len(roll.voters), CEC)
    with pytest.raises(PackageError, match=message) as exc:
        open_package(pkg, CEC.verify_key, K1)
    assert reason(exc) == "malformed"
