"""PeerSync: direct kiosk-to-kiosk sync of the station's marks over TCP.

Every kiosk runs a small sync server and dials every configured peer; the
station forms a full mesh with no hub, so any kiosk can be off and the rest
keep syncing (docs/PEERS.md has the reasoning against a station broker).

On each connection, after the signed handshake (:mod:`agent.peers.wire`):

* **push**: :meth:`PeerSync.notify_local` wakes every session's sender, which
  sends the peer the marks it lacks; a new mark leaves for all connected peers
  at once, which is what keeps "visible everywhere" under 2 s;
* **anti-entropy**: every ``vector_interval_s`` each side sends its version
  vector; the receiver sends whatever the vector shows missing. This repairs
  anything a push missed (a peer that was down, a partition, a mark relayed
  through a third kiosk) and is also the heartbeat.

Marks received are merged into the :class:`~agent.station.marks.MarkStore` (which
verifies each mark's own signature and reports conflicts). All network work
runs on one asyncio loop in a background thread; store calls run on a single
worker thread so an fsync never stalls heartbeats.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from agent.peers.channel import Channel, ChannelError, KxKeys
from agent.peers.discovery import PeerAddress, configured_peers, parse_address
from agent.runtime.config import AgentConfig
from agent.runtime.keys import DeviceKeys
from agent.station.marks import Mark, MarkStore, MergeResult

if TYPE_CHECKING:
    from agent.peers.mdns import MdnsDiscovery
from agent.peers.parameters import (
    DEFAULT_PORT,
    MAX_BODY,
    MAX_DIALERS,
    MAX_HELLO_BODY,
    MAX_PENDING_HANDSHAKES,
    NONCE_MEMORY,
    PeerTiming,
)
from agent.peers.status import Debounced, PeerState, PeerStatus, lag, observed_state
from agent.peers.wire import (
    NO_SESSION,
    NONCE_LEN,
    PROTOCOL_VERSION,
    Bye,
    Envelope,
    Frame,
    FrameDecoder,
    FrameType,
    Hello,
    Marks,
    Payload,
    PeerProtocolError,
    RawFrame,
    Vector,
    VersionMismatchError,
    chunks,
    encode_frame,
    open_frame,
    session_id,
    unseal_frame,
    verify_raw,
)

log = logging.getLogger(__name__)

EventSink = Callable[[str, Mapping[str, object]], None]
MergeSink = Callable[[str, MergeResult], None]
T = TypeVar("T")

#: Event names passed to ``on_event`` (see docs/PEERS.md for their fields).
EVENT_PEER_STATUS = "peer_status"
EVENT_CONFLICT = "mark_conflict"
EVENT_MARK_REJECTED = "mark_rejected"
EVENT_PEER_REJECTED = "peer_rejected"
EVENT_MARK_QUARANTINED = "mark_quarantined"
EVENT_MARK_ADMITTED = "mark_admitted"
EVENT_RATE_EXCEEDED = "peer_rate_exceeded"
EVENT_PEER_REVOKED = "peer_revoked"

_READ_CHUNK = 1 << 16


class PeerSyncError(RuntimeError):
    """Peer sync could not start (e.g. the listen address is taken)."""


@dataclass(frozen=True)
class SyncStats:
    """Traffic counters since :meth:`PeerSync.start` (all sessions, both directions)."""

    bytes_sent: int
    bytes_received: int
    frames_sent: int
    frames_received: int
    marks_sent: int
    marks_received: int
    marks_added: int
    sessions_opened: int
    frames_rejected: int


@dataclass(frozen=True)
class StationSyncSummary:
    """What the closing report prints about the station's kiosks (see docs/PEERS.md)."""

    kiosk: str
    peers: tuple[PeerStatus, ...]
    marks_total: int
    voters_marked: int
    marks_by_kiosk: Mapping[str, int]
    conflict_voters: tuple[int, ...]


@dataclass
class _Counters:
    bytes_sent: int = 0
    bytes_received: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    marks_sent: int = 0
    marks_received: int = 0
    marks_added: int = 0
    sessions_opened: int = 0
    frames_rejected: int = 0


@dataclass
class _PeerInfo:
    """What this kiosk knows about one station peer (guarded by PeerSync._lock)."""

    kiosk: str
    debounced: Debounced
    address: str | None = None
    last_heard: float | None = None
    vector: dict[str, int] | None = None
    #: Protocol version of the peer's last verified HELLO (None: none yet).
    protocol: int | None = None


@dataclass(eq=False)
class _Session:
    """One verified connection to a peer."""

    peer: str
    initiator: str
    sid: bytes
    writer: asyncio.StreamWriter
    address: str
    send_seq: int = 0
    recv_seq: int = 0
    closed: bool = False
    #: What the peer holds as far as we know: its last vector, advanced by what
    #: we sent on this (ordered, reliable) connection.
    peer_has: dict[str, int] = field(default_factory=dict)
    #: (kiosk, origin_seq) already sent on or received from this connection.
    known: set[tuple[str, int]] = field(default_factory=set)
    kick: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set once the peer's first vector arrived: before that we do not know
    #: what it lacks and would send it everything.
    synced: bool = False
    #: True once this is *the* session with the peer (see PeerSync._register).
    registered: bool = False
    #: Accepted and counted in PeerSync._unverified until its first signed in-session frame.
    unverified: bool = False
    #: Kiosks the peer has its own live session with (from its last vector).
    links: frozenset[str] = frozenset()
    #: The session's encryption (set once the handshake derived the keys).
    channel: Channel | None = None

    def learn(self, marks: tuple[Mark, ...] | list[Mark]) -> None:
        """Record that the peer holds ``marks`` (sorted by kiosk, origin_seq)."""
        for m in marks:
            self.known.add((m.kiosk, m.origin_seq))
            if m.origin_seq == self.peer_has.get(m.kiosk, 0) + 1:
                self.peer_has[m.kiosk] = m.origin_seq


class PeerSync:
    """Keeps this kiosk's :class:`MarkStore` in sync with the station's other kiosks.

    ``on_event(name, fields)`` is called from the sync thread for
    ``peer_status`` changes (debounced), ``mark_conflict`` (a voter now holds
    marks from two identifications), ``mark_rejected`` (a mark that failed
    verification or the bounds of docs/PEERS.md "Trust model"), ``mark_quarantined``
    (a mark stamped ahead of this kiosk's clock), ``mark_admitted`` (such a mark no
    longer ahead, admitted when the store re-judged it), ``peer_rate_exceeded``,
    ``peer_revoked`` (a revocation learnt from a peer) and ``peer_rejected`` (a
    refused connection or frame: forged, replayed, foreign). It must not block
    for long. ``on_merge(peer, result)``, optional, sees every merge result
    (tests and benchmarks time arrivals). ``protocol`` is the peer protocol
    version spoken; only tests set another, to stand in for a kiosk on an
    older or newer release (a kiosk reads nothing of a peer on another version
    but the frozen header, envelope and signature, see :mod:`agent.peers.wire`).
    """

    def __init__(
        self,
        cfg: AgentConfig,
        keys: DeviceKeys,
        store: MarkStore,
        on_event: EventSink,
        *,
        timing: PeerTiming | None = None,
        on_merge: MergeSink | None = None,
        protocol: int = PROTOCOL_VERSION,
    ) -> None:
        if store.device_id != cfg.device_id:
            raise PeerSyncError(
                f"store belongs to {store.device_id!r}, configuration to {cfg.device_id!r}"
            )
        self._me = cfg.device_id
        self._station = cfg.station_id
        self._key = keys.signing
        self._store = store
        self._on_event = on_event
        self._on_merge = on_merge
        self._timing = timing or PeerTiming()
        self._protocol = protocol
        self._trusted = dict(store.trusted)
        if bytes(self._trusted.get(self._me, b"")) != bytes(keys.signing.verify_key):
            raise PeerSyncError("this kiosk's key is not the one the roll package lists for it")
        self._listen = parse_address(
            cfg.peer_listen, field="peer_listen", default_port=DEFAULT_PORT
        )
        self._dial = configured_peers(cfg.peers, self._listen)
        self._cfg_mdns = cfg.peer_mdns

        self._lock = threading.Lock()
        self._counters = _Counters()
        now = time.monotonic()
        self._peers = {
            k: _PeerInfo(k, Debounced(PeerState.UNREACHABLE, now, self._timing.stable_interval_s))
            for k in sorted(self._trusted)
            if k != self._me
        }
        self._since_wall = {k: time.time() for k in self._peers}
        self._my_vector: dict[str, int] = {}
        self._my_revoked: tuple[tuple[str, int], ...] = ()

        self._sessions: dict[str, _Session] = {}
        self._addr_kiosk: dict[PeerAddress, str] = {}
        self._self_addrs: set[PeerAddress] = set()
        self._nonces: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._rejects: dict[tuple[str, str], tuple[float, int]] = {}
        self._readmit_error = ""

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._bound: tuple[str, int] | None = None
        self._exec: concurrent.futures.ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._unverified = 0
        self._dialers: set[PeerAddress] = set()
        self._mdns: MdnsDiscovery | None = None

    # -- public API ---------------------------------------------------------------

    def start(self) -> None:
        """Start listening and dialling in a background thread; return once listening."""
        if self._thread is not None:
            raise PeerSyncError("already started")
        self._exec = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="peers-store")
        self._thread = threading.Thread(target=self._thread_main, name="peers", daemon=True)
        self._thread.start()
        if not self._ready.wait(10.0):
            raise PeerSyncError("peer sync did not start within 10 s")
        if self._start_error is not None:
            self._thread.join()
            raise PeerSyncError(
                f"cannot listen on {self._listen}: {self._start_error}"
            ) from self._start_error
        if self._cfg_mdns:
            from agent.peers.mdns import MdnsDiscovery

            bound = self.listen_address
            mdns = MdnsDiscovery(
                device_id=self._me,
                station_id=self._station,
                listen=PeerAddress(self._listen.host, bound[1]),
                known_kiosks=self._trusted,
                on_found=lambda _kiosk, addr: self.add_peer_address(addr),
            )
            try:
                mdns.start()
            except OSError as exc:  # no multicast on this network: configured peers still work
                log.warning("mDNS discovery unavailable: %s", exc)
            else:
                self._mdns = mdns

    def add_peer_address(self, addr: PeerAddress) -> None:
        """Also dial ``addr`` (discovery found it). Thread-safe; repeats are ignored."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._ensure_dialer, addr)

    def stop(self) -> None:
        """Close every session (saying BYE) and stop the thread. Idempotent."""
        mdns, self._mdns = self._mdns, None
        if mdns is not None:
            mdns.stop()
        loop, stopping, thread = self._loop, self._stopping, self._thread
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        if thread is not None:
            thread.join(timeout=10.0)
        if self._exec is not None:
            self._exec.shutdown(wait=True)

    def notify_local(self, mark: Mark) -> None:
        """Tell peer sync that ``mark`` was just made here: push it to every connected peer.

        Thread-safe and non-blocking. Harmless if sync is not running: the mark
        reaches peers through the next vector exchange anyway.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closing
            loop.call_soon_threadsafe(self._kick_all)

    def status(self) -> list[PeerStatus]:
        """Every station peer (from the roll package) with its debounced state and lag."""
        now, wall = time.monotonic(), time.time()
        out = []
        with self._lock:
            mine = dict(self._my_vector)
            for k, info in self._peers.items():
                out.append(
                    PeerStatus(
                        kiosk=k,
                        address=info.address,
                        state=info.debounced.reported,
                        since_wall_s=wall - (now - info.debounced.since),
                        last_heard_s_ago=None if info.last_heard is None else now - info.last_heard,
                        peer_lacks=None if info.vector is None else lag(mine, info.vector),
                        we_lack=None if info.vector is None else lag(info.vector, mine),
                        protocol=info.protocol,
                    )
                )
        return out

    @property
    def protocol(self) -> int:
        """The peer protocol version this kiosk speaks."""
        return self._protocol

    def summary(self) -> StationSyncSummary:
        """Peers, merged counts and conflicts, for the closing report (reads the store)."""
        by_kiosk: dict[str, int] = {}
        for m in self._store.all_marks():
            by_kiosk[m.kiosk] = by_kiosk.get(m.kiosk, 0) + 1
        return StationSyncSummary(
            kiosk=self._me,
            peers=tuple(self.status()),
            marks_total=sum(by_kiosk.values()),
            voters_marked=self._store.voters_marked(),
            marks_by_kiosk=by_kiosk,
            conflict_voters=tuple(c.voter for c in self._store.conflicts()),
        )

    def stats(self) -> SyncStats:
        """Traffic counters (bytes and frames on the wire, marks sent and received)."""
        with self._lock:
            c = self._counters
            return SyncStats(
                c.bytes_sent, c.bytes_received, c.frames_sent, c.frames_received,
                c.marks_sent, c.marks_received, c.marks_added, c.sessions_opened,
                c.frames_rejected,
            )

    @property
    def listen_address(self) -> tuple[str, int]:
        """The address actually bound (useful with port 0)."""
        if self._bound is None:
            raise PeerSyncError("not started")
        return self._bound

    def connected_peers(self) -> list[str]:
        """Kiosks with an open verified session right now (undebounced)."""
        with self._lock:
            return sorted(self._sessions)

    # -- loop -----------------------------------------------------------------------

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # keep the agent alive; report why sync stopped
            log.exception("peer sync loop failed")
            if not self._ready.is_set():
                self._start_error = exc
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        try:
            server = await asyncio.start_server(
                self._on_accept, self._listen.host, self._listen.port, reuse_address=True
            )
        except OSError as exc:
            self._start_error = exc
            self._ready.set()
            return
        sock = server.sockets[0].getsockname()
        self._bound = (str(sock[0]), int(sock[1]))
        await self._refresh_vector()
        for a in self._dial:
            self._ensure_dialer(a)
        tasks = [asyncio.create_task(self._ticker())]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for s in list(self._sessions.values()):
                self._bye_nowait(s, "stopping")
            tasks.extend(self._tasks)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    async def _store_call(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._exec, fn, *args)

    async def _refresh_vector(self) -> dict[str, int]:
        vector = await self._store_call(self._store.version_vector)
        revoked = await self._store_call(self._store.revocations)
        with self._lock:
            self._my_vector = vector
            self._my_revoked = tuple((r.kiosk, r.upto_seq) for r in revoked)
        return vector

    async def _ticker(self) -> None:
        """Heartbeat/anti-entropy vectors and debounced status, on their own clocks."""
        next_vector = 0.0
        while True:
            now = time.monotonic()
            if now >= next_vector:
                next_vector = now + self._timing.vector_interval_s
                await self._readmit()
                vector = await self._refresh_vector()
                hlc = self._store.clock.last
                links = tuple(sorted(self._sessions))
                for s in list(self._sessions.values()):
                    self._spawn(self._send_guarded(
                        s, Vector(hlc, vector, links, self._my_revoked)))
            self._update_states(time.monotonic())
            await asyncio.sleep(self._timing.status_tick_s)

    async def _readmit(self) -> None:
        """Admit marks held apart for their clock once time has caught up, without
        waiting for a peer to send them again (MarkStore.readmit)."""
        try:
            readmitted = await self._store_call(self._store.readmit)
        except sqlite3.Error as exc:
            # A full disk must not stop the heartbeats; the storage guard reports it.
            if str(exc) != self._readmit_error:
                log.warning("re-judging marks held for their clock failed: %s", exc)
            self._readmit_error = str(exc)
            return
        self._readmit_error = ""
        if readmitted.added or readmitted.rejected:
            self._report_merge(self._me, readmitted)
            self._kick_all()  # peers not linked to their kiosk may lack them

    def _update_states(self, now: float) -> None:
        t = self._timing
        changes = []
        with self._lock:
            mine = dict(self._my_vector)
            for k, info in self._peers.items():
                age = None if info.last_heard is None else now - info.last_heard
                seen = observed_state(
                    session_open=k in self._sessions,
                    last_heard_age_s=age,
                    stale_after_s=t.stale_after_s,
                    unreachable_after_s=t.unreachable_after_s,
                )
                previous = info.debounced.reported
                if info.debounced.observe(seen, now) is not None:
                    changes.append(
                        {
                            "peer": k,
                            "address": info.address,
                            "state": info.debounced.reported.value,
                            "previous": previous.value,
                            "peer_lacks": None if info.vector is None else lag(mine, info.vector),
                            "we_lack": None if info.vector is None else lag(info.vector, mine),
                        }
                    )
        for fields_ in changes:
            self._emit(EVENT_PEER_STATUS, fields_)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ensure_dialer(self, addr: PeerAddress) -> None:
        if addr == self._listen or addr in self._dialers or addr in self._self_addrs:
            return
        if len(self._dialers) >= MAX_DIALERS:
            log.warning("not dialling %s: already %d peer addresses", addr, MAX_DIALERS)
            return
        self._dialers.add(addr)
        self._spawn(self._dialer(addr))

    def _kick_all(self) -> None:
        for s in self._sessions.values():
            s.kick.set()

    # -- connections ------------------------------------------------------------------

    async def _dialer(self, addr: PeerAddress) -> None:
        t = self._timing
        delay = t.backoff_initial_s
        while True:
            if addr in self._self_addrs:
                return
            kiosk = self._addr_kiosk.get(addr)
            if kiosk is not None and kiosk in self._sessions:
                delay = t.backoff_initial_s
                await asyncio.sleep(t.vector_interval_s)
                continue
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(addr.host, addr.port), t.connect_timeout_s
                )
            except (OSError, TimeoutError):
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, t.backoff_max_s)
                continue
            peer = await self._connection(reader, writer, dialed=addr)
            if peer is not None:
                delay = t.backoff_initial_s
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            if peer is None:
                # Refused (another protocol version, a foreign key...) or cut in the
                # handshake: back off like an unreachable address, never hammer it.
                delay = min(delay * 2, t.backoff_max_s)

    async def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._connection(reader, writer, dialed=None)
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _connection(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        dialed: PeerAddress | None,
    ) -> str | None:
        """Run one connection to the end; the peer's kiosk id if the handshake succeeded."""
        peername = writer.get_extra_info("peername")
        remote = f"{peername[0]}:{peername[1]}" if peername else "?"
        decoder = FrameDecoder(max_body=MAX_HELLO_BODY, version=self._protocol)
        pending: collections.deque[RawFrame] = collections.deque()
        session: _Session | None = None
        peer: str | None = None
        sender_task: asyncio.Task[None] | None = None
        # Accepted connections count as unverified until their initiator signs a
        # frame inside the session; too many at once and new ones are refused.
        unverified = dialed is None
        try:
            if unverified:
                if self._unverified >= MAX_PENDING_HANDSHAKES:
                    unverified = False
                    raise PeerProtocolError(
                        "too-many-connections", f"{MAX_PENDING_HANDSHAKES} not yet verified"
                    )
                self._unverified += 1
            # One deadline for the whole handshake: a trickle of bytes cannot
            # keep an unauthenticated connection open.
            kx = KxKeys()
            hello, peer = await asyncio.wait_for(
                self._handshake(reader, writer, decoder, pending, dialed, kx),
                self._timing.connect_timeout_s,
            )
            if peer is None:
                return None
            if dialed is not None:
                self._addr_kiosk[dialed] = peer
                with self._lock:
                    self._peers[peer].address = str(dialed)
            decoder.max_body = MAX_BODY
            nonce_i, nonce_r, peer_kx = hello
            initiator, responder = (self._me, peer) if dialed is not None else (peer, self._me)
            sid = session_id(initiator, responder, nonce_i, nonce_r)
            try:
                channel = kx.channel(peer_kx, initiator=dialed is not None, session=sid)
            except ChannelError as exc:
                raise PeerProtocolError("undecryptable", str(exc), peer) from exc
            session = _Session(
                peer=peer,
                initiator=initiator,
                sid=sid,
                writer=writer,
                address=remote,
                channel=channel,
            )
            # A dialled session is fresh (the responder echoed our nonce); an
            # accepted one only once its initiator signs a frame in it, so a
            # replayed HELLO cannot displace a live session.
            if dialed is not None and not self._register(session):
                self._bye_nowait(session, "duplicate-session")
                return peer
            session.registered = dialed is not None
            session.unverified = unverified
            sender_task = asyncio.create_task(self._sender(session))
            links = tuple(sorted(self._sessions))
            await self._send(session, Vector(self._store.clock.last, dict(self._my_vector), links,
                                             self._my_revoked))
            await self._read_loop(session, reader, decoder, pending)
        except PeerProtocolError as exc:
            self._report_reject(remote, exc)
        except (OSError, TimeoutError, ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("connection %s ended: %r", remote, exc)
        finally:
            if unverified and (session is None or session.unverified):
                self._unverified -= 1
            if sender_task is not None:
                sender_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender_task
            if session is not None:
                session.closed = True
                with self._lock:
                    if self._sessions.get(session.peer) is session:
                        del self._sessions[session.peer]
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
        return peer

    async def _next_frame(
        self,
        reader: asyncio.StreamReader,
        decoder: FrameDecoder,
        pending: collections.deque[RawFrame],
        timeout: float,
    ) -> RawFrame | None:
        while not pending:
            data = await asyncio.wait_for(reader.read(_READ_CHUNK), timeout)
            if not data:
                return None
            with self._lock:
                self._counters.bytes_received += len(data)
            pending.extend(decoder.feed(data))
        with self._lock:
            self._counters.frames_received += 1
        return pending.popleft()

    async def _handshake(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: FrameDecoder,
        pending: collections.deque[RawFrame],
        dialed: PeerAddress | None,
        kx: KxKeys,
    ) -> tuple[tuple[bytes, bytes, bytes], str | None]:
        nonce = os.urandom(NONCE_LEN)
        if dialed is not None:
            self._write_raw(writer, Envelope(self._station, self._me, NO_SESSION, 0),
                            Hello(nonce, kx=kx.public))
        raw = await self._next_frame(reader, decoder, pending, self._timing.connect_timeout_s)
        if raw is None:
            return (b"", b"", b""), None
        try:
            frame = open_frame(raw, self._station, self._trusted, version=self._protocol)
        except VersionMismatchError:
            if dialed is None and raw.type is FrameType.HELLO:
                # Answer with our own signed HELLO before closing, so the initiator
                # learns our version too (and can name it) from this one attempt.
                self._write_raw(writer, Envelope(self._station, self._me, NO_SESSION, 0),
                                Hello(nonce, kx=kx.public))
                with contextlib.suppress(OSError, ConnectionError, TimeoutError):
                    await asyncio.wait_for(writer.drain(), self._timing.connect_timeout_s)
            raise
        hello = frame.payload
        env = frame.envelope
        if not isinstance(hello, Hello) or env.seq != 0 or env.session != NO_SESSION:
            raise PeerProtocolError(
                "unexpected-frame", f"{frame.type.name} before HELLO", env.sender
            )
        if env.sender == self._me:
            # Our own listener (an address list that names this kiosk twice): not an attack.
            if dialed is not None:
                self._self_addrs.add(dialed)
            return (b"", b"", b""), None
        if dialed is not None:
            if hello.echo != nonce:
                raise PeerProtocolError(
                    "stale-hello", "responder did not echo our nonce", env.sender
                )
            return (nonce, hello.nonce, hello.kx), env.sender
        if hello.nonce in self._nonces:
            raise PeerProtocolError("replayed-hello", "handshake nonce seen before", env.sender)
        self._nonces[hello.nonce] = None
        while len(self._nonces) > NONCE_MEMORY:
            self._nonces.popitem(last=False)
        self._write_raw(
            writer, Envelope(self._station, self._me, NO_SESSION, 0),
            Hello(nonce, echo=hello.nonce, kx=kx.public),
        )
        return (hello.nonce, nonce, hello.kx), env.sender

    def _register(self, new: _Session) -> bool:
        """Make ``new`` the session with its peer, unless an established one is preferred.

        When both kiosks dialled each other, both keep the connection the
        lower kiosk id initiated, so they agree without talking about it.
        """
        preferred = min(self._me, new.peer)
        with self._lock:
            old = self._sessions.get(new.peer)
            if (
                old is not None
                and not old.closed
                and old.initiator != new.initiator
                and old.initiator == preferred
            ):
                return False
            self._sessions[new.peer] = new
            self._counters.sessions_opened += 1
            info = self._peers[new.peer]
            info.last_heard = time.monotonic()
            # A verified session on our version: a mismatch shown before is over.
            info.protocol = self._protocol
            if new.initiator == new.peer:
                info.address = info.address or new.address.rsplit(":", 1)[0]
        if old is not None and not old.closed:
            self._bye_nowait(old, "superseded")
        return True

    async def _read_loop(
        self,
        session: _Session,
        reader: asyncio.StreamReader,
        decoder: FrameDecoder,
        pending: collections.deque[RawFrame],
    ) -> None:
        while not session.closed:
            raw = await self._next_frame(reader, decoder, pending, self._timing.dead_after_s)
            if raw is None:
                return
            verify_raw(raw, self._station, self._trusted, version=self._protocol)
            env = raw.envelope
            if env.sender != session.peer:
                raise PeerProtocolError("wrong-peer", f"frame from {env.sender!r}", env.sender)
            if env.session != session.sid:
                raise PeerProtocolError("wrong-session", "frame from another session", env.sender)
            if env.seq != session.recv_seq + 1:
                raise PeerProtocolError(
                    "out-of-sequence", f"seq {env.seq} after {session.recv_seq}", env.sender
                )
            # Only the next signed frame of this session reaches the decrypter.
            frame = unseal_frame(raw, session.channel)
            session.recv_seq = env.seq
            if not session.registered:
                if session.unverified:
                    session.unverified = False
                    self._unverified -= 1
                if not self._register(session):
                    self._bye_nowait(session, "duplicate-session")
                    return
                session.registered = True
            with self._lock:
                self._peers[session.peer].last_heard = time.monotonic()
            await self._dispatch(session, frame)

    async def _dispatch(self, session: _Session, frame: Frame) -> None:
        payload = frame.payload
        if isinstance(payload, Vector):
            vector = dict(payload.entries)
            for k, seq in vector.items():
                if seq > session.peer_has.get(k, 0):
                    session.peer_has[k] = seq
            with self._lock:
                self._peers[session.peer].vector = vector
            session.links = frozenset(payload.links)
            session.synced = True
            session.kick.set()
            if payload.revoked:
                await self._store_call(self._learn_revocations, session.peer, payload.revoked)
        elif isinstance(payload, Marks):
            result = await self._store_call(self._store.merge, payload.marks)
            # The peer holds what it sent us, except what we refused (we may
            # hold the genuine mark of that number and still owe it to the peer).
            refused = {(m.kiosk, m.origin_seq) for m, _reason in result.rejected}
            session.learn(
                sorted(
                    (m for m in payload.marks if (m.kiosk, m.origin_seq) not in refused),
                    key=lambda m: (m.kiosk, m.origin_seq),
                )
            )
            with self._lock:
                self._counters.marks_received += len(payload.marks)
                self._counters.marks_added += len(result.added)
            self._report_merge(session.peer, result)
        elif isinstance(payload, Bye):
            log.info("peer %s closed the session: %s", session.peer, payload.reason)
            session.closed = True
        else:
            raise PeerProtocolError("unexpected-frame", "HELLO inside a session", session.peer)

    def _learn_revocations(self, peer: str, revoked: tuple[tuple[str, int], ...]) -> None:
        """Apply the revocations a peer passed on (store thread); never one of this kiosk,
        never one passed on by a kiosk that is itself revoked."""
        if peer in {r.kiosk for r in self._store.revocations()}:
            return
        for kiosk, upto in revoked:
            if kiosk == self._me:
                continue
            try:
                applied = self._store.revoke(kiosk, by=peer, upto_seq=upto)
            except ValueError as exc:
                log.warning("revocation from %s ignored: %s", peer, exc)
                continue
            if applied is not None:
                self._emit(EVENT_PEER_REVOKED, {"kiosk": kiosk, "upto_seq": upto, "by": peer})

    async def _sender(self, session: _Session) -> None:
        """Send the peer what it lacks whenever kicked (new local mark, new peer vector)."""
        try:
            while not session.closed:
                await session.kick.wait()
                session.kick.clear()
                if not session.synced:
                    continue
                missing = await self._store_call(self._store.marks_after, dict(session.peer_has))
                # A third kiosk's marks reach the peer directly when the two are
                # linked; relaying them too would only double the traffic.
                todo = [
                    m
                    for m in missing
                    if (m.kiosk, m.origin_seq) not in session.known
                    and (m.kiosk == self._me or m.kiosk not in session.links)
                ]
                for batch in chunks(todo):
                    if session.closed:
                        return
                    session.learn(batch)
                    await self._send(session, Marks(batch))
                    with self._lock:
                        self._counters.marks_sent += len(batch)
        except (OSError, TimeoutError, ConnectionError) as exc:
            log.debug("sending to %s failed: %r", session.peer, exc)
            session.closed = True
            session.writer.close()

    # -- sending ----------------------------------------------------------------------

    def _write_raw(self, writer: asyncio.StreamWriter, env: Envelope, payload: Payload,
                   channel: Channel | None = None) -> None:
        data = encode_frame(env, payload, self._key, channel, version=self._protocol)
        writer.write(data)
        with self._lock:
            self._counters.bytes_sent += len(data)
            self._counters.frames_sent += 1

    async def _send(self, session: _Session, payload: Payload) -> None:
        # The sequence number is taken and the frame written synchronously, so
        # concurrent senders (ticker, sender task) cannot reorder frames.
        session.send_seq += 1
        self._write_raw(
            session.writer,
            Envelope(self._station, self._me, session.sid, session.send_seq),
            payload,
            session.channel,
        )
        await asyncio.wait_for(session.writer.drain(), self._timing.write_timeout_s)

    async def _send_guarded(self, session: _Session, payload: Payload) -> None:
        if session.closed:
            return
        try:
            await self._send(session, payload)
        except (OSError, TimeoutError, ConnectionError):
            session.closed = True
            session.writer.close()

    def _bye_nowait(self, session: _Session, reason: str) -> None:
        """Best-effort BYE and close, without waiting for a peer that may be gone."""
        if not session.closed and not session.writer.is_closing():
            session.send_seq += 1
            with contextlib.suppress(OSError, RuntimeError):
                self._write_raw(
                    session.writer,
                    Envelope(self._station, self._me, session.sid, session.send_seq),
                    Bye(reason),
                    session.channel,
                )
        session.closed = True
        session.writer.close()

    # -- reporting --------------------------------------------------------------------

    def _emit(self, name: str, fields_: Mapping[str, object]) -> None:
        try:
            self._on_event(name, fields_)
        except Exception:  # the agent's sink failing must not stop sync
            log.exception("on_event(%s) failed", name)

    def _report_merge(self, peer: str, result: MergeResult) -> None:
        """Events for one merge; ``peer`` is this kiosk's own id when the store
        re-judged its quarantine on the tick rather than in a peer's merge."""
        for mark, ahead_ms in result.quarantined:
            self._emit(
                EVENT_MARK_QUARANTINED,
                {"via_peer": peer, "kiosk": mark.kiosk, "origin_seq": mark.origin_seq,
                 "ahead_ms": ahead_ms},
            )
        for mark in result.released:
            self._emit(EVENT_MARK_ADMITTED, {"kiosk": mark.kiosk, "origin_seq": mark.origin_seq})
        for rate in result.rate_exceeded:
            self._emit(
                EVENT_RATE_EXCEEDED,
                {"kiosk": rate.kiosk, "marks": rate.marks, "window_ms": rate.window_ms},
            )
        for mark, reason in result.rejected:
            if reason == "clock-ahead":
                continue  # reported as mark_quarantined above
            self._emit(
                EVENT_MARK_REJECTED,
                {
                    "via_peer": peer,
                    "kiosk": mark.kiosk,
                    "origin_seq": mark.origin_seq,
                    "voter": mark.voter,
                    "reason": reason,
                },
            )
        for voter in sorted(set(result.conflicts)):
            marks = self._store.marks_for(voter)
            self._emit(
                EVENT_CONFLICT,
                {
                    "voter": voter,
                    "via_peer": peer,
                    "marks": [
                        {
                            "kiosk": m.kiosk,
                            "origin_seq": m.origin_seq,
                            "method": m.method,
                            "slip_serial": m.slip_serial,
                            "hlc": m.hlc,
                        }
                        for m in marks
                    ],
                },
            )
        if self._on_merge is not None:
            try:
                self._on_merge(peer, result)
            except Exception:
                log.exception("on_merge failed")

    def _report_reject(self, remote: str, exc: PeerProtocolError) -> None:
        """Report a refused frame, collapsing repeats per (host, reason).

        A version mismatch is the state of a listed kiosk (signature verified),
        not an attack: it is reported when it starts or the peer's version
        changes, and shown by :meth:`status` meanwhile, not again every redial.
        """
        host = remote.rsplit(":", 1)[0]
        now = time.monotonic()
        key = (host, exc.reason)
        extra: dict[str, object] = {}
        if isinstance(exc, VersionMismatchError):
            extra = {"peer_protocol": exc.theirs, "protocol": exc.ours}
        with self._lock:
            self._counters.frames_rejected += 1
            info = self._peers.get(exc.sender)
            if isinstance(exc, VersionMismatchError) and info is not None:
                if info.protocol == exc.theirs:
                    return
                info.protocol = exc.theirs
                suppressed = 0
            else:
                last, suppressed = self._rejects.get(key, (-1e9, 0))
                if now - last < self._timing.reject_report_interval_s:
                    self._rejects[key] = (last, suppressed + 1)
                    return
                self._rejects[key] = (now, 0)
        log.warning("refused peer frame from %s: %s", remote, exc)
        self._emit(
            EVENT_PEER_REJECTED,
            {
                "address": remote,
                "claimed_sender": exc.sender,
                "reason": exc.reason,
                "detail": exc.detail,
                "suppressed_since_last": suppressed,
                **extra,
            },
        )
