"""CEC side: the stations file, the names commissions read on every slip and report.

Stations file (UTF-8 CSV like the voters list, or Windows-1251 with
``--encoding cp1251``; header row required)::

    station_id,district,station_name,district_name
    s-1017,osh-city,"Ош ш., 5-мектеп / г. Ош, школа № 5",Ош шаары / город Ош

One line per station. ``station_id`` and ``district`` are the ids kiosks are
registered under (the device registry decides which district a station is
in; the file must agree). ``station_name`` and ``district_name`` go into the
roll package's header (format version 2) and are printed as they are, so each
holds the Kyrgyz and the Russian name, Kyrgyz first, the way the slips give
every line. A name must fit the package's ``str8`` field (255 bytes of UTF-8,
about 127 Cyrillic letters); the printer wraps a long one at word boundaries
on every paper width, so that is the only length limit. The file may list
stations that are not being built (a national file for a one-station build).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.roll.package import NAME_MAX_BYTES
from provisioning.common import ProvisionError
from provisioning.csvfile import (
    CsvEncoding,
    check_columns,
    check_fields,
    check_letters_kept,
    read_csv,
)

COLUMNS = ("station_id", "district", "station_name", "district_name")
_HEADER = "the header is " + ",".join(COLUMNS)
# The rule of agent.runtime.config and the package for station and district ids.
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_SPACES = str.maketrans({"\u00a0": " ", "\u202f": " "})


@dataclass(frozen=True)
class StationNames:
    """One line of the stations file."""

    line: int
    station_id: str
    district: str
    station_name: str
    district_name: str


def read_stations_csv(path: Path, *, encoding: CsvEncoding = "utf-8"
                      ) -> dict[str, StationNames]:
    """Parse the stations file into names per station id.

    Refuses, with the line and column: a station listed twice, an id that is
    not a registrable id, an empty name, a name with an unprintable
    character (a tab or a line break inside the cell), a name longer than
    the package holds, a ``?`` for a lost letter, and one district given two
    names. Non-breaking spaces are read as spaces.
    """
    return read_csv(path, "stations", encoding, lambda reader: _read(reader, path))


def _read(reader: csv.DictReader[str], path: Path) -> dict[str, StationNames]:
    check_columns(path, reader.fieldnames or [], COLUMNS, (), _HEADER)
    out: dict[str, StationNames] = {}
    district_names: dict[str, StationNames] = {}
    for rec in reader:
        line = reader.line_num
        where = f"{path}:{line}"
        check_fields(rec, where)
        station, district = rec["station_id"].strip(), rec["district"].strip()
        for column, value in (("station_id", station), ("district", district)):
            if not _ID_RE.match(value):
                raise ProvisionError(
                    f"{where}: {column} {value!r} is not an id (1-63 lowercase letters, "
                    f"digits or '-'): write it as the kiosks are registered")
        names = {c: _name(rec[c], c, where) for c in ("station_name", "district_name")}
        row = StationNames(line, station, district, **names)
        first = out.get(station)
        if first is not None:
            raise ProvisionError(f"{where}: station {station} is listed again (first on line "
                                 f"{first.line}): keep one line per station")
        named = district_names.setdefault(district, row)
        if named.district_name != row.district_name:
            raise ProvisionError(
                f"{where}: district {district} is named {row.district_name!r} here but "
                f"{named.district_name!r} on line {named.line}: give a district one name")
        out[station] = row
    if not out:
        raise ProvisionError(f"{path}: no stations; {_HEADER}, then one line per station")
    return out


def _name(raw: str, column: str, where: str) -> str:
    # A non-breaking space (pasted from Word after "№") is not printable text for the
    # package; as an ordinary space it prints the same, wrapped where the printer must.
    value = raw.translate(_SPACES).strip()
    if not value:
        raise ProvisionError(f"{where}: {column} is empty: write the name as the slips "
                             "are to print it")
    check_letters_kept(value, column, where)
    bad = next((i for i, ch in enumerate(value) if not ch.isprintable()), None)
    if bad is not None:
        raise ProvisionError(
            f"{where}: {column} has an unprintable character U+{ord(value[bad]):04X} (a tab, "
            f"a line break inside the cell or an invisible mark) at letter {bad + 1}: "
            "retype the name on one line")
    size = len(value.encode("utf-8"))
    if size > NAME_MAX_BYTES:
        raise ProvisionError(
            f"{where}: {column} is {len(value)} letters ({size} bytes of UTF-8), more than "
            f"the {NAME_MAX_BYTES} bytes a roll package holds (about "
            f"{NAME_MAX_BYTES // 2} Cyrillic letters): shorten it")
    return value


def check_names(
    names: Mapping[str, StationNames], path: Path, districts: Mapping[str, str],
    voters_source: str,
) -> None:
    """Refuse a build whose stations lack names or disagree with the registry.

    ``districts`` maps every station being built (it has voters in
    ``voters_source``) to its district in the device registry. Lines for
    stations not being built are not checked against the registry.
    """
    missing = sorted(s for s in districts if s not in names)
    if missing:
        first = missing[0]
        more = f" (and {len(missing) - 1} more: {', '.join(missing[1:4])})" \
            if len(missing) > 1 else ""
        raise ProvisionError(
            f"{path}: no line for station {first}{more}, which has voters in {voters_source}: "
            f"add '{first},{districts[first]},<station name>,<district name>'")
    for station, district in sorted(districts.items()):
        row = names[station]
        if row.district != district:
            raise ProvisionError(
                f"{path}:{row.line}: station {station} is in district {district} in the "
                f"device registry, not {row.district}: correct the district column (or "
                "re-register the station's kiosks)")
