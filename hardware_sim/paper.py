"""``kesp-sim paper``: the commission's paper, rendered from the code for docs and tests.

Every kind of slip and report the kiosk prints, with long Kyrgyz and Russian
names and a station named in the roll, laid out by :mod:`agent.station.slips`,
encoded for a printer profile and printed by the ESC/POS simulator's engine;
the PNGs in docs/img are made by ``kesp-sim paper --out docs/img``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.drivers.printer.document import Document
from agent.drivers.printer.encoder import encode_document
from agent.drivers.printer.profiles import get_profile
from agent.station.slips import (
    Place,
    ReportFacts,
    VoterLine,
    closing_report,
    identified_slip,
    not_identified_slip,
    refused_slip,
    zero_report,
)
from hardware_sim.escpos_sim import PrinterEngine, Scenario
from hardware_sim.voters import DEMO_DISTRICT_NAME, DEMO_STATION_NAME

ZONE = ZoneInfo("Asia/Bishkek")
AT = dt.datetime(2026, 11, 29, 8, 41, 7, tzinfo=ZONE)
PLACE = Place("s-0001", "kiosk-0001-a", "osh-city", DEMO_STATION_NAME, DEMO_DISTRICT_NAME)
VOTER = VoterLine(17, "Абдыкадырова Айжаркын Төлөгөновна", "Абдыкадырова Айжаркын Тологоновна")


def sample_documents() -> dict[str, Document]:
    """One of each document the kiosk prints, named for its file."""
    facts = ReportFacts(
        station_id=PLACE.station_id, district=PLACE.district, kiosk=PLACE.kiosk,
        software_version="0.9.0", roll_hash="3f9a" * 16, roll_voters=40,
        audit_head="c0de" * 16, at=AT, zone="Asia/Bishkek",
        counts={"identified": 27, "manual": 1, "refused": 2, "not_identified": 1, "slips": 31,
                "duplicates": 1},
        first_serial="s-0001-kiosk-0001-a-00002", last_serial="s-0001-kiosk-0001-a-00032",
        peers=("kiosk-0001-b",), merged_voters=41,
        station_name=PLACE.station_name, district_name=PLACE.district_name,
    )
    serial = "s-0001-kiosk-0001-a-00017"
    return {
        "slip-identified": identified_slip(serial=serial, place=PLACE, voter=VOTER,
                                           method="identify-2f", at=AT),
        "slip-manual": identified_slip(serial=serial, place=PLACE, voter=VOTER,
                                       method="manual", at=AT),
        "slip-refused": refused_slip(serial=serial, place=PLACE, voter=VOTER,
                                     first_at=AT - dt.timedelta(hours=2, minutes=3),
                                     first_kiosk="kiosk-0001-b", at=AT),
        "slip-not-identified": not_identified_slip(serial=serial, place=PLACE, attempts=3,
                                                   at=AT),
        "report-zero": zero_report(serial="s-0001-kiosk-0001-a-00001",
                                   facts=facts),
        "report-closing": closing_report(serial="s-0001-kiosk-0001-a-00033", facts=facts),
    }


def render(doc: Document, profile: str, out: Path) -> Path:
    """Print ``doc`` on the simulated printer with ``profile``; the PNG is copied to ``out``."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = PrinterEngine(Path(tmp), get_profile(profile), Scenario("paper", "docs"))
        engine.receive(encode_document(doc, get_profile(profile)))
        [slip] = engine.slips
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(slip.png, out)
    return out


def cli_main(argv: list[str]) -> int:
    """``kesp-sim paper --out DIR [--profile NAME ...]``: write every sample as PNG."""
    ap = argparse.ArgumentParser(prog="kesp-sim paper",
                                 description="Render every slip and report as the printer "
                                             "would print it (PNG per document and profile).")
    ap.add_argument("--out", type=Path, default=Path("docs/img"), help="output directory")
    ap.add_argument("--profile", action="append",
                    help="printer profile (default: generic-58 and epson-tm-t20iii)")
    args = ap.parse_args(argv)
    for profile in args.profile or ["generic-58", "epson-tm-t20iii"]:
        width = "58mm" if get_profile(profile).dots_per_line <= 384 else "80mm"
        for name, doc in sample_documents().items():
            print(render(doc, profile, args.out / f"{name}-{width}.png"))
    return 0
