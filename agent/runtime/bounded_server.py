"""A threading socket server that serves at most N clients at once.

Both the kiosk's control socket and the ops dashboard must not let idle or
hostile clients exhaust threads (the kiosk unit's ``TasksMax`` is 64): a
client beyond the limit is answered ``busy_reply`` and closed without a
thread being started.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

BUSY_SEND_TIMEOUT_S = 1.0
"""How long a refused client may take to read the busy reply."""


class BoundedThreadingMixIn:
    """Put before a ``socketserver.Threading*Server`` in the bases.

    Call :meth:`limit_clients` before the server's ``__init__``.
    """

    busy_reply: bytes = b""
    _slots: threading.BoundedSemaphore

    def limit_clients(self, max_clients: int, busy_reply: bytes) -> None:
        """Serve at most ``max_clients`` at once; answer the others ``busy_reply``."""
        self._slots = threading.BoundedSemaphore(max_clients)
        self.busy_reply = busy_reply

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.settimeout(BUSY_SEND_TIMEOUT_S)
                request.sendall(self.busy_reply)
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        try:
            super().process_request(request, client_address)  # type: ignore[misc]
        except BaseException:
            self._slots.release()  # no thread started: give the slot back
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            self._slots.release()
