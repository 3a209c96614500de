"""``kesp-ops serve`` options of the web side, and the serving loop."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path
from typing import Any

from ops.board import DEFAULT_ZONE, ZoneError, load_zone
from ops.feed import FeedError, Publisher, publish
from ops.metrics import render_metrics
from ops.parameters import BoardTuning, OpsTuning
from ops.registry import RegistryError, load_ops_key, load_registry
from ops.store import StateStore, StoreError, open_store
from ops.web.server import make_server


def add_web_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the dashboard on ``kesp-ops serve``."""
    parser.add_argument("--timezone", default=DEFAULT_ZONE,
                        help=f"IANA zone of times of day on the dashboard (default {DEFAULT_ZONE})")
    parser.add_argument("--public-dir", type=Path,
                        help="serve this published turnout feed read-only under /public/")
    parser.add_argument("--refresh", type=float, default=BoardTuning.refresh_s,
                        help="seconds between dashboard updates (default %(default)s)")
    parser.add_argument("--publish-key", type=Path,
                        help="publish a signed turnout snapshot into --public-dir with this key")
    parser.add_argument("--publish-every", type=float, default=600.0,
                        help="seconds between public snapshots (default %(default)s)")


def serve_web(args: argparse.Namespace, ops: OpsTuning) -> int:
    """Serve until interrupted; 2 with one line on stderr if it cannot start.

    The dashboard reads through a connection of its own, so a snapshot being
    built never holds up the ingest's commits on ``store``.
    """
    try:
        zone = load_zone(args.timezone)
    except ZoneError as exc:
        print(f"kesp-ops: {exc}", file=sys.stderr)
        return 2
    if not 0.5 <= args.refresh <= 300:
        print("kesp-ops: --refresh must be between 0.5 and 300 seconds", file=sys.stderr)
        return 2
    board = BoardTuning(refresh_s=args.refresh, stale_after_s=max(60.0, 6 * args.refresh))
    key = None
    if args.publish_key is not None:
        if args.public_dir is None or not 10 <= args.publish_every <= 86_400:
            print("kesp-ops: --publish-key needs --public-dir and --publish-every between 10 "
                  "and 86400 seconds", file=sys.stderr)
            return 2
        try:
            key = load_ops_key(args.publish_key)
        except RegistryError as exc:
            print(f"kesp-ops: publishing key: {exc}", file=sys.stderr)
            return 2
    try:
        store = open_store(args.store, prefix=args.prefix, instance=f"{args.client_id}-web")
    except StoreError as exc:
        print(f"kesp-ops: {exc}", file=sys.stderr)
        return 2
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
        store.close()
        return 2
    publisher = None
    if key is not None:
        cache = server.cache
        publisher = Publisher(args.public_dir, key, args.publish_every,
                              lambda: (cache.store.signed_turnout(), cache.registry), zone)
        publisher.start()
    print(f"serving the dashboard on http://{args.bind}:{args.port}/ "
          f"(metrics on /metrics)", flush=True)
    try:
        server.serve_forever()
    finally:
        if publisher is not None:
            publisher.stop()
        server.server_close()
        server.cache.stop()
        store.close()
    return 0


def add_publish_command(sub: Any) -> None:
    """``kesp-ops publish``: write one signed public snapshot and exit."""
    p = sub.add_parser("publish", help="write one signed public turnout snapshot")
    p.add_argument("--out", type=Path, required=True, help="feed directory (web-server root)")
    p.add_argument("--publish-key", type=Path, required=True, help="ops publishing key")
    p.add_argument("--registry", type=Path, required=True, help="device registry file")
    p.add_argument("--timezone", default=DEFAULT_ZONE)


def run_publish(args: argparse.Namespace, store: StateStore) -> int:
    """One publication; 2 with one line on stderr if it cannot be done."""
    try:
        zone = load_zone(args.timezone)
        key = load_ops_key(args.publish_key)
        registry = load_registry(args.registry)
        done = publish(args.out, key, store.signed_turnout(), registry, zone)
    except (ZoneError, RegistryError, FeedError) as exc:
        print(f"kesp-ops: {exc}", file=sys.stderr)
        return 2
    print(f"published snapshot {done.sequence} ({done.kiosks} kiosks, {done.excluded} excluded, "
          f"nation identified {done.identified}) to {done.snapshot}")
    return 0
