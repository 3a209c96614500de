"""Station peer sync: propagation delay, catch-up after a partition, bytes per mark.

Three kiosk processes (the harness of tests/peers, MarkStore + PeerSync with
the production timers) on a test-made network: network namespaces + veth +
bridge when permitted, distinct 127.0.0.x otherwise (the section says which).

* Propagation: kiosks take turns identifying voters at a paced rate; for each
  mark, the delay from "durable at the origin" to "merged at a peer" (both
  CLOCK_MONOTONIC on one machine). Baseline in the same run: the same marks
  without the push (``notify_local`` not called), i.e. anti-entropy only.
* Catch-up: one kiosk cut off for "an hour at the peak rate", the marks of
  that hour made on both sides, the link restored; time until all three hold
  the same set. Peak rate: 20 % of a 5,610-voter roll in one hour (1,122
  marks), above what four kits can physically process (one voter per ~30 s
  each: 480/h) and twice the average hourly rate of a 60 %-turnout 12-hour
  day (~560/h). Also the whole roll
  (5,610 marks: a station partitioned all day).
* Bytes: wire bytes (frames incl. signatures, excluding TCP/IP headers) per
  mark while connected, per mark during catch-up, and heartbeat bytes per
  second of an idle station.
"""

from __future__ import annotations

import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "peers"))

from agent.peers import PeerTiming
from agent.station.marks import Mark
from benchmarks.results import write_section

ROLL = 5_610
PEAK_HOUR = ROLL // 5


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def _bytes(st: Any) -> int:
    return sum(int(k.call("stats")["bytes_sent"]) for k in st.kiosks)


def _propagation(
    st: Any, voters: range, rate: float, notify: bool, total: int
) -> list[float]:
    made: dict[str, int] = {}
    t0 = time.monotonic()
    for n, v in enumerate(voters):
        while time.monotonic() < t0 + n / rate:
            time.sleep(0.001)
        r = st.kiosks[n % 3].call("identify", voter=v, notify=notify)
        made[f"{r['kiosk']}:{r['seq']}"] = int(r["t_ns"])
    st.wait_converged(total, timeout=30)
    delays: list[float] = []
    for k in st.kiosks:
        arrivals = k.call("arrivals")
        for key, t_made in made.items():
            if key in arrivals:
                delays.append((arrivals[key] - t_made) / 1e6)
    return delays


def _catch_up(
    st: Any, marks: int, first_voter: int, total: int
) -> tuple[float, float, int]:
    """Seconds from link restore to identical sets, of which reconnecting; wire bytes."""
    st.cut(2)
    deadline = time.monotonic() + 30
    while st.kiosks[2].call("connected") and time.monotonic() < deadline:
        time.sleep(0.1)
    side_c = marks // 3
    voters = list(range(first_voter, first_voter + marks))
    st.kiosks[2].call("identify_many", voters=voters[:side_c], timeout=300)
    rest = voters[side_c:]
    st.kiosks[0].call("identify_many", voters=rest[::2], timeout=300)
    st.kiosks[1].call("identify_many", voters=rest[1::2], timeout=300)
    b0 = _bytes(st)
    t0 = time.monotonic()
    st.restore(2)
    while not st.kiosks[2].call("connected"):
        time.sleep(0.01)
    t_connected = time.monotonic()
    st.wait_converged(total, timeout=120, poll_s=0.02)
    t_end = time.monotonic()
    return t_end - t0, t_connected - t0, _bytes(st) - b0


def main() -> None:
    station = importlib.import_module("station")
    timing = PeerTiming()
    sample = Mark(1234, "kiosk-1", 1234, "identify", "kiosk-1-1234", 1 << 56, bytes(64))
    mark_bytes = len(sample.to_bytes())
    with tempfile.TemporaryDirectory(prefix="kesp-bench-peers-") as tmp:
        st = station.Station(Path(tmp), timing=timing)
        try:
            st.start()
            st.wait_connected(timeout=30)
            b0, t0 = _bytes(st), time.monotonic()
            time.sleep(10)
            idle_bps = (_bytes(st) - b0) / (time.monotonic() - t0)

            b0 = _bytes(st)
            pushed = _propagation(st, range(1, 601), rate=20.0, notify=True, total=600)
            push_bytes = (_bytes(st) - b0) / 600
            pulled = _propagation(st, range(601, 721), rate=10.0, notify=False, total=720)

            hour_s, hour_link, hour_bytes = _catch_up(st, PEAK_HOUR, 10_001, 720 + PEAK_HOUR)
            day_s, day_link, day_bytes = _catch_up(st, ROLL, 20_001, 720 + PEAK_HOUR + ROLL)
            mode = st.mode
        finally:
            st.close()

    def row(name: str, d: list[float]) -> str:
        return (
            f"| {name} | {len(d)} | {statistics.median(d):.1f} | {_pct(d, 0.99):.1f} "
            f"| {max(d):.1f} |"
        )

    body = f"""Network: **{mode}** (3 kiosk processes; production timers: vector every
{timing.vector_interval_s:g} s, dead after {timing.dead_after_s:g} s, redial backoff
{timing.backoff_initial_s:g}-{timing.backoff_max_s:g} s). Target: p99 < 2,000 ms while connected.

Propagation delay, mark durable at origin -> merged at a peer (ms; each mark counted at both peers):

| mode | deliveries | p50 | p99 | max |
|---|---:|---:|---:|---:|
{row("push + anti-entropy (shipped), 20 marks/s", pushed)}
{row("baseline: anti-entropy only, 10 marks/s", pulled)}

Catch-up after a partition of kiosk 3: link restored -> all three hold the same set (s), of which
redial + handshake (the redial backoff is up to {timing.backoff_max_s:g} s with jitter) and
the transfer + merge after that:

| partition | marks made during it | catch-up | of which redial | of which transfer | wire bytes \
| bytes per mark |
|---|---:|---:|---:|---:|---:|---:|
| 1 h at peak (20 % of a {ROLL:,}-voter roll) | {PEAK_HOUR:,} | {hour_s:.2f} | {hour_link:.2f} \
| {hour_s - hour_link:.2f} | {hour_bytes:,} | {hour_bytes / PEAK_HOUR:.0f} |
| whole day (the full roll) | {ROLL:,} | {day_s:.2f} | {day_link:.2f} | {day_s - day_link:.2f} \
| {day_bytes:,} | {day_bytes / ROLL:.0f} |

Bytes exchanged (signed frames, all kiosks, excluding TCP/IP headers): **{push_bytes:.0f} bytes
per mark** while connected (a signed mark is {mark_bytes} bytes and reaches two peers; includes the
heartbeats of those 30 s); an idle 3-kiosk station spends **{idle_bps:.0f} bytes/s** on
heartbeat vectors.
"""
    write_section("peers", "Station peer sync (issue 9)", body)
    print(body)


if __name__ == "__main__":
    main()
