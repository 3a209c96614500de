"""A simulated serial ID-document reader on a real pty.

The device side of :mod:`agent.drivers.docreader.reader`: when a document is
"presented" it writes the MRZ lines as a serial reader does (CR, LF or CR LF
terminated, optionally STX/ETX framed or as one line), byte by byte if asked.
Zones are composed with the production builders
(:func:`agent.drivers.docreader.mrz.build_td1` /
:func:`agent.drivers.docreader.mrz.build_td3`), so every check digit follows
the same rules the parser enforces. Fault scenarios: line noise between documents, documents
with a line missing, corrupted check digits, slow byte-at-a-time delivery,
unplug/replug.

The host opens :attr:`DocReaderSimulator.path`, a symlink to the pty's slave
side that survives unplug/replug (as a udev ``SYMLINK+=`` rule would).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import random
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from agent.drivers.docreader.mrz import build_td1, build_td3
from hardware_sim.link import PtyLink

Framing = Literal["cr", "lf", "crlf", "stx-etx", "one-line"]

_SURNAMES = ("ASANOV", "TOKTOGULOVA", "BEKMURZAEV", "ISMAILOVA", "OMURBEKOV", "SYDYKOVA")
_GIVEN = ("BAKYT", "AIGUL", "NURLAN", "CHOLPON", "ULAN", "GULNARA<ASELOVNA")


def synthetic_document(
    number: int, fmt: Literal["td1", "td3"] = "td1", *, today: _dt.date | None = None
) -> tuple[str, ...]:
    """A deterministic, valid Kyrgyz ID card (TD1, ``ID`` + 7 digits) or passport (TD3)."""
    today = today or _dt.date.today()
    rng = random.Random(number)
    birth = _dt.date(1940 + rng.randrange(66), 1 + rng.randrange(12), 1 + rng.randrange(28))
    expiry = today.replace(day=1) + _dt.timedelta(days=365 * (1 + rng.randrange(9)))
    surname, given = rng.choice(_SURNAMES), rng.choice(_GIVEN).replace("<", " ")
    sex: Literal["M", "F"] = "M" if rng.random() < 0.5 else "F"
    if fmt == "td1":
        pin = f"{rng.choice('12')}{birth:%d%m%Y}{rng.randrange(10**5):05d}"
        return build_td1(
            document_number=f"ID{number:07d}", surname=surname, given_names=given,
            birth_date=birth, expiry_date=expiry, sex=sex, optional_data=pin,
        )  # fmt: skip
    return build_td3(
        document_number=f"AC{number:07d}", surname=surname, given_names=given,
        birth_date=birth, expiry_date=expiry, sex=sex,
    )  # fmt: skip


def corrupt(lines: tuple[str, ...], rng: random.Random) -> tuple[str, ...]:
    """Change one digit of the zone (a misread), keeping the layout."""
    digits = [(i, j) for i, ln in enumerate(lines) for j, c in enumerate(ln) if c.isdigit()]
    i, j = rng.choice(digits)
    bad = str((int(lines[i][j]) + 1 + rng.randrange(8)) % 10)
    out = list(lines)
    out[i] = lines[i][:j] + bad + lines[i][j + 1 :]
    return tuple(out)


def encode(lines: tuple[str, ...], framing: Framing = "cr") -> bytes:
    """The bytes a serial reader sends for ``lines``."""
    if framing == "one-line":
        return ("".join(lines) + "\r").encode("ascii")
    if framing == "stx-etx":
        return ("\x02" + "\r".join(lines) + "\r\x03").encode("ascii")
    term = {"cr": "\r", "lf": "\n", "crlf": "\r\n"}[framing]
    return "".join(ln + term for ln in lines).encode("ascii")


@dataclass(frozen=True)
class Scenario:
    """A named behaviour for :func:`cli_main` and tests."""

    name: str
    description: str
    framing: Framing = "cr"
    noise: bool = False
    missing_line_every: int = 0
    corrupt_every: int = 0
    byte_delay_s: float = 0.0


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("normal", "clean reads, CR-terminated lines"),
        Scenario("crlf", "CR LF line ends", framing="crlf"),
        Scenario("stx-etx", "STX ... ETX framed zone", framing="stx-etx"),
        Scenario("one-line", "whole zone as a single line", framing="one-line"),
        Scenario("noisy", "line noise between documents", noise=True),
        Scenario("partial", "every 3rd document loses a line", missing_line_every=3),
        Scenario("misread", "every 3rd document has a wrong digit", corrupt_every=3),
        Scenario("slow", "byte-at-a-time delivery, 2 ms per byte", byte_delay_s=0.002),
    )
}


class DocReaderSimulator:
    """The reader's side of a pty; write documents with :meth:`present`."""

    def __init__(self, link: str | Path | None = None) -> None:
        self._link = PtyLink(link, prefix="kesp-docreader-", name="ttyMRZ")
        self._lock = threading.Lock()
        self.documents = 0

    @property
    def path(self) -> str:
        """The stable symlink the host opens; it survives unplug/replug."""
        return str(self._link.path)

    def start(self) -> DocReaderSimulator:
        """Create the pty and the symlink (plug the reader in)."""
        with self._lock:
            self._link.plug()
        return self

    def unplug(self) -> None:
        """Pull the cable: the pty closes (host reads fail with EIO), the link goes away."""
        with self._lock:
            self._link.unplug()

    def replug(self) -> None:
        """Plug back in: a new pty behind the same link."""
        self.start()

    def stop(self) -> None:
        """Unplug and remove the temporary directory."""
        with self._lock:
            self._link.close()

    def __enter__(self) -> DocReaderSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def write(self, data: bytes, byte_delay_s: float = 0.0) -> None:
        """Send raw bytes to the host (all at once, or one byte per ``byte_delay_s``)."""
        with self._lock:
            master = self._link.master
            if master is None:
                raise OSError("document reader simulator is unplugged")
            chunks = [data[i : i + 1] for i in range(len(data))] if byte_delay_s else [data]
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(master, view) :]
                if byte_delay_s:
                    time.sleep(byte_delay_s)

    def present(
        self, lines: tuple[str, ...], framing: Framing = "cr", byte_delay_s: float = 0.0
    ) -> None:
        """A document is swiped: send its MRZ lines."""
        self.write(encode(lines, framing), byte_delay_s)
        self.documents += 1

    def noise(self, rng: random.Random, n: int = 40) -> None:
        """Line noise: random bytes and a terminator (what a reader emits on a bad swipe)."""
        self.write(bytes(rng.randrange(256) for _ in range(n)) + b"\r")


def run_scenario(
    sim: DocReaderSimulator,
    scenario: Scenario,
    count: int,
    interval_s: float,
    *,
    fmt: Literal["td1", "td3"] = "td1",
    first_number: int = 1,
    seed: int = 0,
    stop: threading.Event | None = None,
) -> list[tuple[str, ...]]:
    """Present ``count`` documents per ``scenario``; returns the zones as intended."""
    rng = random.Random(seed)
    sent: list[tuple[str, ...]] = []
    for k in range(1, count + 1):
        if stop is not None and stop.is_set():
            break
        lines = synthetic_document(first_number + k - 1, fmt)
        sent.append(lines)
        if scenario.noise:
            sim.noise(rng)
        if scenario.corrupt_every and k % scenario.corrupt_every == 0:
            lines = corrupt(lines, rng)
        if scenario.missing_line_every and k % scenario.missing_line_every == 0:
            drop = rng.randrange(len(lines))
            lines = lines[:drop] + lines[drop + 1 :]
        sim.present(lines, scenario.framing, scenario.byte_delay_s)
        if stop is not None:
            stop.wait(interval_s)
        else:
            time.sleep(interval_s)
    return sent


def cli_main(argv: list[str]) -> int:
    """``kesp-sim docreader``: present synthetic documents on a pty."""
    ap = argparse.ArgumentParser(prog="kesp-sim docreader", description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="normal", choices=sorted(SCENARIOS))
    ap.add_argument("--link", help="stable symlink to create (default: a temporary path)")
    ap.add_argument("--format", choices=("td1", "td3"), default="td1")
    ap.add_argument("--count", type=int, default=0, help="documents to present (0 = forever)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between documents")
    ap.add_argument("--first", type=int, default=1, help="number of the first synthetic document")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--list-scenarios", action="store_true")
    args = ap.parse_args(argv)
    if args.list_scenarios:
        for s in SCENARIOS.values():
            print(f"{s.name:<10} {s.description}")
        return 0
    scenario = SCENARIOS[args.scenario]
    stop = threading.Event()
    with DocReaderSimulator(args.link) as sim:
        print(
            f"document reader simulator ({scenario.name}) at {sim.path} -> "
            f"{os.path.realpath(sim.path)}",
            flush=True,
        )
        try:
            count = args.count if args.count > 0 else sys.maxsize
            run_scenario(sim, scenario, count, args.interval, fmt=args.format,
                         first_number=args.first, seed=args.seed, stop=stop)  # fmt: skip
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main(sys.argv[1:]))
