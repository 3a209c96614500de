"""Peer status as the kiosk reports it: a closed state, debounced so it cannot flap.

The *observed* state of a peer is recomputed every tick from facts (is a
session open, when did we last hear from it). The *reported* state, the one
shown to the operator and sent as telemetry, follows the observed state only
after it has been the same for ``stable_interval_s``: a cable that makes bad
contact for a second, or a peer rebooting, does not make the indicator blink.
US e-pollbook users complained about exactly that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum


class PeerState(Enum):
    """How a kiosk sees one of its station peers."""

    #: A verified session is open and the peer spoke recently.
    CONNECTED = "connected"
    #: Heard from recently, but the session is silent or was just lost.
    STALE = "stale"
    #: Not heard from for a long time, or never.
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class PeerStatus:
    """One peer as reported by :meth:`agent.peers.PeerSync.status`.

    ``peer_lacks`` counts marks this kiosk holds that the peer did not hold at
    its last report; ``we_lack`` the reverse. Both are ``None`` until the peer
    has reported once since this kiosk started. ``protocol`` is the peer
    protocol version of the peer's last verified HELLO (``None``: none since
    start); when it differs from this kiosk's, the peer was refused
    (``version-mismatch``) and one of the two needs the other's release.
    """

    kiosk: str
    address: str | None
    state: PeerState
    since_wall_s: float
    last_heard_s_ago: float | None
    peer_lacks: int | None
    we_lack: int | None
    protocol: int | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form for events, telemetry and the CLI."""
        return {
            "kiosk": self.kiosk,
            "address": self.address,
            "state": self.state.value,
            "since_wall_s": round(self.since_wall_s, 3),
            "last_heard_s_ago": (
                None if self.last_heard_s_ago is None else round(self.last_heard_s_ago, 3)
            ),
            "peer_lacks": self.peer_lacks,
            "we_lack": self.we_lack,
            "protocol": self.protocol,
        }


def observed_state(
    *,
    session_open: bool,
    last_heard_age_s: float | None,
    stale_after_s: float,
    unreachable_after_s: float,
) -> PeerState:
    """The state the facts show right now (before debouncing)."""
    if last_heard_age_s is None:
        return PeerState.UNREACHABLE
    if session_open and last_heard_age_s <= stale_after_s:
        return PeerState.CONNECTED
    if last_heard_age_s <= unreachable_after_s:
        return PeerState.STALE
    return PeerState.UNREACHABLE


class Debounced:
    """A reported state that changes only after the observed one held for ``stable_s``."""

    def __init__(self, initial: PeerState, now: float, stable_s: float) -> None:
        self.reported = initial
        self.since = now
        self._stable_s = stable_s
        self._candidate = initial
        self._candidate_since = now

    def observe(self, state: PeerState, now: float) -> PeerState | None:
        """Feed the observed state at time ``now``; return the new reported state on a change."""
        if state != self._candidate:
            self._candidate = state
            self._candidate_since = now
        if (
            self._candidate != self.reported
            and now - self._candidate_since >= self._stable_s
        ):
            self.reported = self._candidate
            self.since = now
            return self.reported
        return None


def lag(mine: Mapping[str, int], theirs: Mapping[str, int]) -> int:
    """Marks counted in ``mine`` and not in ``theirs`` (version vectors)."""
    return sum(max(0, seq - theirs.get(kiosk, 0)) for kiosk, seq in mine.items())
