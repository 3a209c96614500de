"""``kesp-agent``: run the kiosk agent, or give it an operator command.

Answers are plain sentences in Kyrgyz, then Russian (the commission reads
them); ``--json`` prints the agent's answer as JSON for scripts. Every command
names the configuration with ``--config`` (default ``/etc/kesp/agent.json``);
operator commands reach the running agent through its control socket.

Exit codes: 0 done; 1 refused (the station refused the command, or the voter
was already identified); 2 a mistyped command or argument; 3 done, but a slip
or report waits for the printer; 69 the agent is not running or not
reachable; 78 configuration problem.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
from typing import Any

from agent.runtime.config import ConfigError, load_config
from agent.runtime.control import ControlError, request
from agent.runtime.operator_text import (
    EXIT_CONFIG,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    command_answer,
    one_line,
    refusal,
    unreachable,
)
from agent.station.parameters import MIN_FREE_BYTES

DEFAULT_CONFIG = os.environ.get("KESP_CONFIG", "/etc/kesp/agent.json")
OPERATOR_COMMANDS = {
    "status": "what the kiosk is doing: devices, peers, uplink, slips waiting, what to do",
    "open": "open the station: print the zero report (the station must be empty)",
    "pause": "stop taking voters for a while (breaks, a problem at the table)",
    "resume": "take voters again after a pause",
    "close": "close the station and print the closing report",
    "export": "write the signed station archive (after close)",
}
ARG_COMMANDS = {
    "reprint": ("SERIAL", "print another copy of a slip or report, marked DUPLICATE"),
    "document": ("NUMBER", "the voter's ID document number, typed: the next finger is "
                           "checked against that voter only"),
    "manual": ("LIST_NUMBER", "the commission admits the voter with this list number "
                              "(after a failed identification)"),
    "revoke": ("KIOSK", "the commission revokes a kiosk of this station (stolen, faulty): "
                        "its new marks are refused at every kiosk"),
}
_KIOSK_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_SERIAL_RE = re.compile(r"^[a-z0-9][a-z0-9-]*-\d{5}$")
_DOCUMENT_RE = re.compile(r"^[A-Za-z0-9]{4,20}$")
_MAX_LIST_NUMBER = 10_000_000


class _UsageError(Exception):
    """A mistyped argument: one line, Kyrgyz / Russian."""


def _json_too(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Accept ``--json`` after the command as well as before it."""
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print the agent's answer as JSON")
    return p


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kesp-agent",
        description="Run the kiosk agent, or give the running agent an operator command. "
                    "Answers are in Kyrgyz and Russian; --json for scripts.",
        epilog="Exit codes: 0 done, 1 refused, 2 mistyped, 3 a slip waits for the printer, "
               "69 agent not running, 78 configuration problem.",
    )
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="the kiosk's agent.json (default %(default)s)")
    p.add_argument("--json", action="store_true",
                   help="print the agent's answer as JSON (for scripts); exit codes unchanged")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the agent service (systemd starts this)")
    run.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    for name, help_ in OPERATOR_COMMANDS.items():
        _json_too(sub.add_parser(name, help=help_, description=help_))
    for name, (metavar, help_) in ARG_COMMANDS.items():
        _json_too(sub.add_parser(name, help=help_, description=help_)).add_argument(
            "value", metavar=metavar)
    audit = sub.add_parser("audit", help="verify or show the audit log (verify|show, --help)",
                           add_help=False)
    audit.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def _checked_arg(command: str, value: str) -> str:
    """The argument of ``reprint``/``document``/``manual``, or :class:`_UsageError`."""
    value = value.strip()
    if command == "manual":
        if not value.isdigit() or not 1 <= int(value) <= _MAX_LIST_NUMBER:
            raise _UsageError(one_line((
                f"тизмедеги номер {value!r} туура эмес: бүтүн сан териңиз, мисалы kesp-agent "
                "manual 17",
                f"номер по списку {value!r} неверен: введите целое число, например "
                "kesp-agent manual 17")))
        return str(int(value))
    if command == "reprint":
        if not _SERIAL_RE.match(value):
            raise _UsageError(one_line((
                f"чектин номери {value!r} туура эмес: чекте басылгандай териңиз, мисалы "
                "s-0001-kiosk-a-00007",
                f"номер чека {value!r} неверен: введите как напечатано на чеке, например "
                "s-0001-kiosk-a-00007")))
        return value
    if command == "revoke":
        if not _KIOSK_RE.match(value):
            raise _UsageError(one_line((
                f"киосктун аты {value!r} туура эмес: kesp-agent status көрсөткөндөй териңиз, "
                "мисалы kiosk-0001-b",
                f"имя киоска {value!r} неверно: введите как в kesp-agent status, например "
                "kiosk-0001-b")))
        return value
    if not _DOCUMENT_RE.match(value):
        raise _UsageError(one_line((
            f"документтин номери {value!r} туура эмес: 4-20 латын тамгасы же сан, боштуксуз",
            f"номер документа {value!r} неверен: 4-20 латинских букв или цифр, без пробелов")))
    return value.upper()


def _audit(config: str, rest: list[str]) -> int:
    from agent.audit.cli import audit_cli

    if not rest or rest[0] in ("-h", "--help"):
        return audit_cli(rest or ["--help"])
    cfg = None
    if "--state-dir" not in rest and "--file" not in rest:
        try:
            cfg = load_config(config)
        except ConfigError:
            cfg = None
    if cfg is not None:
        rest = [*rest, "--state-dir", cfg.state_dir]
        if rest[0] == "verify" and "--key-dir" not in rest and "--verify-key" not in rest:
            rest += ["--key-dir", cfg.key_dir]
        if rest[0] == "verify":
            rest += ["--control-socket", cfg.control_socket]
    return audit_cli(rest)


def _full_disk_mb(state_dir: str) -> float | None:
    """Free MB on the agent's state disk when it is below the agent's reserve, else None
    (an agent that cannot start for lack of space is what the operator must hear about)."""
    try:
        free = shutil.disk_usage(state_dir).free
    except OSError:
        return None
    return free / 1e6 if free < MIN_FREE_BYTES else None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``kesp-agent``."""
    args = _parser().parse_args(argv)
    if args.command == "run":
        logging.basicConfig(level=args.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from agent.runtime.service import run

        return run(args.config)
    if args.command == "audit":
        rest = list(args.rest)
        if args.json and rest and "--json" not in rest:
            rest.append("--json")
        return _audit(args.config, rest)
    value = getattr(args, "value", "")
    try:
        if args.command in ARG_COMMANDS:
            value = _checked_arg(args.command, value)
    except _UsageError as exc:
        print(f"kesp-agent {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"kesp-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        result: dict[str, Any] = request(cfg.control_socket, args.command, value)
    except ControlError as exc:
        if args.json:
            print(json.dumps({"ok": False, "code": exc.code, "error": str(exc),
                              "params": exc.params}, ensure_ascii=False))
        if exc.refused:
            print(f"kesp-agent {args.command}: "
                  + one_line(refusal(exc.code, exc.params, str(exc))), file=sys.stderr)
            return EXIT_REFUSED
        print(f"kesp-agent {args.command}: "
              + one_line(unreachable(str(exc), _full_disk_mb(cfg.state_dir))), file=sys.stderr)
        return EXIT_UNAVAILABLE
    answer = command_answer(args.command, result)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print(answer.text())
    return answer.code


if __name__ == "__main__":
    raise SystemExit(main())
