"""``kesp-sim day`` (``make demo``): a whole simulated polling-station day, end to end.

Nothing is mocked; the rig (:mod:`hardware_sim.rig`) does steps 1, 2 and the
checks of step 4 for the tests and the crash harness too. The day:

1. provisions a station like the CEC and a technician would: a CEC key, the
   kiosk's own keys and configuration, a signed and encrypted roll of 40
   voters enrolled with real FVC2002 ISO templates (the register's
   templates), the kiosk registered with central ops;
2. starts a private mosquitto (if installed), the simulated Grow sensor and
   ESC/POS printer on real ptys, central ops' verifier, and the agent itself
   as a separate process (``kesp-agent run``), exactly as systemd would;
3. opens the station (zero report), sends the visitors: voters pressing
   *other* impressions of their enrolled finger, repeat visits, people not on
   the list, a voter verified by ID document, a commission's manual decision;
   each virtual voter reacts to the sensor's LED ring like a person would;
4. closes the station (closing report), stops the agent and checks that the
   mark store, the slips on paper and what central ops verified agree.

The day is deterministic for a given ``--seed`` (default 7): every press is
drawn from the seed, the finger and the impression. Any outcome other than the
plan's is explained on its line and counted in the summary; the day ends with
``DEMO OK: ...`` and exit 0 only when every difference is of an allowed kind (a
false non-match the commission settles, a repeat visitor not recognised), never
a slip naming another voter or a second ballot; otherwise it says what
disagrees and exits 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from agent.roll.package import Roll
from hardware_sim.reference_data import ReferenceDataError, reference_data
from hardware_sim.rig import (
    Rig,
    RigError,
    Visit,
    collect,
    disagreements,
    merged_marks,
)


def plan(roll: Roll) -> list[Visit]:
    """The day's visitors (deterministic): each repeat visit comes after the first one."""
    visits = [Visit(f"voter {i + 1}", i, "identified") for i in range(0, 28)]
    visits.insert(5, Visit("voter 30 with ID card", 29, "identified",
                           document=roll.voters[29].document))
    for i in (2, 11, 20):
        first = next(k for k, v in enumerate(visits) if v.finger == i)
        visits.insert(first + 4, Visit(f"voter {i + 1} again", i, "refused"))
    for j in range(34, 38):
        visits.append(Visit(f"stranger {j - 33}", j, "not-identified"))
    visits.append(Visit("voter 31 with a cut finger", 38, "not-identified", manual=31))
    visits.append(Visit("voter 30 again", 29, "refused"))
    return visits


def _route(visits: list[Visit], n_kiosks: int) -> list[tuple[int, Visit]]:
    """Spread visitors over the kiosks; a repeat visit goes to another kiosk than the first."""
    routed: list[tuple[int, Visit]] = []
    first_at: dict[int, int] = {}
    for i, v in enumerate(visits):
        k = i % n_kiosks
        if v.finger in first_at and n_kiosks > 1:
            k = (first_at[v.finger] + 1) % n_kiosks
        first_at.setdefault(v.finger, k)
        routed.append((k, v))
    return routed


DEFAULT_SEED = 7


def run_day(data: Path, out: Path, kiosks: int = 1, seed: int = DEFAULT_SEED) -> int:
    """Run the demo day with ``kiosks`` kiosks in one station; returns the exit code."""
    if not (data / "fvc2002" / "DB1_B").is_dir():
        print(f"kesp-sim day: no fingerprint data at {data} (expected fvc2002/DB1_B..DB4_B "
              "there); leave out --data to use the data shipped with the package",
              file=sys.stderr)
        return 2
    problems: list[str] = []
    try:
        with Rig(data, out, kiosks=kiosks, seed=seed) as rig:
            rig.say("starting the agent (the very first start compiles the extraction and "
                    "matching kernels into the Numba cache, a minute or two; later starts "
                    "take seconds)")
            for k in rig.kiosks:
                ready_s = k.start_agent()
                rig.say(f"{k.device}: agent ready in {ready_s:.1f}s (process start to "
                        "control socket)")
            for k in rig.kiosks:
                k.command("open")
                k.printer.wait_for_documents(1, timeout=30)
            rig.say("station opened: zero report printed" + (" on every kiosk"
                                                              if kiosks > 1 else ""))
            assert rig.roll is not None
            for n, (index, visit) in enumerate(_route(plan(rig.roll), kiosks)):
                # each visitor's own stream: what one does never shifts the next one's presses
                rig.kiosks[index].visit(visit, np.random.default_rng([seed, n]))
            if kiosks > 1:
                time.sleep(3.0)  # let the last marks reach every peer before closing
            all_facts = []
            for k in rig.kiosks:
                before = len(k.printer.documents)
                result = k.command("close")
                k.printer.wait_for_documents(before + 1, timeout=30)
                rig.say(f"{k.device}: closed, closing report {result.get('closing_report')}")
            for k in rig.kiosks:
                code = k.stop_agent()
                if code != 0:
                    problems.append(f"agent of {k.device} exited with {code}")
                facts = collect(k)
                all_facts.append(facts)
                problems += [f"{k.device}: {p}" for p in disagreements(facts, rig.ops, k.device)]
                if facts.paper["zero-report"] != 1 or facts.paper["closing-report"] != 1:
                    problems.append(f"{k.device}: reports on paper: {dict(facts.paper)}")
            if kiosks > 1:
                sets = [merged_marks(k) for k in rig.kiosks]
                if any(m != sets[0] for m in sets):
                    problems.append("the kiosks' merged mark sets differ")
                voters = [v for _, _, v in sets[0]]
                twice = sorted({v for v in voters if voters.count(v) > 1})
                if twice:
                    problems.append(f"voters marked at two kiosks: {twice}")
                rig.say(f"merged marks identical on all {kiosks} kiosks: "
                        f"{len(sets[0])} marks, {len(twice)} conflicts")
            problems += [f"false match: {w}" for w in rig.wrong]
            differences = list(rig.differences)
            problems += [f"{d.label}: expected {d.expected}, got {d.got}: {d.why}"
                         for d in differences if not d.allowed and not d.wrong_voter]
            verified = 0
            if rig.ops is not None:
                verified = rig.ops.stats().accepted
                rig.say("\n--- central ops (kesp-ops watch) ---\n" + rig.ops.render_watch())
    except RigError as exc:
        print(f"DEMO FAILED: {exc}", file=sys.stderr)
        return 1
    total: Counter[str] = Counter()
    methods: Counter[str] = Counter()
    slips = 0
    for f in all_facts:
        total.update(f.store_counts)
        methods.update(f.methods)
        slips += f.paper["identified"] + f.paper["refused"] + f.paper["not-identified"]
    print(f"methods: {dict(methods)}; slips and reports under {out}/kiosk-*/slips")
    if problems:
        for p in problems:
            print(f"DISAGREEMENT: {p}", file=sys.stderr)
        return 1
    kinds = Counter(d.why.split(":")[0] for d in differences)
    print(f"differences from the plan: {len(differences)}, all allowed"
          + "".join(f"; {n} x {why}" for why, n in kinds.items()))
    print(f"DEMO OK: {total['identified']} identified, {total['refused']} refused, "
          f"{total['not_identified']} not identified, {slips} slips, "
          f"{verified} telemetry messages verified, seed {seed}, "
          f"{len(differences)} allowed differences from the plan")
    return 0


def cli_main(argv: list[str]) -> int:
    """``kesp-sim day [--data DIR] [--out DIR]``."""
    p = argparse.ArgumentParser(prog="kesp-sim day", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=None,
                   help="fingerprint data folder (default: the data shipped with the package;"
                        " ../shared/data also works)")
    p.add_argument("--out", type=Path, default=Path("out/demo"),
                   help="where the kiosk state, slips and logs go (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help="seeds every simulated press: the same seed gives the same day "
                        "(default %(default)s)")
    p.add_argument("--kiosks", type=int, default=1, choices=range(1, 9),
                   help="kiosks in the station, syncing their marks peer to peer")
    p.add_argument("--sensor", default="grow-serial",
                   choices=("grow-serial", "nb1010-replay", "aes3500-replay"),
                   help="the simulated Grow sensor on a pty (default), or a real USB "
                        "sensor's recorded traffic replayed through its real driver")
    args = p.parse_args(argv)
    try:
        data: Path = args.data or reference_data()
    except ReferenceDataError as exc:
        print(f"kesp-sim day: {exc}", file=sys.stderr)
        return 2
    if args.sensor != "grow-serial":
        from hardware_sim.replay_day import run_replay_day

        return run_replay_day(data, args.out, args.sensor)
    return run_day(data, args.out, args.kiosks, args.seed)
