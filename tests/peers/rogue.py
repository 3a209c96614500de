"""A rogue process on the station network (test tool, not part of the agent).

Modes (JSON result on stdout):

* ``sniff IFACE SECONDS OUT`` - capture TCP on IFACE with a raw AF_PACKET
  socket, reassemble each flow by sequence number and write the client->server
  byte streams to OUT (JSON, hex). Needs CAP_NET_RAW.
* ``replay HOST PORT CAPTURE SENDER same|other`` - take a captured flow whose
  HELLO was sent by SENDER to HOST:PORT (``same``) or to another kiosk
  (``other``), connect to HOST:PORT and play its frames back byte for byte.
* ``impostor HOST PORT STATION CLAIM`` - a fresh key, not in the roll package,
  says HELLO as CLAIM (first a listed kiosk's name, then its own).
* ``insider HOST PORT STATION KEYDIR KIOSK VICTIM`` - a stolen kit whose key IS
  listed opens a proper session and relays marks forged in VICTIM's name and a
  mark of a kiosk that is not in the roll package.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nacl.signing import SigningKey

from agent.peers.channel import KxKeys
from agent.peers.wire import (
    DOMAIN,
    NO_SESSION,
    Envelope,
    FrameDecoder,
    FrameType,
    Hello,
    Marks,
    PeerProtocolError,
    encode_frame,
    session_id,
)
from agent.runtime.keys import load_keys
from agent.station.marks import Mark

ETH_P_ALL = 0x0003


def sniff(iface: str, seconds: float, out: Path) -> dict[str, object]:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((iface, 0))
    s.settimeout(0.2)
    flows: dict[str, dict[str, object]] = {}
    segments: dict[str, dict[int, bytes]] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            pkt = s.recv(65535)
        except TimeoutError:
            continue
        if len(pkt) < 34 or pkt[12:14] != b"\x08\x00":
            continue
        ip = pkt[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        if ip[9] != 6:
            continue
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        tcp = ip[ihl:total]
        sport, dport, seq = struct.unpack(">HHI", tcp[:8])
        doff = (tcp[12] >> 4) * 4
        flags = tcp[13]
        key = f"{src}:{sport}>{dst}:{dport}"
        if flags & 0x02:  # SYN: the stream starts at ISN + 1
            flows[key] = {"isn": seq, "src": src, "dst": dst, "dport": dport}
            segments[key] = {}
            continue
        payload = tcp[doff:]
        if payload and key in segments:
            segments[key][seq] = payload
    s.close()
    result = []
    for key, meta in flows.items():
        pos = (int(str(meta["isn"])) + 1) & 0xFFFFFFFF
        stream = bytearray()
        segs = segments[key]
        while pos in segs:
            chunk = segs.pop(pos)
            stream += chunk
            pos = (pos + len(chunk)) & 0xFFFFFFFF
        if stream:
            result.append({**meta, "stream": stream.hex()})
    out.write_text(json.dumps(result))
    return {"flows": len(result)}


def _read_frames(
    sock: socket.socket, decoder: FrameDecoder, timeout: float
) -> tuple[list[str], bool]:
    """Frame types received until the peer closes or ``timeout``; (types, closed)."""
    sock.settimeout(timeout)
    types: list[str] = []
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return types, True
            types += [f.type.name for f in decoder.feed(data)]
    except TimeoutError:
        return types, False
    except ConnectionResetError:
        return types, True


def replay(host: str, port: int, capture: Path, sender: str, which: str) -> dict[str, object]:
    """Replay a flow SENDER opened to HOST:PORT (``same``) or to another kiosk (``other``)."""
    flows = json.loads(capture.read_text())
    # Prefer the richest recording (a live session carrying marks).
    flows.sort(key=lambda f: len(f["stream"]), reverse=True)
    for flow in flows:
        same = flow["dst"] == host and flow["dport"] == port
        if same != (which == "same"):
            continue
        frames = FrameDecoder().feed(bytes.fromhex(flow["stream"]))
        if not frames or frames[0].type is not FrameType.HELLO:
            continue
        if frames[0].envelope.sender != sender or len(frames) < 2:
            continue
        with socket.create_connection((host, port), timeout=3) as sock:
            sock.sendall(frames[0].signed[len(DOMAIN) :] + frames[0].signature)
            first, closed = _read_frames(sock, FrameDecoder(), 1.0)
            sent_after = 0
            if not closed:
                for raw in frames[1:]:
                    try:
                        sock.sendall(raw.signed[len(DOMAIN) :] + raw.signature)
                    except OSError:
                        break
                    sent_after += 1
                more, closed = _read_frames(sock, FrameDecoder(), 2.0)
                first += more
            return {
                "replayed_frames": 1 + sent_after,
                "captured_types": [f.type.name for f in frames],
                "got": first,
                "closed": closed,
            }
    return {"error": f"no captured flow with a HELLO from {sender}"}


def _hello(station: str, claim: str, key: SigningKey,
           kx: KxKeys | None = None) -> tuple[bytes, bytes]:
    nonce = os.urandom(32)
    hello = Hello(nonce) if kx is None else Hello(nonce, kx=kx.public)
    return nonce, encode_frame(Envelope(station, claim, NO_SESSION, 0), hello, key)


def impostor(host: str, port: int, station: str, claim: str) -> dict[str, object]:
    key = SigningKey.generate()
    _, frame = _hello(station, claim, key)
    with socket.create_connection((host, port), timeout=3) as sock:
        sock.sendall(frame)
        got, closed = _read_frames(sock, FrameDecoder(), 2.0)
    return {"got": got, "closed": closed}


def insider(
    host: str, port: int, station: str, keydir: Path, kiosk: str, victim: str
) -> dict[str, object]:
    key = load_keys(keydir).signing
    kx = KxKeys()  # a listed key does the whole handshake, key exchange included
    nonce, frame = _hello(station, kiosk, key, kx)
    decoder = FrameDecoder()
    with socket.create_connection((host, port), timeout=3) as sock:
        sock.sendall(frame)
        sock.settimeout(3)
        frames = []
        while not frames:
            frames = decoder.feed(sock.recv(65536))
        reply = frames[0]
        if reply.type is not FrameType.HELLO:
            return {"error": f"expected HELLO, got {reply.type.name}"}
        peer_nonce = reply.payload[:32]
        sid = session_id(kiosk, reply.envelope.sender, nonce, peer_nonce)
        channel = kx.channel(reply.payload[64:96], initiator=True, session=sid)
        # A mark "by" the victim with a made-up signature; a real-looking mark
        # of a kiosk the roll package does not list, signed by our own key.
        forged = Mark(4242, victim, 9_000_000, "identify", "FORGED-1", 1 << 40, bytes(64))
        alien_unsigned = Mark(4243, "kiosk-99", 1, "identify", "ALIEN-1", 1 << 40)
        alien = Mark(
            4243, "kiosk-99", 1, "identify", "ALIEN-1", 1 << 40,
            key.sign(alien_unsigned.signed_bytes()).signature,
        )
        try:
            sock.sendall(
                encode_frame(Envelope(station, kiosk, sid, 1), Marks((forged, alien)), key,
                             channel)
            )
        except PeerProtocolError as exc:
            return {"error": str(exc)}
        got, closed = _read_frames(sock, decoder, 1.5)
    return {"sent": ["forged", "alien"], "got": [reply.type.name, *got], "closed": closed}


def main() -> int:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "sniff":
        result = sniff(args[0], float(args[1]), Path(args[2]))
    elif mode == "replay":
        result = replay(args[0], int(args[1]), Path(args[2]), args[3], args[4])
    elif mode == "impostor":
        result = impostor(args[0], int(args[1]), args[2], args[3])
    elif mode == "insider":
        result = insider(args[0], int(args[1]), args[2], Path(args[3]), args[4], args[5])
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
