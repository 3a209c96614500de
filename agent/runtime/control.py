"""The operator's control channel: JSON lines over a local Unix socket.

``kesp-agent open|pause|resume|close|status|reprint|document|manual`` are
clients of this socket; the running agent is the server. Access control is the
file system's: the socket lives in a directory only the agent's user and the
operators' group can enter, the socket itself is 0660, and the server checks
the peer's credentials (``SO_PEERCRED``) against the same rule, so a process
that somehow reaches the socket under another uid is refused.

One request per connection, read within ``read_timeout_s``; at most
``max_clients`` connections are served at once (each holds a thread, and the
unit's ``TasksMax`` is 64): one more is answered "busy" at once and closed.

::

    -> {"cmd": "open", "arg": ""}
    <- {"ok": true, "result": {...}}  |  {"ok": false, "error": "..."}
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.runtime.bounded_server import BoundedThreadingMixIn

log = logging.getLogger(__name__)

Handler = Callable[[str, str], dict[str, Any]]
MAX_REQUEST = 4096
READ_TIMEOUT_S = 5.0
"""A client that has not sent its request line within this is dropped."""
MAX_CLIENTS = 8
"""Connections served at once; an operator types one command at a time."""
_BUSY = b'{"ok": false, "error": "busy: too many control clients, retry in a few seconds"}\n'


class _BoundedServer(BoundedThreadingMixIn, socketserver.ThreadingUnixStreamServer):
    """The control socket's server: at most ``max_clients`` at once."""

    daemon_threads = True

    def __init__(self, path: str, handler: type[socketserver.BaseRequestHandler],
                 max_clients: int) -> None:
        self.limit_clients(max_clients, _BUSY)
        super().__init__(path, handler)


class ControlError(RuntimeError):
    """The agent could not be reached (``refused`` False) or refused the command.

    A refusal carries the agent's ``code`` and ``params`` (see
    :class:`~agent.station.station.StationError`).
    """

    def __init__(self, message: str, *, refused: bool = False, code: str = "unreachable",
                 params: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.refused = refused
        self.code = code
        self.params = params or {}


def _peer_allowed(sock: socket.socket, path: Path) -> bool:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, gid = struct.unpack("3i", creds)
    st = path.stat()
    return uid in (0, os.getuid()) or gid == st.st_gid or uid == st.st_uid


class ControlServer:
    """Serves operator commands to ``handler(cmd, arg)`` on a Unix socket."""

    def __init__(self, path: str | os.PathLike[str], handler: Handler, *,
                 read_timeout_s: float = READ_TIMEOUT_S, max_clients: int = MAX_CLIENTS) -> None:
        self.path = Path(path)
        self._handler = handler
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        outer = self

        class _Request(socketserver.StreamRequestHandler):
            timeout = read_timeout_s  # socketserver applies it to the connection

            def handle(self) -> None:
                outer._serve(self.connection, self.rfile, self.wfile)

        old_umask = os.umask(0o117)
        try:
            self._server = _BoundedServer(str(self.path), _Request, max_clients)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o660)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="control", daemon=True
        )

    def _serve(self, conn: socket.socket, rfile: Any, wfile: Any) -> None:
        if not _peer_allowed(conn, self.path):
            reply: dict[str, Any] = {"ok": False, "error": "permission denied"}
        else:
            try:
                line = rfile.readline(MAX_REQUEST)
            except (TimeoutError, OSError):
                return  # an idle or vanished client: its slot is freed, nothing to answer
            try:
                request = json.loads(line)
                cmd, arg = str(request["cmd"]), str(request.get("arg", ""))
            except (ValueError, KeyError, TypeError):
                reply = {"ok": False, "error": "malformed request"}
            else:
                try:
                    reply = {"ok": True, "result": self._handler(cmd, arg)}
                except Exception as exc:  # the operator sees the reason, the agent lives on
                    log.warning("control command %s failed: %s", cmd, exc)
                    reply = {"ok": False, "error": str(exc),
                             "code": str(getattr(exc, "code", "failed")),
                             "params": dict(getattr(exc, "params", {}))}
        wfile.write(json.dumps(reply, ensure_ascii=False).encode("utf-8") + b"\n")

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and remove the socket."""
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def request(path: str | os.PathLike[str], cmd: str, arg: str = "",
            timeout_s: float = 60.0) -> dict[str, Any]:
    """Send one command to the running agent and return its result (or raise ControlError)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except FileNotFoundError as exc:
            raise ControlError(f"no agent listening at {path}: is kesp-agent running?") from exc
        except PermissionError as exc:
            raise ControlError(f"permission denied on {path}: join the operators' group") from exc
        except OSError as exc:
            raise ControlError(f"cannot reach the agent at {path}: {exc.strerror}") from exc
        sock.sendall(json.dumps({"cmd": cmd, "arg": arg}).encode("utf-8") + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    try:
        reply = json.loads(data)
    except ValueError as exc:
        raise ControlError("the agent closed the connection without an answer") from exc
    if not reply.get("ok"):
        params = reply.get("params")
        raise ControlError(str(reply.get("error", "unknown error")), refused=True,
                           code=str(reply.get("code") or "failed"),
                           params=params if isinstance(params, dict) else {})
    result: dict[str, Any] = reply["result"]
    return result
