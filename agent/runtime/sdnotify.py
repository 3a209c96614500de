"""systemd service notification (``sd_notify``) without libsystemd.

The protocol (sd_notify(3)): one ``AF_UNIX`` / ``SOCK_DGRAM`` datagram of
newline-separated ``KEY=VALUE`` assignments to the socket named by
``$NOTIFY_SOCKET``. A name beginning with ``@`` is in the Linux abstract
namespace (the ``@`` stands for a leading NUL byte). When the variable is
unset (not started by systemd, ``Type=simple``, tests) every call is a no-op
returning False, so the agent runs the same under systemd and by hand.

The unit is expected to be ``Type=notify`` with ``WatchdogSec=`` set; systemd
then passes ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``) and kills the agent if no
``WATCHDOG=1`` arrives within that time. :class:`Watchdog` is fed from the
agent's main loop (``kick()``), not from a free-running thread, so a hung
main loop really does trigger a restart; :meth:`Watchdog.run_in_thread` exists
for the case where liveness is judged by a health check instead.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

__all__ = ["Notifier", "SdNotifyError", "Watchdog", "extend_while", "watchdog_interval"]

log = logging.getLogger(__name__)


class SdNotifyError(OSError):
    """``$NOTIFY_SOCKET`` is set but malformed (a configuration error, not a runtime state)."""


def _address(name: str) -> str | bytes:
    if name.startswith("@"):
        # Abstract namespace: leading NUL, no terminating NUL, length is exact.
        return b"\0" + name[1:].encode("utf-8")
    if name.startswith("/"):
        return name
    raise SdNotifyError(errno.EINVAL, f"NOTIFY_SOCKET={name!r} is neither a path nor @abstract")


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout systemd asked for, in seconds, or None when disabled.

    ``WATCHDOG_USEC`` applies only if ``WATCHDOG_PID`` is unset or names this
    process (a child that inherited the environment must not feed it).
    """
    env = os.environ if environ is None else environ
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        raise SdNotifyError(errno.EINVAL, f"WATCHDOG_USEC={raw!r} is not an integer") from None
    if usec <= 0:
        return None
    return usec / 1_000_000


class Notifier:
    """Sends notifications to systemd; a no-op when ``$NOTIFY_SOCKET`` is unset.

    Send failures are logged and reported as False, never raised: a kiosk must
    not stop identifying voters because its supervisor's socket went away.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        name = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = _address(name) if name else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether a notification socket is configured."""
        return self._address is not None

    def notify(self, **assignments: str | int) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram (``notify(READY=1, STATUS="..")``)."""
        if not assignments:
            raise ValueError("nothing to send")
        lines = []
        for key, value in assignments.items():
            text = str(value)
            if "\n" in text:
                raise ValueError(f"{key} value contains a newline")
            lines.append(f"{key}={text}")
        return self.send("\n".join(lines))

    def send(self, message: str) -> bool:
        """Send a raw, already formatted state string; True if it was delivered."""
        if self._address is None:
            return False
        data = message.encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                self._sock.sendto(data, self._address)
            except OSError as exc:
                log.warning("sd_notify failed: %s", exc)
                self._close_locked()
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (plus ``STATUS``): start-up finished, dependants may start."""
        return self.notify(READY=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        """``STATUS=...``: one line shown by ``systemctl status``."""
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the service is alive."""
        return self.notify(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.notify(STOPPING=1, **({"STATUS": status} if status else {}))

    def reloading(self) -> bool:
        """``RELOADING=1``: configuration reload in progress."""
        return self.notify(RELOADING=1)

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC``: ask for more start-up/shutdown time (slow Numba warm-up)."""
        return self.notify(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    def _close_locked(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        """Close the datagram socket (it is reopened on the next send)."""
        with self._lock:
            self._close_locked()


class Watchdog:
    """Feeds the systemd watchdog at half its timeout (sd_watchdog_enabled(3) advice).

    ``interval`` defaults to :func:`watchdog_interval`; with no watchdog
    configured every method is a cheap no-op.
    """

    def __init__(
        self,
        notifier: Notifier,
        interval: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notifier = notifier
        self.timeout = watchdog_interval() if interval is None else interval
        self._clock = clock
        self._last: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """Whether systemd expects watchdog pings."""
        return self.timeout is not None and self._notifier.enabled

    @property
    def period(self) -> float | None:
        """How often pings are sent: half the timeout."""
        return None if self.timeout is None else self.timeout / 2

    def kick(self) -> bool:
        """Ping if half the timeout has passed since the last ping; True if one was sent.

        Call from every iteration of the main loop; it rate-limits itself.
        """
        if not self.enabled or self.period is None:
            return False
        now = self._clock()
        if self._last is not None and now - self._last < self.period:
            return False
        self._last = now
        return self._notifier.watchdog()

    def run_in_thread(self, healthy: Callable[[], bool]) -> None:
        """Ping from a daemon thread while ``healthy()`` holds; stops pinging when it fails.

        A failing health check makes systemd restart the service after the
        timeout; the thread keeps polling in case health returns first.
        """
        if not self.enabled or self.period is None or self._thread is not None:
            return
        period = self.period

        def loop() -> None:
            while not self._stop.wait(period / 2):
                try:
                    ok = healthy()
                except Exception:  # a crashing health check means unhealthy
                    log.exception("watchdog health check raised")
                    ok = False
                if ok:
                    self.kick()

        self._thread = threading.Thread(target=loop, name="sd-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the watchdog thread, if any."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


T = TypeVar("T")


def extend_while(notifier: Notifier, fn: Callable[[], T], *, every_s: float = 20.0,
                 extend_s: float = 60.0) -> T:
    """``fn()``, asking systemd for ``extend_s`` more start-up time every ``every_s`` meanwhile.

    For work whose length is not known in advance: the Numba kernels load from
    the image's cache in about a second, but after a software update that
    changed them they compile on the kiosk, minutes on a Raspberry Pi, beyond
    the unit's ``TimeoutStartSec``. A hung ``fn`` still fails the start
    ``extend_s`` after the last extension.
    """
    done = threading.Event()

    def extend() -> None:
        while not done.wait(every_s):
            notifier.extend_timeout(extend_s)

    thread = threading.Thread(target=extend, name="sd-extend-timeout", daemon=True)
    thread.start()
    try:
        return fn()
    finally:
        done.set()
        thread.join()
