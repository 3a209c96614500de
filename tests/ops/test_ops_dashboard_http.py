"""The dashboard's HTTP side under bad input: hostile queries, long paths, a failing store, floods.

The store is filled with real signed envelopes through the ops verifier
(no broker needed); the server is the real one on a loopback port.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from ops_helpers import signed

from hardware_sim.mosquitto import free_port
from ops.metrics import render_metrics
from ops.parameters import BoardTuning
from ops.registry import register_device
from ops.report import load_zone
from ops.service import OpsService
from ops.store import open_store
from ops.web.server import DashboardServer, close, make_server

KEYS = {d: SigningKey.generate() for d in ("a-1", "a-2", "b-1")}
PLACE = {"a-1": ("osh", "osh-1"), "a-2": ("osh", "osh-1"), "b-1": ("bishkek", "bsk-7")}
HOSTILE = '<script>alert("x")</script>'
TUNING = BoardTuning(refresh_s=0.2, store_timeout_s=1.0, request_timeout_s=1.0, max_workers=3,
                     stale_after_s=1.5)


def _env(device: str, n: int, kind: str, payload: dict[str, object]) -> tuple[str, bytes, int]:
    return signed(KEYS[device], PLACE[device], device, n, kind, payload)


def _serve(tmp_path: Path) -> Iterator[DashboardServer]:
    reg = tmp_path / "devices.json"
    for d, k in KEYS.items():
        register_device(reg, d, PLACE[d][1], PLACE[d][0], bytes(k.verify_key).hex())
    path = str(tmp_path / "ops.sqlite")
    svc = OpsService("mqtt://127.0.0.1:1", reg, path)
    msgs = [_env(d, 1, "turnout", {"identified": i, "refused": 0, "not_identified": 0,
                                   "manual": 0, "by_hour": {"08": i}})
            for d, i in (("a-1", 5), ("a-2", 3), ("b-1", 11))]
    msgs.append(_env("a-1", 2, "health", {"app": {"printer": HOSTILE, "sensor": "ready"}}))
    msgs.append(_env("a-1", 3, "event", {"event": "slip-printed", "seq": 1,
                                         "fields": {"slip_serial": HOSTILE}}))
    assert svc.process_messages(msgs) == ["accepted"] * 5
    svc.store.close()
    store = open_store(path)
    srv = make_server(store, bind="127.0.0.1", port=free_port(), zone=load_zone("Asia/Bishkek"),
                      registry_path=reg, board=TUNING, metrics=render_metrics)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    try:
        yield srv
    finally:
        close(srv)
        store.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardServer]:
    """One server for the read-only tests."""
    yield from _serve(tmp_path_factory.mktemp("board"))


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[DashboardServer]:
    """A server of its own, for tests that break its store or flood it."""
    yield from _serve(tmp_path)


def get(srv: DashboardServer, path: str, method: str = "GET",
        timeout: float = 5.0) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=timeout)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        conn.close()


def test_pages_and_headers(server: DashboardServer) -> None:
    status, headers, body = get(server, "/")
    assert status == 200 and body.startswith("<!DOCTYPE html>")
    assert headers["server"] == "kesp-ops"  # no Python version
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert 'data-fig="identified">19<' in body
    for path in ("/district/osh", "/station/osh-1", "/kiosk/a-1", "/kiosks?status=online",
                 "/kiosks?district=osh", "/healthz", "/static/board.js", "/static/board.css"):
        assert get(server, path)[0] == 200, path
    status, headers, body = get(server, "/api/live?page=%2Fstation%2Fosh-1")
    assert status == 200 and headers["content-type"].startswith("application/json")
    live = json.loads(body)
    assert {"figures", "status", "chart", "alerts", "kiosks", "asof"} <= set(live)
    assert 'data-fig="identified">8<' in live["figures"]


def test_telemetry_text_is_escaped(server: DashboardServer) -> None:
    for path in ("/kiosk/a-1", "/station/osh-1", "/api/live?page=/kiosk/a-1"):
        body = get(server, path)[2]
        assert "<script>alert" not in body and "\\u003cscript" not in body, path
        assert "&lt;script&gt;" in body, path


@pytest.mark.parametrize(("path", "status", "says"), [
    ("/nope", 404, "no page at"),
    ("/kiosk/zz-9", 404, "does not know kiosk"),
    ("/district/..%2F..%2Fetc%2Fpasswd", 404, "ids are letters"),
    ("/station/%3Cscript%3E", 404, "ids are letters"),
    ("/kiosk/a-1/extra", 404, "no page at"),
    ("/kiosk/%ff%fe", 400, "not valid UTF-8"),
    ("/?x=1", 400, "unknown query parameter"),
    ("/?%zz", 400, "malformed query string"),
    ("/kiosks?status=bogus", 400, "online, silent, offline, never_reported"),
    ("/kiosks?status=online&status=offline", 400, "given twice"),
    ("/kiosks?status=%ff", 400, "malformed query string"),
    ("/kiosks?" + "&".join(f"a{i}=1" for i in range(50)), 400, "malformed query string"),
    ("/api/live", 400, "give page="),
    ("/api/live?page=/kiosk/zz-9", 404, "does not know kiosk"),
    ("/public/turnout.json", 404, "no public feed"),
    ("/static/../cli.py", 404, "no such file"),
    ("/" + "a" * 5000, 414, "longer than 1024"),
])
def test_bad_requests_get_one_clear_line(server: DashboardServer, path: str, status: int,
                                         says: str) -> None:
    got, _, body = get(server, path)
    assert got == status, body
    assert says in body, body
    assert "Traceback" not in body and "File \"" not in body


def test_huge_request_line_and_other_methods(server: DashboardServer) -> None:
    got, _, body = get(server, "/" + "b" * 70_000)
    assert got == 414 and "Traceback" not in body
    for method in ("POST", "PUT", "DELETE"):
        got, _, body = get(server, "/", method)
        assert got == 501 and "Traceback" not in body


def test_store_hanging_or_gone_is_503_not_a_hung_worker(own_server: DashboardServer) -> None:
    server = own_server
    store = server.cache.store
    release = threading.Event()

    def hold() -> None:  # a store that stops answering (its connection lock never free)
        with store._lock:
            release.wait(20)

    threading.Thread(target=hold, daemon=True).start()
    time.sleep(0.1)
    t0 = time.monotonic()
    got, headers, body = get(server, "/kiosk/a-1")
    assert got == 503 and "did not answer within 1 s" in body, body
    assert headers["retry-after"] == "5"
    assert time.monotonic() - t0 < 3
    assert get(server, "/")[0] == 200  # pages from the last snapshot still work meanwhile
    time.sleep(TUNING.stale_after_s + 0.5)
    got, _, body = get(server, "/")
    assert got == 503 and "ops has no current view" in body, body
    release.set()
    assert _until_status(server, "/", 200)
    store.close()  # the database goes away for good
    got, _, body = get(server, "/kiosk/a-1")
    assert got == 503 and "state store unavailable" in body, body
    assert _until_status(server, "/", 503)
    assert "state store unavailable" in get(server, "/")[2]


def _until_status(srv: DashboardServer, path: str, status: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get(srv, path)[0] == status:
            return True
        time.sleep(0.1)
    return False


def test_flood_of_idle_connections_is_bounded(own_server: DashboardServer) -> None:
    server = own_server
    port = server.server_address[1]
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(TUNING.max_workers)]
    try:
        time.sleep(0.2)
        t0 = time.monotonic()
        got, _, body = get(server, "/")
        assert got == 503 and "too many requests" in body
        assert time.monotonic() - t0 < 1.0  # refused at once, not queued
        time.sleep(TUNING.request_timeout_s + 0.5)  # the idle ones time out and free the slots
        assert get(server, "/")[0] == 200
    finally:
        for s in idle:
            s.close()


@pytest.mark.parametrize(("args", "says"), [
    (["--timezone", "Mars/Olympus", "serve"], "time zone 'Mars/Olympus' is unknown"),
    (["serve", "--refresh", "0"], "--refresh must be between 0.5 and 300 seconds"),
    (["serve", "--publish-key", "publish.sign"], "--publish-key needs --public-dir"),
    (["serve", "--public-dir", "feed", "--publish-key", "missing.sign"],
     "cannot read ops key missing.sign"),
])
def test_serve_refuses_bad_options_in_one_line(tmp_path: Path, args: list[str], says: str,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from ops.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["--store", "ops.sqlite", "init"]) == 0
    capsys.readouterr()
    code = main(["--store", "ops.sqlite", *args, "--port", str(free_port())])
    err = capsys.readouterr().err
    assert code == 1 and says in err and err.count("\n") == 1, err
