"""kesp-ops driven as ops staff would: every mistake refused in one line, changing nothing,
and a turnout report whose hours are local and whose totals agree."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cli_helpers import REPO, Run, one_line_refusal, run_module, tree
from nacl.signing import SigningKey
from PIL import Image

from agent.telemetry.envelope import Envelope, seal
from hardware_sim.mosquitto import free_port
from ops.cli import _parser
from ops.registry import register_device
from ops.report import Counts, build_report, disagreements, report_png
from ops.service import OpsService
from ops.store import TurnoutCounts, TurnoutRecord, TurnoutSummary, open_store

BISHKEK = ZoneInfo("Asia/Bishkek")
KEYS = {d: SigningKey(bytes([i + 1]) * 32) for i, d in enumerate(("a-1", "a-2", "b-1", "c-9"))}
PLACE = {"a-1": ("osh-city", "s-0001"), "a-2": ("osh-city", "s-0002"),
         "b-1": ("bishkek", "s-0100"), "c-9": ("bishkek", "s-0100")}


def kesp_ops(*args: object, cwd: Path) -> Run:
    return run_module("ops.cli", *args, cwd=cwd)


def local_ms(text: str) -> int:
    """Epoch ms of a Bishkek wall-clock time ``YYYY-MM-DD HH:MM``."""
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=BISHKEK).timestamp() * 1000)


def turnout(device: str, n: int, at: str, identified: int, manual: int = 0, refused: int = 0,
            not_identified: int = 0) -> tuple[str, bytes, int]:
    """A signed cumulative turnout record written by ``device`` at local time ``at``."""
    district, station = PLACE[device]
    now = time.time_ns() // 1_000_000
    # by_hour as a kiosk in another zone would fill it: the report must not use it
    payload = {"identified": identified, "refused": refused, "not_identified": not_identified,
               "manual": manual, "by_hour": {"01": identified + manual}}
    env = Envelope(device=device, station=station, district=district, boot=1, seq=n, n=n,
                   wall_ms=local_ms(at), mono_ms=n, sent_ms=now, type="turnout",
                   historical=False, payload=payload)
    return env.topic, seal(env, KEYS[device]), now


DAY = [
    # s-0001: two voters by fingerprint, a no-match admitted by the commission, one at 23 h
    turnout("a-1", 1, "2026-12-06 07:10", 1),
    turnout("a-1", 2, "2026-12-06 07:40", 2),
    turnout("a-1", 3, "2026-12-06 08:05", 2, manual=1, not_identified=1),
    turnout("a-1", 4, "2026-12-06 23:05", 3, manual=1, refused=1, not_identified=1),
    # s-0002: record 2 never arrived; its voters count in the hour of record 3
    turnout("a-2", 1, "2026-12-06 09:30", 1),
    turnout("a-2", 3, "2026-12-06 10:15", 4),
    # s-0100: a test voter the evening before
    turnout("b-1", 1, "2026-12-05 19:30", 1),
    turnout("b-1", 2, "2026-12-06 07:05", 2),
]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder with registry.json (4 kiosks, c-9 never reports) and ops.sqlite with DAY."""
    for d, k in KEYS.items():
        register_device(tmp_path / "registry.json", d, PLACE[d][1], PLACE[d][0],
                        bytes(k.verify_key).hex())
    svc = OpsService("mqtt://127.0.0.1:1", tmp_path / "registry.json",
                     str(tmp_path / "ops.sqlite"))
    assert svc.process_messages(DAY) == ["accepted"] * len(DAY)
    svc.store.close()
    return tmp_path


# ------------------------------------------------------------------ refusals


def test_missing_store_is_refused_not_created(tmp_path: Path) -> None:
    for command in (["watch", "--once"], ["report", "--out", "rep"], ["serve"]):
        r = kesp_ops("--store", "ops.sqlte", *command, cwd=tmp_path)
        one_line_refusal(r, "ops.sqlte", "does not exist", "init")
    assert tree(tmp_path) == {}


def test_init_creates_once(tmp_path: Path) -> None:
    r = kesp_ops("--store", "ops.sqlite", "init", cwd=tmp_path)
    assert r.code == 0 and "created the ops store ops.sqlite" in r.out, r
    before = tree(tmp_path)
    r = kesp_ops("--store", "ops.sqlite", "init", cwd=tmp_path)
    assert r.code == 0 and "nothing changed" in r.out, r
    assert tree(tmp_path) == before
    r = kesp_ops("--store", "ops.sqlite", "watch", "--once", cwd=tmp_path)
    assert r.code == 0 and "kiosks 0/0 online" in r.out, r


def test_store_that_is_not_an_ops_store(tmp_path: Path) -> None:
    (tmp_path / "junk.sqlite").write_bytes(b"not a database" * 300)
    con = sqlite3.connect(tmp_path / "marks.sqlite")
    con.execute("CREATE TABLE marks (voter INTEGER)")
    con.commit()
    con.close()
    (tmp_path / "folder").mkdir()
    before = tree(tmp_path)
    one_line_refusal(kesp_ops("--store", "junk.sqlite", "watch", "--once", cwd=tmp_path),
                     "junk.sqlite", "--store")
    one_line_refusal(kesp_ops("--store", "marks.sqlite", "watch", "--once", cwd=tmp_path),
                     "marks.sqlite", "no kesp_* tables")
    one_line_refusal(kesp_ops("--store", "marks.sqlite", "init", cwd=tmp_path),
                     "marks.sqlite", "another program's database")
    one_line_refusal(kesp_ops("--store", "folder", "report", "--out", "r", cwd=tmp_path),
                     "folder", "directory")
    one_line_refusal(kesp_ops("--store", "marks.sqlite", "--prefix", "Bad-", "watch", "--once",
                              cwd=tmp_path), "'Bad-'", "--prefix")
    assert tree(tmp_path) == before


def test_registry_mistakes_are_refused(site: Path) -> None:
    (site / "binary.json").write_bytes(bytes(range(256)))
    (site / "other.json").write_text('{"voters": []}')
    before = tree(site)
    store = ("--store", "ops.sqlite")
    one_line_refusal(kesp_ops(*store, "watch", "--once", "--registry", "registy.json",
                              cwd=site), "registy.json", "not found")
    one_line_refusal(kesp_ops(*store, "watch", "--once", "--registry", "binary.json",
                              cwd=site), "binary.json", "not a device registry")
    one_line_refusal(kesp_ops(*store, "serve", "--registry", "other.json", cwd=site),
                     "other.json", "kesp-device-registry")
    one_line_refusal(kesp_ops(*store, "watch", "--once", "--broker", "mqtt://127.0.0.1:1",
                              cwd=site), "--broker needs --registry")
    one_line_refusal(kesp_ops(*store, "watch", "--once", "--registry", "registry.json",
                              "--broker", "http://x:1", cwd=site), "http://x:1", "--broker")
    one_line_refusal(kesp_ops(*store, "watch", "--once", "--registry", "registry.json",
                              "--broker", "mqtt://127.0.0.1:1", "--password-file", "ops.pas",
                              cwd=site), "ops.pas", "--password-file")
    assert tree(site) == before


def test_registered_kiosks_that_never_reported_are_listed(site: Path) -> None:
    r = kesp_ops("--store", "ops.sqlite", "--timezone", "Asia/Bishkek", "watch", "--once",
                 "--registry", "registry.json", cwd=site)
    assert r.code == 0, r
    assert "kiosks 0/4 online, 0 silent, 3 offline, 1 never_reported" in r.out
    assert any(line.split()[:2] == ["never_reported", "c-9"] for line in r.out.splitlines()), \
        r.out
    assert "+06" in r.out.splitlines()[0]  # the clock in Bishkek time
    r = kesp_ops("--store", "ops.sqlite", "watch", "--once", cwd=site)
    assert "kiosks 0/3 online" in r.out and "--registry" in r.out
    assert "c-9" not in r.out  # without the registry ops cannot know it


def test_unreachable_broker_is_one_line_and_an_alert(site: Path) -> None:
    before = tree(site)
    port = free_port()  # nothing listens there
    r = kesp_ops("--store", "ops.sqlite", "watch", "--once", "--registry", "registry.json",
                 "--broker", f"mqtt://127.0.0.1:{port}", "--connect-timeout", "1", cwd=site)
    one_line_refusal(r, f"mqtt://127.0.0.1:{port}", "connection refused", "--broker")
    assert "Socket" not in r.err and "MQTT_CS" not in r.err  # no raw paho lines
    alert = next(line for line in r.out.splitlines() if line.strip().startswith("broker "))
    assert "connection refused" in alert
    assert "s-0001" in r.out  # what the store holds is still shown
    assert tree(site) == before


def test_serve_with_an_unreachable_broker_says_it_once(site: Path) -> None:
    port, broker_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "--store", "ops.sqlite", "serve", "--port",
         str(port), "--registry", "registry.json", "--broker", f"mqtt://127.0.0.1:{broker_port}"],
        cwd=site, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def metrics() -> list[str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
                    return str(r.read().decode()).splitlines()
            except OSError:
                return []

        deadline = time.monotonic() + 15
        while "kesp_ops_broker_connected 0" not in metrics() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "kesp_ops_broker_connected 0" in metrics()
        time.sleep(3)  # paho retries every second meanwhile
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    # one line for the outage, not one per retry, and no raw paho lines
    assert err.splitlines() == [f"kesp-ops: broker mqtt://127.0.0.1:{broker_port}: connection "
                                "refused: is the broker running there? (check --broker); "
                                "retrying (kiosks keep their data meanwhile)"], err


def test_serve_on_a_port_in_use(site: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = kesp_ops("--store", "ops.sqlite", "serve", "--port", port, cwd=site)
    one_line_refusal(r, f"port {port}", "already in use", "--port")


def test_report_options_refused(site: Path) -> None:
    before = tree(site)
    one_line_refusal(kesp_ops("--store", "ops.sqlite", "--timezone", "Asia/Bishkec", "report",
                              "--out", "rep", cwd=site), "'Asia/Bishkec'", "IANA")
    one_line_refusal(kesp_ops("--store", "ops.sqlite", "report", "--out", "rep", "--day",
                              "6.12.2026", cwd=site), "--day", "2026-12-06")
    (site / "afile").write_text("x")
    before = tree(site)
    one_line_refusal(kesp_ops("--store", "ops.sqlite", "report", "--out", "afile", cwd=site),
                     "afile", "folder")
    assert tree(site) == before


def test_help_texts_describe_every_command_and_option(tmp_path: Path) -> None:
    parser = _parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(subs.choices) == ["init", "publish", "report", "serve", "watch"]
    assert all(choice.help for choice in subs._choices_actions)
    for p in (parser, *subs.choices.values()):
        assert p.description, p.prog
        for action in p._actions:
            assert action.help, (p.prog, action.dest)
    top = kesp_ops("--help", cwd=tmp_path)
    assert top.code == 0 and "exit codes" in top.out and "init" in top.out
    for command in subs.choices:
        text = kesp_ops("--store", "x", command, "--help", cwd=tmp_path).out
        assert text.startswith("usage: kesp-ops") and "``" not in text and ":class:" not in text


# ------------------------------------------------------------------ the report


def read_csv(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((folder / "turnout.csv").read_text())))


def test_report_hours_are_local_and_totals_agree(site: Path) -> None:
    r = kesp_ops("--store", "ops.sqlite", "report", "--out", "rep", cwd=site)
    assert r.code == 0, r
    assert "2026-12-06, 07:00-24:00 Asia/Bishkek" in r.out
    assert "10 admitted (9 by fingerprint, 1 manually), 1 refused, 1 not identified" in r.out
    rows = read_csv(site / "rep")
    table = [(x["station"], x["local_hour"], x["identified"], x["manual"], x["admitted"],
              x["cumulative_admitted"], x["refused"], x["not_identified"]) for x in rows]
    assert table == [
        ("s-0100", "2026-12-05 19:00+06:00", "1", "0", "1", "1", "0", "0"),
        ("s-0100", "2026-12-06 07:00+06:00", "1", "0", "1", "2", "0", "0"),
        ("s-0100", "total", "2", "0", "2", "2", "0", "0"),
        ("all", "total", "2", "0", "2", "2", "0", "0"),
        ("s-0001", "2026-12-06 07:00+06:00", "2", "0", "2", "2", "0", "0"),
        ("s-0001", "2026-12-06 08:00+06:00", "0", "1", "1", "3", "0", "1"),
        ("s-0001", "2026-12-06 23:00+06:00", "1", "0", "1", "4", "1", "0"),
        ("s-0001", "total", "3", "1", "4", "4", "1", "1"),
        ("s-0002", "2026-12-06 09:00+06:00", "1", "0", "1", "1", "0", "0"),
        ("s-0002", "2026-12-06 10:00+06:00", "3", "0", "3", "4", "0", "0"),
        ("s-0002", "total", "4", "0", "4", "4", "0", "0"),
        ("all", "total", "7", "1", "8", "8", "1", "1"),
        ("all", "total", "9", "1", "10", "10", "1", "1"),
    ]
    assert [x["district"] for x in rows][-1] == "all"
    # every total row is the sum of the rows it covers, for every column
    columns = ("identified", "manual", "admitted", "refused", "not_identified")
    hours = [x for x in rows if x["local_hour"] != "total"]
    for total in (x for x in rows if x["local_hour"] == "total"):
        covered = [x for x in hours if total["district"] in ("all", x["district"])
                   and total["station"] in ("all", x["station"])]
        for c in columns:
            assert int(total[c]) == sum(int(x[c]) for x in covered), (total, c)
        assert int(total["admitted"]) == int(total["identified"]) + int(total["manual"])
    # ... and agrees with the latest cumulative record of each kiosk
    store = open_store(str(site / "ops.sqlite"))
    latest = store.turnout()
    store.close()
    assert latest.by_station["s-0001"].identified + latest.by_station["s-0001"].manual == 4


def test_report_in_another_zone(site: Path) -> None:
    r = kesp_ops("--store", "ops.sqlite", "--timezone", "UTC", "report", "--out", "rep",
                 cwd=site)
    assert r.code == 0, r
    hours = [x["local_hour"] for x in read_csv(site / "rep") if x["station"] == "s-0001"]
    assert hours == ["2026-12-06 01:00+00:00", "2026-12-06 02:00+00:00",
                     "2026-12-06 17:00+00:00", "total"]


def test_chart_shows_the_whole_day_and_the_23h_votes(site: Path) -> None:
    store = open_store(str(site / "ops.sqlite"))
    report = build_report(store.turnout_history(), BISHKEK)
    assert disagreements(report, store.turnout()) == []
    store.close()
    png, chart = report_png(report, now=dt.datetime(2026, 12, 7, 9, 0, tzinfo=BISHKEK))
    assert chart.day == dt.date(2026, 12, 6)
    assert [h.hour for h in chart.hours] == list(range(7, 24))
    assert dict(chart.admitted_by_district) == {"bishkek": 2, "osh-city": 8}
    assert chart.on_other_days == 1
    with Image.open(io.BytesIO(png)) as img:
        rgb = img.convert("RGB")
        width, height = rgb.size
        orange = (255, 127, 14)  # osh-city, the second district
        # the bar of the last hour (23:00-24:00) sits in the rightmost hour column
        # of the plot, below the middle of the image
        column = [(x, y) for x in range(width - 300, width - 262)
                  for y in range(height // 2, height - 60)]
        assert any(rgb.getpixel(p) == orange for p in column)
    # another day: the previous evening's vote, the later ones noted as not shown
    _, other = report_png(report, day=dt.date(2026, 12, 5))
    assert [h.hour for h in other.hours] == list(range(7, 20))
    assert dict(other.admitted_by_district) == {"bishkek": 1, "osh-city": 0}
    assert other.on_other_days == 9


def test_disagreeing_store_is_reported() -> None:
    report = build_report([], BISHKEK)
    latest = TurnoutSummary({}, {"s-1": TurnoutCounts(identified=3)}, {}, {"s-1": "d"})
    assert disagreements(report, latest) == [
        f"station s-1: hours add up to {Counts()}, latest record {Counts(identified=3)}"]


def test_chart_of_many_districts_groups_the_smallest() -> None:
    records = [TurnoutRecord(f"k-{i}", f"s-{i}", f"d-{i:02d}", 1,
                             local_ms("2026-12-06 09:30"), i + 1, 0, 0, 0) for i in range(14)]
    report = build_report(records, BISHKEK)
    _, chart = report_png(report, now=dt.datetime(2026, 12, 6, 21, 0, tzinfo=BISHKEK))
    shown = dict(chart.admitted_by_district)
    assert len(shown) == 10
    assert shown.pop("other 5 districts") == 1 + 2 + 3 + 4 + 5  # the five smallest
    assert shown == {f"d-{i:02d}": i + 1 for i in range(5, 14)}


def test_report_from_postgresql_matches_sqlite(site: Path) -> None:
    """The slot query is plain SQL: both back ends give the same report."""
    import uuid

    import psycopg

    url = "postgresql://postgres@127.0.0.1:5432/test"
    try:
        with psycopg.connect(url, connect_timeout=3):
            pass
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL not reachable at {url}: {exc}")
    prefix = f"r{uuid.uuid4().hex[:10]}_"
    store = open_store(url, prefix=prefix, create=True)
    try:
        svc = OpsService("mqtt://127.0.0.1:1", site / "registry.json", store)
        assert svc.process_messages(DAY) == ["accepted"] * len(DAY)
        r = kesp_ops("--store", url, "--prefix", prefix, "report", "--out", "pg", cwd=site)
        assert r.code == 0, r
        assert kesp_ops("--store", "ops.sqlite", "report", "--out", "lite", cwd=site).code == 0
        assert (site / "pg" / "turnout.csv").read_text() == \
            (site / "lite" / "turnout.csv").read_text()
    finally:
        store.drop()  # type: ignore[attr-defined]
        store.close()
