"""Tuned constants of the telemetry link, in one place.

Site configuration (broker URL, credentials, health interval) lives in
:mod:`agent.runtime.config`; these are engineering defaults that tests shorten by
passing their own :class:`TelemetryTuning`.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1
"""Version of the envelope schema (field ``v``); bumped on any incompatible change."""

TOPIC_ROOT = "kesp/v1"
"""Root of every kiosk topic: ``kesp/v1/<district>/<station>/<device>/<type>``."""

SIGNATURE_BYTES = 64
MAX_MESSAGE_BYTES = 16 * 1024
"""Largest signed message (signature + body) a kiosk sends or ops accepts.

A health sample is ~1 KiB and a cumulative turnout ~300 bytes; 16 KiB leaves
room without letting a compromised kiosk flood ops with megabyte payloads.
"""

MAX_PAYLOAD_DEPTH = 6
"""Nesting limit of payload objects (turnout ``by_hour`` is depth 2)."""


@dataclass(frozen=True)
class TelemetryTuning:
    """Timeouts and limits of the device-side publisher.

    Defaults suit a kiosk on a cellular uplink; tests pass small values.
    """

    connect_timeout_s: float = 10.0
    """TCP/TLS connect plus CONNACK must complete within this time."""
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    """Reconnect delay doubles from ``backoff_initial_s`` up to this cap."""
    backoff_jitter: float = 0.5
    """Fraction of the delay that is randomised, so 7,000 kiosks that lost the
    broker at the same moment do not reconnect in lock-step."""
    stable_session_s: float = 30.0
    """A session that lasted this long resets the backoff to its initial value."""
    inflight_window: int = 64
    """Unacknowledged QoS 1 publishes allowed at once."""
    coalesce_depth: int = 500
    """Above this outbox depth a new health sample replaces the newest queued one."""
    retain_acked_rows: int = 50_000
    """Acknowledged rows kept for resend requests from ops (about one station-day)."""
    graceful_death_timeout_s: float = 2.0
    """How long ``stop(graceful=True)`` waits for the death message's PUBACK."""
    command_window_s: float = 300.0
    """A signed ops command older or newer than this (by its own clock) is refused."""
    unheard_retry_s: float = 5.0
    """After a PUBACK saying "no matching subscribers" (ops not subscribed),
    wait this long before publishing the kept records again."""
    idle_tick_s: float = 0.5
    """Longest sleep of the publisher loop when nothing happens (keepalive, health)."""
