"""ICAO 9303 MRZ parsing: the public specimens, every check digit, garbage."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.drivers.docreader.mrz import (
    MRZError,
    build_td1,
    build_td3,
    char_value,
    check_digit,
    parse_mrz,
)

TODAY = dt.date(2026, 11, 27)

# Doc 9303 Part 4 Appendix A (TD3) and Part 5 Appendix A (TD1) specimens.
TD3_SPECIMEN = (
    "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<",
    "L898902C36UTO7408122F1204159ZE184226B<<<<<10",
)
TD1_SPECIMEN = (
    "I<UTOD231458907<<<<<<<<<<<<<<<",
    "7408122F1204159UTO<<<<<<<<<<<6",
    "ERIKSSON<<ANNA<MARIA<<<<<<<<<<",
)
# Part 5, long document number D23145890734 (check digit 9) in the optional data.
TD1_LONG_NUMBER = (
    "I<UTOD23145890<7349<<<<<<<<<<<",
    "7408122F1204159UTO<<<<<<<<<<<6",
    "ERIKSSON<<ANNA<MARIA<<<<<<<<<<",
)


def test_check_digit_examples() -> None:
    assert check_digit("L898902C3") == "6"
    assert check_digit("740812") == "2"
    assert check_digit("120415") == "9"
    assert check_digit("ZE184226B<<<<<") == "1"
    assert check_digit("D23145890734") == "9"
    assert check_digit("") == "0"
    assert [char_value(c) for c in "09AZ<"] == [0, 9, 10, 35, 0]
    with pytest.raises(ValueError, match="not an MRZ character"):
        char_value("a")


def test_td3_specimen() -> None:
    m = parse_mrz("\n".join(TD3_SPECIMEN), today=TODAY)
    assert m.format == "td3" and m.document_code == "P" and m.issuing_state == "UTO"
    assert m.document_number == "L898902C3"
    assert (m.surname, m.given_names) == ("ERIKSSON", "ANNA MARIA")
    assert m.nationality == "UTO" and m.sex == "F"
    assert m.birth_date == dt.date(1974, 8, 12) and m.expiry_date == dt.date(2012, 4, 15)
    assert m.personal_number == "ZE184226B"


def test_td1_specimen() -> None:
    m = parse_mrz(TD1_SPECIMEN, today=TODAY)
    assert m.format == "td1" and m.document_code == "I" and m.document_number == "D23145890"
    assert (m.surname, m.given_names) == ("ERIKSSON", "ANNA MARIA")
    assert m.birth_date == dt.date(1974, 8, 12) and m.sex == "F"


def test_td1_long_document_number() -> None:
    m = parse_mrz(TD1_LONG_NUMBER, today=TODAY)
    assert m.document_number == "D23145890734" and m.optional_data == ""
    built = build_td1(
        document_number="D23145890734", surname="Eriksson", given_names="Anna Maria",
        birth_date="740812", expiry_date="120415", sex="F", issuing_state="UTO",
        nationality="UTO", document_code="I",
    )  # fmt: skip
    assert built == TD1_LONG_NUMBER


def test_builders_reproduce_the_specimens() -> None:
    assert build_td3(
        document_number="L898902C3", surname="Eriksson", given_names="Anna Maria",
        birth_date="740812", expiry_date="120415", sex="F", issuing_state="UTO",
        nationality="UTO", personal_number="ZE184226B",
    ) == TD3_SPECIMEN  # fmt: skip
    assert build_td1(
        document_number="D23145890", surname="Eriksson", given_names="Anna Maria",
        birth_date="740812", expiry_date="120415", sex="F", issuing_state="UTO",
        nationality="UTO", document_code="I",
    ) == TD1_SPECIMEN  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "line", "field"),
    [
        ((TD3_SPECIMEN[0], TD3_SPECIMEN[1][:9] + "7" + TD3_SPECIMEN[1][10:]), 2,
         "document_number.check"),
        ((TD3_SPECIMEN[0], TD3_SPECIMEN[1][:13] + "740813" + TD3_SPECIMEN[1][19:]), 2,
         "birth_date.check"),
        ((TD3_SPECIMEN[0], TD3_SPECIMEN[1][:27] + "0" + TD3_SPECIMEN[1][28:]), 2,
         "expiry_date.check"),
        ((TD3_SPECIMEN[0], TD3_SPECIMEN[1][:42] + "2" + TD3_SPECIMEN[1][43]), 2,
         "personal_number.check"),
        ((TD3_SPECIMEN[0], TD3_SPECIMEN[1][:43] + "1"), 2, "composite.check"),
        ((TD1_SPECIMEN[0], TD1_SPECIMEN[1][:29] + "5", TD1_SPECIMEN[2]), 2, "composite.check"),
        ((TD1_SPECIMEN[0][:14] + "8" + TD1_SPECIMEN[0][15:], *TD1_SPECIMEN[1:]), 1,
         "document_number.check"),
        ((TD1_SPECIMEN[0], TD1_SPECIMEN[1][:7] + "Q" + TD1_SPECIMEN[1][8:], TD1_SPECIMEN[2]),
         2, "sex"),
        ((TD1_SPECIMEN[0], TD1_SPECIMEN[1], "erIKSSON<<ANNA<MARIA<<<<<<<<<<"), 3, "charset"),
        (("X" + TD3_SPECIMEN[0][1:], TD3_SPECIMEN[1]), 1, "document_code"),
    ],
)  # fmt: skip
def test_errors_name_line_and_field(lines: tuple[str, ...], line: int, field: str) -> None:
    with pytest.raises(MRZError) as info:
        parse_mrz(lines, today=TODAY)
    assert (info.value.line, info.value.field) == (line, field)
    assert info.value.code == f"line{line}.{field}"


def test_layout_errors() -> None:
    with pytest.raises(MRZError, match="TD2"):
        parse_mrz(["I<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<", "D231458907UTO7408122F1204159<<<<<<<6"])
    with pytest.raises(MRZError, match=r"expected 3 lines of 30 or 2 lines of 44, got \(30, 30\)"):
        parse_mrz(TD1_SPECIMEN[:2])
    with pytest.raises(MRZError) as info:
        parse_mrz("")
    assert info.value.code == "layout"


def test_invalid_calendar_date_with_valid_check_digit() -> None:
    birth = "741312"  # month 13
    lines = build_td1(document_number="ID1234567", surname="ASANOV", given_names="BAKYT",
                      birth_date=birth, expiry_date="300101")  # fmt: skip
    with pytest.raises(MRZError) as info:
        parse_mrz(lines, today=TODAY)
    assert info.value.code == "line2.birth_date"


def test_unknown_birth_day_is_allowed() -> None:
    lines = build_td1(document_number="ID1234567", surname="ASANOV", given_names="",
                      birth_date="5401<<", expiry_date="300101")  # fmt: skip
    m = parse_mrz(lines, today=TODAY)
    assert m.birth_date is None and m.birth_date_raw == "5401<<" and m.given_names == ""


def test_century_resolution() -> None:
    lines = build_td3(document_number="AC1234567", surname="OMURBEKOV", given_names="ULAN",
                      birth_date="261231", expiry_date="991231")  # fmt: skip
    m = parse_mrz(lines, today=TODAY)
    assert m.birth_date == dt.date(1926, 12, 31)  # 2026-12-31 would be in the future
    assert m.expiry_date == dt.date(1999, 12, 31)
    lines = build_td3(document_number="AC1234567", surname="OMURBEKOV", given_names="ULAN",
                      birth_date="080101", expiry_date="360101")  # fmt: skip
    m = parse_mrz(lines, today=TODAY)
    assert m.birth_date == dt.date(2008, 1, 1) and m.expiry_date == dt.date(2036, 1, 1)


# ------------------------------------------------------------------ hypothesis

_mrz_text = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<", max_size=30)
_name = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=12)
_docnum = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=14)
_dates = st.dates(min_value=dt.date(1930, 1, 1), max_value=dt.date(2025, 12, 31))


@given(_mrz_text, st.integers(min_value=0, max_value=29), st.integers(min_value=1, max_value=9))
def test_single_digit_errors_are_always_caught(data: str, pos: int, delta: int) -> None:
    """Weights 7, 3, 1 are coprime with 10: changing one digit always changes the check."""
    data = data.ljust(pos + 1, "0")
    if not data[pos].isdigit():
        data = data[:pos] + "5" + data[pos + 1 :]
    changed = data[:pos] + str((int(data[pos]) + delta) % 10) + data[pos + 1 :]
    assert check_digit(changed) != check_digit(data)


@settings(max_examples=150)
@given(_docnum, _name, _name, _dates, st.sampled_from(["td1", "td3"]))
def test_build_then_parse_round_trips(
    number: str, surname: str, given_name: str, birth: dt.date, fmt: str
) -> None:
    expiry = dt.date(2031, 5, 17)
    if fmt == "td1":
        lines: tuple[str, ...] = build_td1(
            document_number=number, surname=surname, given_names=given_name,
            birth_date=birth, expiry_date=expiry, sex="M",
        )  # fmt: skip
    else:
        number = number[:9]
        lines = build_td3(
            document_number=number, surname=surname, given_names=given_name,
            birth_date=birth, expiry_date=expiry, sex="F",
        )  # fmt: skip
    m = parse_mrz(lines, today=TODAY)
    assert m.document_number == number and m.surname == surname
    assert m.birth_date == birth and m.expiry_date == expiry


@settings(max_examples=200)
@given(st.lists(st.text(max_size=50), max_size=4))
def test_garbage_only_raises_mrz_error(lines: list[str]) -> None:
    """Arbitrary text either parses (it cannot, in practice) or fails with a typed error."""
    try:
        m = parse_mrz(lines, today=TODAY)
    except MRZError as exc:
        assert exc.code and str(exc).startswith("MRZ ")
    else:
        assert m.format in ("td1", "td3")


@settings(max_examples=200)
@given(st.lists(st.text(alphabet="ABCXYZ0189<", min_size=30, max_size=30), min_size=3,
                max_size=3))  # fmt: skip
def test_mrz_shaped_noise_is_rejected_or_parsed_never_crashes(lines: list[str]) -> None:
    try:
        m = parse_mrz(lines, today=TODAY)
    except MRZError as exc:
        assert exc.code.startswith(("line1.", "line2.", "line3."))
    else:
        assert m.format == "td1"
