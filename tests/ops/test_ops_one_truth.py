"""One truth about each kiosk: ``kesp-ops watch``, the dashboard and ``/metrics`` agree.

For one store (real signed envelopes through the ops verifier, with the
receipt times a kiosk quiet for a while would have), each surface is read as
its user reads it: the ``watch --once`` screen, the dashboard's live JSON and
kiosk list over HTTP, and the Prometheus exposition from the same server.
Each kiosk's status and set of alert kinds must be the same everywhere, and
what the table says it is. The other tests walk the thresholds of
``BoardTuning`` with a fixed clock, and random fleets through all three
renderers of one snapshot.
"""

from __future__ import annotations

import http.client
import json
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from agent.telemetry.envelope import Envelope, seal
from hardware_sim.mosquitto import free_port
from ops.audit_watch import AuditWatch
from ops.board import Board, build_board
from ops.cli import main
from ops.metrics import render_metrics
from ops.parameters import BoardTuning, OpsTuning
from ops.registry import load_registry, register_device
from ops.report import load_zone
from ops.service import OpsService
from ops.store import open_store
from ops.view import render_watch
from ops.web import pages
from ops.web.server import DashboardServer, close, make_server

ZONE = "Asia/Bishkek"
STATUS_KINDS = frozenset({"silent", "offline", "never_reported"})
"""Alert kinds that are a kiosk's status (every kiosk not online has exactly one)."""

PLACE = {
    "k-ok": ("osh", "osh-1"), "k-paper": ("osh", "osh-1"), "k-silent": ("osh", "osh-2"),
    "k-quiet": ("osh", "osh-2"), "k-long": ("naryn", "nar-1"), "k-dead": ("naryn", "nar-1"),
    "k-never": ("naryn", "nar-2"), "k-skew": ("naryn", "nar-2"),
}
KEYS = {d: SigningKey(bytes([i + 1]) * 32) for i, d in enumerate(PLACE)}


@dataclass(frozen=True)
class Heard:
    """A kiosk that opened its session and sent one health sample ``quiet_s`` ago."""

    quiet_s: int
    ended: bool = False
    """Its session ended (a death) right after the health sample."""
    printer: str = "ready"
    sensor: str = "ready"
    ahead_s: int = 0
    """How far the kiosk's clock is ahead of ops'."""


EXPECTED = {  # device: (status, alert kinds), as the dashboard has always shown them
    "k-ok": ("online", frozenset()),
    "k-paper": ("online", frozenset({"paper_low", "sensor_fault"})),
    "k-silent": ("silent", frozenset({"silent"})),  # session open, 151 s quiet
    "k-quiet": ("silent", frozenset({"silent"})),  # session open, 400 s quiet
    "k-long": ("offline", frozenset({"offline"})),  # session open, 1,000 s quiet
    "k-dead": ("offline", frozenset({"offline"})),  # session ended (death)
    "k-never": ("never_reported", frozenset({"never_reported"})),  # registered, never heard
    "k-skew": ("online", frozenset({"clock_skew"})),  # its clock 10 min ahead
}


def _sealed(device: str, n: int, kind: str, payload: dict[str, object], received_ms: int,
            sent_ms: int) -> tuple[str, bytes, int]:
    """A live message of ``device`` sent at ``sent_ms`` (its clock), received at ``received_ms``."""
    district, station = PLACE[device]
    env = Envelope(device=device, station=station, district=district, boot=1, seq=n, n=n,
                   wall_ms=sent_ms, mono_ms=1 + n, sent_ms=sent_ms,
                   type=kind,  # type: ignore[arg-type]
                   historical=False, payload=payload)
    return env.topic, seal(env, KEYS[device]), received_ms


def _fill(tmp: Path, fleet: Mapping[str, Heard], now_ms: int) -> tuple[Path, str]:
    """Registry of every kiosk in PLACE and a store holding what ``fleet`` sent; the
    kiosks not in it never reported."""
    reg = tmp / "registry.json"
    for d, k in KEYS.items():
        register_device(reg, d, PLACE[d][1], PLACE[d][0], bytes(k.verify_key).hex())
    path = str(tmp / "ops.sqlite")
    svc = OpsService("mqtt://127.0.0.1:1", reg, path)
    session = {"bdseq": 1, "last_n": 0, "oldest_n": 1}
    msgs = []
    for d, h in fleet.items():
        at = now_ms - h.quiet_s * 1000
        sent = at + h.ahead_s * 1000
        health = {"app": {"printer": h.printer, "sensor": h.sensor}, "outbox_depth": 0}
        msgs += [_sealed(d, 0, "birth", session, at, sent),
                 _sealed(d, 1, "health", health, at, sent)]
        if h.ended:
            msgs.append(_sealed(d, 0, "death", session, at, sent))
    assert svc.process_messages(msgs) == ["accepted"] * len(msgs)
    svc.store.close()
    return reg, path


def _board(tmp: Path, fleet: Mapping[str, Heard], now_ms: int) -> Board:
    """The snapshot of ``fleet`` at ``now_ms`` with the default thresholds."""
    reg, path = _fill(tmp, fleet, now_ms)
    store = open_store(path)
    try:
        return build_board(store, load_registry(reg), AuditWatch(), load_zone(ZONE),
                           BoardTuning(), OpsTuning(), now_ms=now_ms)
    finally:
        store.close()


def _surfaces(board: Board) -> dict[str, dict[str, tuple[str, frozenset[str]]]]:
    """Each kiosk's (status, alert kinds) as watch, the dashboard and /metrics render
    ``board``."""
    devices = sorted(PLACE)
    live = pages.national(board).live
    return {
        "watch": _by_device(read_watch(render_watch(board)), devices),
        "dashboard": _by_device([(r[1], r[0]) for r in table_rows(live["alerts"], "alerts")],
                                devices),
        "metrics": _by_device(read_metrics(render_metrics(board))[0], devices),
    }


def _by_device(pairs: list[tuple[str, str]], devices: list[str]
               ) -> dict[str, tuple[str, frozenset[str]]]:
    """(device, kind) alert pairs as device: (status its alerts say, kinds)."""
    kinds: dict[str, set[str]] = {d: set() for d in devices}
    for device, kind in pairs:
        kinds.setdefault(device, set()).add(kind)
    out = {}
    for d, ks in kinds.items():
        status = sorted(ks & STATUS_KINDS)
        out[d] = ("online" if not status else "+".join(status), frozenset(ks))
    return out


class _Rows(HTMLParser):
    """Cell texts of every ``<tr>`` in ``<table class=...>`` of the given class."""

    def __init__(self, cls: str) -> None:
        super().__init__()
        self.cls = cls
        self.inside = False
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and (self.cls in (dict(attrs).get("class") or "").split()):
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table_rows(html: str, cls: str) -> list[list[str]]:
    """Body rows (cell texts) of the table of class ``cls`` in ``html``."""
    parser = _Rows(cls)
    parser.feed(html)
    return [r for r in parser.rows if r]


def read_watch(text: str) -> list[tuple[str, str]]:
    """(device, kind) of every alert line of the ``watch`` screen."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("alerts ("))
    out = []
    for line in lines[start + 1:]:
        if not line.strip() or line.strip() == "none":
            break
        kind, device = line.split()[:2]
        out.append((device, kind))
    return out


def read_metrics(text: str) -> tuple[list[tuple[str, str]], dict[str, int], dict[str, str]]:
    """(device, kind) of every ``kesp_kiosk_alert``, ``kesp_devices`` by state and
    ``kesp_kiosk_up`` by device."""
    alerts = re.findall(r'^kesp_kiosk_alert\{device="([^"]+)",[^}]*kind="([a-z_]+)"\} 1$', text,
                        re.MULTILINE)
    states = {s: int(v) for s, v in re.findall(r'^kesp_devices\{state="([a-z_]+)"\} (\d+)$',
                                                 text, re.MULTILINE)}
    up = dict(re.findall(r'^kesp_kiosk_up\{device="([^"]+)",[^}]*\} ([01])$', text,
                         re.MULTILINE))
    return alerts, states, up


def _get(srv: DashboardServer, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read().decode()
        assert r.status == 200, (path, r.status, body)
        return body
    finally:
        conn.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[DashboardServer, Path, str]]:
    """The dashboard (default thresholds) over a store filled just now."""
    now = time.time_ns() // 1_000_000
    reg, path = _fill(tmp_path, {
        "k-ok": Heard(0), "k-paper": Heard(0, printer="paper-near-end", sensor="error"),
        "k-silent": Heard(151), "k-quiet": Heard(400), "k-long": Heard(1000),
        "k-dead": Heard(0, ended=True), "k-skew": Heard(0, ahead_s=600)}, now)
    store = open_store(path)
    srv = make_server(store, bind="127.0.0.1", port=free_port(), zone=load_zone(ZONE),
                      registry_path=reg, board=BoardTuning(refresh_s=0.2),
                      metrics=render_metrics)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    try:
        yield srv, reg, path
    finally:
        close(srv)
        store.close()


def _disagreement(seen: Mapping[str, Mapping[str, tuple[str, frozenset[str]]]],
                  expected: Mapping[str, tuple[str, frozenset[str]]] = EXPECTED) -> str:
    """Kiosk by kiosk, what is expected and what each surface says."""
    lines = [f"{'kiosk':<9} {'expected':<36} " + " ".join(f"{s:<36}" for s in seen)]
    for d in sorted(expected):
        cells = [expected[d], *(view.get(d, ("missing", frozenset())) for view in seen.values())]
        lines.append(f"{d:<9} " + " ".join(
            f"{status + ' ' + ','.join(sorted(kinds)):<36}" for status, kinds in cells))
    return "\n".join(lines)


def test_watch_dashboard_and_metrics_agree_on_every_kiosk(
        served: tuple[DashboardServer, Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    srv, reg, path = served
    devices = sorted(PLACE)
    assert main(["--store", path, "--timezone", ZONE, "watch", "--once",
                 "--registry", str(reg)]) == 0
    screen = capsys.readouterr().out
    live = json.loads(_get(srv, "/api/live?page=%2F"))
    kiosk_list = table_rows(_get(srv, "/kiosks"), "kiosk-list")
    national = _get(srv, "/")
    exposition = _get(srv, "/metrics")
    metric_alerts, states, up = read_metrics(exposition)

    seen = {
        "watch": _by_device(read_watch(screen), devices),
        "dashboard": _by_device([(r[1], r[0]) for r in table_rows(live["alerts"], "alerts")],
                                devices),
        "metrics": _by_device(metric_alerts, devices),
    }
    assert all(view == EXPECTED for view in seen.values()), \
        "status and alert kinds per kiosk differ:\n" + _disagreement(seen)

    # The dashboard's kiosk list and kesp_kiosk_up say the same status as the alerts.
    assert {r[0]: r[2] for r in kiosk_list} == {d: s for d, (s, _) in EXPECTED.items()}
    assert up == {d: str(int(s == "online")) for d, (s, _) in EXPECTED.items()}
    # The counts by status: the dashboard's status line, kesp_devices and the watch header.
    counts = {s: sum(1 for st, _ in EXPECTED.values() if st == s)
              for s in ("online", "silent", "offline", "never_reported")}
    shown = dict(re.findall(r'data-status="([a-z_]+)">(\d+)<', national))
    assert {s: int(v) for s, v in shown.items()} == counts
    assert states == counts
    header = screen.splitlines()[0]
    assert f"kiosks {counts['online']}/{len(PLACE)} online, {counts['silent']} silent, " \
           f"{counts['offline']} offline, {counts['never_reported']} never_reported" in header, \
        header


QUIET = [  # seconds since last heard, session open -> status (default BoardTuning)
    (0, "online"), (149, "online"), (150, "silent"), (151, "silent"),
    (899, "silent"), (900, "offline"), (3600, "offline"),
]
NOW = 1_800_000_000_000


@pytest.mark.parametrize("quiet_s,status", QUIET)
def test_thresholds_are_the_same_on_every_surface(tmp_path: Path, quiet_s: int,
                                                  status: str) -> None:
    """At a fixed clock, one kiosk ``quiet_s`` quiet: the same word on every surface."""
    board = _board(tmp_path, {"k-ok": Heard(quiet_s)}, NOW)
    want = (status, frozenset() if status == "online" else frozenset({status}))
    never = ("never_reported", frozenset({"never_reported"}))
    expected = {d: never for d in PLACE} | {"k-ok": want}
    seen = _surfaces(board)
    assert seen == {k: expected for k in seen}
    assert board.kiosks["k-ok"].status.value == status


PRINTER = {"ready": None, "paper-out": "paper_out", "paper-near-end": "paper_low",
           "cover-open": "cover_open", "disconnected": "printer_missing",
           "error": "printer_error"}
SENSOR = {"ready": None, "disconnected": "sensor_missing", "fault": "sensor_fault"}
HEARD = st.builds(
    Heard,
    quiet_s=st.sampled_from([0, 149, 150, 151, 899, 900, 901]) | st.integers(0, 4000),
    ended=st.booleans(), printer=st.sampled_from(sorted(PRINTER)),
    sensor=st.sampled_from(sorted(SENSOR)), ahead_s=st.sampled_from([0, 5, 31, -600]))


def expected_of(h: Heard | None) -> tuple[str, frozenset[str]]:
    """What the dashboard has always said about such a kiosk (docs/OPS.md)."""
    if h is None:
        return "never_reported", frozenset({"never_reported"})
    status = "offline" if h.ended or h.quiet_s >= 900 else \
        "silent" if h.quiet_s >= 150 else "online"
    kinds = {status, PRINTER[h.printer], SENSOR[h.sensor],
             "clock_skew" if abs(h.ahead_s) > 30 else None} - {None, "online"}
    return status, frozenset(k for k in kinds if k is not None)


@settings(max_examples=25, deadline=None)
@given(fleet=st.dictionaries(st.sampled_from(sorted(PLACE)), HEARD))
def test_any_fleet_reads_the_same_on_every_surface(fleet: dict[str, Heard]) -> None:
    """Random fleets (some kiosks never heard): every surface says what the table says."""
    with tempfile.TemporaryDirectory(prefix="kesp-truth-") as tmp:
        board = _board(Path(tmp), fleet, NOW)
    expected = {d: expected_of(fleet.get(d)) for d in PLACE}
    seen = _surfaces(board)
    assert seen == {k: expected for k in seen}, _disagreement(seen, expected)
    assert {d: r.status.value for d, r in board.kiosks.items()} == \
        {d: s for d, (s, _) in expected.items()}
