"""PeerSync in one process, two kiosks on distinct loopback addresses (fast checks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from agent.peers import PeerState, PeerSync, PeerSyncError, PeerTiming
from agent.runtime.config import AgentConfig
from agent.runtime.keys import DeviceKeys
from agent.station.marks import Mark, MarkStore, hlc_pack

TIMING = PeerTiming(
    vector_interval_s=0.2, dead_after_s=1.0, connect_timeout_s=0.5, backoff_initial_s=0.05,
    backoff_max_s=0.2, stale_after_s=0.6, unreachable_after_s=2.0, stable_interval_s=0.3,
    status_tick_s=0.05,
)
IDS = ("kiosk-a", "kiosk-b")


def _port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Pair:
    """Two kiosks' keys, stores and configs; PeerSyncs made on demand."""

    def __init__(self, root: Path) -> None:
        self.keys = {k: DeviceKeys(SigningKey.generate(), PrivateKey.generate()) for k in IDS}
        trusted = {k: v.signing.verify_key for k, v in self.keys.items()}
        hosts = {"kiosk-a": "127.0.0.31", "kiosk-b": "127.0.0.32"}
        addrs = {k: f"{h}:{_port(h)}" for k, h in hosts.items()}
        self.cfg = {
            k: AgentConfig(
                device_id=k, station_id="st-7", district="d", peers=tuple(addrs.values()),
                peer_listen=addrs[k],
            )
            for k in IDS
        }
        self.store = {
            k: MarkStore(root / f"{k}.db", k, self.keys[k].signing, trusted) for k in IDS
        }
        self.events: dict[str, list[tuple[str, dict[str, object]]]] = {k: [] for k in IDS}
        self.lock = threading.Lock()
        self.syncs: list[PeerSync] = []

    def sink(self, kiosk: str) -> Callable[[str, Mapping[str, object]], None]:
        def on_event(name: str, fields: Mapping[str, object]) -> None:
            with self.lock:
                self.events[kiosk].append((name, dict(fields)))

        return on_event

    def sync(self, kiosk: str) -> PeerSync:
        s = PeerSync(
            self.cfg[kiosk], self.keys[kiosk], self.store[kiosk], self.sink(kiosk), timing=TIMING
        )
        s.start()
        self.syncs.append(s)
        return s

    def named(self, kiosk: str, name: str) -> list[dict[str, object]]:
        with self.lock:
            return [f for n, f in self.events[kiosk] if n == name]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    try:
        yield p
    finally:
        for s in p.syncs:
            s.stop()


def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_marks_flow_both_ways_one_session_status_and_counters(pair: Pair) -> None:
    a, b = pair.sync("kiosk-a"), pair.sync("kiosk-b")
    _until(lambda: all(s.state is PeerState.CONNECTED for s in a.status() + b.status()))
    for v in range(1, 21):
        kiosk, sync = (("kiosk-a", a), ("kiosk-b", b))[v % 2]
        sync.notify_local(pair.store[kiosk].mark_local(v, "verify", f"S{v}"))
    _until(lambda: pair.store["kiosk-a"].count() == pair.store["kiosk-b"].count() == 20)
    assert a.connected_peers() == ["kiosk-b"] and b.connected_peers() == ["kiosk-a"]
    _until(lambda: a.status()[0].peer_lacks == 0 == a.status()[0].we_lack)
    _until(lambda: a.stats().marks_added == 10)  # counted just after the store commits
    st = a.status()[0]
    assert st.kiosk == "kiosk-b" and st.last_heard_s_ago is not None
    assert st.last_heard_s_ago < TIMING.stale_after_s
    stats = a.stats()
    assert stats.marks_added == 10 and stats.frames_rejected == 0
    assert stats.marks_sent == 10  # each of its marks crossed the link once
    assert stats.bytes_sent > 10 * 100
    assert pair.named("kiosk-a", "mark_conflict") == []
    # A clean stop says BYE: the peer sees the session end at once, and after
    # the stable interval reports the peer stale (never flapping in between).
    b.stop()
    _until(lambda: a.connected_peers() == [])
    _until(lambda: a.status()[0].state is PeerState.STALE)
    states = [f["state"] for f in pair.named("kiosk-a", "peer_status")]
    assert states == ["connected", "stale"]


def test_partitioned_double_identification_is_a_reported_conflict(pair: Pair) -> None:
    pair.sync("kiosk-a")
    pair.store["kiosk-a"].mark_local(7, "identify", "A-7")
    pair.store["kiosk-b"].mark_local(7, "identify", "B-7")  # b is offline
    b = pair.sync("kiosk-b")
    _until(lambda: pair.store["kiosk-a"].count() == pair.store["kiosk-b"].count() == 2)
    for k in IDS:
        _until(lambda k=k: len(pair.named(k, "mark_conflict")) == 1)  # type: ignore[misc]
        event = pair.named(k, "mark_conflict")[0]
        assert event["voter"] == 7
        serials = sorted(str(m["slip_serial"]) for m in event["marks"])  # type: ignore[attr-defined]
        assert serials == ["A-7", "B-7"]
    assert [c.voter for c in pair.store["kiosk-b"].conflicts()] == [7]
    summary = b.summary()
    assert summary.kiosk == "kiosk-b" and summary.peers[0].kiosk == "kiosk-a"
    assert summary.marks_total == 2 and summary.voters_marked == 1
    assert summary.marks_by_kiosk == {"kiosk-a": 1, "kiosk-b": 1}
    assert summary.conflict_voters == (7,)


def test_a_failing_event_sink_does_not_stop_sync(pair: Pair) -> None:
    def broken(name: str, fields: Mapping[str, object]) -> None:
        raise RuntimeError("audit disk full")

    a = PeerSync(
        pair.cfg["kiosk-a"], pair.keys["kiosk-a"], pair.store["kiosk-a"], broken, timing=TIMING
    )
    a.start()
    pair.syncs.append(a)
    pair.sync("kiosk-b")
    pair.store["kiosk-b"].mark_local(1, "verify", "B-1")
    _until(lambda: pair.store["kiosk-a"].count() == 1)
    _until(lambda: a.status()[0].state is PeerState.CONNECTED)


def test_start_and_construction_errors(pair: Pair) -> None:
    pair.sync("kiosk-a")
    with pytest.raises(PeerSyncError, match="cannot listen"):
        PeerSync(
            pair.cfg["kiosk-a"], pair.keys["kiosk-a"], pair.store["kiosk-a"], pair.sink("kiosk-a")
        ).start()
    with pytest.raises(PeerSyncError, match="key"):
        PeerSync(pair.cfg["kiosk-a"], pair.keys["kiosk-b"], pair.store["kiosk-a"], print)
    with pytest.raises(PeerSyncError, match="belongs to"):
        PeerSync(pair.cfg["kiosk-b"], pair.keys["kiosk-b"], pair.store["kiosk-a"], print)


def test_unauthenticated_connections_are_bounded(pair: Pair) -> None:
    a = pair.sync("kiosk-a")
    host, port = a.listen_address
    # A header announcing a big body before any handshake: refused at once.
    with socket.create_connection((host, port), timeout=2) as s:
        s.sendall(b"KP\x01\x01" + (100_000).to_bytes(4, "big"))
        assert s.recv(100) == b""
    _until(lambda: [f["reason"] for f in pair.named("kiosk-a", "peer_rejected")] == ["malformed"])
    # A trickle that never completes a HELLO is cut at the handshake deadline.
    with socket.create_connection((host, port), timeout=5) as s:
        t0 = time.monotonic()
        s.sendall(b"KP\x01")
        assert s.recv(100) == b""
        assert time.monotonic() - t0 < TIMING.connect_timeout_s + 1.0


def test_too_many_unverified_connections_are_refused(pair: Pair) -> None:
    from agent.peers.parameters import MAX_PENDING_HANDSHAKES

    a = pair.sync("kiosk-a")
    addr = a.listen_address
    held = [socket.create_connection(addr, timeout=2) for _ in range(MAX_PENDING_HANDSHAKES)]
    try:
        time.sleep(0.1)  # let the kiosk accept them all
        with socket.create_connection(addr, timeout=2) as extra:
            assert extra.recv(100) == b""
        _until(
            lambda: "too-many-connections"
            in [f["reason"] for f in pair.named("kiosk-a", "peer_rejected")]
        )
    finally:
        for s in held:
            s.close()
    # Once they are gone, a real peer still gets in.
    pair.sync("kiosk-b")
    _until(lambda: a.connected_peers() == ["kiosk-b"])


def test_marks_are_relayed_when_two_kiosks_cannot_reach_each_other(tmp_path: Path) -> None:
    """A and C have no link (neither knows the other's address): B carries A's marks to C."""
    ids = ("kiosk-a", "kiosk-b", "kiosk-c")
    keys = {k: DeviceKeys(SigningKey.generate(), PrivateKey.generate()) for k in ids}
    trusted = {k: v.signing.verify_key for k, v in keys.items()}
    hosts = dict(zip(ids, ("127.0.0.41", "127.0.0.42", "127.0.0.43"), strict=True))
    addr = {k: f"{h}:{_port(h)}" for k, h in hosts.items()}
    knows = {"kiosk-a": ("kiosk-b",), "kiosk-b": ("kiosk-a", "kiosk-c"), "kiosk-c": ("kiosk-b",)}
    stores, syncs = {}, {}
    try:
        for k in ids:
            cfg = AgentConfig(
                device_id=k, station_id="st-7", district="d",
                peers=tuple(addr[p] for p in knows[k]), peer_listen=addr[k],
            )
            stores[k] = MarkStore(tmp_path / f"{k}.db", k, keys[k].signing, trusted)
            syncs[k] = PeerSync(cfg, keys[k], stores[k], lambda n, f: None, timing=TIMING)
            syncs[k].start()
        _until(lambda: syncs["kiosk-b"].connected_peers() == ["kiosk-a", "kiosk-c"])
        # Let the start-up double dials settle (one session per pair) first.
        _until(
            lambda: [s.state for s in syncs["kiosk-b"].status()] == [PeerState.CONNECTED] * 2
        )
        for v in range(1, 6):
            syncs["kiosk-a"].notify_local(stores["kiosk-a"].mark_local(v, "verify", f"A{v}"))
        syncs["kiosk-c"].notify_local(stores["kiosk-c"].mark_local(9, "verify", "C9"))
        _until(lambda: all(s.count() == 6 for s in stores.values()))
        assert syncs["kiosk-a"].connected_peers() == ["kiosk-b"]
        assert syncs["kiosk-c"].connected_peers() == ["kiosk-b"]
        # C knows A only through B: A is listed, never heard from directly.
        a_seen_by_c = next(s for s in syncs["kiosk-c"].status() if s.kiosk == "kiosk-a")
        assert a_seen_by_c.state is PeerState.UNREACHABLE
        # Relayed once each way, not echoed back.
        assert syncs["kiosk-b"].stats().marks_sent == 6
    finally:
        for s in syncs.values():
            s.stop()


def test_revocation_spreads_refuses_later_marks_and_fast_marks_are_quarantined(
    pair: Pair, tmp_path: Path
) -> None:
    """A commission's revocation reaches every kiosk; a fast kiosk's marks are held apart."""
    c_key = SigningKey.generate()
    trusted = {k: v.signing.verify_key for k, v in pair.keys.items()}
    trusted["kiosk-c"] = c_key.verify_key
    fast = 10 * 60_000  # kiosk-b's clock is ten minutes fast
    pair.store = {
        "kiosk-a": MarkStore(tmp_path / "a2.db", "kiosk-a", pair.keys["kiosk-a"].signing,
                             trusted),
        "kiosk-b": MarkStore(tmp_path / "b2.db", "kiosk-b", pair.keys["kiosk-b"].signing,
                             trusted, wall_ms=lambda: time.time_ns() // 1_000_000 + fast),
    }
    a, b = pair.sync("kiosk-a"), pair.sync("kiosk-b")
    _until(lambda: a.connected_peers() == ["kiosk-b"] and b.connected_peers() == ["kiosk-a"])

    def c_mark(seq: int) -> Mark:
        unsigned = Mark(seq, "kiosk-c", seq, "identify", f"C-{seq}", hlc_pack(int(time.time()
                                                                                  * 1000), 0))
        return Mark(seq, "kiosk-c", seq, "identify", unsigned.slip_serial, unsigned.hlc,
                    c_key.sign(unsigned.signed_bytes()).signature)

    assert pair.store["kiosk-a"].merge([c_mark(1)]).added
    a.notify_local(c_mark(1))
    _until(lambda: pair.store["kiosk-b"].count() == 1)
    assert pair.store["kiosk-a"].revoke("kiosk-c", by="kiosk-a") is not None
    _until(lambda: pair.named("kiosk-b", "peer_revoked") != [])
    assert pair.named("kiosk-b", "peer_revoked") == [
        {"kiosk": "kiosk-c", "upto_seq": 1, "by": "kiosk-a"}]
    assert pair.store["kiosk-b"].merge([c_mark(2)]).rejected[0][1] == "revoked-kiosk"
    assert [m.origin_seq for m in pair.store["kiosk-b"].revoked_marks()] == [1]
    # kiosk-b's own marks are ten minutes ahead of kiosk-a's clock: held apart there.
    b.notify_local(pair.store["kiosk-b"].mark_local(9, "identify", "B-1"))
    _until(lambda: pair.named("kiosk-a", "mark_quarantined") != [])
    (held,) = pair.named("kiosk-a", "mark_quarantined")
    assert held["kiosk"] == "kiosk-b" and 9 * 60_000 < int(str(held["ahead_ms"])) <= fast
    assert pair.store["kiosk-a"].marks_for(9) == ()
    assert pair.named("kiosk-a", "mark_rejected") == []  # reported once, as quarantined
    # A kiosk never accepts its own revocation from a peer.
    assert pair.store["kiosk-a"].revoke("kiosk-b", by="kiosk-a") is not None
    time.sleep(4 * TIMING.vector_interval_s)
    assert [r.kiosk for r in pair.store["kiosk-b"].revocations()] == ["kiosk-c"]


def test_a_kiosk_on_another_protocol_version_is_refused_both_ways_others_unaffected(
    tmp_path: Path,
) -> None:
    """kiosk-c runs another release (peer protocol v1): both sides refuse it with
    version-mismatch naming both versions, no mark crosses, a and b keep syncing,
    the redials follow the backoff; once c runs this release it syncs."""
    from dataclasses import replace

    from agent.peers.wire import PROTOCOL_VERSION

    # A wider backoff range than TIMING's, so a redial without backoff (0.02 s)
    # and one at the cap (0.5 s) are far apart in the count below.
    timing = replace(TIMING, backoff_initial_s=0.02, backoff_max_s=0.5)
    ids = ("kiosk-a", "kiosk-b", "kiosk-c")
    keys = {k: DeviceKeys(SigningKey.generate(), PrivateKey.generate()) for k in ids}
    trusted = {k: v.signing.verify_key for k, v in keys.items()}
    hosts = dict(zip(ids, ("127.0.0.51", "127.0.0.52", "127.0.0.53"), strict=True))
    addr = {k: f"{h}:{_port(h)}" for k, h in hosts.items()}
    cfg = {k: AgentConfig(device_id=k, station_id="st-7", district="d",
                          peers=tuple(addr.values()), peer_listen=addr[k]) for k in ids}
    stores = {k: MarkStore(tmp_path / f"{k}.db", k, keys[k].signing, trusted) for k in ids}
    events: dict[str, list[tuple[str, dict[str, object]]]] = {k: [] for k in ids}
    lock = threading.Lock()

    def start(k: str, protocol: int = PROTOCOL_VERSION) -> PeerSync:
        def on_event(name: str, fields: Mapping[str, object]) -> None:
            with lock:
                events[k].append((name, dict(fields)))

        s = PeerSync(cfg[k], keys[k], stores[k], on_event, timing=timing, protocol=protocol)
        s.start()
        return s

    def named(k: str, name: str) -> list[dict[str, object]]:
        with lock:
            return [f for n, f in events[k] if n == name]

    def mismatches(k: str) -> list[dict[str, object]]:
        return [f for f in named(k, "peer_rejected") if f["reason"] == "version-mismatch"]

    syncs = {k: start(k, 1 if k == "kiosk-c" else PROTOCOL_VERSION) for k in ids}
    try:
        a, b, c = syncs["kiosk-a"], syncs["kiosk-b"], syncs["kiosk-c"]
        _until(lambda: a.connected_peers() == ["kiosk-b"] and b.connected_peers() == ["kiosk-a"])
        # Refused both ways, with the reason and both versions, by every kiosk.
        _until(lambda: all(mismatches(k) for k in ids)
               and {f["claimed_sender"] for f in mismatches("kiosk-c")} == {"kiosk-a", "kiosk-b"})
        (seen_by_a,) = mismatches("kiosk-a")
        assert seen_by_a["claimed_sender"] == "kiosk-c"
        assert (seen_by_a["peer_protocol"], seen_by_a["protocol"]) == (1, 2)
        assert seen_by_a["detail"] == "'kiosk-c' speaks an older peer protocol (v1, this kiosk v2)"
        assert all(f["detail"] == f"{f['claimed_sender']!r} speaks a newer peer protocol "
                   "(v2, this kiosk v1)" for f in mismatches("kiosk-c"))
        # No mark crosses the version boundary; a and b still share theirs.
        for v in (1, 2, 3):
            a.notify_local(stores["kiosk-a"].mark_local(v, "verify", f"A{v}"))
        c.notify_local(stores["kiosk-c"].mark_local(9, "verify", "C9"))
        _until(lambda: stores["kiosk-b"].count() == 3)
        # No retry storm: a and c redial each other at the backoff cap, and a
        # mismatch goes on being one event per kiosk, however many redials.
        time.sleep(1.0)  # past the ramp (0.02 s doubling to the cap: ~0.75 s of sleeps)
        before, t0 = a.stats().frames_rejected, time.monotonic()
        time.sleep(2.0)
        rejected, elapsed = a.stats().frames_rejected - before, time.monotonic() - t0
        # Each side's dialer: at most one attempt per 0.8 x cap, plus the one in progress.
        bound = 2 * (elapsed / (0.8 * timing.backoff_max_s) + 2)
        assert 1 <= rejected <= bound, (rejected, bound)
        assert len(mismatches("kiosk-a")) == 1 and len(mismatches("kiosk-b")) == 1
        assert len(mismatches("kiosk-c")) == 2
        assert sorted(m.kiosk for m in stores["kiosk-a"].all_marks()) == ["kiosk-a"] * 3
        assert sorted(m.kiosk for m in stores["kiosk-b"].all_marks()) == ["kiosk-a"] * 3
        assert [m.kiosk for m in stores["kiosk-c"].all_marks()] == ["kiosk-c"]
        assert c.connected_peers() == []
        assert a.connected_peers() == ["kiosk-b"]
        by_kiosk = {s.kiosk: s for s in a.status()}
        assert by_kiosk["kiosk-c"].protocol == 1
        assert by_kiosk["kiosk-c"].state is PeerState.UNREACHABLE
        assert by_kiosk["kiosk-b"].protocol == 2
        assert by_kiosk["kiosk-b"].state is PeerState.CONNECTED
        assert {s.kiosk: s.protocol for s in c.status()} == {"kiosk-a": 2, "kiosk-b": 2}
        # a's view of b never changed while c was refused.
        assert [(f["peer"], f["state"]) for f in named("kiosk-a", "peer_status")] == [
            ("kiosk-b", "connected")]
        # kiosk-c updated to this release: it syncs, and the mismatch is over.
        c.stop()
        syncs["kiosk-c"] = c = start("kiosk-c")
        _until(lambda: all(st.count() == 4 for st in stores.values()))
        _until(lambda: c.connected_peers() == ["kiosk-a", "kiosk-b"])
        assert {s.kiosk: s.protocol for s in a.status()} == {"kiosk-b": 2, "kiosk-c": 2}
    finally:
        for s in syncs.values():
            s.stop()


def test_one_refused_dial_tells_both_kiosks(pair: Pair) -> None:
    """kiosk-b (v3) does not dial: kiosk-a learns b's version from the signed
    HELLO with which b answers a's dial before closing it."""
    from dataclasses import replace

    b_cfg = replace(pair.cfg["kiosk-b"], peers=())
    b = PeerSync(b_cfg, pair.keys["kiosk-b"], pair.store["kiosk-b"], pair.sink("kiosk-b"),
                 timing=TIMING, protocol=3)
    b.start()
    pair.syncs.append(b)
    a = pair.sync("kiosk-a")
    for k, other, theirs in (("kiosk-a", "kiosk-b", 3), ("kiosk-b", "kiosk-a", 2)):
        _until(lambda k=k: pair.named(k, "peer_rejected") != [])  # type: ignore[misc]
        (event,) = pair.named(k, "peer_rejected")
        assert (event["reason"], event["claimed_sender"], event["peer_protocol"]) == (
            "version-mismatch", other, theirs)
    assert a.status()[0].protocol == 3 and b.status()[0].protocol == 2


def test_a_fast_kiosks_mark_refuses_at_once_and_is_admitted_when_time_catches_up(
    pair: Pair, tmp_path: Path
) -> None:
    """Kiosk a's RTC is 20 minutes fast: the voter it identified is refused at kiosk b
    although b holds the mark apart; b admits it on its own once no longer ahead."""
    trusted = {k: v.signing.verify_key for k, v in pair.keys.items()}
    fast, b_offset = 20 * 60_000, [0]
    pair.store = {
        "kiosk-a": MarkStore(tmp_path / "a3.db", "kiosk-a", pair.keys["kiosk-a"].signing,
                             trusted, wall_ms=lambda: time.time_ns() // 1_000_000 + fast),
        "kiosk-b": MarkStore(tmp_path / "b3.db", "kiosk-b", pair.keys["kiosk-b"].signing,
                             trusted,
                             wall_ms=lambda: time.time_ns() // 1_000_000 + b_offset[0]),
    }
    a, b = pair.sync("kiosk-a"), pair.sync("kiosk-b")
    _until(lambda: a.connected_peers() == ["kiosk-b"] and b.connected_peers() == ["kiosk-a"])
    first = pair.store["kiosk-a"].mark_if_unmarked(7, "identify", "A-1")
    assert isinstance(first, Mark)
    a.notify_local(first)
    _until(lambda: pair.named("kiosk-b", "mark_quarantined") != [])
    # The voter walks to kiosk b: refused there, no second ORIGINAL.
    assert pair.store["kiosk-b"].mark_if_unmarked(7, "identify", "B-1") == (first,)
    assert pair.store["kiosk-b"].count(local_only=True) == 0
    time.sleep(3 * TIMING.vector_interval_s)  # ticks re-judge: still ahead, still held
    assert pair.store["kiosk-b"].marks_for(7) == ()
    assert pair.named("kiosk-b", "mark_admitted") == []
    # Time at b reaches the allowed skew (300 s) behind the stamp: admitted by b itself.
    sent = a.stats().marks_sent  # each new session offers it again (and b holds it again)
    b_offset[0] = fast - 4 * 60_000
    _until(lambda: pair.named("kiosk-b", "mark_admitted") != [])
    assert pair.named("kiosk-b", "mark_admitted") == [{"kiosk": "kiosk-a", "origin_seq": 1}]
    assert pair.store["kiosk-b"].marks_for(7) == (first,)
    assert pair.store["kiosk-b"].quarantined() == []
    assert pair.store["kiosk-b"].clock.last >= first.hlc
    # Admitted by b on its own: a sent nothing since b's clock caught up.
    assert a.stats().marks_sent == sent
    assert pair.named("kiosk-b", "mark_conflict") == []
