"""Tuned constants of the fingerprint-sensor drivers, in one place.

Protocol facts (frame layouts, command bytes) stay with the codecs; what lives
here are the numbers someone chose and may have to re-tune on real hardware:
timeouts, polling rates, detection thresholds. Site configuration (which
sensor, which port, which password) is ``agent.runtime.config.SensorConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- Grow modules over a UART -----------------------------------------------------

READ_SLICE_S = 0.02
"""pyserial read timeout; operation deadlines are enforced above it."""

BAUD_CANDIDATES = (57600, 115200, 9600, 19200, 38400, 76800, 96000, 28800, 48800, 67200,
                   86400, 105600)
"""Rates tried, in order, when the module is silent at the configured one: the
factory default first, then the speeds integrators set most often."""

# --- USB area sensors -----------------------------------------------------------------

NB1010_DETECT_THRESHOLD = 0x60
"""NB-1010 detection level (byte 12 of the finger-check answer) above which a
finger is on the sensor; libfprint's value, the recording shows 0xF7 with a finger."""

NB1010_SETTLE_S = 0.05
"""Pause between the NB-1010 capture command and reading the partials."""

AES3500_FINGER_STD = 12.0
"""Grey-level spread of an AES3500 frame above which it holds ridges (the sensor
has no detection command in the recorded traffic). Set from one recording: the
recorded finger gives about 99; an empty sensor has not been recorded."""


@dataclass(frozen=True)
class SensorTimings:
    """Timeouts and retry counts of the sensor drivers (tests shorten them).

    The defaults suit a real R30x/R503 at 57600 baud: GenImg answers in about
    0.3-0.5 s, an UpImage of 36,864 bytes needs about 7 s on the wire.
    """

    reply_timeout_s: float = 2.0  # one command -> its acknowledge
    data_timeout_s: float = 2.0  # gap allowed between two data packets
    poll_interval_s: float = 0.05  # pause between two GenImg polls
    command_retries: int = 3  # resend after a corrupt or missing reply
    reconnect_interval_s: float = 0.25  # pause between two reopen attempts
    status_wait_s: float = 0.2  # a status query waits this long for a capture in progress
    usb_timeout_ms: int = 2000  # one bulk transfer

    def __post_init__(self) -> None:
        for name in ("reply_timeout_s", "data_timeout_s", "reconnect_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.poll_interval_s < 0 or self.command_retries < 1 or self.usb_timeout_ms <= 0:
            raise ValueError("poll_interval_s >= 0, command_retries >= 1, usb_timeout_ms > 0")
