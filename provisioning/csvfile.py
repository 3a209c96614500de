"""The CSV files the CEC gives ``kesp-provision cec build``: decoding and one-line refusals.

Both inputs (the voters list and the stations file) come out of Excel on the
CEC's workstations, so they share one reader: UTF-8 with or without the byte
order mark Excel writes, or Windows-1251 when asked; a file in the wrong
encoding is refused with the line and column of the first byte that does not
decode (and a hint when it looks like Windows-1251); a header row is required
and unknown or missing columns are named; a text holding ``?`` where a letter
was lost is refused. Every problem is a :class:`ProvisionError` naming the
file and line, and what to do.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from provisioning.common import ProvisionError

CsvEncoding = Literal["utf-8", "cp1251"]
ENCODINGS: tuple[CsvEncoding, ...] = ("utf-8", "cp1251")
SAVE_AS_UTF8 = "save it from Excel with 'Save as' > 'CSV UTF-8 (Comma delimited)'"

_T = TypeVar("_T")


def _looks_cp1251(raw: bytes) -> bool:
    """Most bytes above ASCII are Windows-1251 Cyrillic letters (0xC0-0xFF, Ё/ё)."""
    high = [b for b in raw if b >= 0x80]
    return bool(high) and sum(b >= 0xC0 or b in (0xA8, 0xB8) for b in high) >= 0.8 * len(high)


class _DecodedLines:
    """The file's lines as text, decoded one physical line at a time so that a
    problem is reported with its exact line number (and nothing is held in memory)."""

    def __init__(self, fh: IO[bytes], path: Path, encoding: CsvEncoding) -> None:
        self._fh, self._path, self._encoding = fh, path, encoding
        self.number = 0
        """The physical line read last."""

    def __iter__(self) -> Iterator[str]:
        for physical in self._fh:
            self.number += 1
            raw = physical.removeprefix(codecs.BOM_UTF8) \
                if self.number == 1 and self._encoding == "utf-8" else physical
            where = f"{self._path}:{self.number}"
            if b"\x00" in raw:
                raise ProvisionError(f"{where}: binary data, not a CSV text file: "
                                     f"{SAVE_AS_UTF8}")
            try:
                yield raw.decode(self._encoding)
            except UnicodeDecodeError as exc:
                hint = (" (it looks like Windows-1251, Excel's plain 'CSV' on a "
                        "Russian-language PC)") if self._encoding == "utf-8" and \
                    _looks_cp1251(raw) else ""
                raise ProvisionError(
                    f"{where}: byte {raw[exc.start]:#04x} at column {exc.start + 1} is not "
                    f"{self._encoding.upper()}{hint}: {SAVE_AS_UTF8}") from exc


def read_csv(path: Path, what: str, encoding: CsvEncoding,
             parse: Callable[[csv.DictReader[str]], _T]) -> _T:
    """Open ``path`` (the ``what`` file) and hand its decoded rows to ``parse``.

    Refusals of the file itself (unreadable, binary, wrong encoding, broken
    CSV quoting) are raised here with the line they happened on; ``parse``
    raises its own for the content.
    """
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ProvisionError(f"cannot read {what} file {path}: {exc.strerror}") from exc
    with fh:
        lines = _DecodedLines(fh, path, encoding)
        reader = csv.DictReader(lines)
        try:
            return parse(reader)
        except csv.Error as exc:
            raise ProvisionError(f"{path}:{lines.number}: not valid CSV ({exc}): "
                                 f"{SAVE_AS_UTF8}") from exc


def check_columns(path: Path, columns: Sequence[str], required: Sequence[str],
                  optional: Sequence[str], header: str = "") -> None:
    """Refuse a header that lacks a ``required`` column or has one not known at all.

    ``header`` (e.g. ``"the header is a,b,c"``) is added to the message as the fix.
    """
    fix = f"; {header}" if header else ""
    missing = [c for c in required if c not in columns]
    if missing:
        raise ProvisionError(f"{path}: missing column(s) {', '.join(missing)}{fix}")
    unknown = [c for c in columns if c not in (*required, *optional)]
    if unknown:
        raise ProvisionError(f"{path}: unknown column(s) {', '.join(unknown)}{fix}")


def check_fields(rec: Mapping[Any, Any], where: str) -> None:
    """Refuse a row with more or fewer fields than the header (a stray comma or quote)."""
    if None in rec or any(v is None for v in rec.values()):
        raise ProvisionError(f"{where}: wrong number of fields")


def check_letters_kept(value: str, column: str, where: str) -> None:
    """Refuse a text where Excel wrote ``?`` for a letter the file's encoding lacks."""
    if "?" in value:
        raise ProvisionError(
            f"{where}: {column} {value.strip()!r} has '?' where a letter should be (lost "
            f"when the file was saved; Windows-1251 has no ң ө ү): {SAVE_AS_UTF8}")
