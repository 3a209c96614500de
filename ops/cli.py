"""``kesp-ops``: the central ops console.

* ``kesp-ops watch``  live terminal view (turnout, offline kiosks, alerts);
* ``kesp-ops serve``  the live dashboard on ``/``, Prometheus metrics on ``/metrics``
  and the published turnout feed on ``/public/`` (:mod:`ops.web`);
* ``kesp-ops report`` turnout CSV and a PNG chart of turnout over the day;
* ``kesp-ops publish`` one signed public turnout snapshot (:mod:`ops.feed`).

With ``--broker`` ``watch`` and ``serve`` also run an ingesting
:class:`OpsService`; without it they only read the state store that other
ops instances write.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ops.parameters import OpsTuning
from ops.registry import RegistryError, load_ops_key
from ops.service import OpsError, OpsService
from ops.store import StateStore, StoreError, open_store
from ops.view import render_watch, turnout_csv, turnout_png
from ops.web.cli import add_publish_command, add_web_arguments, run_publish, serve_web


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kesp-ops", description="KESP central ops console")
    p.add_argument("--store", required=True, help="SQLite path or postgresql:// URL")
    p.add_argument("--prefix", default="kesp_", help="table name prefix")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("watch", "serve"):
        s = sub.add_parser(name)
        s.add_argument("--broker", help="mqtt(s)://host:port: also ingest from this broker")
        s.add_argument("--registry", type=Path, help="device registry file (with --broker)")
        s.add_argument("--ops-key", type=Path, help="ops signing key (rebirth/resend commands)")
        s.add_argument("--client-id", default="kesp-ops-1")
        s.add_argument("--username")
        s.add_argument("--password-file", type=Path)
        s.add_argument("--ca-file")
    sub.choices["watch"].add_argument("--interval", type=float, default=2.0)
    sub.choices["watch"].add_argument("--once", action="store_true", help="print once and exit")
    sub.choices["serve"].add_argument("--port", type=int, default=9108)
    sub.choices["serve"].add_argument("--bind", default="127.0.0.1")
    add_web_arguments(sub.choices["serve"])
    rep = sub.add_parser("report")
    rep.add_argument("--out", type=Path, required=True, help="output directory")
    add_publish_command(sub)
    return p


def _service(args: argparse.Namespace, store: StateStore) -> OpsService | None:
    if not args.broker:
        return None
    if args.registry is None:
        raise OpsError("--registry is required with --broker")
    password = args.password_file.read_text().strip() if args.password_file else None
    svc = OpsService(args.broker, args.registry, store, client_id=args.client_id,
                     ops_key=load_ops_key(args.ops_key) if args.ops_key else None,
                     username=args.username, password=password, ca_file=args.ca_file)
    svc.start()
    return svc


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``kesp-ops``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    tuning = OpsTuning()
    try:
        store = open_store(args.store, prefix=args.prefix)
        if args.command == "publish":
            return run_publish(args, store)
        if args.command == "report":
            args.out.mkdir(parents=True, exist_ok=True)
            summary = store.turnout()
            (args.out / "turnout.csv").write_text(turnout_csv(summary), encoding="utf-8")
            turnout_png(summary, args.out / "turnout.png")
            print(f"wrote {args.out / 'turnout.csv'} and {args.out / 'turnout.png'}")
            return 0
        svc = _service(args, store)
    except (StoreError, RegistryError, OpsError, OSError) as exc:
        print(f"kesp-ops: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "watch":
            while True:
                text = render_watch(store.turnout(), store.devices(), store.stats(), tuning)
                if args.once:
                    sys.stdout.write(text)
                    return 0
                sys.stdout.write("\x1b[2J\x1b[H" + text)
                sys.stdout.flush()
                time.sleep(args.interval)

        return serve_web(args, tuning)
    except KeyboardInterrupt:
        return 0
    finally:
        if svc is not None:
            svc.stop()


if __name__ == "__main__":
    raise SystemExit(main())
