"""The control socket bounds idle clients: a read time-out and a cap on connections (#20)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

from agent.runtime.control import ControlServer, request


def _status(_cmd: str, _arg: str) -> dict[str, Any]:
    return {"phase": "open"}


def test_idle_clients_neither_pile_up_threads_nor_lock_out_the_operator(tmp_path: Path) -> None:
    server = ControlServer(tmp_path / "agent.sock", _status, read_timeout_s=1.0, max_clients=4)
    server.start()
    before = threading.active_count()
    idle = []
    try:
        for _ in range(60):  # connect and never send a request line
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(tmp_path / "agent.sock"))
            idle.append(s)
        time.sleep(0.3)
        assert threading.active_count() - before <= 4
        busy = idle[-1].recv(200)
        assert b"busy" in busy  # the 60th was answered and closed, not held
        # Once the idle ones time out, the operator's command is served.
        deadline = time.monotonic() + 5
        while True:
            try:
                assert request(tmp_path / "agent.sock", "status") == {"phase": "open"}
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert idle[0].recv(10) == b""  # dropped after the read time-out
        assert threading.active_count() - before <= 1
    finally:
        for s in idle:
            s.close()
        server.stop()
