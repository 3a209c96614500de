"""A private Mosquitto broker on a free loopback port, for tests and the demo.

Each instance writes its own configuration in a temporary directory, so tests
can stop it (to simulate an uplink outage), restart it with or without its
persistence, or run it with TLS, passwords and an ACL.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from ops.broker_config import LIMITS


class BrokerUnavailable(RuntimeError):  # noqa: N818 - reads as the condition
    """The mosquitto binary is missing or the broker did not come up."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str | None:
    """Path to ``mosquitto`` (PATH, then Debian's /usr/sbin), or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    candidate = Path("/usr/sbin/mosquitto")
    return str(candidate) if candidate.exists() else None


class PrivateMosquitto:
    """A mosquitto process owned by the caller.

    ``extra_config`` is appended to the generated configuration (listener
    options, ``password_file``, ``acl_file``...). With ``listener_config``
    the default plain loopback listener is replaced entirely.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        extra_config: str = "",
        listener_config: str | None = None,
        persistence: bool = True,
        workdir: Path | None = None,
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise BrokerUnavailable("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary
        self.port = port or free_port()
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kesp-mosq-"))
        self.extra_config = extra_config
        self.listener_config = listener_config
        self.persistence = persistence
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>``."""
        return f"mqtt://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        listener = self.listener_config or (
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        )
        persistence = (
            f"persistence true\npersistence_location {self.workdir}/\n"
            if self.persistence
            else "persistence false\n"
        )
        conf.write_text(
            "per_listener_settings false\n"
            + listener
            + persistence
            + "log_dest file "
            + str(self.workdir / "mosquitto.log")
            + "\nlog_type error\nlog_type warning\nlog_type notice\n"
            + (LIMITS if self.listener_config is None else "")
            + self.extra_config
        )
        return conf

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until its port accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return
        conf = self._write_config()
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise BrokerUnavailable(f"mosquitto exited at start: {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable(f"mosquitto did not listen on port {self.port} in {timeout}s")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL), keeping its persistence file."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def kill(self) -> None:
        """Kill the broker abruptly (no persistence flush)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.stop()

    def wipe_persistence(self) -> None:
        """Delete the broker's persistence database (call while stopped)."""
        for f in self.workdir.glob("*.db"):
            f.unlink()

    def restart(self, *, wipe: bool = False) -> None:
        """Stop, optionally wipe persistence, and start again on the same port."""
        self.stop()
        if wipe:
            self.wipe_persistence()
        self.start()

    def close(self) -> None:
        """Stop and remove the working directory if we created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrivateMosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
