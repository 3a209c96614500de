"""Tuned constants of the ops console in one place (tests pass shorter values)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpsTuning:
    """Windows, batch sizes and alert thresholds of :class:`ops.service.OpsService`."""

    skew_alert_s: float = 30.0
    """|sent - received| above this on a live message raises a clock-skew alert.

    There is no time window that refuses a message: a kiosk with a wrong clock
    (no RTC, booted offline) would be dropped unseen. Its validly signed data
    is counted and the device is listed with a ``clock_skew`` alert naming the skew;
    replays are caught by the dedup store (``n``; ``boot`` for a death, which is
    signed at connect time and so may be days old when the broker sends it)."""
    batch_max: int = 500
    """Messages verified and committed in one store transaction."""
    batch_wait_s: float = 0.02
    """How long the ingest thread waits to fill a batch before committing."""
    reorder_timeout_s: float = 10.0
    """A gap in a kiosk's counter older than this triggers a signed resend request
    (Sparkplug's reorder timeout)."""
    command_interval_s: float = 10.0
    """At most one rebirth/resend command per kiosk per this interval."""
    session_expiry_s: int = 7 * 24 * 3600
    """Broker keeps ops' subscription and queued messages this long while ops is down."""
    keepalive_s: int = 30
    retry_s: float = 1.0
    """Pause before retrying a batch whose store transaction failed."""
    reconnect_min_s: int = 1
    reconnect_max_s: int = 30
    """paho's reconnect backoff towards the broker (whole seconds)."""


@dataclass(frozen=True)
class BoardTuning:
    """Thresholds of kiosk status and alerts (the dashboard, ``watch``, the per-kiosk
    metrics and so the alert rules), and of the dashboard and the public feed."""

    silent_after_s: float = 150.0
    """A kiosk whose session is open but that sent nothing for this long is *silent*
    (kiosks send a health sample every 60 s, so two missed samples and a margin)."""
    offline_after_s: float = 900.0
    """A silent kiosk becomes *offline* after this long, as does one whose session ended."""
    disk_low_fraction: float = 0.10
    """Free share of the kiosk's state file system below which ``disk_low`` is raised."""
    outbox_backlog: int = 200
    """Unacknowledged records in a kiosk's outbox above which ``outbox_backlog`` is raised."""
    refresh_s: float = 5.0
    """How often the dashboard's snapshot is rebuilt from the store."""
    stale_after_s: float = 60.0
    """A snapshot older than this (store unreachable) is refused with HTTP 503."""
    store_timeout_s: float = 5.0
    """A request that needs the store gives up (HTTP 503) after this long."""
    request_timeout_s: float = 10.0
    """Socket time-out of one HTTP connection (slow or idle clients are dropped)."""
    max_workers: int = 16
    """Concurrent HTTP requests; more are answered 503 at once instead of queueing."""
    recent_events: int = 50
    """Events listed on a kiosk's page."""
    audit_rows_per_refresh: int = 20_000
    """Audit-chain check: events read from the store per refresh (catches up over time)."""
