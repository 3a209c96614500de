"""Synthetic voters and ISO 19794-2:2005 templates for tests and the national benchmark.

The templates are structurally valid finger minutiae records (header, one
view, 6-byte minutiae, no extended data) with random but plausible minutiae;
they are not fingerprints of anyone and carry no matching meaning. Generation
is seeded so a benchmark run is reproducible.
"""

from __future__ import annotations

import struct

import numpy as np

from agent.rollpackage import Finger, Voter

_ISO_HEADER = struct.Struct(">4s4sIHHHHHBB")
_VIEW = struct.Struct(">BBBB")
WIDTH = 300
HEIGHT = 400
PX_PER_CM = 197


def iso_template(position: int, minutiae: np.ndarray, quality: int = 60) -> bytes:
    """An ISO 19794-2:2005 record for one view.

    ``minutiae`` is an (n, 4) uint16 array of x, y, angle (0-255), type (0-2).
    """
    n = int(minutiae.shape[0])
    total = _ISO_HEADER.size + _VIEW.size + 6 * n + 2
    rec = np.empty((n, 6), dtype=np.uint8)
    xt = (minutiae[:, 3].astype(np.uint16) << 14) | minutiae[:, 0]
    rec[:, 0] = xt >> 8
    rec[:, 1] = xt & 0xFF
    rec[:, 2] = minutiae[:, 1] >> 8
    rec[:, 3] = minutiae[:, 1] & 0xFF
    rec[:, 4] = minutiae[:, 2]
    rec[:, 5] = 50
    return b"".join(
        (
            _ISO_HEADER.pack(
                b"FMR\x00", b" 20\x00", total, 0, WIDTH, HEIGHT, PX_PER_CM, PX_PER_CM, 1, 0
            ),
            _VIEW.pack(position, 0, quality, n),
            rec.tobytes(),
            b"\x00\x00",
        )
    )


def synthetic_voters(
    count: int, *, seed: int, first_number: int = 1, fingers: int = 10
) -> tuple[Voter, ...]:
    """``count`` voters with list numbers from ``first_number`` and ``fingers`` templates each."""
    rng = np.random.default_rng(seed)
    n_min = rng.integers(25, 55, size=(count, fingers))
    pool = rng.integers(0, 1 << 16, size=(int(n_min.sum()), 4), dtype=np.uint16)
    pool[:, 0] %= WIDTH
    pool[:, 1] %= HEIGHT
    pool[:, 2] &= 0xFF
    pool[:, 3] = pool[:, 3] % 2 + 1
    voters: list[Voter] = []
    at = 0
    for i in range(count):
        number = first_number + i
        prints: list[Finger] = []
        for f in range(fingers):
            k = int(n_min[i, f])
            prints.append(Finger(f + 1, iso_template(f + 1, pool[at : at + k])))
            at += k
        voters.append(
            Voter(
                list_number=number,
                name_ky=f"Сүйүнбаев Өмүрбек Ңурланович {number}",
                name_ru=f"Суйунбаев Омурбек Нурланович {number}",
                document=f"ID{seed % 1000:03d}{number:07d}",
                fingers=tuple(prints),
            )
        )
    return tuple(voters)
