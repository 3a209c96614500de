"""``kesp-sim``: start a simulator (with named fault scenarios) or a simulated day.

Each sub-command lives in the module that owns that simulator and exposes
``cli_main(argv) -> int``; this dispatcher only imports the one asked for, so
``kesp-sim printer`` does not pay for Numba start-up.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "day": ("hardware_sim.demo", "run a simulated polling-station day end to end"),
    "paper": ("hardware_sim.paper", "render every slip and report as printed (docs/img)"),
    "docreader": ("hardware_sim.docreader_sim", "ID-document (MRZ) reader on a pty"),
    "diskfull": ("hardware_sim.diskfull",
                 "the state disk fills at every growing write of a turn and a start-up"),
    "powerloss": ("hardware_sim.powerloss",
                  "true power cuts along voters' turns, on a disk that forgets"),
    "sensor": ("hardware_sim.grow_sim", "ZhianTec/Grow fingerprint sensor on a pty"),
    "printer": ("hardware_sim.escpos_sim", "ESC/POS receipt printer on a pty"),
    "replay-capture": ("hardware_sim.usb_replay", "replay a recorded USB sensor capture"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "usage: kesp-sim COMMAND [options]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``kesp-sim``."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"kesp-sim: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    result: int = module.cli_main(rest)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
