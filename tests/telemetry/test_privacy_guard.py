"""The telemetry privacy guard: personal numbers inside text and as integers,
Russian and Kyrgyz key names (issue 20, item 4)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.telemetry.envelope import PersonalDataError, check_payload

PINS = st.integers(min_value=10**13, max_value=10**14 - 1)
SEPARATORS = st.text(alphabet=" :,;.()[]/#=№-_'\"\n", max_size=3)
WORDS = st.text(alphabet=st.characters(categories=("L", "Zs", "P")), max_size=20)


@pytest.mark.parametrize("payload", [
    {"event": "x", "note": "voter 21234567890123"},
    {"event": "x", "n": 21234567890123},
    {"event": "x", "ФИО": "-"},
    {"event": "x", "Фамилия": "-"},
    {"event": "x", "номер паспорта": "-"},
    {"event": "x", "аты-жөнү": "-"},
    {"event": "x", "ЖИН": "-"},
    {"event": "x", "туулган күнү": "-"},
])
def test_findings_of_the_review_are_refused(payload: dict[str, object]) -> None:
    with pytest.raises(PersonalDataError):
        check_payload(payload)


@given(pin=PINS, before=WORDS, sep1=SEPARATORS, sep2=SEPARATORS, after=WORDS,
       negative=st.booleans())
def test_a_personal_number_is_refused_wherever_it_hides(
    pin: int, before: str, sep1: str, sep2: str, after: str, negative: bool
) -> None:
    text = f"{before}{sep1 or ' '}{pin}{sep2 or ' '}{after}"
    with pytest.raises(PersonalDataError):
        check_payload({"event": "x", "note": text})
    with pytest.raises(PersonalDataError):
        check_payload({"event": "x", "list": [1, {"deep": -pin if negative else pin}]})


@given(data=st.binary(min_size=1, max_size=64), ms=st.integers(10**12, 10**13 - 1),
       serial=st.integers(1, 99_999))
def test_hashes_timestamps_and_serials_pass(data: bytes, ms: int, serial: int) -> None:
    """Wall-clock ms (13 digits until 2286), HLC stamps (18 digits), hashes, serials."""
    check_payload({
        "event": "slip-printed", "roll_hash": hashlib.sha256(data).hexdigest(),
        "t": ms, "hlc": (ms << 16) | 3, "slip_serial": f"s-0001-kiosk-0001-a-{serial:05d}",
    })
