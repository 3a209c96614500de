"""Signed telemetry: envelopes, a durable outbox and an MQTT publisher (Sparkplug-style sessions).

The station application uses :class:`Telemetry` only; ops uses the pure
envelope codec in :mod:`agent.telemetry.envelope`.
"""

from agent.telemetry.envelope import (
    EnvelopeError,
    PayloadError,
    PersonalDataError,
    TelemetryError,
)
from agent.telemetry.outbox import OutboxError
from agent.telemetry.session import (
    Telemetry,
    TelemetryConfigError,
    TelemetryStatus,
    TelemetryStoppedError,
    Uplink,
)

__all__ = [
    "EnvelopeError",
    "OutboxError",
    "PayloadError",
    "PersonalDataError",
    "Telemetry",
    "TelemetryConfigError",
    "TelemetryError",
    "TelemetryStatus",
    "TelemetryStoppedError",
    "Uplink",
]
