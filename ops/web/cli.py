"""``kesp-ops serve`` options of the web side and ``kesp-ops publish`` (used by :mod:`ops.cli`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from ops.feed import FeedError, publish
from ops.parameters import BoardTuning
from ops.registry import load_ops_key, load_registry
from ops.report import load_zone
from ops.store import open_store


class WebOptionError(ValueError):
    """A web option of ``kesp-ops serve`` that cannot be used; the message names it."""


@dataclass(frozen=True)
class WebSettings:
    """The dashboard's tuning and the publishing key, from the command line."""

    board: BoardTuning
    publish_key: SigningKey | None


def add_web_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the dashboard and the public feed on ``kesp-ops serve``."""
    parser.add_argument("--refresh", type=float, default=BoardTuning.refresh_s,
                        metavar="SECONDS",
                        help="seconds between dashboard updates (default: %(default)s)")
    parser.add_argument("--public-dir", type=Path, metavar="FOLDER",
                        help="serve the published turnout feed in this folder read-only under "
                             "/public/ (and publish into it with --publish-key)")
    parser.add_argument("--publish-key", type=Path, metavar="FILE",
                        help="key that signs the public turnout snapshots written into "
                             "--public-dir")
    parser.add_argument("--publish-every", type=float, default=600.0, metavar="SECONDS",
                        help="seconds between public snapshots (default: %(default)s)")


def web_settings(args: argparse.Namespace) -> WebSettings:
    """Check the web options; :class:`WebOptionError` or ``RegistryError`` says what is wrong."""
    if not 0.5 <= args.refresh <= 300:
        raise WebOptionError("--refresh must be between 0.5 and 300 seconds")
    key = None
    if args.publish_key is not None:
        if args.public_dir is None:
            raise WebOptionError("--publish-key needs --public-dir: the folder to publish into")
        if not 10 <= args.publish_every <= 86_400:
            raise WebOptionError("--publish-every must be between 10 and 86400 seconds")
        key = load_ops_key(args.publish_key)
    board = BoardTuning(refresh_s=args.refresh, stale_after_s=max(60.0, 6 * args.refresh))
    return WebSettings(board, key)


def add_publish_command(sub: Any) -> None:
    """``kesp-ops publish``: write one signed public turnout snapshot and exit."""
    p = sub.add_parser(
        "publish", help="write one signed public turnout snapshot (docs/OPS.md)",
        description="Write one signed public turnout snapshot, with every kiosk's own signed "
                    "turnout message, into a folder any web server can host (docs/OPS.md, "
                    "'The public turnout feed').")
    p.add_argument("--out", type=Path, required=True, metavar="FOLDER",
                   help="feed folder (created if missing; numbered files are never rewritten)")
    p.add_argument("--publish-key", type=Path, required=True, metavar="FILE",
                   help="the ops publishing key (0600)")
    p.add_argument("--registry", type=Path, required=True, metavar="FILE",
                   help="device registry: the kiosks whose messages count")


def run_publish(args: argparse.Namespace) -> int:
    """One publication; errors are raised for :func:`ops.cli.main` to say in one line."""
    zone = load_zone(args.timezone)
    key = load_ops_key(args.publish_key)
    registry = load_registry(args.registry)
    store = open_store(args.store, prefix=args.prefix)
    try:
        done = publish(args.out, key, store.signed_turnout(), registry, zone)
    finally:
        store.close()
    print(f"published snapshot {done.sequence} ({done.kiosks} kiosks, {done.excluded} excluded, "
          f"nation identified {done.identified}) to {done.snapshot}")
    return 0


__all__ = ["FeedError", "WebOptionError", "WebSettings", "add_publish_command",
           "add_web_arguments", "run_publish", "web_settings"]
