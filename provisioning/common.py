"""What every provisioning step shares: the error type, exit codes and users."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

EXIT_OK = 0
EXIT_REFUSED = 1
"""Bad input or an unsafe step: nothing was changed."""
EXIT_USAGE = 2
"""argparse's own code for a malformed command line."""
EXIT_CHECK_FAILED = 3
"""``device selftest`` or ``cec verify`` ran and found a problem."""

SERVICE_USER = "kesp"
"""The dedicated user the agent runs as (created by the image, see systemd/)."""


class ProvisionError(Exception):
    """A step refuses to run; the message names the problem and what to do."""


@dataclass(frozen=True)
class Owner:
    """Who must own the files a step writes (the agent must be able to read them)."""

    name: str
    uid: int
    gid: int


def require_user(user: str) -> Owner:
    """Refuse unless running as root or as ``user``; return ``user``'s ids.

    Root writes files and hands them to ``user``; ``user`` itself may run
    steps on directories it owns (development, the tests). Anyone else would
    leave files the agent cannot read, so they are refused up front.
    """
    try:
        entry = pwd.getpwnam(user)
    except KeyError as exc:
        raise ProvisionError(
            f"service user {user!r} does not exist on this machine "
            "(the kiosk image creates 'kesp'; pass --user to choose another)"
        ) from exc
    euid = os.geteuid()
    if euid not in (0, entry.pw_uid):
        me = pwd.getpwuid(euid).pw_name if _uid_known(euid) else str(euid)
        raise ProvisionError(f"running as {me!r}: run this step as root (sudo) or as {user!r}")
    return Owner(user, entry.pw_uid, entry.pw_gid)


def _uid_known(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def hand_over(path: Path, owner: Owner) -> None:
    """Give ``path`` to ``owner`` when we are root (no-op otherwise: already ours)."""
    if os.geteuid() == 0:
        os.chown(path, owner.uid, owner.gid)
