"""``kesp-ops serve`` options of the web side, and the serving loop."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from ops.board import DEFAULT_ZONE, ZoneError, load_zone
from ops.metrics import render_metrics
from ops.parameters import BoardTuning, OpsTuning
from ops.store import StateStore
from ops.web.server import make_server


def add_web_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the dashboard on ``kesp-ops serve``."""
    parser.add_argument("--timezone", default=DEFAULT_ZONE,
                        help=f"IANA zone of times of day on the dashboard (default {DEFAULT_ZONE})")
    parser.add_argument("--public-dir", type=Path,
                        help="serve this published turnout feed read-only under /public/")
    parser.add_argument("--refresh", type=float, default=BoardTuning.refresh_s,
                        help="seconds between dashboard updates (default %(default)s)")


def serve_web(args: argparse.Namespace, store: StateStore, ops: OpsTuning) -> int:
    """Serve until interrupted; 2 with one line on stderr if it cannot start."""
    try:
        zone = load_zone(args.timezone)
    except ZoneError as exc:
        print(f"kesp-ops: {exc}", file=sys.stderr)
        return 2
    if not 0.5 <= args.refresh <= 300:
        print("kesp-ops: --refresh must be between 0.5 and 300 seconds", file=sys.stderr)
        return 2
    board = BoardTuning(refresh_s=args.refresh, stale_after_s=max(60.0, 6 * args.refresh))
    try:
        server = make_server(store, bind=args.bind, port=args.port, zone=zone,
                             registry_path=getattr(args, "registry", None), board=board, ops=ops,
                             metrics=render_metrics, public_dir=args.public_dir)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"kesp-ops: port {args.port} on {args.bind} is already in use: stop the other "
                  "program or choose --port", file=sys.stderr)
        else:
            print(f"kesp-ops: cannot listen on {args.bind}:{args.port}: {exc.strerror}",
                  file=sys.stderr)
        return 2
    print(f"serving the dashboard on http://{args.bind}:{args.port}/ "
          f"(metrics on /metrics)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        server.cache.stop()
    return 0
