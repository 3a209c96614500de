"""A test station: kiosk processes on a private network made by the test.

Two network modes:

* ``netns`` (default when we may): each kiosk in its own network namespace,
  joined by veth pairs to a bridge the test creates, with addresses from a
  random 10.x.y.0/24 that exists only inside those namespaces. Cutting a
  kiosk's link is ``ip link set <its veth> down``: packets vanish silently,
  exactly like a pulled cable, and TCP notices only by its own timeouts.
* ``loopback`` (fallback when ``ip netns`` is not permitted, e.g. an
  unprivileged CI runner, or forced with ``KESP_PEERS_NET=loopback``): kiosks
  on distinct 127.0.0.x addresses. A link cut is emulated by stopping the
  kiosk's PeerSync (its peers see the sessions close) and restoring by
  starting it again; local identification keeps working meanwhile.

Everything made here is removed in :meth:`Station.close`.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from agent.peers import PeerTiming  # noqa: E402
from agent.runtime.config import AgentConfig, save_config  # noqa: E402
from agent.runtime.keys import generate_keys  # noqa: E402

PEER_PROC = Path(__file__).with_name("peer_proc.py")
PORT = 7341

#: Timers for tests: a link cut is noticed in ~2 s and reported after 1 s stable.
FAST = PeerTiming(
    vector_interval_s=0.5,
    dead_after_s=2.0,
    connect_timeout_s=1.0,
    write_timeout_s=2.0,
    backoff_initial_s=0.1,
    backoff_max_s=0.5,
    stale_after_s=1.5,
    unreachable_after_s=4.0,
    stable_interval_s=1.0,
    status_tick_s=0.1,
    reject_report_interval_s=10.0,
)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _ip_quiet(*args: str) -> None:
    """Best-effort cleanup (a namespace's veth disappears with it)."""
    subprocess.run(["ip", *args], check=False, capture_output=True, timeout=10)


def netns_available() -> bool:
    """True when this process may create network namespaces, veths and bridges."""
    if os.environ.get("KESP_PEERS_NET") == "loopback":
        return False
    name = f"kesp-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", name)
    except (OSError, subprocess.SubprocessError):
        return False
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        _ip("netns", "del", name)
    return True


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class KioskProc:
    """One running harness process and its JSON command channel."""

    def __init__(self, home: Path, prefix: Sequence[str]) -> None:
        self.home = home
        self.prefix = list(prefix)
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    def start(self, timeout: float = 20.0) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self._lines = queue.Queue()
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, str(PEER_PROC), str(self.home)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(self.home / "stderr.log").open("a"),
            text=True,
            env=env,
        )
        # The pump writes to the queue of *this* process: the previous
        # process's pump may still be draining its EOF after a kill, and its
        # end-of-stream marker must not land in the new queue (it did, as a
        # rare "kiosk exited" with an empty stderr right after a restart).
        threading.Thread(target=self._pump, args=(self.proc, self._lines), daemon=True).start()
        first = self._next(timeout)
        if "ready" not in json.loads(first):
            raise RuntimeError(f"kiosk did not start: {first}")

    @staticmethod
    def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def _next(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer from {self.home.name} in {timeout} s") from None
        if line is None:
            err = (self.home / "stderr.log").read_text()[-2000:]
            raise RuntimeError(f"kiosk {self.home.name} exited: {err}")
        return line

    def call(self, op: str, timeout: float = 30.0, **args: Any) -> Any:
        """Send one command and return its result (raises on an error reply)."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self._next(timeout))
        if "error" in reply:
            raise RuntimeError(f"{self.home.name} {op}: {reply['error']}")
        return reply["ok"]

    def kill(self) -> None:
        """Power cut: SIGKILL, no chance to flush or say goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write('{"op": "quit"}\n')
            self.proc.stdin.flush()
            self.proc.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()

    def events(self) -> list[dict[str, Any]]:
        path = self.home / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Station:
    """``n`` kiosks of one polling station on a private network.

    With ``mdns`` the kiosks get no peer addresses and must find each other
    by mDNS. ``extra_listed`` adds kiosks to the roll package that do not run (their
    key directories are created so a test can hand one to a rogue insider).
    """

    def __init__(
        self,
        root: Path,
        n: int = 3,
        *,
        timing: PeerTiming = FAST,
        extra_listed: int = 0,
        mode: str | None = None,
        mdns: bool = False,
    ) -> None:
        self.root = root
        self.mode = mode or ("netns" if netns_available() else "loopback")
        self.tag = secrets.token_hex(2)
        self.n = n
        self.ids = [f"kiosk-{i + 1}" for i in range(n + extra_listed)]
        self.station_id = "st-4201"
        self._made_ns: list[str] = []
        self._made_links: list[str] = []
        self.subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}"
        if self.mode == "netns":
            self.hosts = [f"{self.subnet}.{i + 1}" for i in range(n + 1)]  # last: rogue
            self.ports = [PORT] * (n + 1)
            self._make_netns(n + 1)
        else:
            self.hosts = [f"127.0.0.{20 + i}" for i in range(n + 1)]
            self.ports = [_free_port(h) for h in self.hosts]
        trusted: dict[str, str] = {}
        for kid in self.ids:
            keys = generate_keys(root / kid / "keys")
            trusted[kid] = keys.verify_key_hex
        self.trusted = trusted
        addresses = tuple(f"{self.hosts[i]}:{self.ports[i]}" for i in range(n))
        self.kiosks: list[KioskProc] = []
        for i in range(n):
            home = root / self.ids[i]
            cfg = AgentConfig(
                device_id=self.ids[i],
                station_id=self.station_id,
                district="osh-1",
                state_dir=str(home),
                key_dir=str(home / "keys"),
                peers=() if mdns else addresses,
                peer_listen=addresses[i],
                peer_mdns=mdns,
            )
            save_config(cfg, home / "agent.json")
            (home / "trusted.json").write_text(json.dumps(trusted))
            (home / "timing.json").write_text(json.dumps(asdict(timing)))
            self.kiosks.append(KioskProc(home, self.prefix(i)))

    # -- network ------------------------------------------------------------------

    def _ns(self, i: int) -> str:
        return f"kesp-{self.tag}-{i}"

    def _host_if(self, i: int) -> str:
        return f"kh{self.tag}{i}"

    def _make_netns(self, count: int) -> None:
        bridge = f"kb{self.tag}"
        _ip("link", "add", bridge, "type", "bridge")
        self._made_links.append(bridge)
        _ip("link", "set", bridge, "up")
        for i in range(count):
            ns, host_if, inner = self._ns(i), self._host_if(i), f"kn{self.tag}{i}"
            _ip("netns", "add", ns)
            self._made_ns.append(ns)
            _ip("link", "add", host_if, "type", "veth", "peer", "name", inner)
            self._made_links.append(host_if)
            _ip("link", "set", inner, "netns", ns)
            _ip("-n", ns, "link", "set", inner, "name", "eth0")
            _ip("-n", ns, "addr", "add", f"{self.subnet}.{i + 1}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("link", "set", host_if, "master", bridge)
            _ip("link", "set", host_if, "up")

    def prefix(self, i: int) -> list[str]:
        """Command prefix that runs a program on node ``i``'s network (n = the rogue)."""
        return ["ip", "netns", "exec", self._ns(i)] if self.mode == "netns" else []

    @property
    def rogue_host(self) -> str:
        return self.hosts[self.n]

    def host_interface(self, i: int) -> str:
        """Name of node ``i``'s host-side link (netns mode), where its traffic can be sniffed."""
        return self._host_if(i)

    def cut(self, i: int) -> None:
        """Disconnect kiosk ``i`` from the station network."""
        if self.mode == "netns":
            _ip("link", "set", self._host_if(i), "down")
        else:
            self.kiosks[i].call("stop_sync")

    def restore(self, i: int) -> None:
        """Reconnect kiosk ``i``."""
        if self.mode == "netns":
            _ip("link", "set", self._host_if(i), "up")
        else:
            self.kiosks[i].call("start_sync")

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        for k in self.kiosks:
            k.start()

    def wait_connected(self, timeout: float = 15.0) -> None:
        """Until every kiosk reports every running peer as connected (debounced)."""
        running = set(self.ids[: self.n])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = True
            for i, k in enumerate(self.kiosks):
                states = {s["kiosk"]: s["state"] for s in k.call("status")}
                want = running - {self.ids[i]}
                if any(states.get(p) != "connected" for p in want):
                    ok = False
                    break
            if ok:
                return
            time.sleep(0.2)
        raise TimeoutError("station peers did not all connect")

    def summaries(self) -> list[dict[str, Any]]:
        return [k.call("summary") for k in self.kiosks]

    def wait_converged(
        self, expected: int, timeout: float = 20.0, poll_s: float = 0.1
    ) -> list[dict[str, Any]]:
        """Until every kiosk holds ``expected`` marks and the same set; the summaries."""
        deadline = time.monotonic() + timeout
        while True:
            counts = [k.call("count") for k in self.kiosks]
            if all(c == expected for c in counts):
                sums = self.summaries()
                if all(s["marks"] == sums[0]["marks"] for s in sums):
                    return sums
            if time.monotonic() > deadline:
                raise TimeoutError(f"no convergence: counts {counts}, expected {expected}")
            time.sleep(poll_s)

    def close(self) -> None:
        for k in self.kiosks:
            k.stop()
        for ns in self._made_ns:
            _ip_quiet("netns", "del", ns)
        for link in self._made_links:
            _ip_quiet("link", "del", link)
