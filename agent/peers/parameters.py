"""Tuned constants of station peer sync, in one place.

Site configuration (addresses, listen port) lives in :mod:`agent.runtime.config`;
these are protocol and timing choices. :class:`PeerTiming` groups the ones a
test may shorten; the defaults below are what a kiosk runs with.
"""

from __future__ import annotations

from dataclasses import dataclass

#: TCP port a kiosk accepts peers on when ``peer_listen`` names no port.
DEFAULT_PORT = 7341

#: Largest frame body accepted (bytes). A full MARKS frame of MAX_MARKS_PER_FRAME
#: marks is about 70 KiB; anything near this limit is garbage or an attack.
MAX_BODY = 1 << 20

#: Marks per MARKS frame: big enough that catch-up after a long partition is a
#: few dozen frames, small enough that one merge transaction (signature checks
#: included) stays well under a heartbeat interval on a Raspberry Pi.
MAX_MARKS_PER_FRAME = 256

#: Largest frame body before the handshake completed: a HELLO is ~100 bytes,
#: so an unauthenticated peer cannot make us buffer a megabyte.
MAX_HELLO_BODY = 1024

#: Accepted connections not yet verified (in handshake, or past a possibly
#: replayed HELLO but without a signed in-session frame) at once; more are
#: closed on arrival, so a rogue opening sockets in a loop cannot exhaust the kiosk.
MAX_PENDING_HANDSHAKES = 16

#: Peer addresses dialled at most (configured + discovered): a station has a
#: handful of kits; a flood of mDNS announcements must not spawn dialers.
MAX_DIALERS = 32

#: Handshake nonces remembered to refuse a replayed HELLO (per process).
NONCE_MEMORY = 4096


@dataclass(frozen=True)
class PeerTiming:
    """Timers of the sync loop (seconds). Tests pass shorter ones."""

    #: A VECTOR (our version vector) goes to every peer this often; it is the
    #: heartbeat and the anti-entropy pull at once.
    vector_interval_s: float = 1.0
    #: A session that has heard nothing for this long is closed and redialled.
    dead_after_s: float = 5.0
    #: TCP connect and handshake must finish within this.
    connect_timeout_s: float = 2.0
    #: A write that cannot drain for this long closes the session.
    write_timeout_s: float = 5.0
    #: Redial backoff: first delay, doubled per failure up to the cap.
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 2.0
    #: Raw state "stale": a live session silent for longer than this, or no
    #: session but heard from within ``unreachable_after_s``.
    stale_after_s: float = 3.0
    unreachable_after_s: float = 15.0
    #: Hysteresis: a reported peer state changes only after the observed state
    #: has been the same for this long (no flapping indicator).
    stable_interval_s: float = 3.0
    #: How often peer states are re-evaluated.
    status_tick_s: float = 0.25
    #: Repeated rejections of the same kind from the same address are reported
    #: once per this interval, with a count, so a rogue cannot flood the audit log.
    reject_report_interval_s: float = 10.0
