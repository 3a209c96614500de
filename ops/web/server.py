"""The HTTP side of ``kesp-ops serve``: dashboard pages, live JSON, metrics, public feed.

Standard library only (``http.server``): it ships with Python, has no
release cycle of its own to follow for ten years, and the dashboard needs
nothing a framework adds. What a framework would give is done here:

* bounded work: at most ``BoardTuning.max_workers`` requests at once; the
  next connection gets ``503`` at once instead of a queue that grows;
* time-outs: a connection that does not send its request within
  ``request_timeout_s`` is dropped; a page that needs the store (a kiosk's
  events) waits at most ``store_timeout_s`` and answers ``503``;
* pages come from a snapshot (:mod:`ops.board`) rebuilt in the background,
  so the national page never waits on the database; a snapshot older than
  ``stale_after_s`` (store unreachable) is refused with ``503``;
* strict input: paths over :data:`MAX_PATH` characters get ``414``, a
  malformed or unknown query parameter ``400``, an unknown name ``404``;
  every error is one plain sentence, never a traceback;
* read-only: only GET and HEAD; answers carry a strict Content-Security-Policy
  and no server version.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

from agent.runtime.bounded_server import BoundedThreadingMixIn
from ops.alerts import KioskStatus
from ops.audit_watch import AuditWatch
from ops.board import Board, build_board
from ops.parameters import BoardTuning, OpsTuning
from ops.registry import Registry, RegistryError, load_registry
from ops.store import StateStore
from ops.web import pages
from ops.web.errors import HttpError
from ops.web.public import public_file

log = logging.getLogger(__name__)

MAX_PATH = 1024
"""Longest request target accepted (ids are at most 64 characters)."""
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_T = TypeVar("_T")
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
_STATIC = {"board.js": "text/javascript; charset=utf-8", "board.css": "text/css; charset=utf-8"}


class BoardCache:
    """Rebuilds the :class:`Board` every ``refresh_s`` in one background thread."""

    def __init__(self, store: StateStore, registry_path: Path | None, zone: ZoneInfo,
                 board: BoardTuning, ops: OpsTuning) -> None:
        self.store = store
        self.registry_path = registry_path
        self.zone = zone
        self.tuning = board
        self.ops_tuning = ops
        self.watch = AuditWatch()
        self._registry = Registry({})
        self._registry_mtime = -1.0
        self._board: Board | None = None
        self._error = "the first snapshot is not built yet"
        self._error_since = time.monotonic()
        self._built_at = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.build_seconds = 0.0

    @property
    def registry(self) -> Registry:
        """The registry as last loaded (empty without ``--registry``)."""
        return self._registry

    def _reload_registry(self) -> None:
        if self.registry_path is None:
            return
        try:
            mtime = self.registry_path.stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if mtime != self._registry_mtime:
            self._registry = load_registry(self.registry_path, missing_ok=True)
            self._registry_mtime = mtime

    def refresh(self) -> None:
        """Build a new snapshot now (the background thread calls this)."""
        t0 = time.perf_counter()
        try:
            self._reload_registry()
            board = build_board(self.store, self._registry, self.watch, self.zone,
                                self.tuning, self.ops_tuning)
        except RegistryError as exc:
            self._fail(f"device registry unreadable: {exc}")
            return
        except Exception as exc:  # a store that went away must not kill the thread
            log.warning("dashboard snapshot failed: %s: %s", type(exc).__name__, exc)
            self._fail(f"state store unavailable ({type(exc).__name__})")
            return
        self.build_seconds = time.perf_counter() - t0
        self._board, self._built_at = board, time.monotonic()

    def _fail(self, message: str) -> None:
        if self._board is None or self._error != message:
            self._error_since = time.monotonic()
        self._error = message

    def start(self) -> None:
        """Build the first snapshot and keep refreshing in the background."""
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="kesp-ops-board", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.tuning.refresh_s)
            self._wake.clear()
            if not self._stop.is_set():
                self.refresh()

    def stop(self) -> None:
        """End the background thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.tuning.store_timeout_s + self.tuning.refresh_s)

    def board(self) -> Board:
        """The newest snapshot, or :class:`HttpError` 503 if there is none fresh enough."""
        age = time.monotonic() - self._built_at
        if self._board is None or age > self.tuning.stale_after_s:
            raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE,
                            f"ops has no current view: {self._error}; retrying every "
                            f"{self.tuning.refresh_s:g} s")
        return self._board


@dataclass
class StoreGate:
    """Runs store reads that a request needs on a small pool, with a time-out."""

    timeout_s: float
    pool: concurrent.futures.ThreadPoolExecutor

    def call(self, fn: Callable[[], _T]) -> _T:
        """``fn()`` or :class:`HttpError` 503 if the store fails or does not answer in time."""
        try:
            future = self.pool.submit(fn)
        except RuntimeError as exc:
            raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "ops is shutting down") from exc
        try:
            return future.result(self.timeout_s)
        except concurrent.futures.TimeoutError:
            raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE,
                            f"state store did not answer within {self.timeout_s:g} s") from None
        except Exception as exc:
            log.warning("store read failed: %s: %s", type(exc).__name__, exc)
            raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE,
                            f"state store unavailable ({type(exc).__name__})") from None


class DashboardServer(BoundedThreadingMixIn, ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with a cap on concurrent requests."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], cache: BoardCache, gate: StoreGate,
                 metrics: Callable[[Board], str] | None = None,
                 public_dir: Path | None = None) -> None:
        self.cache = cache
        self.gate = gate
        self.metrics = metrics
        self.public_dir = public_dir
        self.tuning = cache.tuning
        body = b"ops is busy: too many requests at once, retry in a few seconds\n"
        self.limit_clients(cache.tuning.max_workers,
                           b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 5\r\n"
                           b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: "
                           + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        handler = type("Handler", (DashboardHandler,),
                       {"timeout": cache.tuning.request_timeout_s})
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("HTTP connection from %s failed", client_address[0])


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    if values is None:
        return None
    if len(values) != 1:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"query parameter {name!r} given twice")
    return values[0]


def _ident(raw: str, what: str) -> str:
    name = unquote(raw, errors="strict") if "%" in raw else raw
    if not _ID_RE.match(name):
        raise HttpError(HTTPStatus.NOT_FOUND,
                        f"no {what} {name[:64]!r}: ids are letters, digits, '.', '_', '-'")
    return name


def _query(query: str, allowed: frozenset[str]) -> dict[str, list[str]]:
    if not query:
        return {}
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=True,
                          max_num_fields=8, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed query string") from None
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise HttpError(HTTPStatus.BAD_REQUEST,
                        f"unknown query parameter {unknown[0][:40]!r}; this page takes "
                        + (", ".join(sorted(allowed)) or "none"))
    return params


class DashboardHandler(BaseHTTPRequestHandler):
    """One request. Only GET and HEAD exist; everything else is 501 (the base class)."""

    server: DashboardServer
    protocol_version = "HTTP/1.0"  # one request per connection: workers are never held idle
    server_version = "kesp-ops"
    sys_version = ""

    def version_string(self) -> str:
        return "kesp-ops"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """Errors from the base class (bad request line, 414, 501) in our plain form."""
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.BAD_REQUEST
        self._answer(status, pages.error_document(
            status.value, message or status.phrase).encode(), "text/html; charset=utf-8")

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def _dispatch(self, head: bool) -> None:
        try:
            body, ctype, cache = self._route()
            status = HTTPStatus.OK
        except HttpError as exc:
            status, cache = exc.status, False
            if self.path.startswith(("/api/", "/metrics")):
                body, ctype = (exc.message + "\n").encode(), "text/plain; charset=utf-8"
            else:
                body = pages.error_document(status.value, exc.message).encode()
                ctype = "text/html; charset=utf-8"
        except Exception:
            log.exception("dashboard request %r failed", self.path[:200])
            status, cache = HTTPStatus.INTERNAL_SERVER_ERROR, False
            body = pages.error_document(500, "internal error; it is in the ops log").encode()
            ctype = "text/html; charset=utf-8"
        self._answer(status, body, ctype, head=head, cache=cache)

    def _answer(self, status: HTTPStatus, body: bytes, ctype: str, *, head: bool = False,
                cache: bool = False) -> None:
        try:
            self.send_response(status.value)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "public, max-age=60" if cache else "no-store")
            self.send_header("Content-Security-Policy", _CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            if status is HTTPStatus.SERVICE_UNAVAILABLE:
                self.send_header("Retry-After", "5")
            self.end_headers()
            if not head:
                self.wfile.write(body)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            pass  # the client went away

    def _route(self) -> tuple[bytes, str, bool]:
        if len(self.path) > MAX_PATH:
            raise HttpError(HTTPStatus.REQUEST_URI_TOO_LONG,
                            f"request path longer than {MAX_PATH} characters")
        try:
            parts = urlsplit(self.path)
        except ValueError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "malformed request path") from None
        path, query = parts.path, parts.query
        html = "text/html; charset=utf-8"
        if path.startswith("/static/"):
            _query(query, frozenset())
            name = path.removeprefix("/static/")
            if name not in _STATIC:
                raise HttpError(HTTPStatus.NOT_FOUND, "no such file")
            data = resources.files("ops.web").joinpath("static", name).read_bytes()
            return data, _STATIC[name], True
        if path.startswith("/public"):
            _query(query, frozenset())
            data, ctype = public_file(self.server.public_dir, path)
            return data, ctype, False
        if path == "/healthz":
            _query(query, frozenset())
            self.server.cache.board()
            return b"ok\n", "text/plain; charset=utf-8", False
        if path == "/metrics":
            _query(query, frozenset())
            if self.server.metrics is None:
                raise HttpError(HTTPStatus.NOT_FOUND, "metrics are not enabled")
            text = self.server.metrics(self.server.cache.board())
            return text.encode(), "text/plain; version=0.0.4; charset=utf-8", False
        if path == "/api/live":
            params = _query(query, frozenset({"page"}))
            target = _one(params, "page")
            if not target:
                raise HttpError(HTTPStatus.BAD_REQUEST, "give page=<path of a dashboard page>")
            if len(target) > MAX_PATH:
                raise HttpError(HTTPStatus.REQUEST_URI_TOO_LONG, "page path too long")
            inner = urlsplit(target)
            page = self._page(inner.path, inner.query)
            return (json.dumps(page.live, ensure_ascii=False).encode(),
                    "application/json; charset=utf-8", False)
        page = self._page(path, query)
        return pages.document(page, self.server.tuning.refresh_s).encode(), html, False

    def _page(self, path: str, query: str) -> pages.Page:
        cache = self.server.cache
        try:
            if path == "/":
                _query(query, frozenset())
                return pages.national(cache.board())
            if path == "/kiosks":
                params = _query(query, frozenset({"status", "district"}))
                status_text = _one(params, "status")
                try:
                    status = KioskStatus(status_text) if status_text else None
                except ValueError:
                    raise HttpError(HTTPStatus.BAD_REQUEST, "status must be one of "
                                    + ", ".join(s.value for s in KioskStatus)) from None
                district = _one(params, "district")
                return pages.kiosk_list(cache.board(), status,
                                        _ident(district, "district") if district else None)
            kind, _, raw = path.lstrip("/").partition("/")
            if kind in ("district", "station", "kiosk") and raw and "/" not in raw:
                _query(query, frozenset())
                name = _ident(raw, kind)
                board = cache.board()
                if kind == "district":
                    return pages.district(board, name)
                if kind == "station":
                    return pages.station(board, name)
                if name not in board.kiosks:
                    raise pages.NotFoundError(f"kiosk {name!r}")
                limit = self.server.tuning.recent_events
                events = self.server.gate.call(
                    lambda: cache.store.recent_events(name, limit))
                return pages.kiosk(board, name, events)
        except pages.NotFoundError as exc:
            raise HttpError(HTTPStatus.NOT_FOUND, f"ops does not know {exc}") from None
        except UnicodeDecodeError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "path is not valid UTF-8") from None
        raise HttpError(HTTPStatus.NOT_FOUND, f"no page at {path[:80]!r}")


def make_server(store: StateStore, *, bind: str, port: int, zone: ZoneInfo,
                registry_path: Path | None = None, board: BoardTuning | None = None,
                ops: OpsTuning | None = None, metrics: Callable[[Board], str] | None = None,
                public_dir: Path | None = None) -> DashboardServer:
    """A ready server (first snapshot built); call ``serve_forever`` and then :func:`close`."""
    board = board or BoardTuning()
    cache = BoardCache(store, registry_path, zone, board, ops or OpsTuning())
    gate = StoreGate(board.store_timeout_s,
                     concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="kesp-ops-read"))
    server = DashboardServer((bind, port), cache, gate, metrics, public_dir)
    cache.start()
    return server


def close(server: DashboardServer) -> None:
    """Stop serving and the background work."""
    server.shutdown()
    server.server_close()
    server.cache.stop()
    server.gate.pool.shutdown(wait=False, cancel_futures=True)
