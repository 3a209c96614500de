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
Both CSV inputs are read by :mod:`provisioning.csvfile`; the station and
district names come from the stations file (:mod:`provisioning.stations`),
and without one the packages carry no names (format version 1).

Building is parallel over stations (one process per core); every station's
package is written atomically as ``<out>/<station_id>.pkg`` and a
``manifest.csv`` (station, district, their names, voters, kiosks, version,
size, SHA-256) is written last.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

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
from provisioning.csvfile import (
    CsvEncoding,
    check_columns,
    check_fields,
    check_letters_kept,
    read_csv,
)
from provisioning.stations import StationNames

REQUIRED_COLUMNS = ("list_number", "name_ky", "name_ru", "document")
FINGER_COLUMNS = tuple(f"finger_{n}" for n in range(1, 11))
TEMPLATE_SUFFIXES = (".iso", ".ansi")
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("station_id", "district", "station_name", "district_name", "voters",
                    "kiosks", "roll_version", "bytes", "sha256")


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
    station_name: str = ""
    """As printed on slips; empty (with ``district_name``) builds a nameless version 1 roll."""
    district_name: str = ""


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
    station_name: str = ""
    district_name: str = ""


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


def read_voters_csv(
    path: Path, templates_dir: Path, *, station: str | None = None,
    encoding: CsvEncoding = "utf-8",
) -> dict[str, list[VoterRow]]:
    """Parse the voters CSV into rows per station (templates located, not read).

    The file is UTF-8 (with or without the byte order mark Excel writes);
    ``encoding="cp1251"`` reads a Windows-1251 export instead. Names holding
    ``?`` are refused whatever the encoding: it is what Excel writes for a
    letter the encoding lacks (Windows-1251 has no Kyrgyz ң, ө, ү).

    Raises :class:`ProvisionError` naming the line and column of the first problem.
    """
    return read_csv(path, "voters", encoding,
                    lambda reader: _read_rows(reader, path, templates_dir, station))


def _read_rows(
    reader: csv.DictReader[str], path: Path, templates_dir: Path, station: str | None
) -> dict[str, list[VoterRow]]:
    columns = reader.fieldnames or []
    check_columns(path, columns, REQUIRED_COLUMNS, (*FINGER_COLUMNS, "station_id"))
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
        where = f"{path}:{line}"
        check_fields(rec, where)
        try:
            number = int(rec["list_number"])
        except ValueError as exc:
            raise ProvisionError(
                f"{where}: list_number {rec['list_number']!r} is not a number"
            ) from exc
        for column in ("name_ky", "name_ru"):
            check_letters_kept(rec[column], column, where)
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
                voters, station_name=job.station_name, district_name=job.district_name)
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
                        roll_version, len(data), package_hash(data), job.station_name,
                        job.district_name)


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
    """The CEC's record of what it built (atomically, after every package).

    The names are quoted as CSV needs (they hold commas); the SHA-256 stays the
    last column, the one compared with what each kiosk prints.
    """
    text = io.StringIO()
    out = csv.writer(text, lineterminator="\n")
    out.writerow(MANIFEST_COLUMNS)
    out.writerows((b.station_id, b.district, b.station_name, b.district_name, b.voters,
                   b.kiosks, b.roll_version, b.size, b.sha256) for b in built)
    atomic_write(path, text.getvalue().encode(), mode=0o644)


def make_jobs(
    rows_by_station: Mapping[str, list[VoterRow]],
    kiosks_by_station: Mapping[str, tuple[str, tuple[Kiosk, ...]]],
    names: Mapping[str, StationNames] | None = None,
) -> list[StationJob]:
    """Pair each station's voters with its registered kiosks (and its names, when given).

    Refuses stations without any kiosk. ``names`` must already have passed
    :func:`provisioning.stations.check_names` against these stations.
    """
    missing = sorted(s for s in rows_by_station if s not in kiosks_by_station)
    if missing:
        raise ProvisionError(
            f"no active kiosks registered for station(s) {', '.join(missing[:10])}; "
            "register them with 'ops register' first"
        )
    jobs = []
    for s, rows in sorted(rows_by_station.items()):
        named = names[s] if names is not None else None
        jobs.append(StationJob(s, kiosks_by_station[s][0], kiosks_by_station[s][1], tuple(rows),
                               named.station_name if named else "",
                               named.district_name if named else ""))
    return jobs


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
        named = f" ({b.station_name})" if b.station_name else ""
        yield (f"{b.station_id}{named}: {b.voters} voters, {b.kiosks} kiosk(s), "
               f"v{b.roll_version}, {b.size} bytes, sha256 {b.sha256}")


def default_workers() -> int:
    """All cores this process may use."""
    return len(os.sched_getaffinity(0))
