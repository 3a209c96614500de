"""Deliberate durability bugs, planted in an agent process to prove a harness catches them.

``python -m hardware_sim.plants sync-normal-marks --config CFG run`` runs the
real agent (:func:`agent.runtime.cli.main`) with one change: the mark store
commits with ``synchronous=NORMAL`` (in WAL mode a commit then returns before
the WAL reaches the disk). The power-loss harness must report lost marks for
it; nothing in the agent's own code knows about plants.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from agent.runtime import sqlite_util
from agent.runtime.cli import main as agent_main
from agent.station import marks

PLANTS = ("sync-normal-marks",)


def _plant_sync_normal_marks() -> None:
    durable = sqlite_util.connect_durable

    def connect(path: str | Path, *, mode: int = 0o600) -> sqlite3.Connection:
        con = durable(path, mode=mode)
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    marks.connect_durable = connect  # type: ignore[attr-defined,assignment]


def main(argv: list[str] | None = None) -> int:
    """``python -m hardware_sim.plants PLANT AGENT-ARGS...``."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in PLANTS:
        print(f"usage: python -m hardware_sim.plants {'|'.join(PLANTS)} AGENT-ARGS...",
              file=sys.stderr)
        return 2
    _plant_sync_normal_marks()
    return agent_main(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
