"""Reconnection shared by every sensor driver: reopen the device after a pulled cable.

Both sensor families (Grow over a UART, USB area sensors) hold their device
handle in a :class:`Reconnecting`, so they recover from a disconnect the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from agent.drivers.sensor.parameters import SensorTimings
from agent.drivers.sensor.types import (
    SensorDisconnected,
    SensorError,
    SensorStatus,
    SensorTimeoutError,
    map_status,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
D = TypeVar("D")


class Reconnecting(Generic[D]):
    """Holds the current device handle and reopens it after a disconnect.

    ``connect`` opens a fresh handle (raising :class:`SensorDisconnected` while
    the device is absent), ``drop`` releases one. :meth:`run` retries an
    operation across reconnects until a deadline; the drivers of both sensor
    families share this so that they recover from a pulled cable the same way.
    """

    def __init__(self, connect: Callable[[], D], drop: Callable[[D], None],
                 timings: SensorTimings,
                 transient: tuple[type[SensorError], ...] = ()) -> None:
        self._connect = connect
        self._drop = drop
        self.timings = timings
        self.transient: tuple[type[SensorError], ...] = (
            SensorDisconnected, SensorTimeoutError, *transient)
        self.handle: D | None = None
        self.reconnects = 0
        self.last_fault: SensorError | None = None
        # The station loop captures while the telemetry thread asks for the
        # status: one conversation with the device at a time.
        self.lock = threading.RLock()

    def get(self) -> D:
        """The open handle, connecting first if there is none."""
        with self.lock:
            if self.handle is None:
                self.handle = self._connect()
                self.last_fault = None  # a fresh handle: earlier faults are history
            return self.handle

    def drop(self) -> None:
        """Release the handle (it will be reopened on next use)."""
        with self.lock:
            if self.handle is not None:
                handle, self.handle = self.handle, None
                self._drop(handle)

    def last_status(self) -> SensorStatus:
        """The status the last operation left behind (no device traffic)."""
        if self.last_fault is not None:
            return map_status(None, fault=self.last_fault)
        return map_status(0) if self.handle is not None else map_status(None)

    def status_of(self, query: Callable[[], SensorStatus], wait_s: float) -> SensorStatus:
        """Run ``query`` unless another thread holds the device for longer than ``wait_s``;
        then report :meth:`last_status` instead of queueing behind a capture."""
        if not self.lock.acquire(timeout=wait_s):
            return self.last_status()
        try:
            return query()
        finally:
            self.lock.release()

    def run(self, op: Callable[[D], T], deadline: float) -> T:
        """Run ``op`` on the handle, reopening after transient faults until ``deadline``."""
        with self.lock:
            return self._run_locked(op, deadline)

    def _run_locked(self, op: Callable[[D], T], deadline: float) -> T:
        while True:
            try:
                result = op(self.get())
                self.last_fault = None
                return result
            except self.transient as exc:
                # A timeout after retries usually means a replug reset the
                # device (another speed, lost state): reopening starts afresh.
                self.last_fault = exc
                self.drop()
                if time.monotonic() + self.timings.reconnect_interval_s >= deadline:
                    if isinstance(exc, SensorDisconnected):
                        raise
                    raise SensorDisconnected(f"sensor unavailable: {exc}") from exc
                log.warning("sensor lost (%s); reopening", exc)
                time.sleep(self.timings.reconnect_interval_s)
                self.reconnects += 1
