"""National-scale roll building: 2,480 stations, 3.6 million synthetic voters, all cores.

Every station gets a realistic size (log-normal, 30..5,610 voters, one
station at the 5,610 maximum seen in Osh in 2015), 2-4 kiosks (about 6,700
kits nationally), 10 synthetic ISO 19794-2 templates per voter, and a real
package: serialised, XChaCha20-Poly1305 encrypted, content key sealed to each
kiosk, Ed25519-signed, SHA-256 hashed. Packages are built in worker processes
(one per core) and discarded after hashing: writing 10 GB is a disk
benchmark, not ours.

The machine is shared, so by default a systematic sample of the stations is
built (every 8th station by size rank, so the size mix is kept) and the
national figure is extrapolated from it, clearly labelled. Set
``KESP_BENCH_PROVISION_FRACTION=1`` for the full run.

Also measured in the same run: one station of 5,610 voters built on one core
(baseline for the per-core rate), and opening that package on the kiosk.
"""

from __future__ import annotations

import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
from nacl.public import PrivateKey
from nacl.signing import SigningKey
from numpy.typing import NDArray

from agent.roll.package import Kiosk, Roll, build_package, open_package, package_hash
from benchmarks.results import write_section
from provisioning.progress import Progress
from provisioning.synthetic import synthetic_voters

STATIONS = 2480
VOTERS = 3_600_000
LARGEST = 5610
SMALLEST = 30


def station_sizes(seed: int = 2026) -> NDArray[np.int64]:
    """Voters per station: log-normal, clipped, one at LARGEST, summing exactly to VOTERS."""
    rng = np.random.default_rng(seed)
    raw = rng.lognormal(mean=0.0, sigma=0.55, size=STATIONS)
    scaled = raw / raw.sum() * VOTERS
    for _ in range(50):  # clipping loses voters: rescale until the total holds
        scaled = np.clip(scaled * (VOTERS / scaled.sum()), SMALLEST, LARGEST - 1)
    sizes: NDArray[np.int64] = np.floor(scaled).astype(np.int64)
    sizes[int(np.argmax(sizes))] = LARGEST
    room = np.flatnonzero(sizes < LARGEST - 1)
    diff = VOTERS - int(sizes.sum())
    sizes[room[: abs(diff)]] += 1 if diff > 0 else -1  # exact national total
    return sizes


@dataclass(frozen=True)
class StationResult:
    index: int
    voters: int
    kiosks: int
    size: int
    gen_s: float
    build_s: float
    maxrss_kb: int


def _kiosks(rng: np.random.Generator, station: int) -> tuple[Kiosk, ...]:
    n = int(rng.integers(2, 5))
    return tuple(
        Kiosk(f"k-{station}-{i}", bytes(SigningKey.generate().verify_key).hex(),
              bytes(PrivateKey.generate().public_key).hex())
        for i in range(n)
    )


def build_one(index: int, voters: int, seed: bytes) -> StationResult:
    """Generate and build one station (runs in a worker)."""
    rng = np.random.default_rng(index)
    t0 = time.perf_counter()
    roll_voters = synthetic_voters(voters, seed=index)
    kiosks = _kiosks(rng, index)
    t1 = time.perf_counter()
    roll = Roll("pres-2026", f"s-{index:04d}", f"d-{index % 60:02d}", 1,
                "2026-11-27T05:00:00Z", kiosks, roll_voters)
    data = build_package(roll, SigningKey(seed))
    package_hash(data)
    t2 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return StationResult(index, voters, len(kiosks), len(data), t1 - t0, t2 - t1, rss)


def _baseline(seed: bytes) -> tuple[float, float, float, int]:
    """Largest station on one core in this process: gen, build, open (s), package bytes."""
    box = PrivateKey.generate()
    kiosk = Kiosk("k-base", bytes(SigningKey.generate().verify_key).hex(),
                  bytes(box.public_key).hex())
    t0 = time.perf_counter()
    voters = synthetic_voters(LARGEST, seed=98)
    t1 = time.perf_counter()
    roll = Roll("pres-2026", "s-osh", "osh", 1, "2026-11-27T05:00:00Z", (kiosk,), voters)
    key = SigningKey(seed)
    data = build_package(roll, key)
    t2 = time.perf_counter()
    opened = open_package(data, key.verify_key, box, expected_station="s-osh")
    t3 = time.perf_counter()
    if len(opened.voters) != LARGEST:
        raise RuntimeError("baseline package did not round-trip")
    return t1 - t0, t2 - t1, t3 - t2, len(data)


def main() -> None:
    fraction = float(os.environ.get("KESP_BENCH_PROVISION_FRACTION", "0.125"))
    workers = len(os.sched_getaffinity(0))
    seed = os.urandom(32)
    sizes = station_sizes()
    order = np.argsort(sizes, kind="stable")
    step = max(1, round(1 / fraction))
    sample = sorted(int(i) for i in order[::step]) if step > 1 else list(range(STATIONS))
    if int(np.argmax(sizes)) not in sample:
        sample.append(int(np.argmax(sizes)))
    sample_voters = int(sizes[sample].sum())
    print(f"national: {STATIONS} stations, {int(sizes.sum())} voters; building "
          f"{len(sample)} stations ({sample_voters} voters) on {workers} workers", flush=True)

    gen_b, build_b, open_b, size_b = _baseline(seed)

    progress = Progress(len(sample), "stations")
    results: list[StationResult] = []
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(build_one, i, int(sizes[i]), seed)
                   for i in sorted(sample, key=lambda i: -sizes[i])]  # big first: better packing
        done_voters = 0
        for f in as_completed(futures):
            r = f.result()
            results.append(r)
            done_voters += r.voters
            progress.advance(1, f"{done_voters} voters")
    wall = time.perf_counter() - t0
    children_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    parent_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    gen = sum(r.gen_s for r in results)
    build = sum(r.build_s for r in results)
    total_bytes = sum(r.size for r in results)
    scale = int(sizes.sum()) / sample_voters
    per_voter_build = build / sample_voters
    nat_wall = wall * scale
    nat_build_wall = build * scale / workers
    nat_bytes = total_bytes * scale
    label = "measured" if step == 1 else f"extrapolated x{scale:.2f} from the sample"
    body = f"""Stations built: **{len(results)}** of {STATIONS} ({sample_voters:,} of
{int(sizes.sum()):,} voters; {'full run' if step == 1 else f'every {step}th station by size'}),
10 synthetic ISO 19794-2 templates per voter, 2-4 kiosks per station, {workers} worker processes.

| figure | value |
|---|---|
| wall time, sample (generate + build + hash) | {wall:.1f} s |
| CPU in build_package + hash, sample | {build:.1f} s ({per_voter_build * 1e6:.1f} µs/voter) |
| CPU generating synthetic voters, sample | {gen:.1f} s (not part of a real CEC run) |
| package bytes, sample | {total_bytes / 2**30:.2f} GiB ({total_bytes // sample_voters} B/voter) |
| **national wall time, all {workers} cores ({label})** | **{nat_wall:.0f} s** |
| national build-only time, all cores ({label}) | {nat_build_wall:.0f} s |
| national package volume ({label}) | {nat_bytes / 2**30:.1f} GiB |
| peak RSS of one worker (largest station {LARGEST} voters) | {children_rss / 1024:.0f} MiB |
| peak RSS of the parent (it also ran the one-core baseline) | {parent_rss / 1024:.0f} MiB |
| baseline, {LARGEST}-voter station on one core: build | {build_b:.2f} s \
({size_b / 2**20:.1f} MiB; generation {gen_b:.2f} s) |
| baseline, the same package opened on a kiosk (verify + decrypt + decode) | {open_b:.2f} s |

Memory is per worker and bounded by the largest station, not by the country:
a worker holds one station at a time. The machine is shared with other
engineers' jobs, so wall times are upper bounds.
"""
    print(body)
    write_section("provision", "Roll packages at national scale (bench_provision)", body)


if __name__ == "__main__":
    main()
