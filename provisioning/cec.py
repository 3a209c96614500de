"""CEC side: read the voters CSV and templates, build and verify station roll packages.

Voters CSV (UTF-8 with or without a byte order mark, or Windows-1251 when
asked with ``--encoding cp1251``; header row required)::

    station_id,list_number,name_ky,name_ru,document[,finger_1,...,finger_10]

``station_id`` may be omitted when ``--station`` is given (one station per
file). ``finger_N`` columns hold template file paths relative to the
templates directory (empty = finger not registered). Without finger columns
the directory convention applies: ``<templates>/<document>/<N>.iso`` (or
``.ansi``) for finger position N = 1..10. Every template must be an ISO/IEC
19794-2:2005 or ANSI INCITS 378 record whose length field matches the file.

Building is parallel over stations (one process per core); every station's
package is written atomically as ``<out>/<station_id>.pkg`` and a
``manifest.csv`` (station, district, voters, kiosks, version, size, SHA-256)
is written last.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from nacl.signing import SigningKey, VerifyKey

from agent.roll.package import (
    Finger,
    Kiosk,
    PackageError,
    PackageHeader,
    Roll,
    Voter,
    build_package,
    package_hash,
    peek_header,
)
from agent.runtime.durable import atomic_write
from provisioning.common import ProvisionError

REQUIRED_COLUMNS = ("list_number", "name_ky", "name_ru", "document")
FINGER_COLUMNS = tuple(f"finger_{n}" for n in range(1, 11))
TEMPLATE_SUFFIXES = (".iso", ".ansi")
MANIFEST = "manifest.csv"


@dataclass(frozen=True)
class VoterRow:
    """One CSV line, templates not yet read (cheap to send to a worker process)."""

    line: int
    list_number: int
    name_ky: str
    name_ru: str
    document: str
    templates: tuple[tuple[int, str], ...]
    """(finger position, template path)."""


@dataclass(frozen=True)
class StationJob:
    """Everything needed to build one station's package."""

    station_id: str
    district: str
    kiosks: tuple[Kiosk, ...]
    rows: tuple[VoterRow, ...]


@dataclass(frozen=True)
class BuiltPackage:
    """One line of the manifest."""

    station_id: str
    district: str
    voters: int
    kiosks: int
    roll_version: int
    size: int
    sha256: str


def check_template(data: bytes, where: str) -> bytes:
    """Refuse anything that is not an ISO 19794-2:2005 / ANSI 378 record of the right length."""
    if data[:4] != b"FMR\x00" or data[4:8] != b" 20\x00":
        raise ProvisionError(f"{where}: not an ISO 19794-2:2005 or ANSI 378 template")
    n = len(data)
    iso_len = struct.unpack_from(">I", data, 8)[0] if n >= 12 else -1
    ansi_len = struct.unpack_from(">H", data, 8)[0] if n >= 10 else -1
    ansi_long = struct.unpack_from(">I", data, 10)[0] if n >= 14 and ansi_len == 0 else -1
    if n not in (iso_len, ansi_len, ansi_long):
        raise ProvisionError(f"{where}: record length field does not match the {n}-byte file")
    return data


VoterEncoding = Literal["utf-8", "cp1251"]
ENCODINGS: tuple[VoterEncoding, ...] = ("utf-8", "cp1251")
_SAVE_AS_UTF8 = "save it from Excel with 'Save as' > 'CSV UTF-8 (Comma delimited)'"


def _looks_cp1251(raw: bytes) -> bool:
    """Most bytes above ASCII are Windows-1251 Cyrillic letters (0xC0-0xFF, Ё/ё)."""
    high = [b for b in raw if b >= 0x80]
    return bool(high) and sum(b >= 0xC0 or b in (0xA8, 0xB8) for b in high) >= 0.8 * len(high)


class _DecodedLines:
    """The file's lines as text, decoded one physical line at a time so that a
    problem is reported with its exact line number (and nothing is held in memory)."""

    def __init__(self, fh: IO[bytes], path: Path, encoding: VoterEncoding) -> None:
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
                                     f"{_SAVE_AS_UTF8}")
            try:
                yield raw.decode(self._encoding)
            except UnicodeDecodeError as exc:
                hint = (" (it looks like Windows-1251, Excel's plain 'CSV' on a "
                        "Russian-language PC)") if self._encoding == "utf-8" and \
                    _looks_cp1251(raw) else ""
                raise ProvisionError(
                    f"{where}: byte {raw[exc.start]:#04x} at column {exc.start + 1} is not "
                    f"{self._encoding.upper()}{hint}: {_SAVE_AS_UTF8}") from exc


def read_voters_csv(
    path: Path, templates_dir: Path, *, station: str | None = None,
    encoding: VoterEncoding = "utf-8",
) -> dict[str, list[VoterRow]]:
    """Parse the voters CSV into rows per station (templates located, not read).

    The file is UTF-8 (with or without the byte order mark Excel writes);
    ``encoding="cp1251"`` reads a Windows-1251 export instead. Names holding
    ``?`` are refused whatever the encoding: it is what Excel writes for a
    letter the encoding lacks (Windows-1251 has no Kyrgyz ң, ө, ү).

    Raises :class:`ProvisionError` naming the line and column of the first problem.
    """
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ProvisionError(f"cannot read voters file {path}: {exc.strerror}") from exc
    with fh:
        lines = _DecodedLines(fh, path, encoding)
        reader = csv.DictReader(lines)
        try:
            return _read_rows(reader, path, templates_dir, station)
        except csv.Error as exc:
            raise ProvisionError(f"{path}:{lines.number}: not valid CSV ({exc}): "
                                 f"{_SAVE_AS_UTF8}") from exc


def _read_rows(
    reader: csv.DictReader[str], path: Path, templates_dir: Path, station: str | None
) -> dict[str, list[VoterRow]]:
    columns = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ProvisionError(f"{path}: missing column(s) {', '.join(missing)}")
    known = {*REQUIRED_COLUMNS, *FINGER_COLUMNS, "station_id"}
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise ProvisionError(f"{path}: unknown column(s) {', '.join(unknown)}")
    has_station = "station_id" in columns
    if has_station == (station is not None):
        raise ProvisionError(
            f"{path}: give either a station_id column or --station, not "
            + ("both" if has_station else "neither")
        )
    finger_cols = [c for c in FINGER_COLUMNS if c in columns]
    out: dict[str, list[VoterRow]] = {}
    for rec in reader:
        line = reader.line_num
        if None in rec or any(v is None for v in rec.values()):
            raise ProvisionError(f"{path}:{line}: wrong number of fields")
        where = f"{path}:{line}"
        try:
            number = int(rec["list_number"])
        except ValueError as exc:
            raise ProvisionError(
                f"{where}: list_number {rec['list_number']!r} is not a number"
            ) from exc
        for column in ("name_ky", "name_ru"):
            if "?" in rec[column]:
                raise ProvisionError(
                    f"{where}: {column} {rec[column].strip()!r} has '?' where a letter should "
                    f"be (lost when the file was saved; Windows-1251 has no ң ө ү): "
                    f"{_SAVE_AS_UTF8}")
        document = rec["document"].strip()
        if not document or "/" in document or document.startswith("."):
            raise ProvisionError(f"{where}: document {rec['document']!r} is empty or unsafe")
        if finger_cols:
            templates = tuple(
                (int(c.removeprefix("finger_")), str(templates_dir / rec[c]))
                for c in finger_cols
                if rec[c].strip()
            )
        else:
            templates = _by_convention(templates_dir / document, where)
        st = rec["station_id"].strip() if has_station else station
        if st is None or not st:
            raise ProvisionError(f"{where}: empty station_id")
        out.setdefault(st, []).append(
            VoterRow(line, number, rec["name_ky"].strip(), rec["name_ru"].strip(), document,
                     templates)
        )
    if not out:
        raise ProvisionError(f"{path}: no voters")
    return out


def _by_convention(folder: Path, where: str) -> tuple[tuple[int, str], ...]:
    if not folder.is_dir():
        raise ProvisionError(f"{where}: no template folder {folder}")
    found: list[tuple[int, str]] = []
    for pos in range(1, 11):
        hits = [folder / f"{pos}{s}" for s in TEMPLATE_SUFFIXES if (folder / f"{pos}{s}").exists()]
        if len(hits) > 1:
            raise ProvisionError(f"{where}: both {hits[0].name} and {hits[1].name} in {folder}")
        if hits:
            found.append((pos, str(hits[0])))
    if not found:
        raise ProvisionError(f"{where}: no templates (1.iso .. 10.iso) in {folder}")
    return tuple(found)


def load_voters(rows: Iterable[VoterRow], source: str) -> tuple[Voter, ...]:
    """Read the templates of ``rows`` and return voters sorted by list number."""
    voters: list[Voter] = []
    for row in sorted(rows, key=lambda r: r.list_number):
        fingers: list[Finger] = []
        for pos, tpath in sorted(row.templates):
            where = f"{source}:{row.line} finger {pos} ({tpath})"
            try:
                data = Path(tpath).read_bytes()
            except OSError as exc:
                raise ProvisionError(f"{where}: {exc.strerror}") from exc
            fingers.append(Finger(pos, check_template(data, where)))
        voters.append(Voter(row.list_number, row.name_ky, row.name_ru, row.document,
                            tuple(fingers)))
    return tuple(voters)


def build_station(
    job: StationJob, *, election_id: str, roll_version: int, created: str, cec_key: SigningKey,
    source: str,
) -> bytes:
    """Build one station's package; a data problem is a :class:`ProvisionError` naming it."""
    voters = load_voters(job.rows, source)
    roll = Roll(election_id, job.station_id, job.district, roll_version, created, job.kiosks,
                voters)
    try:
        return build_package(roll, cec_key)
    except PackageError as exc:
        raise ProvisionError(f"{source}: station {job.station_id}: {exc}") from exc


def _worker(
    job: StationJob, election_id: str, roll_version: int, created: str, seed: bytes,
    source: str, out_dir: str,
) -> BuiltPackage:
    data = build_station(job, election_id=election_id, roll_version=roll_version,
                         created=created, cec_key=SigningKey(seed), source=source)
    atomic_write(Path(out_dir) / f"{job.station_id}.pkg", data, mode=0o644)
    return BuiltPackage(job.station_id, job.district, len(job.rows), len(job.kiosks),
                        roll_version, len(data), package_hash(data))


def build_all(
    jobs: list[StationJob], *, election_id: str, roll_version: int, created: str,
    cec_key: SigningKey, source: str, out_dir: Path, workers: int,
    on_done: Callable[[BuiltPackage], None] = lambda _b: None,
) -> list[BuiltPackage]:
    """Build and write every station's package with ``workers`` processes, then the manifest.

    Packages are built into a staging directory and moved into ``out_dir``
    only when every station succeeded, so a refused build leaves nothing
    behind (not even the output folder, when the build created it). Refuses
    before doing anything if ``out_dir`` already holds a package for one of
    the stations or a manifest.
    """
    clashes = [j.station_id for j in jobs if (out_dir / f"{j.station_id}.pkg").exists()]
    if clashes or (out_dir / MANIFEST).exists():
        raise ProvisionError(
            f"{out_dir} already holds packages ({', '.join(clashes[:5]) or MANIFEST}); "
            "use a new output directory for a new build"
        )
    created_dirs = [p for p in (out_dir, *out_dir.parents) if not p.exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".build-", dir=out_dir))
    try:
        built = _build_into(jobs, stage, workers, on_done, election_id=election_id,
                            roll_version=roll_version, created=created, seed=bytes(cec_key),
                            source=source)
        for b in built:
            os.rename(stage / f"{b.station_id}.pkg", out_dir / f"{b.station_id}.pkg")
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for d in created_dirs:  # innermost first; only the empty folders this build made
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    built.sort(key=lambda b: b.station_id)
    write_manifest(out_dir / MANIFEST, built)
    return built


def _build_into(
    jobs: list[StationJob], stage: Path, workers: int,
    on_done: Callable[[BuiltPackage], None], *, election_id: str, roll_version: int,
    created: str, seed: bytes, source: str,
) -> list[BuiltPackage]:
    built: list[BuiltPackage] = []
    if workers <= 1:
        for job in jobs:
            b = _worker(job, election_id, roll_version, created, seed, source, str(stage))
            built.append(b)
            on_done(b)
        return built
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures: set[Future[BuiltPackage]] = {
            pool.submit(_worker, job, election_id, roll_version, created, seed, source,
                        str(stage))
            for job in jobs
        }
        while futures:
            done, futures = wait(futures, return_when=FIRST_EXCEPTION)
            for f in done:
                exc = f.exception()
                if exc is not None:
                    for other in futures:
                        other.cancel()
                    raise exc
                b = f.result()
                built.append(b)
                on_done(b)
    return built


def write_manifest(path: Path, built: list[BuiltPackage]) -> None:
    """The CEC's record of what it built (atomically, after every package)."""
    lines = ["station_id,district,voters,kiosks,roll_version,bytes,sha256"]
    lines += [
        f"{b.station_id},{b.district},{b.voters},{b.kiosks},{b.roll_version},{b.size},{b.sha256}"
        for b in built
    ]
    atomic_write(path, ("\n".join(lines) + "\n").encode(), mode=0o644)


def make_jobs(
    rows_by_station: Mapping[str, list[VoterRow]],
    kiosks_by_station: Mapping[str, tuple[str, tuple[Kiosk, ...]]],
) -> list[StationJob]:
    """Pair each station's voters with its registered kiosks; refuse stations without any."""
    missing = sorted(s for s in rows_by_station if s not in kiosks_by_station)
    if missing:
        raise ProvisionError(
            f"no active kiosks registered for station(s) {', '.join(missing[:10])}; "
            "register them with 'ops register' first"
        )
    return [
        StationJob(s, kiosks_by_station[s][0], kiosks_by_station[s][1], tuple(rows))
        for s, rows in sorted(rows_by_station.items())
    ]


def verify_file(path: Path, cec_key: VerifyKey, station: str | None) -> PackageHeader:
    """Check a package file's framing and CEC signature (and station, if given)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProvisionError(f"cannot read package {path}: {exc.strerror}") from exc
    try:
        header = peek_header(data, cec_key)
    except PackageError as exc:
        raise ProvisionError(f"{path}: {exc}") from exc
    if station is not None and header.station_id != station:
        raise ProvisionError(
            f"{path}: package is for station {header.station_id!r}, not {station!r}"
        )
    return header


def iter_lines(built: list[BuiltPackage]) -> Iterator[str]:
    """Human summary of a build, one line per station."""
    for b in built:
        yield (f"{b.station_id}: {b.voters} voters, {b.kiosks} kiosk(s), v{b.roll_version}, "
               f"{b.size} bytes, sha256 {b.sha256}")


def default_workers() -> int:
    """All cores this process may use."""
    return len(os.sched_getaffinity(0))
