"""``kesp-agent``: run the kiosk agent, or give it an operator command.

    kesp-agent run                      # the service (systemd starts this)
    kesp-agent status|open|pause|resume|close|export
    kesp-agent reprint SERIAL           # another copy, printed as DUPLICATE
    kesp-agent document NUMBER          # ID document number typed by the operator
    kesp-agent manual LIST_NUMBER       # commission's decision to admit a voter
    kesp-agent revoke KIOSK             # commission revokes a peer kiosk (stolen, faulty)
    kesp-agent audit verify|show        # check the hash-chained audit log

Every command names the configuration with ``--config`` (default
``/etc/kesp/agent.json``); operator commands reach the running agent through
its control socket. Exit codes: 0 done, 1 refused or failed, 2 usage,
78 configuration problem.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from agent.runtime.config import ConfigError, load_config
from agent.runtime.control import ControlError, request

DEFAULT_CONFIG = os.environ.get("KESP_CONFIG", "/etc/kesp/agent.json")
OPERATOR_COMMANDS = ("status", "open", "pause", "resume", "close", "export")
ARG_COMMANDS = {"reprint": "SERIAL", "document": "NUMBER", "manual": "LIST_NUMBER",
                "revoke": "KIOSK"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kesp-agent", description=__doc__.split("\n")[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="agent.json (default %(default)s)")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the agent service")
    run.add_argument("--log-level", default="INFO")
    for name in OPERATOR_COMMANDS:
        sub.add_parser(name, help=f"{name} (operator command to the running agent)")
    for name, metavar in ARG_COMMANDS.items():
        sub.add_parser(name, help=f"{name} {metavar}").add_argument("value", metavar=metavar)
    audit = sub.add_parser("audit", help="verify or show the audit log")
    audit.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``kesp-agent``."""
    args = _parser().parse_args(argv)
    if args.command == "run":
        logging.basicConfig(level=args.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from agent.runtime.service import run

        return run(args.config)
    if args.command == "audit":
        from agent.audit.cli import audit_cli

        rest = list(args.rest)
        try:
            cfg = load_config(args.config)
        except ConfigError:
            cfg = None
        if cfg is not None and "--state-dir" not in rest:
            rest += ["--state-dir", cfg.state_dir, "--key-dir", cfg.key_dir]
        return audit_cli(rest)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"kesp-agent: {exc}", file=sys.stderr)
        return 78
    try:
        result = request(cfg.control_socket, args.command, getattr(args, "value", ""))
    except ControlError as exc:
        print(f"kesp-agent {args.command}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
