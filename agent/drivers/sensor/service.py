"""The fingerprint-sensor service the station application talks to.

Whatever the hardware (a ZhianTec/Grow UART module, :mod:`.grow`; a USB area
sensor, :mod:`.usb`), the station sees one small :class:`FingerprintSensor`
protocol: wait for a finger and get a raw grey image, wait for the finger to
lift, show guidance on the LED ring, ask for the status, close. The types it
speaks in (:class:`~agent.drivers.sensor.types.Capture`,
:class:`~agent.drivers.sensor.types.NoFinger`, the
:class:`~agent.drivers.sensor.types.SensorError` hierarchy, the closed
:class:`~agent.drivers.sensor.types.SensorStatus`) live in :mod:`.types`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from agent.drivers.probe import printer_answers
from agent.drivers.sensor.grow import GrowSensor
from agent.drivers.sensor.parameters import SensorTimings
from agent.drivers.sensor.types import (
    Capture,
    Guidance,
    NoFinger,
    ProtocolError,
    SensorStatus,
    SensorTimeoutError,
    WrongSensorError,
)
from agent.drivers.sensor.usb import Aes3500Driver, Nb1010Driver, UsbSensor

if TYPE_CHECKING:
    from agent.runtime.config import SensorConfig

__all__ = ["FingerprintSensor", "open_sensor"]


class FingerprintSensor(Protocol):
    """What the station application needs from any fingerprint sensor."""

    def wait_for_finger(self, timeout_s: float) -> Capture | NoFinger:
        """Wait until a finger is on the sensor and return its image, or NoFinger."""
        ...

    def wait_for_lift(self, timeout_s: float) -> bool:
        """True once the sensor reports no finger, False if it stayed until the timeout."""
        ...

    def guide(self, guidance: Guidance) -> None:
        """Show ``guidance`` to the voter (LED ring); a no-op on sensors without LEDs."""
        ...

    def status(self) -> SensorStatus:
        """Query the device; never raises (faults become a status)."""
        ...

    def close(self) -> None:
        """Release the device."""
        ...


def open_sensor(cfg: SensorConfig, timings: SensorTimings | None = None,
                usb_backend: object = None) -> FingerprintSensor:
    """Open the sensor ``cfg`` describes ("grow-serial", "nb1010-usb", "aes3500-usb").

    ``usb_backend`` is a pyusb backend for the USB kinds (None: libusb); the
    demo passes ``hardware_sim.usb_replay.ReplayBackend`` to run on recordings.

    Raises :class:`SensorDisconnected` when the device is absent (its subclass
    :class:`WrongSensorError` when another device answers in its place: another
    USB sensor model, or a receipt printer at a serial ``port``) and
    :class:`SensorError` subclasses for other faults found while opening.
    """
    t = timings or SensorTimings(reply_timeout_s=cfg.reply_timeout_s)
    if cfg.kind == "grow-serial":
        try:
            return GrowSensor.open(cfg.port, baud=cfg.baud, password=cfg.password,
                                   address=cfg.address, timings=t)
        except (SensorTimeoutError, ProtocolError) as exc:
            # Silent or garbled at every rate: is it the receipt printer's port?
            if printer_answers(cfg.port) is None:
                raise
            raise WrongSensorError(
                f"a receipt printer answers at {cfg.port} (ESC/POS status), not a "
                "fingerprint sensor", "sensor.port must name the sensor's port: are the "
                "sensor's and the printer's cables (USB ports) swapped?") from exc
    if cfg.kind == "nb1010-usb":
        return UsbSensor.open(Nb1010Driver, timings=t, backend=usb_backend)
    if cfg.kind == "aes3500-usb":
        return UsbSensor.open(Aes3500Driver, timings=t, backend=usb_backend)
    raise ValueError(f"unknown sensor kind {cfg.kind!r}")
