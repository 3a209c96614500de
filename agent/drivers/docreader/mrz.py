"""ICAO Doc 9303 machine-readable zones: TD1 (ID cards, 3 x 30) and TD3 (passports, 2 x 44).

:func:`parse_mrz` checks the layout, the character set and every check digit
(including the composite one) and returns a frozen :class:`MRZ`, or raises
:class:`MRZError` naming the line and field that failed. It does no I/O; the
document-reader driver (:mod:`agent.drivers.docreader.reader`) turns raw reader
output into lines and treats a failed parse as an ordinary outcome (the
operator asks the voter to present the document again).

Check digits (Doc 9303 Part 3, 4.9): character values 0-9 for digits, 10-35
for A-Z, 0 for the filler ``<``; weights 7, 3, 1 repeating; the digit is the
weighted sum modulo 10.

TD1 document numbers longer than 9 characters (Part 5, note j): the first 9
characters fill the field, its check digit position holds ``<``, and the rest
of the number followed by its check digit opens the optional-data field.

:func:`build_td1` and :func:`build_td3` compose valid zones; the simulator and
the tests use them so that synthetic documents go through the same rules.

The parsed record holds personal data (names, document number, birth date).
It is used to select the voter and is never written to the audit log.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MRZ",
    "TD1_LINE",
    "TD3_LINE",
    "MRZError",
    "MrzFormat",
    "build_td1",
    "build_td3",
    "char_value",
    "check_digit",
    "parse_mrz",
]

TD1_LINE = 30
TD3_LINE = 44
MrzFormat = Literal["td1", "td3"]
Sex = Literal["M", "F", "X"]

_CHARSET = re.compile(r"^[A-Z0-9<]*$")
_WEIGHTS = (7, 3, 1)


class MRZError(ValueError):
    """The MRZ is malformed or a check digit fails; ``line`` (1-based) and ``field`` say where.

    ``line`` is 0 when the problem is the zone as a whole (line count/length).
    """

    def __init__(self, line: int, field: str, message: str, fmt: MrzFormat | None = None) -> None:
        where = f"line {line} {field}" if line else field
        super().__init__(f"MRZ {where}: {message}")
        self.line = line
        self.field = field
        self.format = fmt

    @property
    def code(self) -> str:
        """Token naming the failure (``line2.birth_date.check``), safe for the audit log."""
        base = f"line{self.line}.{self.field}" if self.line else self.field
        return base.replace(" ", "-").lower()


def char_value(c: str) -> int:
    """Value of one MRZ character for check digits; ``ValueError`` outside ``[0-9A-Z<]``."""
    if len(c) == 1:
        if "0" <= c <= "9":
            return ord(c) - 48
        if "A" <= c <= "Z":
            return ord(c) - 55
        if c == "<":
            return 0
    raise ValueError(f"{c!r} is not an MRZ character")


def check_digit(data: str) -> str:
    """The ICAO 9303 check digit of ``data`` as a one-character string."""
    total = 0
    for i, c in enumerate(data):
        total += char_value(c) * _WEIGHTS[i % 3]
    return str(total % 10)


@dataclass(frozen=True)
class MRZ:
    """A parsed, check-digit-verified machine-readable zone.

    Text fields have fillers removed (``<`` between name parts becomes a space).
    A date whose day or month is unknown (fillers in the MRZ) is ``None``; the
    raw ``YYMMDD`` is kept either way.
    """

    format: MrzFormat
    document_code: str
    issuing_state: str
    document_number: str
    surname: str
    given_names: str
    nationality: str
    birth_date: _dt.date | None
    birth_date_raw: str
    sex: Sex
    expiry_date: _dt.date | None
    expiry_date_raw: str
    optional_data: str
    optional_data_2: str
    lines: tuple[str, ...]

    @property
    def personal_number(self) -> str:
        """TD3 personal number / TD1 first optional field (a national id number on many cards)."""
        return self.optional_data


def _field(line: str, start: int, end: int) -> str:
    """Characters ``start..end`` (1-based, inclusive, as Doc 9303 numbers them)."""
    return line[start - 1 : end]


def _text(raw: str) -> str:
    return re.sub("<+", " ", raw).strip()


def _check(
    fmt: MrzFormat, line: int, field: str, data: str, digit: str, *, blank_ok: bool = False
) -> None:
    if blank_ok and digit == "<" and set(data) <= {"<"}:
        return
    if not digit.isdigit():
        raise MRZError(line, f"{field}.check", f"check digit {digit!r} is not a digit", fmt)
    expected = check_digit(data)
    if digit != expected:
        raise MRZError(
            line, f"{field}.check", f"check digit {digit} does not match {expected}", fmt
        )


def _date(
    fmt: MrzFormat, line: int, field: str, raw: str, today: _dt.date, *, future: bool
) -> _dt.date | None:
    if not re.fullmatch(r"[0-9]{2}([0-9]{2}|<<)([0-9]{2}|<<)", raw):
        raise MRZError(line, field, f"{raw!r} is not YYMMDD", fmt)
    if "<" in raw:
        return None  # day and/or month unknown (allowed for birth dates)
    yy, mm, dd = int(raw[:2]), int(raw[2:4]), int(raw[4:])
    if future:
        # Expiry: within 50 years after today's century-relative year.
        year = 2000 + yy if yy <= (today.year % 100) + 50 else 1900 + yy
    else:
        # Birth: the latest century that does not put the date in the future.
        year = (today.year // 100) * 100 + yy
        if year > today.year:
            year -= 100
    try:
        value = _dt.date(year, mm, dd)
    except ValueError:
        raise MRZError(line, field, f"{raw!r} is not a calendar date", fmt) from None
    if not future and value > today:
        value = value.replace(year=value.year - 100)
    return value


def _sex(fmt: MrzFormat, line: int, c: str) -> Sex:
    if c == "M":
        return "M"
    if c == "F":
        return "F"
    if c in ("<", "X"):
        return "X"
    raise MRZError(line, "sex", f"{c!r} is not M, F or <", fmt)


def _names(fmt: MrzFormat, line: int, raw: str) -> tuple[str, str]:
    if raw.startswith("<"):
        raise MRZError(line, "names", "the primary identifier is empty", fmt)
    primary, sep, secondary = raw.partition("<<")
    return _text(primary), _text(secondary) if sep else ""


def _split_lines(mrz: str | Sequence[str]) -> list[str]:
    if isinstance(mrz, str):
        lines = [ln.strip() for ln in mrz.strip().splitlines()]
    else:
        lines = [ln.strip() for ln in mrz]
    return [ln for ln in lines if ln]


def parse_mrz(mrz: str | Sequence[str], *, today: _dt.date | None = None) -> MRZ:
    """Parse a TD1 or TD3 zone (a string with line breaks, or its lines).

    ``today`` anchors the two-digit years (default: the current date).
    Raises :class:`MRZError` on any layout, character or check-digit problem.
    """
    lines = _split_lines(mrz)
    today = today or _dt.date.today()
    shape = tuple(len(ln) for ln in lines)
    if shape == (TD1_LINE,) * 3:
        fmt: MrzFormat = "td1"
    elif shape == (TD3_LINE,) * 2:
        fmt = "td3"
    elif len(lines) == 2 and shape == (36, 36):
        raise MRZError(0, "layout", "TD2 (2 x 36) documents are not supported")
    else:
        raise MRZError(0, "layout", f"expected 3 lines of 30 or 2 lines of 44, got {shape}")
    for i, ln in enumerate(lines, start=1):
        if not _CHARSET.match(ln):
            bad = next(c for c in ln if not _CHARSET.match(c))
            raise MRZError(i, "charset", f"character {bad!r} is not allowed", fmt)
    return _parse_td1(lines, today) if fmt == "td1" else _parse_td3(lines, today)


def _parse_td1(lines: list[str], today: _dt.date) -> MRZ:
    l1, l2, l3 = lines
    number, number_check = _field(l1, 6, 14), _field(l1, 15, 15)
    optional = _field(l1, 16, 30)
    if number_check == "<":
        # Long document number: continues in the optional data up to its check digit.
        m = re.match(r"^([A-Z0-9]*?)([0-9])(<|$)", optional)
        if m is None or not number.isalnum():
            raise MRZError(1, "document_number", "long number has no check digit", "td1")
        number += m.group(1)
        number_check = m.group(2)
        optional = optional[m.end(2) :]
    _check("td1", 1, "document_number", number, number_check)
    birth_raw, expiry_raw = _field(l2, 1, 6), _field(l2, 9, 14)
    _check("td1", 2, "birth_date", birth_raw, _field(l2, 7, 7))
    _check("td1", 2, "expiry_date", expiry_raw, _field(l2, 15, 15))
    composite = _field(l1, 6, 30) + _field(l2, 1, 7) + _field(l2, 9, 15) + _field(l2, 19, 29)
    _check("td1", 2, "composite", composite, _field(l2, 30, 30))
    surname, given = _names("td1", 3, l3)
    return MRZ(
        format="td1",
        document_code=_text(_field(l1, 1, 2)),
        issuing_state=_text(_field(l1, 3, 5)),
        document_number=number.rstrip("<"),
        surname=surname,
        given_names=given,
        nationality=_text(_field(l2, 16, 18)),
        birth_date=_date("td1", 2, "birth_date", birth_raw, today, future=False),
        birth_date_raw=birth_raw,
        sex=_sex("td1", 2, _field(l2, 8, 8)),
        expiry_date=_date("td1", 2, "expiry_date", expiry_raw, today, future=True),
        expiry_date_raw=expiry_raw,
        optional_data=_text(optional),
        optional_data_2=_text(_field(l2, 19, 29)),
        lines=tuple(lines),
    )


def _parse_td3(lines: list[str], today: _dt.date) -> MRZ:
    l1, l2 = lines
    if l1[0] != "P":
        raise MRZError(1, "document_code", f"TD3 code must start with P, not {l1[0]!r}", "td3")
    number = _field(l2, 1, 9)
    _check("td3", 2, "document_number", number, _field(l2, 10, 10))
    birth_raw, expiry_raw = _field(l2, 14, 19), _field(l2, 22, 27)
    _check("td3", 2, "birth_date", birth_raw, _field(l2, 20, 20))
    _check("td3", 2, "expiry_date", expiry_raw, _field(l2, 28, 28))
    personal = _field(l2, 29, 42)
    _check("td3", 2, "personal_number", personal, _field(l2, 43, 43), blank_ok=True)
    composite = _field(l2, 1, 10) + _field(l2, 14, 20) + _field(l2, 22, 43)
    _check("td3", 2, "composite", composite, _field(l2, 44, 44))
    surname, given = _names("td3", 1, _field(l1, 6, 44))
    return MRZ(
        format="td3",
        document_code=_text(_field(l1, 1, 2)),
        issuing_state=_text(_field(l1, 3, 5)),
        document_number=number.rstrip("<"),
        surname=surname,
        given_names=given,
        nationality=_text(_field(l2, 11, 13)),
        birth_date=_date("td3", 2, "birth_date", birth_raw, today, future=False),
        birth_date_raw=birth_raw,
        sex=_sex("td3", 2, _field(l2, 21, 21)),
        expiry_date=_date("td3", 2, "expiry_date", expiry_raw, today, future=True),
        expiry_date_raw=expiry_raw,
        optional_data=_text(personal),
        optional_data_2="",
        lines=tuple(lines),
    )


# ------------------------------------------------------------------ building


def _mrz_text(value: str, what: str) -> str:
    """Upper-case A-Z/0-9 with spaces and hyphens as fillers (ICAO Part 3 conventions)."""
    out = re.sub(r"[ \-]+", "<", value.strip().upper()).replace("'", "")
    if not _CHARSET.match(out):
        raise ValueError(f"{what} {value!r} must be transliterated to A-Z first")
    return out


def _pad(value: str, width: int, what: str) -> str:
    if len(value) > width:
        raise ValueError(f"{what} {value!r} is longer than {width} characters")
    return value + "<" * (width - len(value))


def _name_field(surname: str, given_names: str, width: int) -> str:
    s, g = _mrz_text(surname, "surname"), _mrz_text(given_names, "given names")
    if not s:
        raise ValueError("surname is required")
    joined = f"{s}<<{g}" if g else s
    return _pad(joined[:width], width, "names")  # ICAO truncates long names


def _yymmdd(d: _dt.date | str) -> str:
    if isinstance(d, str):
        if not re.fullmatch(r"[0-9]{2}([0-9]{2}|<<)([0-9]{2}|<<)", d):
            raise ValueError(f"{d!r} is not YYMMDD")
        return d
    return d.strftime("%y%m%d")


def build_td1(
    *,
    document_number: str,
    surname: str,
    given_names: str,
    birth_date: _dt.date | str,
    expiry_date: _dt.date | str,
    sex: Sex = "X",
    issuing_state: str = "KGZ",
    nationality: str = "KGZ",
    document_code: str = "ID",
    optional_data: str = "",
    optional_data_2: str = "",
) -> tuple[str, str, str]:
    """Compose a valid TD1 zone (3 x 30) with all check digits."""
    number = _mrz_text(document_number, "document number")
    opt1 = _mrz_text(optional_data, "optional data")
    if len(number) <= 9:
        l1_tail = _pad(number, 9, "") + check_digit(_pad(number, 9, "")) + _pad(opt1, 15, "opt")
    else:
        extra = number[9:] + check_digit(number) + ("<" + opt1 if opt1 else "")
        l1_tail = number[:9] + "<" + _pad(extra, 15, "long document number + optional data")
    l1 = _pad(_mrz_text(document_code, "code"), 2, "code") + _pad(issuing_state, 3, "state")
    l1 += l1_tail
    birth, expiry = _yymmdd(birth_date), _yymmdd(expiry_date)
    l2 = birth + check_digit(birth) + ("<" if sex == "X" else sex) + expiry + check_digit(expiry)
    l2 += _pad(nationality, 3, "nationality") + _pad(
        _mrz_text(optional_data_2, "optional data 2"), 11, "optional data 2"
    )
    l2 += check_digit(l1[5:30] + l2[0:7] + l2[8:15] + l2[18:29])
    return l1, l2, _name_field(surname, given_names, TD1_LINE)


def build_td3(
    *,
    document_number: str,
    surname: str,
    given_names: str,
    birth_date: _dt.date | str,
    expiry_date: _dt.date | str,
    sex: Sex = "X",
    issuing_state: str = "KGZ",
    nationality: str = "KGZ",
    document_code: str = "P",
    personal_number: str = "",
) -> tuple[str, str]:
    """Compose a valid TD3 zone (2 x 44) with all check digits."""
    code = _mrz_text(document_code, "code")
    if not code.startswith("P"):
        raise ValueError("TD3 document codes start with P")
    l1 = _pad(code, 2, "code") + _pad(issuing_state, 3, "state")
    l1 += _name_field(surname, given_names, TD3_LINE - 5)
    number = _pad(_mrz_text(document_number, "document number"), 9, "document number")
    birth, expiry = _yymmdd(birth_date), _yymmdd(expiry_date)
    personal = _pad(_mrz_text(personal_number, "personal number"), 14, "personal number")
    personal_check = "<" if set(personal) == {"<"} else check_digit(personal)
    l2 = number + check_digit(number) + _pad(nationality, 3, "nationality")
    l2 += birth + check_digit(birth) + ("<" if sex == "X" else sex)
    l2 += expiry + check_digit(expiry) + personal + personal_check
    l2 += check_digit(l2[0:10] + l2[13:20] + l2[21:43])
    return l1, l2
