"""The simulated station's voters: a roll of 40 enrolled with real FVC2002 fingers.

The register's templates are the FVC2002 ISO records mapped back to their
images' true geometry (:func:`iso_bytes`); voters 1..34 are enrolled with a
real finger, the rest with synthetic templates, so FVC fingers 34..39 press
the sensor as strangers. Names are in Kyrgyz and Russian. Used by the rig
(:mod:`hardware_sim.rig`), the demo, the crash harness and the tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.match import STANDARD_DPI, Template, load_template, to_iso2005
from agent.roll.package import Finger, Kiosk, Roll, Voter
from hardware_sim.fingers import FVC_DPI

DBS = ("DB1_B", "DB2_B", "DB3_B", "DB4_B")

SURNAMES = (  # (Kyrgyz, Russian) spellings
    ("Асанов", "Асанов"), ("Үсөнбаев", "Усенбаев"), ("Төлөгөнов", "Тологонов"),
    ("Жээнбеков", "Жээнбеков"), ("Өмүрбеков", "Омурбеков"), ("Сыдыков", "Сыдыков"),
    ("Бөкөнбаев", "Боконбаев"), ("Мамытов", "Мамытов"), ("Түгөлбаев", "Тюгельбаев"),
    ("Керимбеков", "Керимбеков"),
)
MALE = (("Үмөт", "Умот"), ("Бакыт", "Бакыт"), ("Нурлан", "Нурлан"), ("Эрмек", "Эрмек"))
FEMALE = (("Гүлнара", "Гульнара"), ("Айгүл", "Айгуль"), ("Жаңыл", "Жаныл"),
          ("Бүбүсара", "Бюбюсара"))

N_VOTERS = 40
N_REAL = 34  # voters enrolled with a real FVC finger; FVC fingers 34..39 are strangers


def fvc_finger(index: int) -> tuple[str, int]:
    """FVC (set, finger id) of the ``index``-th of the 40 real fingers."""
    return DBS[index // 10], 101 + index % 10


FVC_SIZE = {"DB1_B": (388, 374), "DB2_B": (296, 560), "DB3_B": (300, 300), "DB4_B": (288, 384)}


def iso_bytes(data: Path, index: int, impression: int) -> bytes:
    """The register's ISO template of a real finger, as the register would hold it.

    The FVC2002 ISO files were extracted from images resized to 300 x 400
    ignoring their aspect ratio (see the data README). A real register's
    templates are in true geometry, so the demo's CEC maps each template back
    to its image's native geometry and resolution before enrolment: x by W/300,
    y by H/400, directions through the same anisotropic scale, then to 500 dpi.
    """
    db, finger = fvc_finger(index)
    raw = (data / "fvc2002" / db / f"{finger}_{impression}.iso").read_bytes()
    t = load_template(raw)
    width, height = FVC_SIZE[db]
    to_500 = STANDARD_DPI / FVC_DPI[db]
    sx, sy = width / 300 * to_500, height / 400 * to_500
    angle = np.arctan2(np.sin(t.angle) * sy, np.cos(t.angle) * sx)
    native = Template.from_arrays(
        t.x * sx, t.y * sy, angle, width=round(width * to_500), height=round(height * to_500),
        kind=t.kind, minutia_quality=t.minutia_quality, quality=t.quality,
        finger_position=t.finger_position,
    )
    return to_iso2005(native)


def synthetic_iso(rng: np.random.Generator) -> bytes:
    """An ISO 19794-2:2005 record with plausible random minutiae (voters who never come)."""
    from provisioning.synthetic import iso_template

    n = int(rng.integers(25, 45))
    minutiae = np.stack([rng.integers(20, 280, n), rng.integers(20, 380, n),
                         rng.integers(0, 256, n), rng.integers(1, 3, n)], axis=1)
    return iso_template(2, minutiae)


#: The demo station's and district's names, as the CEC writes them into the roll.
DEMO_STATION_NAME = "Ош ш., 5-мектеп / г. Ош, школа № 5"
DEMO_DISTRICT_NAME = "Ош шаары / город Ош"


def make_roll(data: Path, station: str, district: str, kiosks: tuple[Kiosk, ...],
              extra_voters: int = 0, enrolled: tuple[Voter, ...] = ()) -> Roll:
    """The demo station's roll: 40 voters, names in Kyrgyz and Russian.

    ``extra_voters`` synthetic voters with 10 synthetic fingers each follow
    (list numbers from 41), to load the gallery like the largest stations.
    """
    rng = np.random.default_rng(2026)
    voters = []
    for i in range(N_VOTERS):
        sur_ky, sur_ru = SURNAMES[i % len(SURNAMES)]
        female = i % 2 == 1
        first_ky, first_ru = (FEMALE if female else MALE)[(i // 2) % 4]
        suffix = "а" if female else ""
        fingers = (Finger(2, iso_bytes(data, i, 1)) if i < N_REAL
                   else Finger(2, synthetic_iso(rng)),)
        voters.append(Voter(
            list_number=i + 1,
            name_ky=f"{sur_ky}{suffix} {first_ky}",
            name_ru=f"{sur_ru}{suffix} {first_ru}",
            document=f"ID{1_000_000 + 7919 * (i + 1):07d}",
            fingers=fingers,
        ))
    voters.extend(enrolled)
    if extra_voters:
        from provisioning.synthetic import synthetic_voters

        voters.extend(synthetic_voters(extra_voters, seed=41,
                                       first_number=N_VOTERS + len(enrolled) + 1))
    return Roll(election_id="kg-2026-demo", station_id=station, district=district,
                roll_version=1, created="2026-11-27T06:00:00Z", kiosks=kiosks,
                voters=tuple(voters), station_name=DEMO_STATION_NAME,
                district_name=DEMO_DISTRICT_NAME)
