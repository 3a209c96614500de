"""A fingerprint sensor that may be absent: opened in the background, reopened after a fault.

The station talks to a :class:`SupervisedSensor` exactly as to any
:class:`~agent.drivers.sensor.service.FingerprintSensor`, and never gets an
exception from a missing, unplugged or misbehaving sensor: while there is no
usable device, :meth:`~SupervisedSensor.wait_for_finger` waits and returns
:class:`~agent.drivers.sensor.types.NoFinger` (so nobody is identified), and
:meth:`~SupervisedSensor.status` says why in one line naming the device and
the fix. A watcher thread reopens the device with a capped exponential backoff
and puts the LED ring back to what the station last asked for.

Why polling with backoff and not udev events (pyudev): the agent opens its
devices by a stable path (a udev symlink such as ``/dev/kesp-sensor``), and an
``open()`` attempt every few seconds costs nothing; events would add a kiosk
runtime dependency and still need this loop for what udev does not announce
(a device that enumerates but does not answer yet, a module powered through a
bridge that stayed plugged, the simulators' ptys). The cost is up to
``retry_max_s`` between the cable coming back and the sensor being used.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from agent.drivers.sensor.service import FingerprintSensor
from agent.drivers.sensor.types import (
    Capture,
    DeviceRefusedError,
    Guidance,
    NoFinger,
    ProtocolError,
    SensorBusyError,
    SensorDisconnected,
    SensorError,
    SensorState,
    SensorStatus,
    SensorTimeoutError,
    WrongSensorError,
)

__all__ = ["SupervisedSensor", "describe_fault"]

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
"""First pause before reopening a sensor that could not be opened; doubled up to the cap."""


def describe_fault(where: str, exc: BaseException) -> SensorStatus:
    """One line naming the sensor at ``where``, what is wrong and what to do."""
    name = f"fingerprint sensor {where}"
    if isinstance(exc, SensorBusyError):
        return SensorStatus(SensorState.BUSY, None,
                            f"{name} is busy: another process holds it (see 'fuser {where}')")
    if isinstance(exc, WrongSensorError):
        return SensorStatus(SensorState.WRONG_DEVICE, None, f"{name}: {exc}")
    if isinstance(exc, SensorDisconnected) and exc.instead:
        return SensorStatus(SensorState.DISCONNECTED, None, f"{name}: {exc}")
    if isinstance(exc, SensorDisconnected | OSError):
        if where.startswith("/") and Path(where).exists():
            text = (f"{name} cannot be opened ({exc}): check that sensor.port names "
                    "the sensor's port")
        else:
            text = f"{name} not found: check the sensor's cable (the agent waits for it)"
        return SensorStatus(SensorState.DISCONNECTED, None, text)
    if isinstance(exc, SensorTimeoutError):
        text = (f"{name} does not answer as a fingerprint sensor: check that sensor.port "
                "names the sensor and not another device, and the cable")
    elif isinstance(exc, ProtocolError):
        text = (f"{name} answers garbage: check the cable, and that sensor.port names "
                "the sensor and not another device")
    elif isinstance(exc, DeviceRefusedError):
        text = f"{name} refused the handshake ({exc}): check sensor.password in the configuration"
    else:
        text = f"{name} failed ({exc}): unplug and replug it; call the technician if it stays"
    return SensorStatus(SensorState.FAULT, None, text)


class SupervisedSensor:
    """A :class:`FingerprintSensor` that survives the device's absence (module docstring).

    ``opener`` opens and handshakes the device (raising while it is absent or
    wrong); ``where`` names it in messages (its port); ``on_change`` is called
    from any thread with each new status (state or message changed).
    """

    def __init__(self, opener: Callable[[], FingerprintSensor], *, where: str,
                 on_change: Callable[[SensorStatus], None] = lambda _s: None,
                 retry_max_s: float = 5.0) -> None:
        self._opener = opener
        self.where = where
        self._on_change = on_change
        self._retry_max_s = max(retry_max_s, RETRY_FIRST_S)
        self._lock = threading.Lock()
        self._inner: FingerprintSensor | None = None
        self._wanted = Guidance.READY
        self._status = SensorStatus(SensorState.DISCONNECTED, None,
                                    f"fingerprint sensor {where} not opened yet")
        self._connected = threading.Event()
        self._lost = threading.Event()  # wakes the watcher after a fault
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> SupervisedSensor:
        """Start the watcher (it opens the device at once, then whenever it is lost)."""
        self._thread = threading.Thread(target=self._watch, name="sensor-watch", daemon=True)
        self._thread.start()
        return self

    # --- the watcher -----------------------------------------------------------

    def _watch(self) -> None:
        pause = RETRY_FIRST_S
        while not self._stop.is_set():
            if self._connected.is_set():
                self._lost.wait()
                self._lost.clear()
                pause = RETRY_FIRST_S
                continue
            try:
                sensor = self._opener()
            except (SensorError, OSError) as exc:
                self._note(describe_fault(self.where, exc))
                self._stop.wait(pause)
                pause = min(pause * 2, self._retry_max_s)
                continue
            except Exception as exc:  # a driver bug must not end the kiosk's only sensor
                log.exception("opening the fingerprint sensor failed unexpectedly")
                self._note(describe_fault(self.where, exc))
                self._stop.wait(self._retry_max_s)
                continue
            try:
                sensor.guide(self._wanted)  # the ring shows what the station last asked
            except SensorError as exc:
                log.info("fingerprint sensor %s: LED after reconnect failed (%s)", self.where, exc)
            with self._lock:
                if self._stop.is_set():
                    sensor.close()
                    return
                self._inner = sensor
                self._connected.set()
            self._note(SensorStatus(SensorState.READY, 0))

    def _note(self, status: SensorStatus) -> None:
        with self._lock:
            changed = (status.state, status.detail) != (self._status.state, self._status.detail)
            self._status = status
        if changed:
            if status.state is SensorState.READY:
                log.info("fingerprint sensor %s ready", self.where)
            else:
                log.warning("%s", status.detail)
            self._on_change(status)

    def _current(self) -> FingerprintSensor | None:
        with self._lock:
            return self._inner

    def _fault(self, inner: FingerprintSensor, exc: SensorError) -> None:
        """The device failed under an operation: drop it and let the watcher reopen it."""
        with self._lock:
            if self._inner is not inner:
                return
            self._inner = None
            self._connected.clear()
        try:
            inner.close()
        except (SensorError, OSError) as close_exc:
            log.debug("closing the failed sensor: %s", close_exc)
        self._note(describe_fault(self.where, exc))
        self._lost.set()

    # --- FingerprintSensor --------------------------------------------------------

    def wait_for_finger(self, timeout_s: float) -> Capture | NoFinger:
        """A capture from the device; NoFinger at the timeout or while there is no device."""
        inner = self._current()
        if inner is None:
            self._connected.wait(timeout_s)
            return NoFinger()
        try:
            return inner.wait_for_finger(timeout_s)
        except SensorError as exc:
            self._fault(inner, exc)
            return NoFinger()

    def wait_for_lift(self, timeout_s: float) -> bool:
        """True once no finger is on the sensor (at once when the sensor is gone)."""
        inner = self._current()
        if inner is None:
            return True
        try:
            return inner.wait_for_lift(timeout_s)
        except SensorError as exc:
            self._fault(inner, exc)
            return True

    def guide(self, guidance: Guidance) -> None:
        """Show ``guidance`` now if the device is there, and again after any reconnect."""
        self._wanted = guidance
        inner = self._current()
        if inner is None:
            return
        try:
            inner.guide(guidance)
        except SensorError as exc:
            self._fault(inner, exc)

    def status(self) -> SensorStatus:
        """The device's status, or why there is no device (one line naming it and the fix)."""
        inner = self._current()
        if inner is None:
            with self._lock:
                return self._status
        return inner.status()

    @property
    def connected(self) -> bool:
        """Whether a device is open now."""
        return self._connected.is_set()

    def close(self) -> None:
        """Stop the watcher and release the device."""
        self._stop.set()
        self._lost.set()
        with self._lock:
            inner, self._inner = self._inner, None
            self._connected.clear()
        if inner is not None:
            inner.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
