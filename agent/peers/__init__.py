"""Station peers: the kiosks of one polling station share one set of marks, offline.

Direct TCP between kiosks (full mesh, no hub), every frame signed by the
sending kiosk and bound to the station and to a fresh session; marks merged
as a grow-only set (:mod:`agent.station.marks`). See docs/PEERS.md.

Public API: :class:`PeerSync` (run by the agent), :class:`PeerStatus` /
:class:`PeerState` (what it reports), :class:`PeerTiming` (timers).
"""

from agent.peers.parameters import PeerTiming
from agent.peers.status import PeerState, PeerStatus
from agent.peers.sync import (
    EVENT_CONFLICT,
    EVENT_MARK_ADMITTED,
    EVENT_MARK_QUARANTINED,
    EVENT_MARK_REJECTED,
    EVENT_PEER_REJECTED,
    EVENT_PEER_REVOKED,
    EVENT_PEER_STATUS,
    EVENT_RATE_EXCEEDED,
    PeerSync,
    PeerSyncError,
    StationSyncSummary,
    SyncStats,
)

__all__ = [
    "EVENT_CONFLICT",
    "EVENT_MARK_ADMITTED",
    "EVENT_MARK_QUARANTINED",
    "EVENT_MARK_REJECTED",
    "EVENT_PEER_REJECTED",
    "EVENT_PEER_REVOKED",
    "EVENT_PEER_STATUS",
    "EVENT_RATE_EXCEEDED",
    "PeerState",
    "PeerStatus",
    "PeerSync",
    "PeerSyncError",
    "PeerTiming",
    "StationSyncSummary",
    "SyncStats",
]
