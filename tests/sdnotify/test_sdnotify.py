"""sd_notify against real AF_UNIX datagram sockets (path and abstract namespace)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runtime.sdnotify import (
    Notifier,
    SdNotifyError,
    Watchdog,
    extend_while,
    watchdog_interval,
)


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A bound datagram socket standing in for systemd's notify socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = str(tmp_path / "notify")
    sock.bind(name)
    sock.settimeout(2.0)
    yield name, sock
    sock.close()


def recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode("utf-8")


def test_unset_is_a_noop() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False and n.watchdog() is False
    assert not Watchdog(n, interval=1.0).enabled


def test_messages_over_a_path_socket(path_socket: tuple[str, socket.socket]) -> None:
    name, sock = path_socket
    n = Notifier({"NOTIFY_SOCKET": name})
    assert n.ready(status="roll verified, 5610 voters")
    assert recv(sock) == "READY=1\nSTATUS=roll verified, 5610 voters"
    assert n.status("open: 12 identified")
    assert recv(sock) == "STATUS=open: 12 identified"
    assert n.watchdog()
    assert recv(sock) == "WATCHDOG=1"
    assert n.extend_timeout(2.5)
    assert recv(sock) == "EXTEND_TIMEOUT_USEC=2500000"
    assert n.stopping()
    assert recv(sock) == "STOPPING=1"
    with pytest.raises(ValueError, match="newline"):
        n.status("two\nlines")
    n.close()


def test_abstract_namespace_socket() -> None:
    name = f"kesp-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2.0)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert recv(sock) == "READY=1"
    finally:
        sock.close()


def test_missing_socket_reports_false_and_recovers(tmp_path: Path) -> None:
    name = str(tmp_path / "later")
    n = Notifier({"NOTIFY_SOCKET": name})
    assert n.watchdog() is False  # nobody listening yet: logged, not raised
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(name)
    sock.settimeout(2.0)
    try:
        assert n.watchdog() is True
        assert recv(sock) == "WATCHDOG=1"
    finally:
        sock.close()


def test_malformed_socket_name() -> None:
    with pytest.raises(SdNotifyError, match="neither a path nor @abstract"):
        Notifier({"NOTIFY_SOCKET": "relative/name"})


def test_watchdog_interval_env() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 20.0
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}) == 3.0
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    with pytest.raises(SdNotifyError, match="not an integer"):
        watchdog_interval({"WATCHDOG_USEC": "soon"})


def test_watchdog_kick_rate_limits(path_socket: tuple[str, socket.socket]) -> None:
    name, sock = path_socket
    now = [100.0]
    wd = Watchdog(Notifier({"NOTIFY_SOCKET": name}), interval=10.0, clock=lambda: now[0])
    assert wd.enabled and wd.period == 5.0
    assert wd.kick() is True
    assert recv(sock) == "WATCHDOG=1"
    now[0] += 4.9
    assert wd.kick() is False
    now[0] += 0.2
    assert wd.kick() is True
    assert recv(sock) == "WATCHDOG=1"


def test_watchdog_thread_follows_health(path_socket: tuple[str, socket.socket]) -> None:
    name, sock = path_socket
    healthy = threading.Event()
    healthy.set()
    wd = Watchdog(Notifier({"NOTIFY_SOCKET": name}), interval=0.2)
    wd.run_in_thread(healthy.is_set)
    try:
        assert recv(sock) == "WATCHDOG=1"
        healthy.clear()
        time.sleep(0.15)  # let an in-flight ping land before draining
        sock.settimeout(0.05)
        while True:
            try:
                sock.recv(64)
            except TimeoutError:
                break
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(64)  # unhealthy: no pings for well over the period
        healthy.set()
        sock.settimeout(2.0)
        assert recv(sock) == "WATCHDOG=1"
    finally:
        wd.stop()


def test_extend_while_asks_for_time_until_the_work_ends(
        path_socket: tuple[str, socket.socket]) -> None:
    name, server = path_socket
    server.settimeout(0.05)

    def slow() -> str:
        time.sleep(0.35)
        return "warm"

    assert extend_while(Notifier({"NOTIFY_SOCKET": name}), slow, every_s=0.1,
                        extend_s=60.0) == "warm"
    got = []
    with contextlib.suppress(TimeoutError):
        while True:
            got.append(server.recv(100).decode())
    assert 2 <= len(got) <= 4 and set(got) == {"EXTEND_TIMEOUT_USEC=60000000"}, got
    time.sleep(0.25)  # nothing after the work ended
    with pytest.raises(TimeoutError):
        server.recv(100)
