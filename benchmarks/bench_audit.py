"""Audit-log benchmark: durable append latency and whole-chain verification speed.

* append: :meth:`agent.audit.log.AuditLog.append` (SQLite WAL, ``synchronous=FULL``,
  one commit per entry, a signed checkpoint every 32) against the baseline of
  the alternative storage, an ``O_APPEND`` file with one ``fdatasync`` per
  JSON line, written in the same run on the same disk. The append sits on the
  path from finger to slip (the mark and the audit entry are both durable
  before printing), so its p95 matters for the 1.5 s target.
* verify: :func:`agent.audit.verify.verify_chain` over a day-sized log (5,610 voters,
  about 4 entries each plus status events, ~25,000 entries) — what
  ``kesp-agent audit verify`` costs at closing. The log is built on tmpfs
  (fsync is then free) because only verification is timed.

Run with ``python -m benchmarks audit``.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from nacl.signing import SigningKey

from agent.audit.events import EventId
from agent.audit.log import AuditLog, canonical_bytes, entry_hash
from agent.audit.verify import verify_chain
from benchmarks.results import write_section

APPENDS = 400
DAY_VOTERS = 5610


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _fields(i: int) -> dict[str, object]:
    return {"attempt_id": i, "method": "identify", "slip_serial": f"K01-{i:06d}",
            "score_band": "high"}  # fmt: skip


def bench_append(workdir: Path) -> tuple[list[float], list[float]]:
    """Per-append latencies (ms) of the audit log and of the fsynced-file baseline."""
    key = SigningKey.generate()
    log = AuditLog(workdir / "audit.sqlite", key, "kiosk-01")
    ours = []
    for i in range(1, APPENDS + 1):
        t0 = time.perf_counter()
        log.append(EventId.VOTER_IDENTIFIED, **_fields(i))
        ours.append((time.perf_counter() - t0) * 1000)
    log.close()

    base = []
    fd = os.open(workdir / "audit.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    prev = "0" * 64
    try:
        for i in range(1, APPENDS + 1):
            t0 = time.perf_counter()
            body = {"v": 1, "seq": i, "event": "voter-identified", "fields": _fields(i),
                    "prev": prev}  # fmt: skip
            canon = canonical_bytes(body)
            prev = entry_hash(canon)
            os.write(fd, json.dumps({**body, "hash": prev}).encode() + b"\n")
            os.fdatasync(fd)
            base.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
    return ours, base


def bench_verify(workdir: Path) -> tuple[int, float]:
    """(entries, seconds) to verify a day-sized log."""
    key = SigningKey.generate()
    path = workdir / "day.sqlite"
    with AuditLog(path, key, "kiosk-01") as log:
        log.append(EventId.AGENT_STARTED, software_version="0.1.0", boot_count=1,
                   clean_previous_stop=True)  # fmt: skip
        for i in range(1, DAY_VOTERS + 1):
            log.append(EventId.IDENTIFICATION_STARTED, attempt_id=i, lookup="mrz")
            log.append(EventId.VOTER_IDENTIFIED, **_fields(i))
            log.append(EventId.SLIP_PENDING, slip_serial=f"K01-{i:06d}", slip_kind="identified")
            log.append(EventId.SLIP_PRINTED, slip_serial=f"K01-{i:06d}", slip_kind="identified",
                       duplicate=False)  # fmt: skip
    t0 = time.perf_counter()
    report = verify_chain(path, key.verify_key)
    elapsed = time.perf_counter() - t0
    if not report.ok:
        raise RuntimeError(f"benchmark log does not verify: {report.summary()}")
    return report.entries, elapsed


def main() -> None:
    """Run both measurements and write the RESULTS.md section."""
    disk = Path(__file__).resolve().parent.parent / ".cache"
    disk.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=disk) as d:
        ours, base = bench_append(Path(d))
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=shm) as d:
        entries, seconds = bench_verify(Path(d))
    rows = [
        ("AuditLog.append (SQLite WAL, FULL)", ours),
        ("baseline: O_APPEND file + fdatasync", base),
    ]
    lines = [
        f"{APPENDS} appends each, same disk (`{disk}`), same run.",
        "",
        "| storage | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for name, vals in rows:
        lines.append(
            f"| {name} | {statistics.median(vals):.2f} | {_pct(vals, 0.95):.2f} | "
            f"{_pct(vals, 0.99):.2f} | {max(vals):.2f} |"
        )
    lines += [
        "",
        f"`verify_chain` over a day-sized log: {entries} entries in {seconds:.2f} s "
        f"({entries / seconds:,.0f} entries/s, hashes + catalogue checks + "
        f"{entries // 32} checkpoint signatures).",
    ]
    body = "\n".join(lines)
    print(body)
    write_section("audit", "Audit log: append latency and verification", body)


if __name__ == "__main__":
    main()
