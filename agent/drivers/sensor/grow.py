"""ZhianTec / Grow fingerprint modules over a serial port: the sensor service.

:class:`GrowSensor` is the :class:`~agent.drivers.sensor.service.FingerprintSensor`
on top of the device API (:class:`~agent.drivers.sensor.grow_device.GrowDevice`):
finger polling, LED guidance, baud negotiation and transparent reconnection
when the port disappears (USB-serial bridge pulled, pty closed) and comes back
at the same path.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from agent.drivers.sensor.grow_codec import (
    DEFAULT_ADDRESS,
    IMAGE_DPI,
    AuraLed,
    Confirmation,
    Instruction,
    LedColour,
    LedControl,
    SystemParameters,
    confirmation_of,
)
from agent.drivers.sensor.grow_device import GrowDevice
from agent.drivers.sensor.parameters import BAUD_CANDIDATES, READ_SLICE_S, SensorTimings
from agent.drivers.sensor.reconnecting import Reconnecting
from agent.drivers.sensor.types import (
    Capture,
    DeviceRefusedError,
    Guidance,
    NoFinger,
    ProtocolError,
    SensorDisconnected,
    SensorError,
    SensorStatus,
    SensorTimeoutError,
    map_status,
)
from agent.drivers.transport import SerialPort, TransportUnavailableError, open_serial

log = logging.getLogger(__name__)

T = TypeVar("T")


# How each guidance looks on the R503 ring. Colours follow the usual kiosk
# convention (blue = waiting, green = good, red = no); RETRY flashes three times.
AURA_FOR_GUIDANCE: dict[Guidance, AuraLed] = {
    Guidance.READY: AuraLed(LedControl.BREATHING, LedColour.BLUE, speed=0x60),
    Guidance.CAPTURING: AuraLed(LedControl.ON, LedColour.CYAN),
    Guidance.ACCEPTED: AuraLed(LedControl.ON, LedColour.GREEN),
    Guidance.RETRY: AuraLed(LedControl.FLASHING, LedColour.YELLOW, speed=0x30, times=3),
    Guidance.REFUSED: AuraLed(LedControl.ON, LedColour.RED),
    Guidance.FAULT: AuraLed(LedControl.FLASHING, LedColour.RED, speed=0x20, times=0),
}


def _close_port(port: SerialPort) -> None:
    with contextlib.suppress(OSError):  # the port may already be gone
        port.close()


class GrowSensor:
    """:class:`~agent.drivers.sensor.service.FingerprintSensor` on a Grow module at a serial path.

    Every operation runs against the current :class:`GrowDevice`; when the port
    vanishes the service closes it and reopens the same path (a stable udev
    symlink such as ``/dev/kesp-sensor``) until the operation's deadline.
    """

    device_type: type[GrowDevice] = GrowDevice  # the device API class (benchmarks vary it)

    def __init__(self, opener: Callable[[int], SerialPort], baud: int = 57600,
                 password: int = 0, address: int = DEFAULT_ADDRESS,
                 timings: SensorTimings | None = None) -> None:
        self._opener = opener
        self.baud = baud
        self.password = password
        self.address = address
        self.timings = timings or SensorTimings()
        self._link: Reconnecting[GrowDevice] = Reconnecting(
            self._connect, lambda d: _close_port(d.port), self.timings)
        self.has_led: bool | None = None  # unknown until the first LED command
        self.params: SystemParameters | None = None
        self._negotiated = False

    @classmethod
    def open(cls, path: str, baud: int = 57600, password: int = 0,
             address: int = DEFAULT_ADDRESS, timings: SensorTimings | None = None) -> GrowSensor:
        """Open and handshake the module at ``path``; raise SensorDisconnected if absent."""
        sensor = cls(lambda b: open_serial(path, b, READ_SLICE_S), baud, password, address,
                     timings)
        sensor._link.get()
        return sensor

    # --- connection -------------------------------------------------------------

    def _connect(self) -> GrowDevice:
        """Open the port, find the module's baud rate, verify the password."""
        try:
            port = self._opener(self.baud)
        except TransportUnavailableError as exc:
            raise SensorDisconnected(str(exc)) from exc
        dev = self.device_type(port, self.address, self.timings)
        try:
            found = self._negotiate(dev)
            if found != self.baud:
                log.info("module answered at %d baud; switching it to %d", found, self.baud)
                dev.set_baud(self.baud)
            self.params = dev.read_sys_para()
        except BaseException:
            _close_port(port)
            raise
        return dev

    def _negotiate(self, dev: GrowDevice) -> int:
        """The baud rate at which the module answers VfyPwd (configured one first)."""
        candidates = [self.baud]
        if not self._negotiated:
            # Only the first open scans: once the module has been set to the
            # configured rate (stored in its flash) a reconnect must not spend
            # 20 s on other speeds while a voter waits.
            candidates += [b for b in BAUD_CANDIDATES if b != self.baud]
        for i, baud in enumerate(candidates):
            dev.set_line_speed(baud)
            try:
                # Full retries at the configured speed; one try for the others.
                dev.verify_password(self.password, retries=None if i == 0 else 1)
                self._negotiated = True
                return baud
            except SensorTimeoutError:
                continue
            except ProtocolError:
                dev.resync()
                continue
        raise SensorTimeoutError("module does not answer at any baud rate")

    @property
    def device(self) -> GrowDevice | None:
        """The open device API (None while disconnected)."""
        return self._link.handle

    @property
    def reconnects(self) -> int:
        """How many times the port was reopened after a fault."""
        return self._link.reconnects

    def _run(self, op: Callable[[GrowDevice], T], deadline: float) -> T:
        return self._link.run(op, deadline)

    def _gen_img(self, d: GrowDevice) -> Confirmation:
        code = d.gen_img()
        if code is Confirmation.MUST_VERIFY_PASSWORD:
            # A power blip behind a bridge that stayed up: the module forgot
            # the handshake but the port never went away.
            d.verify_password(self.password)
            code = d.gen_img()
        return code

    # --- FingerprintSensor ---------------------------------------------------------

    def wait_for_finger(self, timeout_s: float) -> Capture | NoFinger:
        """Poll GenImg until a finger is imaged, then UpImage it; NoFinger at the timeout."""
        deadline = time.monotonic() + timeout_s

        def poll(d: GrowDevice) -> tuple[Confirmation, NDArray[np.uint8] | None]:
            # GenImg and UpImage form one unit: after a reconnect the module
            # has lost its image buffer, so both are repeated.
            code = self._gen_img(d)
            return code, d.up_image() if code is Confirmation.OK else None

        last_logged: Confirmation | None = None

        while True:
            try:
                code, image = self._run(poll, deadline)
            except DeviceRefusedError as exc:
                if exc.code not in (Confirmation.IMAGE_UPLOAD_FAILED,
                                    Confirmation.NO_VALID_IMAGE):
                    raise
                code, image = Confirmation(exc.code), None  # buffer lost (power blip)
            if image is not None:
                return Capture(image, IMAGE_DPI)
            if code not in (Confirmation.NO_FINGER, Confirmation.CAPTURE_FAILED) \
                    and code is not last_logged:
                log.info("GenImg answered %s; polling on", code.name)  # once per change
            last_logged = code
            if time.monotonic() >= deadline:
                return NoFinger()
            time.sleep(self.timings.poll_interval_s)

    def wait_for_lift(self, timeout_s: float) -> bool:
        """Poll GenImg until it reports no finger."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self._run(self._gen_img, deadline) is Confirmation.NO_FINGER:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.timings.poll_interval_s)

    def guide(self, guidance: Guidance) -> None:
        """Set the R503 ring; remembered as absent after the first refusal or silence."""
        if self.has_led is False:
            return
        led = AURA_FOR_GUIDANCE[guidance]

        def set_ring(d: GrowDevice) -> Confirmation | None:
            try:
                return d.aura_led(led, retries=1)
            except (SensorTimeoutError, ProtocolError):
                # Modules without the ring stay silent or answer nonsense;
                # only a vanished port is worth a reconnect here.
                d.resync()
                return None

        deadline = time.monotonic() + self.timings.reply_timeout_s
        self.has_led = self._run(set_ring, deadline) is Confirmation.OK

    def status(self) -> SensorStatus:
        """ReadSysPara mapped by :func:`~agent.drivers.sensor.map_status`; never raises.

        While another thread is capturing, the outcome of its last operation is
        reported instead of waiting up to an UpImage (7 s at 57600 baud).
        """

        def query() -> SensorStatus:
            try:
                ack = self._link.get().transact(Instruction.READ_SYS_PARA)
                code = confirmation_of(ack)
                if code is not Confirmation.OK:
                    return map_status(int(code))
                params = SystemParameters.from_bytes(ack.payload[1:])
                self.params = params
                return map_status(0, params.status_register)
            except (SensorDisconnected, SensorTimeoutError) as exc:
                self._link.drop()
                self._link.last_fault = exc
                return map_status(None, fault=exc if isinstance(exc, SensorDisconnected) else None)
            except SensorError as exc:
                self._link.last_fault = exc
                return map_status(None, fault=exc)

        return self._link.status_of(query, self.timings.status_wait_s)

    def close(self) -> None:
        """Release the port."""
        self._link.drop()

    def __enter__(self) -> GrowSensor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

