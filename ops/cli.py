"""kesp-ops: the central ops console of the KESP kiosks.

Every command reads (and, with --broker, fills) the ops store: the database
of what the kiosks reported. Create it once with 'init'; a store that does not
exist is refused, so a mistyped --store never shows an empty election.
'serve' also serves the live dashboard and the public turnout feed, which
'publish' writes (docs/OPS.md).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import signal
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from nacl.signing import SigningKey

from agent.runtime.durable import atomic_write
from ops.audit_watch import AuditWatch
from ops.board import Board, build_board
from ops.feed import FeedError, Publisher
from ops.metrics import render_metrics
from ops.parameters import BoardTuning, OpsTuning
from ops.registry import Registry, RegistryError, load_ops_key, load_registry
from ops.report import (
    DEFAULT_TIMEZONE,
    ReportError,
    build_report,
    disagreements,
    hour_label,
    load_zone,
    parse_day,
    report_csv,
    report_png,
)
from ops.service import OpsError, OpsService
from ops.store import StateStore, StoreError, open_store
from ops.view import broker_lines, render_watch
from ops.web.cli import (
    WebOptionError,
    add_publish_command,
    add_web_arguments,
    run_publish,
    web_settings,
)
from ops.web.server import DashboardServer, make_server

EXIT_OK = 0
EXIT_FAILED = 1
"""Refused or failed; one line on stderr says what and what to do."""

_EXAMPLES = """\
examples:
  kesp-ops --store /srv/ops/ops.sqlite init
  kesp-ops --store /srv/ops/ops.sqlite watch --registry /srv/ops/registry.json \\
      --broker mqtts://telemetry.kesp.kg:8883 --ca-file /srv/ops/pki/ca.crt \\
      --username ops --password-file /srv/ops/broker/ops.pass
  kesp-ops --store /srv/ops/ops.sqlite report --out /srv/ops/report

exit codes: 0 done, 1 refused or failed (stderr says why), 2 bad command line
"""


class _RefusedError(Exception):
    """A command-line value that cannot be used; the message names it and the fix."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kesp-ops", description=__doc__, epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, metavar="PATH|URL",
                   help="the ops store: a SQLite file, or postgresql://user@host/db shared by "
                        "several ops servers")
    p.add_argument("--prefix", default="kesp_",
                   help="table name prefix inside the store (default: %(default)s)")
    p.add_argument("--timezone", default=DEFAULT_TIMEZONE, metavar="ZONE",
                   help="time zone for clocks and report hours (default: %(default)s)")
    p.add_argument("--debug", action="store_true",
                   help="also log the MQTT library's own messages (for developers)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="what to do (COMMAND --help says more)")

    sub.add_parser("init", help="create a new, empty ops store (once)",
                   description="Create the ops store named by --store. An existing store is "
                               "left as it is.")
    for name, text in (
        ("watch", "show turnout, kiosks and alerts in the terminal, refreshed"),
        ("serve", "serve the live dashboard (/), Prometheus metrics (/metrics) and the public "
                  "turnout feed (/public/) over HTTP"),
    ):
        s = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ". "
                           "With --broker it also receives the kiosks' telemetry into the store; "
                           "without it, it shows what another ops instance stored.")
        s.add_argument("--registry", type=Path, metavar="FILE",
                       help="device registry (from 'kesp-provision ops register'): required "
                            "with --broker; lists registered kiosks that never reported")
        s.add_argument("--broker", metavar="URL",
                       help="mqtt://host:port or mqtts://host:port: receive telemetry from it")
        s.add_argument("--ca-file", metavar="FILE",
                       help="CA certificate of an mqtts:// broker")
        s.add_argument("--username", metavar="NAME", help="broker user of ops (default: none)")
        s.add_argument("--password-file", type=Path, metavar="FILE",
                       help="file holding that user's password (e.g. ops.pass from "
                            "'kesp-provision ops broker-config')")
        s.add_argument("--ops-key", type=Path, metavar="FILE",
                       help="ops.sign: signs the rebirth/resend requests sent to kiosks "
                            "(without it ops never asks kiosks for missing data)")
        s.add_argument("--client-id", default="kesp-ops-1", metavar="ID",
                       help="MQTT client id; unique per ops server (default: %(default)s)")
    watch = sub.choices["watch"]
    watch.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                       help="refresh period (default: %(default)s)")
    watch.add_argument("--once", action="store_true",
                       help="print the screen once and exit (exit 1 if the broker is "
                            "unreachable)")
    watch.add_argument("--connect-timeout", type=float, default=5.0, metavar="SECONDS",
                       help="with --once --broker: how long to wait for the broker "
                            "(default: %(default)s)")
    serve = sub.choices["serve"]
    serve.add_argument("--port", type=int, default=9108,
                       help="HTTP port (default: %(default)s)")
    serve.add_argument("--bind", default="127.0.0.1", metavar="ADDRESS",
                       help="address to listen on (default: %(default)s, this machine only)")
    add_web_arguments(serve)
    rep = sub.add_parser(
        "report", help="write turnout.csv and turnout.png (admissions per local hour)",
        description="Write turnout.csv (every station's admissions per local hour, with "
                    "totals per station, district and overall) and turnout.png (a chart of "
                    "one day). See docs/OPS.md for what each column counts.")
    rep.add_argument("--out", type=Path, required=True, metavar="FOLDER",
                     help="folder to write the two files into (created if missing)")
    rep.add_argument("--day", metavar="YYYY-MM-DD",
                     help="local date the chart shows (default: the day with the most "
                          "admissions)")
    add_publish_command(sub)
    return p


# ------------------------------------------------------------------ inputs


def _registry(args: argparse.Namespace) -> Registry | None:
    if args.registry is None:
        if args.broker:
            raise _RefusedError("--broker needs --registry: the device registry whose kiosks "
                           "ops accepts (from 'kesp-provision ops register')")
        return None
    return load_registry(args.registry)


def _password(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError as exc:
        raise _RefusedError(f"password file {path} not found: check --password-file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise _RefusedError(f"cannot read password file {path}: "
                       f"{getattr(exc, 'strerror', None) or exc}") from exc


def _ops_key(path: Path | None) -> SigningKey | None:
    return load_ops_key(path) if path is not None else None


@contextlib.contextmanager
def _listening(bind: str, port: int) -> Iterator[None]:
    """Say in one line why the HTTP port cannot be opened."""
    try:
        yield
    except OverflowError as exc:
        raise _RefusedError(f"--port {port} is not a port number (1-65535)") from exc
    except socket.gaierror as exc:
        raise _RefusedError(f"--bind {bind!r} is not an address of this machine") from exc
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise _RefusedError(f"port {port} on {bind} is already in use (another kesp-ops "
                           "serve?): stop that program or choose another --port") from exc
        if exc.errno == errno.EACCES:
            raise _RefusedError(f"port {port} needs administrator rights: choose a --port above "
                           "1023") from exc
        if exc.errno == errno.EADDRNOTAVAIL:
            raise _RefusedError(f"--bind {bind} is not an address of this machine") from exc
        raise


# ------------------------------------------------------------------ commands


def cmd_init(args: argparse.Namespace) -> int:
    try:
        store = open_store(args.store, prefix=args.prefix)
    except StoreError:
        store = open_store(args.store, prefix=args.prefix, create=True)
        store.close()
        print(f"created the ops store {args.store}; start receiving with "
              f"'kesp-ops --store {args.store} serve --broker ... --registry ...'")
        return EXIT_OK
    kiosks = len(store.devices())
    store.close()
    print(f"{args.store} is already an ops store ({kiosks} kiosk(s) reported); nothing changed")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    zone = load_zone(args.timezone)
    day = parse_day(args.day) if args.day else None
    store = open_store(args.store, prefix=args.prefix)
    try:
        report = build_report(store.turnout_history(), zone)
        problems = disagreements(report, store.turnout())
    finally:
        store.close()
    png, chart = report_png(report, day=day)
    if args.out.exists() and not args.out.is_dir():
        raise _RefusedError(f"--out {args.out} is a file: give a folder")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _RefusedError(f"cannot create the --out folder {args.out}: {exc.strerror}"
                            ) from exc
    atomic_write(args.out / "turnout.csv", report_csv(report).encode("utf-8"), mode=0o644)
    atomic_write(args.out / "turnout.png", png, mode=0o644)
    total = report.total()
    print(f"wrote {args.out / 'turnout.csv'} and {args.out / 'turnout.png'} "
          f"({chart.day}, {hour_label(chart.hours[0])}-{hour_label(chart.hours[-1], end=True)}"
          f" {zone.key}): "
          f"{total.admitted} admitted ({total.identified} by fingerprint, {total.manual} "
          f"manually), {total.refused} refused, {total.not_identified} not identified"
          + ("" if report.rows else "; no turnout received yet"))
    if problems:
        raise _RefusedError("the store's hourly records do not add up to its latest counts ("
                       + "; ".join(problems[:3]) + "): keep the files, report it to the "
                       "developers")
    return EXIT_OK


def _start_service(args: argparse.Namespace, store: StateStore, registry: Registry | None,
                   password: str | None, ops_key: SigningKey | None) -> OpsService | None:
    if not args.broker:
        return None
    svc = OpsService(args.broker, args.registry, store, client_id=args.client_id,
                     ops_key=ops_key, username=args.username, password=password,
                     ca_file=args.ca_file)
    if registry is not None and not registry.devices:
        logging.getLogger("ops").warning("registry %s lists no kiosk yet: every message "
                                         "is refused until kiosks are registered",
                                         args.registry)
    svc.start()
    return svc


def cmd_watch(args: argparse.Namespace) -> int:
    zone = load_zone(args.timezone)
    registry = _registry(args)
    password, ops_key = _password(args.password_file), _ops_key(args.ops_key)
    store = open_store(args.store, prefix=args.prefix)
    tuning = OpsTuning()
    # The same snapshot as the dashboard's (status, alerts, audit-chain facts), so the
    # terminal and the dashboard say the same about every kiosk; one audit watch
    # across refreshes reads only the events stored since the last one.
    audit = AuditWatch()
    # The screen (and with --once the last line) says the broker's state; the
    # service's log lines would only repeat it, or scroll the screen away.
    if not args.debug:
        logging.getLogger("ops.service").setLevel(logging.ERROR)
    svc: OpsService | None = None
    try:
        svc = _start_service(args, store, registry, password, ops_key)
        if svc is not None and args.once and svc.wait_connected(args.connect_timeout):
            svc.wait_idle(args.connect_timeout)
        while True:
            if svc is not None:
                registry = svc.verifier.registry  # reloaded when provisioning adds kiosks
            board = build_board(store, registry if registry is not None else Registry({}), audit,
                                zone, BoardTuning(), tuning)
            text = render_watch(board, broker=svc.broker_link() if svc is not None else None,
                                with_registry=registry is not None)
            if args.once:
                sys.stdout.write(text)
                link = svc.broker_link() if svc is not None else None
                if link is not None and not link.connected:
                    raise _RefusedError(f"broker {link.url}: "
                                   f"{link.problem or 'no connection within the timeout'}; "
                                   "the screen shows only what the store already held")
                return EXIT_OK
            sys.stdout.write("\x1b[2J\x1b[H" + text)
            sys.stdout.flush()
            time.sleep(args.interval)
    finally:
        if svc is not None:
            svc.stop()
        else:
            store.close()


def cmd_serve(args: argparse.Namespace) -> int:
    registry = _registry(args)
    password, ops_key = _password(args.password_file), _ops_key(args.ops_key)
    zone = load_zone(args.timezone)
    web = web_settings(args)
    store = open_store(args.store, prefix=args.prefix)
    svc: OpsService | None = None

    def metrics(board: Board) -> str:
        link = svc.broker_link() if svc is not None else None
        return render_metrics(board) + "".join(f"{line}\n" for line in broker_lines(link))

    try:
        # The dashboard reads through a connection of its own: building a
        # snapshot never holds up the ingest's commits.
        board_store = open_store(args.store, prefix=args.prefix,
                                 instance=f"{args.client_id}-web")
        try:
            with _listening(args.bind, args.port):  # before connecting anywhere
                server: DashboardServer = make_server(
                    board_store, bind=args.bind, port=args.port, zone=zone,
                    registry_path=args.registry, board=web.board, metrics=metrics,
                    public_dir=args.public_dir)
        except BaseException:
            board_store.close()
            raise
    except BaseException:
        store.close()
        raise
    publisher: Publisher | None = None
    try:
        svc = _start_service(args, store, registry, password, ops_key)
        if web.publish_key is not None:
            cache = server.cache
            publisher = Publisher(args.public_dir, web.publish_key, args.publish_every,
                                  lambda: (cache.store.signed_turnout(), cache.registry), zone)
            publisher.start()
        print(f"serving the dashboard on http://{args.bind}:{args.port}/ (metrics on /metrics)",
              flush=True)
        server.serve_forever()
        return EXIT_OK
    finally:
        if publisher is not None:
            publisher.stop()
        server.server_close()
        server.cache.stop()
        board_store.close()
        if svc is not None:
            svc.stop()
        else:
            store.close()


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """systemd stops a service with SIGTERM: leave as on Ctrl-C, through the
    finally blocks (the broker is told ops went offline, the store is closed)."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(EXIT_OK))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_COMMANDS = {"init": cmd_init, "watch": cmd_watch, "serve": cmd_serve, "report": cmd_report,
             "publish": run_publish}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kesp-ops``; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.debug:
        logging.basicConfig(level=logging.DEBUG,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
    else:
        logging.basicConfig(level=logging.WARNING, format="kesp-ops: %(message)s")
    try:
        if args.command in ("watch", "serve"):
            with _stop_on_sigterm():
                return _COMMANDS[args.command](args)
        return _COMMANDS[args.command](args)
    except (_RefusedError, StoreError, RegistryError, OpsError, ReportError, WebOptionError,
            FeedError) as exc:
        sys.stderr.write(f"kesp-ops: {exc}\n")
        return EXIT_FAILED
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        sys.stderr.write(f"kesp-ops: cannot use{where}: {exc.strerror or exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
