"""``cec build --stations``: the names commissions read on slips, from file to paper.

Good and bad stations files through the real command line (one refusal line,
exit 1, nothing written), what the packages and the manifest then hold, and a
kiosk provisioned by ``kesp-provision`` whose real agent prints the names on
its zero report, a slip and its closing report.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_helpers import Run, one_line_refusal, tree
from kiosk_helpers import ME, MakeKiosk, Result, fvc_templates, kp, ok, write_csv

from agent.drivers.printer.profiles import SIMULATOR_DEFAULT_PROFILE
from agent.roll.package import NAME_MAX_BYTES, open_package, peek_header
from agent.runtime.control import ControlError, request
from agent.runtime.keys import load_keys
from hardware_sim.escpos_sim import EscposPrinterSimulator
from hardware_sim.grow_sim import GrowSensorSimulator
from hardware_sim.rig import wait_until
from provisioning.keyfiles import read_public_key

VOTERS_HEADER = "station_id,list_number,name_ky,name_ru,document"
HEADER = "station_id,district,station_name,district_name"
OSH = ('s-1017,osh-city,"Ош ш., 5-мектеп / г. Ош, школа № 5",Ош шаары / город Ош')
NARYN = "s-2001,naryn,Нарын ш. 2-мектеп / г. Нарын школа № 2,Нарын облусу / Нарынская область"


@dataclass(frozen=True)
class Site:
    """Two registered stations (s-1017 in osh-city, s-2001 in naryn), two voters each."""

    tmp: Path
    cec: Path
    registry: Path
    voters: Path
    templates: Path

    def stations(self, text: str | bytes) -> Path:
        """Write the stations file."""
        path = self.tmp / "stations.csv"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return path

    def build(self, stations: str | bytes | None, *extra: str | Path) -> tuple[Result, Path]:
        """``cec build`` with ``stations`` as the stations file (None: no --stations)."""
        out = self.tmp / "out" / "v1"
        argv: list[str | Path] = []
        if stations is not None:
            argv = ["--stations", self.stations(stations)]
        r = kp("cec", "build", "--key", self.cec / "cec.sign", "--voters", self.voters,
               "--templates", self.templates, "--registry", self.registry, "--election",
               "pres-2026", "--roll-version", "1", "--created", "2026-11-27T05:00:00Z",
               "--out-dir", out, "--jobs", "1", *argv, *extra)
        return r, out


@pytest.fixture
def site(tmp_path: Path, make_kiosk: MakeKiosk, cec: Path, registry: Path) -> Site:
    make_kiosk("kiosk-a")
    make_kiosk("kiosk-c", station="s-2001", district="naryn")
    tpl = tmp_path / "templates"
    rows = fvc_templates(tpl, 4)
    voters = write_csv(tmp_path / "voters.csv", VOTERS_HEADER,
                       [("s-1017" if i < 2 else "s-2001", *r) for i, r in enumerate(rows)])
    return Site(tmp_path, cec, registry, voters, tpl)


def refused(r: Result, *words: str) -> str:
    return one_line_refusal(Run(r.code, r.out, r.err), *words)


def manifest(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((out / "manifest.csv").read_text())))


def test_names_reach_the_packages_the_manifest_and_verify(site: Site) -> None:
    # a national file: the line of a station not built here is accepted and unused
    r, out = site.build("\ufeff" + "\r\n".join((HEADER, OSH, NARYN,
                                                 "s-3003,batken,Баткен / Баткен,Баткен")))
    assert r.code == 0, r
    assert "s-1017 (Ош ш., 5-мектеп / г. Ош, школа № 5): 2 voters" in r.out
    assert "no --stations" not in r.out
    rows = {m["station_id"]: m for m in manifest(out)}
    assert set(rows) == {"s-1017", "s-2001"}
    assert rows["s-1017"]["station_name"] == "Ош ш., 5-мектеп / г. Ош, школа № 5"
    assert rows["s-2001"]["district_name"] == "Нарын облусу / Нарынская область"
    assert (out / "manifest.csv").read_text().splitlines()[1].rsplit(",", 1)[1] == \
        rows["s-1017"]["sha256"]  # still the last column, as people read it
    header = peek_header((out / "s-2001.pkg").read_bytes())
    assert header.format_version == 2 and header.district == "naryn"
    assert header.station_name == "Нарын ш. 2-мектеп / г. Нарын школа № 2"
    box = load_keys(site.tmp / "kiosk-a" / "etc" / "keys").box
    roll = open_package((out / "s-1017.pkg").read_bytes(),
                        read_public_key(site.cec / "cec.pub", "cec"), box)
    assert (roll.station_name, roll.district_name) == (
        "Ош ш., 5-мектеп / г. Ош, школа № 5", "Ош шаары / город Ош")
    r = ok("cec", "verify", out / "s-1017.pkg", "--cec-key", site.cec / "cec.pub")
    assert "station s-1017 (osh-city) named 'Ош ш., 5-мектеп / г. Ош, школа № 5' in " \
           "'Ош шаары / город Ош'" in r.out


def test_without_stations_the_packages_stay_nameless(site: Site) -> None:
    help_text = " ".join(kp("cec", "build", "--help").out.split())
    assert "Without it the packages carry no names and slips show the station and district " \
           "ids" in help_text
    r, out = site.build(None)
    assert r.code == 0, r
    assert "no --stations file" in r.out and "show their ids" in r.out
    assert peek_header((out / "s-1017.pkg").read_bytes()).format_version == 1
    assert {(m["station_name"], m["district_name"]) for m in manifest(out)} == {("", "")}
    r = ok("cec", "verify", out / "s-1017.pkg", "--cec-key", site.cec / "cec.pub")
    assert "(osh-city) (no names)" in r.out


def test_longest_name_a_package_holds_is_accepted(site: Site) -> None:
    longest = "Ш" * (NAME_MAX_BYTES // 2) + "."  # 127 two-byte letters and a dot: 255 bytes
    r, out = site.build("\n".join((HEADER, f"s-1017,osh-city,{longest},Ош шаары",
                                   NARYN)))
    assert r.code == 0, r
    assert peek_header((out / "s-1017.pkg").read_bytes()).station_name == longest


def test_a_station_with_voters_but_no_line_is_named_with_the_fix(site: Site) -> None:
    r, _ = site.build("\n".join((HEADER, OSH)))
    refused(r, "stations.csv", "no line for station s-2001", "voters.csv",
            "add 's-2001,naryn,<station name>,<district name>'")
    assert not (site.tmp / "out").exists()


TOO_LONG = "Ш" * (NAME_MAX_BYTES // 2 + 1)  # 128 letters, 256 bytes


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (HEADER.rsplit(",", 1)[0] + "\ns-1017,osh-city,Ош\n",
         ("missing column(s) district_name", "the header is " + HEADER)),
        (HEADER + ",colour\n" + OSH + ",red\n", ("unknown column(s) colour",)),
        (HEADER + "\n", ("no stations", "one line per station")),
        (HEADER + "\ns-1017,osh-city,Ош\n", ("stations.csv:2", "wrong number of fields")),
        (HEADER + "\n" + OSH + "\n" + NARYN + "\n" + OSH + "\n",
         ("stations.csv:4", "station s-1017 is listed again", "line 2",
          "one line per station")),
        (HEADER + "\n" + OSH.replace(",osh-city,", ",naryn,").replace(
            "Ош шаары / город Ош", "Нарын облусу / Нарынская область") + "\n" + NARYN + "\n",
         ("stations.csv:2", "station s-1017 is in district osh-city in the device registry",
          "not naryn", "correct the district column")),
        (HEADER + "\n" + NARYN + "\ns-1017,osh-city,,Ош шаары\n",
         ("stations.csv:3", "station_name is empty", "as the slips are to print it")),
        (HEADER + "\n" + NARYN + "\ns-1017,osh-city,Ош,  \n",
         ("stations.csv:3", "district_name is empty")),
        (HEADER + f"\ns-1017,osh-city,{TOO_LONG},Ош\n" + NARYN + "\n",
         ("stations.csv:2", "station_name is 128 letters (256 bytes of UTF-8)",
          f"the {NAME_MAX_BYTES} bytes", "shorten it")),
        (HEADER + '\ns-1017,osh-city,"Ош ш.\n5-мектеп",Ош\n' + NARYN + "\n",
         ("stations.csv:3", "station_name", "U+000A", "retype the name on one line")),
        (HEADER + "\ns-1017,osh-city,Ош\tш.,Ош\n", ("stations.csv:2", "U+0009")),
        (HEADER + "\nS 1017,osh-city,Ош,Ош\n",
         ("stations.csv:2", "station_id 'S 1017' is not an id", "as the kiosks are registered")),
        (HEADER + "\ns-1017,Osh City,Ош,Ош\n", ("stations.csv:2", "district 'Osh City'")),
        (HEADER + "\ns-1017,osh-city,Ош,Ош шаары\ns-1018,osh-city,Ош 2,Ош ш.\n",
         ("stations.csv:3", "district osh-city is named 'Ош ш.' here but 'Ош шаары' on "
          "line 2", "give a district one name")),
        (HEADER + "\ns-1017,osh-city,? ш. 5-мектеп,Ош\n",
         ("stations.csv:2", "station_name", "'?'", "ң ө ү", "CSV UTF-8")),
    ],
)
def test_bad_stations_file_is_one_line_and_writes_nothing(site: Site, text: str,
                                                          words: tuple[str, ...]) -> None:
    site.stations(text)
    before = tree(site.tmp)
    r, _ = site.build(text)
    refused(r, *words)
    assert tree(site.tmp) == before
    assert not (site.tmp / "out").exists()


def test_stations_file_encoding_as_the_voters_list(site: Site) -> None:
    russian = "\r\n".join((HEADER, "s-1017,osh-city,г. Ош школа № 5,город Ош",
                           "s-2001,naryn,г. Нарын школа № 2,Нарынская область")) + "\r\n"
    r, _ = site.build(russian.encode("cp1251"))
    refused(r, "stations.csv:2", "column 17", "Windows-1251", "CSV UTF-8")
    kyrgyz = "\r\n".join((HEADER, "s-1017,osh-city,Өзгөн ш. 5-мектеп,Ош облусу",
                          "s-2001,naryn,Нарын ш. 2-мектеп,Нарын облусу")) + "\r\n"
    r, _ = site.build(kyrgyz.encode("cp1251", errors="replace"), "--encoding", "cp1251")
    refused(r, "stations.csv:2", "'?'", "ң ө ү")
    r, _ = site.build(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    refused(r, "stations.csv:1", "CSV UTF-8")
    r, _ = site.build((HEADER + "\n" + OSH.replace("Ош ш.", '"Ош ш.')).encode())
    refused(r, "stations.csv:2", "wrong number of fields")
    assert not (site.tmp / "out").exists()
    r = kp("cec", "build", "--key", site.cec / "cec.sign", "--voters", site.voters,
           "--templates", site.templates, "--registry", site.registry, "--election", "e-1",
           "--roll-version", "1", "--out-dir", site.tmp / "out", "--stations",
           site.tmp / "missing.csv")
    refused(r, "cannot read stations file", "missing.csv")
    r, out = site.build(russian.encode("cp1251"), "--encoding", "cp1251")
    assert r.code == 0, r
    assert peek_header((out / "s-1017.pkg").read_bytes()).station_name == "г. Ош школа № 5"


def test_cp1251_voters_list_still_refused_by_the_shared_reader(site: Site) -> None:
    """The voters list is read by the same code: its refusals did not change."""
    site.voters.write_bytes((VOTERS_HEADER + "\n1,Асан,Асан,ID1000\n").encode("cp1251"))
    r, _ = site.build("\n".join((HEADER, OSH, NARYN)))
    refused(r, "voters.csv:2", "column 3", "Windows-1251")


# ------------------------------------------------------------------ on paper


def _agent(config: Path) -> subprocess.Popen[bytes]:
    log = (config.parent / "agent.log").open("ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "agent.runtime.cli", "--config",
                                 str(config), "run"], stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    finally:
        log.close()


def _one_line(text: str) -> str:
    """The printed text with the printer's line wraps undone."""
    return " ".join(text.split())


def test_installed_named_roll_prints_the_names_on_slips_and_reports(
    tmp_path: Path, make_kiosk: MakeKiosk, cec: Path, registry: Path
) -> None:
    """Provisioned only through kesp-provision; the real agent prints on the simulator."""
    sensor = GrowSensorSimulator("normal", link=tmp_path / "sensor.tty").start()
    (tmp_path / "paper").mkdir()
    printer = EscposPrinterSimulator(tmp_path / "paper").start()
    agent: subprocess.Popen[bytes] | None = None
    try:
        sock = tmp_path / "agent.sock"
        settings = tmp_path / "settings.json"
        settings.write_text(json.dumps({
            "sensor": {"kind": "grow-serial", "port": str(sensor.path)},
            "printer": {"kind": "escpos-serial", "port": str(printer.path),
                        "profile": SIMULATOR_DEFAULT_PROFILE},
            "control_socket": str(sock),
        }))
        kiosk = make_kiosk("kiosk-a", extra=("--settings", str(settings)))
        tpl = tmp_path / "templates"
        voters = write_csv(tmp_path / "voters.csv", VOTERS_HEADER,
                           [("s-1017", *r) for r in fvc_templates(tpl, 2)])
        stations = tmp_path / "stations.csv"
        stations.write_text(HEADER + "\n" + OSH + "\n", encoding="utf-8")
        ok("cec", "build", "--key", cec / "cec.sign", "--voters", voters, "--stations",
           stations, "--templates", tpl, "--registry", registry, "--election", "pres-2026",
           "--roll-version", "1", "--out-dir", tmp_path / "out", "--jobs", "1")
        ok("device", "install-roll", tmp_path / "out" / "s-1017.pkg", "--config-dir",
           kiosk.etc, "--user", ME)

        agent = _agent(kiosk.etc / "agent.json")

        def ready() -> bool:
            assert agent is not None and agent.poll() is None, (
                tmp_path / "kiosk-a" / "etc" / "agent.log").read_text()
            try:
                request(sock, "status", timeout_s=2)
            except ControlError:
                return False
            return True

        wait_until(ready, 600, "the agent to become ready")
        request(sock, "open")
        request(sock, "manual", "2")
        request(sock, "close")
        docs = printer.wait_for_documents(3, timeout=60)
        assert len(docs) == 3, [d.text for d in docs]
        for doc in docs:
            text = _one_line(doc.text)
            assert "Ош ш., 5-мектеп / г. Ош, школа № 5" in text, doc.text
            assert "Округ: Ош шаары / город Ош" in text, doc.text
        text = [_one_line(d.text) for d in docs]
        assert "НУЛЕВОЙ ОТЧЕТ" in text[0] and "ИТОГОВЫЙ ОТЧЕТ" in text[2]
        assert "ДОПУЩЕН ПО РЕШЕНИЮ КОМИССИИ" in text[1]
        # the ids stay on the reports, beside the names
        assert "Код участка: s-1017, osh-city" in text[2]
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(60)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait(10)
        sensor.stop()
        printer.stop()
