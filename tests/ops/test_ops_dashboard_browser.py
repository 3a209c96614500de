"""The ops dashboard in a real browser (headless Chromium via Selenium), fed by real kiosks.

Six kiosks (``fleet.py``) send signed telemetry through a private mosquitto
to a running ops service; the dashboard serves from the same store. The
figures on the pages are checked against the store, the live update is seen
to change a figure without a reload, and the screenshots of docs/OPS.md are
taken here (written into docs/img/ with ``KESP_UPDATE_SCREENSHOTS=1``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fleet import (
    CONFLICT,
    NEVER,
    SILENT,
    STOPPED,
    TAMPERED,
    TURNOUT,
    start_fleet,
    turnout_payload,
)
from nacl.signing import SigningKey
from ops_helpers import World, until

from hardware_sim.mosquitto import free_port
from ops.feed import publish
from ops.feed_verify import verify
from ops.parameters import BoardTuning
from ops.registry import load_registry
from ops.store import open_store
from ops.web.server import DashboardServer, close, make_server

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
ZONE = ZoneInfo("Asia/Bishkek")
BOARD = BoardTuning(refresh_s=0.5, silent_after_s=4.0, offline_after_s=600.0,
                    stale_after_s=30.0)


def _browser(profile: Path) -> object:
    if CHROMIUM is None or DRIVER is None:
        pytest.fail("headless Chromium is missing: apt-get install chromium chromium-driver "
                    "(.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1500",
                 f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    return webdriver.Chrome(options=opts, service=Service(executable_path=DRIVER))


@pytest.fixture
def served(world: World, tmp_path: Path) -> Iterator[tuple[DashboardServer, str]]:
    ops = world.ops()
    fleet = start_fleet(world, tmp_path)
    assert fleet.flush(), "kiosks did not deliver their telemetry"
    assert ops.wait_idle(10)
    store = open_store(str(tmp_path / "ops.sqlite"))
    server = make_server(store, bind="127.0.0.1", port=free_port(), zone=ZONE,
                         registry_path=world.registry, board=BOARD)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        close(server)
        store.close()


# Read the page in one script call each: the live update may swap a part in
# between two WebDriver calls (a stale element), never within one script.
def _text(driver: object, css: str) -> str:
    return str(driver.execute_script(  # type: ignore[attr-defined]
        "var e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : null;",
        css))


def _rows(driver: object, css: str) -> list[list[str]]:
    return list(driver.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.querySelectorAll(arguments[0])).map(function (tr) {"
        " return Array.from(tr.querySelectorAll('td')).map(function (td) {"
        " return td.innerText.trim(); }); });", css))


def _click(driver: object, text: str) -> None:
    """Follow the first link whose text is ``text``, as a user's click does."""
    assert driver.execute_script(  # type: ignore[attr-defined]
        "var t = arguments[0]; var a = Array.from(document.querySelectorAll('a')).find("
        "function (a) { return a.innerText.trim() === t; }); if (!a) { return false; }"
        " a.click(); return true;", text), text


def test_dashboard_in_chromium(served: tuple[DashboardServer, str], world: World,
                               tmp_path: Path) -> None:
    server, base = served
    store = server.cache.store
    # The silent kiosk's last message must be older than silent_after_s.
    silent_seen = next(d.last_seen_ms for d in store.devices() if d.device == SILENT)
    assert until(lambda: server.cache.board().kiosks[SILENT].status.value == "silent", 15)
    shots = REPO / "docs" / "img" if os.environ.get("KESP_UPDATE_SCREENSHOTS") else tmp_path
    profile = Path(tempfile.mkdtemp(prefix="kesp-chromium-"))
    driver = _browser(profile)
    try:
        driver.get(base + "/")  # type: ignore[attr-defined]
        summary = store.turnout()
        nation = sum(c.identified for c in summary.by_district.values())
        assert nation == sum(sum(h.values()) for h in TURNOUT.values())
        assert _text(driver, "[data-fig=identified]") == f"{nation:,}"
        status = dict(driver.execute_script(  # type: ignore[attr-defined]
            "return Array.from(document.querySelectorAll('[data-status]')).map("
            "function (e) { return [e.getAttribute('data-status'), e.innerText.trim()]; });"))
        assert status == {"online": "4", "silent": "1", "offline": "1", "never_reported": "1"}
        alerts = {(r[0], r[1]) for r in _rows(driver, "table.alerts tbody tr")}
        for expected in [("paper_out", "bsk-1-k2"), ("cover_open", CONFLICT),
                         ("sensor_missing", CONFLICT), ("peer_conflict", CONFLICT),
                         ("audit_broken", TAMPERED), ("silent", SILENT), ("never_reported", NEVER),
                         ("offline", STOPPED)]:
            assert expected in alerts, (expected, alerts)
        assert ("audit_broken", "bsk-1-k1") not in alerts  # an untampered chain is not flagged
        districts = {r[0]: r[2] for r in _rows(driver, "table.counts tbody tr")}
        assert districts == {d: f"{c.identified:,}" for d, c in summary.by_district.items()}
        asof = _text(driver, "[data-live=asof] time")
        local_now = dt.datetime.now(ZONE)
        stamp = dt.datetime.strptime(asof, "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZONE)
        assert abs((local_now - stamp).total_seconds()) < 60, (asof, local_now)
        driver.save_screenshot(str(shots / "ops-national.png"))  # type: ignore[attr-defined]

        _click(driver, "bishkek")
        assert until(lambda: _text(driver, "h1") == "District bishkek", 10)
        _click(driver, "bsk-1")
        assert until(lambda: _text(driver, "h1") == "Station bsk-1", 10)
        bsk1 = summary.by_station["bsk-1"].identified
        assert _text(driver, "[data-fig=identified]") == f"{bsk1:,}"
        assert _text(driver, "[data-fig=turnout]") == f"{100 * bsk1 / 400:.2f} %"
        kiosk_rows = {r[0]: r[2] for r in _rows(driver, "table.kiosk-list tbody tr")}
        assert kiosk_rows == {"bsk-1-k1": "online", "bsk-1-k2": "online"}
        driver.save_screenshot(str(shots / "ops-station.png"))  # type: ignore[attr-defined]

        driver.get(f"{base}/kiosk/{STOPPED}")  # type: ignore[attr-defined]
        stopped = next(d for d in store.devices() if d.device == STOPPED)
        heard = dt.datetime.fromtimestamp(stopped.last_seen_ms / 1000, ZONE)
        assert _text(driver, "[data-fact=last]") == heard.strftime("%H:%M:%S")
        assert _text(driver, "[data-fact=status]") == "offline"
        driver.get(f"{base}/kiosk/{CONFLICT}")  # type: ignore[attr-defined]
        events = store.recent_events(CONFLICT, 50)
        shown = _rows(driver, "table.events tbody tr")
        assert [int(r[0]) for r in shown] == [n for n, *_ in events]
        assert "mark-conflict" in [r[3] for r in shown]
        driver.save_screenshot(str(shots / "ops-kiosk.png"))  # type: ignore[attr-defined]
        assert silent_seen > 0

        # Live: a new turnout message changes the national figure without a reload.
        driver.get(base + "/")  # type: ignore[attr-defined]
        driver.execute_script("window.kespMarker = 42;")  # type: ignore[attr-defined]
        more = dict(TURNOUT["bsk-1-k1"], **{"10": 10})
        tel = next(t for t in world.kiosks if t.cfg.device_id == "bsk-1-k1")
        tel.emit("turnout", turnout_payload(more))
        assert tel.flush(10)
        want = f"{nation + 10:,}"
        assert until(lambda: _text(driver, "[data-fig=identified]") == want, 20), \
            _text(driver, "[data-fig=identified]")
        assert driver.execute_script("return window.kespMarker;") == 42  # type: ignore
        assert _text(driver, "#conn") == "live"

        # The public feed built from these kiosks' messages (as they came through mosquitto)
        # passes the observers' verifier.
        key = SigningKey.generate()
        done = publish(tmp_path / "feed", key, store.signed_turnout(),
                       load_registry(world.registry), ZONE)
        assert done.kiosks == 6 and done.identified == nation + 10
        keys = json.loads((tmp_path / "feed" / "kiosk-keys.json").read_text())["kiosks"]
        assert verify((tmp_path / "feed" / "snapshot.json").read_bytes(),
                      (tmp_path / "feed" / "snapshot.json.sig").read_text(),
                      bytes(key.verify_key).hex(), keys) == []
    finally:
        driver.quit()  # type: ignore[attr-defined]
        shutil.rmtree(profile, ignore_errors=True)
