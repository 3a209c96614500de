"""``kesp-agent audit verify|show``: the audit log from the command line."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from nacl.signing import VerifyKey

from agent.audit.log import AUDIT_FILE, AuditError
from agent.audit.verify import AuditReport, verify_chain

_DEFAULT_STATE_DIR = "/var/lib/kesp"
_DEFAULT_KEY_DIR = "/etc/kesp/keys"


def _log_path(args: argparse.Namespace) -> Path:
    return Path(args.file) if args.file else Path(args.state_dir) / AUDIT_FILE


def _verify_key(args: argparse.Namespace) -> VerifyKey:
    if args.verify_key:
        try:
            return VerifyKey(bytes.fromhex(args.verify_key))
        except (ValueError, TypeError) as exc:
            raise AuditError(f"--verify-key is not a 32-byte hex key: {exc}") from exc
    from agent.runtime.keys import KeyFileError, load_keys

    try:
        return load_keys(args.key_dir).signing.verify_key
    except KeyFileError as exc:
        raise AuditError(str(exc)) from exc


def _show(path: Path, args: argparse.Namespace) -> int:
    if not path.is_file():
        raise AuditError(f"no audit log at {path}")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        sql, params = "SELECT seq, body FROM audit", []
        if args.event:
            sql += " WHERE event = ?"
            params.append(args.event)
        sql += " ORDER BY seq"
        rows = con.execute(sql, params).fetchall()
    except sqlite3.DatabaseError as exc:
        raise AuditError(f"cannot read {path}: {exc}") from exc
    finally:
        con.close()
    if args.last:
        rows = rows[-args.last :]
    for seq, text in rows:
        if args.json:
            print(text)
            continue
        try:
            body = json.loads(text)
            fields = " ".join(f"{k}={v}" for k, v in sorted(body["fields"].items()))
            print(f"{seq:>7} {body['ts']} {body['event']:<28} {fields}")
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            print(f"{seq:>7} <unreadable entry>")
    return 0


def audit_cli(argv: list[str]) -> int:
    """``kesp-agent audit verify|show ...``; returns the process exit code.

    Exit codes: 0 verified / shown, 1 the chain does not verify (or, with
    ``--strict``, was not closed cleanly), 2 usage error or no readable log.
    """
    parser = argparse.ArgumentParser(prog="kesp-agent audit", description="The audit log.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("verify", "check the hash chain and checkpoint signatures"),
                        ("show", "print entries")):  # fmt: skip
        p = sub.add_parser(name, help=help_)
        p.add_argument("--state-dir", default=_DEFAULT_STATE_DIR, help="agent state directory")
        p.add_argument("--file", help=f"audit log file (default: STATE_DIR/{AUDIT_FILE})")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "verify":
            p.add_argument("--key-dir", default=_DEFAULT_KEY_DIR, help="device key directory")
            p.add_argument("--verify-key", help="device public key (hex) instead of --key-dir")
            p.add_argument("--expect-head", help="head hash that must be in the log")
            p.add_argument("--strict", action="store_true",
                           help="fail (exit 1) if the log was not closed cleanly")
            p.add_argument("--control-socket",
                           help="the agent's control socket: an open log of a running agent "
                                "is not an unclean stop (kesp-agent passes it from the config)")
        else:
            p.add_argument("--event", help="only entries of this event id")
            p.add_argument("--last", type=int, default=0, help="only the last N entries")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    path = _log_path(args)
    if not path.is_file():
        print(f"kesp-agent audit: no audit log at {path}: name the kiosk's configuration "
              "(kesp-agent --config /etc/kesp/agent.json audit ...) or the log (--file)",
              file=sys.stderr)
        return 2
    try:
        if args.command == "show":
            return _show(path, args)
        report = verify_chain(path, _verify_key(args), expected_head=args.expect_head)
    except AuditError as exc:
        print(f"kesp-agent audit: {exc}", file=sys.stderr)
        return 2
    running = not report.closed_cleanly and _agent_running(args.control_socket)
    if args.json:
        out = {k: getattr(report, k) for k in report.__dataclass_fields__}
        out["problem"] = report.problem.value if report.problem else None
        out["agent_running"] = running
        print(json.dumps(out, sort_keys=True))
    else:
        print(_verdict(report, running))
    if not report.ok:
        return 1
    return 1 if args.strict and not report.closed_cleanly and not running else 0


def _agent_running(socket_path: str | None) -> bool:
    """True when an agent answers on ``socket_path`` (its log is open, not cut short)."""
    if not socket_path:
        return False
    from agent.runtime.control import ControlError, request

    try:
        request(socket_path, "status", timeout_s=5.0)
    except ControlError as exc:
        return exc.refused  # it answered, even if with a refusal
    except OSError:
        return False
    return True


def _verdict(report: AuditReport, running: bool) -> str:
    """A one-line verdict in Kyrgyz / Russian, then the technical summary."""
    if not report.ok:
        head = ("Журнал бузулган же өзгөртүлгөн: техникке жана комиссияга кабарлаңыз / "
                "Журнал повреждён или изменён: сообщите технику и комиссии")
        return f"{head}\n{report.summary()}"
    if report.closed_cleanly:
        head = "Журнал бүтүн, туура жабылган / Журнал цел, закрыт штатно"
        return f"{head}\n{report.summary()}"
    tail = report.unsigned_tail
    if running:
        head = ("Журнал бүтүн; агент иштеп жатат, журнал ачык / "
                "Журнал цел; агент работает, журнал открыт")
        detail = (f"OK: {report.entries} entries, head {report.head_seq} {report.head_hash}, "
                  f"{report.checkpoints} checkpoints, signed through entry "
                  f"{report.signed_through}; the agent is running: {tail} entry(ies) after the "
                  "last checkpoint, normal while it runs (the final checkpoint is written when "
                  "it stops)")
        return f"{head}\n{detail}"
    head = ("Журнал бүтүн, бирок агент акыркы кол тамгасыз токтогон (ток өчкөн же ката) / "
            "Журнал цел, но агент остановился без финальной отметки (отключение питания "
            "или сбой)")
    return f"{head}\n{report.summary()}"
