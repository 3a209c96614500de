"""Ops' connection to the broker in words: its state for the console, the cause of a failure.

A value type apart from :mod:`ops.service` (which keeps it up to date) so the
renderers can show it without importing the service.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass


@dataclass(frozen=True)
class BrokerLink:
    """Ops' connection to the broker, as the console shows it."""

    url: str
    connected: bool
    problem: str
    """Why it is not connected, in words ("" while connected or before the first try)."""
    since_ms: int
    """Wall clock of the last change."""


def describe_connect_error(exc: BaseException | None, host: str) -> str:
    """One plain sentence for a failed connection attempt, naming what to check."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: is the broker running there? (check --broker)"
    if isinstance(exc, socket.gaierror):
        return f"host name {host!r} not found: check --broker and the DNS of this machine"
    if isinstance(exc, TimeoutError):
        return "no answer: check the network and firewall towards the broker"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS: the broker's certificate is not trusted ({exc.verify_message}): "
                "check --ca-file")
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason}): check --ca-file and the port"
    if isinstance(exc, OSError):
        return f"unreachable: {exc.strerror or exc}"
    return "unreachable"
