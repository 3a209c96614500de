"""One kiosk of a test station, as a separate process: MarkStore + PeerSync.

Stands in for the full agent (which will replace it) in the multi-process
peer tests and the peer benchmark. It identifies simulated voters with the
same decision rule the agent uses (``MarkStore.mark_if_unmarked``: refuse
when the merged set already holds a mark for the voter) and answers JSON
commands, one per line, on stdin/stdout. Every ``on_event`` call is appended
to ``<dir>/events.jsonl`` (flushed) so a test can read them after a SIGKILL.

Usage: ``python tests/peers/peer_proc.py <dir>`` where ``<dir>`` holds
``agent.json``, ``keys/`` and ``trusted.json`` (kiosk -> verify key hex) and
optionally ``timing.json`` (PeerTiming fields).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nacl.signing import VerifyKey

from agent.peers import PeerSync, PeerTiming
from agent.runtime.config import load_config
from agent.runtime.keys import load_keys
from agent.station.marks import Mark, MarkStore, MergeResult


class Kiosk:
    """The state of one harness process."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.cfg = load_config(home / "agent.json")
        self.keys = load_keys(home / "keys")
        trusted_hex = json.loads((home / "trusted.json").read_text())
        trusted = {k: VerifyKey(bytes.fromhex(v)) for k, v in trusted_hex.items()}
        timing_file = home / "timing.json"
        self.timing = (
            PeerTiming(**json.loads(timing_file.read_text())) if timing_file.exists() else None
        )
        self.store = MarkStore(home / "marks.db", self.cfg.device_id, self.keys.signing, trusted)
        self.events = (home / "events.jsonl").open("a", encoding="utf-8")
        self.lock = threading.Lock()
        self.arrivals: dict[str, int] = {}
        self.sync: PeerSync | None = None

    def on_event(self, name: str, fields: Mapping[str, object]) -> None:
        with self.lock:
            self.events.write(json.dumps({"event": name, "t": time.time(), **fields}) + "\n")
            self.events.flush()

    def on_merge(self, peer: str, result: MergeResult) -> None:
        now = time.monotonic_ns()
        with self.lock:
            for m in result.added:
                self.arrivals[f"{m.kiosk}:{m.origin_seq}"] = now

    def start_sync(self) -> None:
        self.sync = PeerSync(
            self.cfg, self.keys, self.store, self.on_event,
            timing=self.timing, on_merge=self.on_merge,
        )
        self.sync.start()

    def stop_sync(self) -> None:
        if self.sync is not None:
            self.sync.stop()
            self.sync = None

    def identify(self, voter: int, *, notify: bool = True) -> dict[str, object]:
        got = self.store.mark_if_unmarked(voter, "identify", f"{self.cfg.device_id}-{voter}")
        t_ns = time.monotonic_ns()
        if isinstance(got, Mark):
            if self.sync is not None and notify:
                self.sync.notify_local(got)
            return {"issued": True, "kiosk": got.kiosk, "seq": got.origin_seq, "t_ns": t_ns}
        return {"issued": False, "by": [[m.kiosk, m.origin_seq] for m in got]}

    def handle(self, req: dict[str, object]) -> object:
        op = req["op"]
        notify = bool(req.get("notify", True))
        if op == "identify":
            return self.identify(int(str(req["voter"])), notify=notify)
        if op == "identify_many":
            voters = req["voters"]
            spacing = float(str(req.get("spacing_s", 0.0)))
            out = []
            assert isinstance(voters, list)
            for v in voters:
                out.append(self.identify(int(v), notify=notify))
                if spacing:
                    time.sleep(spacing)
            return out
        if op == "count":
            return self.store.count()
        if op == "summary":
            marks = self.store.all_marks()
            return {
                "vector": self.store.version_vector(),
                "marks": [[m.kiosk, m.origin_seq, m.voter, m.signature.hex()] for m in marks],
                "conflicts": [
                    [c.voter, [m.kiosk for m in c.marks]] for c in self.store.conflicts()
                ],
            }
        if op == "status":
            return [] if self.sync is None else [s.as_dict() for s in self.sync.status()]
        if op == "connected":
            return [] if self.sync is None else self.sync.connected_peers()
        if op == "stats":
            return None if self.sync is None else asdict(self.sync.stats())
        if op == "arrivals":
            with self.lock:
                return dict(self.arrivals)
        if op == "stop_sync":
            self.stop_sync()
            return True
        if op == "start_sync":
            self.start_sync()
            return True
        raise ValueError(f"unknown op {op!r}")


def main() -> int:
    kiosk = Kiosk(Path(sys.argv[1]))
    kiosk.start_sync()
    out = sys.stdout
    out.write(json.dumps({"ready": kiosk.cfg.device_id}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("op") == "quit":
            break
        try:
            reply: object = {"ok": kiosk.handle(req)}
        except Exception as exc:  # reported to the test, which fails on it
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    kiosk.stop_sync()
    kiosk.store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
