"""Tuned constants of the station application (site configuration is agent.runtime.config).

Matching thresholds live in ``agent.match.parameters``; extraction's quality
gate in ``agent.match.extraction.parameters``. These are the human-facing
timings and limits of a voter's turn at the sensor.
"""

from __future__ import annotations

FINGER_POLL_S = 0.3
"""How long one main-loop turn waits for a finger before serving commands again."""

MAX_ATTEMPTS = 3
"""Presses per voter before the "not identified" slip (2017: elderly voters need retries)."""

LIFT_TIMEOUT_S = 8.0
"""How long to wait for the voter to lift the finger after guidance."""

PRESS_AGAIN_TIMEOUT_S = 15.0
"""How long a voter asked to press again has before the turn ends as not identified."""

DOCUMENT_HOLD_S = 120.0
"""How long an ID document number read by the operator stays attached to the next press."""

MIN_MINUTIAE = 12
"""Fewer minutiae than this: ask for another press instead of matching.

Cylinder-code scores are normalised by the number of minutiae compared, so a
probe with a handful of minutiae can score like a genuine pair against a
stranger (seen on simulated partial presses: 4 minutiae, score 0.155). 12 is
the usual lower bound for identification-grade templates. The capture-quality
gate itself is ``agent.match.extraction.parameters.QUALITY_THRESHOLD``.
"""

HIGH_BAND_FMR = 1e-6
"""A score above the threshold of this false-match rate is logged as band "high"."""

MEDIUM_BAND_FMR = 1e-4
"""... above this one as "medium"; anything lower that still matched is "low"."""

SHUTDOWN_FLUSH_S = 5.0
"""On SIGTERM, how long to wait for the outbox to drain before ending the MQTT session."""

DOCUMENT_REOPEN_S = 2.0
"""How often a missing or unplugged document reader is looked for again."""

MIN_FREE_BYTES = 16 * 1024 * 1024
"""Free space the state disk must keep before a voter is invited: one turn writes a few
KB, but each store's WAL grows up to ~4 MB between checkpoints and a closing report and
its export need room too. Below it the station identifies nobody (storage.py)."""

STORAGE_RETRY_S = 3.0
"""After a write failed for lack of space, how long nobody is invited before trying again."""

STORAGE_REPEAT_S = 600.0
"""A disk that stays full is reported again in the log at most this often."""

PEER_RATE_WINDOW_S = 300
"""Window of a peer kiosk's own stamps over which its rate of marks is checked."""

PEER_MAX_MARKS_PER_WINDOW = 100
"""More marks than this from one kiosk in one window (one per 3 s for 5 min) is not a
kiosk at work: a voter's turn (press, match, slip) takes well over 3 s, so an alert."""

CLOCK_STEP_MS = 2000
"""A wall-clock jump against the monotonic clock this large is a step (audited as
clock-adjusted); NTP slews smaller errors without stepping."""
