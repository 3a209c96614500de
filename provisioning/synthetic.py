"""Synthetic voters and ISO 19794-2:2005 templates for tests and the national benchmark.

The templates are structurally valid finger minutiae records (header, one
view, 6-byte minutiae, no extended data) with random but plausible minutiae;
they are not fingerprints of anyone and carry no matching meaning. Generation
is seeded so a benchmark run is reproducible.
"""

from __future__ import annotations

import struct

import numpy as np

from agent.roll.package import Finger, Voter

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


def synthetic_templates(
    count: int, rng: np.random.Generator, min_minutiae: int = 25, max_minutiae: int = 55
) -> list[bytes]:
    """``count`` ISO records with positions cycling 1..10, built in bulk with numpy.

    Bulk building matters at national scale: 36 million templates one by
    one would cost more than building the packages.
    """
    n = rng.integers(min_minutiae, max_minutiae, size=count)
    length = _ISO_HEADER.size + _VIEW.size + 6 * n + 2
    start = np.zeros(count, dtype=np.int64)
    np.cumsum(length[:-1], out=start[1:])
    buf = np.zeros(int(length.sum()), dtype=np.uint8)
    head = np.zeros((count, 28), dtype=np.uint8)
    head[:, 0:8] = np.frombuffer(b"FMR\x00 20\x00", dtype=np.uint8)
    head[:, 8:12] = length.astype(">u4").view(np.uint8).reshape(count, 4)
    head[:, 14:16] = np.frombuffer(struct.pack(">H", WIDTH), dtype=np.uint8)
    head[:, 16:18] = np.frombuffer(struct.pack(">H", HEIGHT), dtype=np.uint8)
    head[:, 18:22] = np.frombuffer(struct.pack(">HH", PX_PER_CM, PX_PER_CM), dtype=np.uint8)
    head[:, 22] = 1
    head[:, 24] = np.arange(count) % 10 + 1
    head[:, 26] = 60
    head[:, 27] = n
    buf[start[:, None] + np.arange(28)] = head
    total = int(n.sum())
    x = rng.integers(0, WIDTH, size=total, dtype=np.uint16)
    y = rng.integers(0, HEIGHT, size=total, dtype=np.uint16)
    kind = rng.integers(1, 3, size=total, dtype=np.uint16)
    xt = (kind << 14) | x
    rec = np.empty((total, 6), dtype=np.uint8)
    rec[:, 0] = xt >> 8
    rec[:, 1] = xt & 0xFF
    rec[:, 2] = y >> 8
    rec[:, 3] = y & 0xFF
    rec[:, 4] = rng.integers(0, 256, size=total, dtype=np.uint16)
    rec[:, 5] = 50
    first = np.zeros(count, dtype=np.int64)
    np.cumsum(n[:-1], out=first[1:])
    k = np.arange(total) - np.repeat(first, n)
    pos = np.repeat(start + 28, n) + 6 * k
    buf[pos[:, None] + np.arange(6)] = rec
    data = buf.tobytes()
    ends = start + length
    return [data[a:b] for a, b in zip(start.tolist(), ends.tolist(), strict=True)]


def synthetic_voters(
    count: int, *, seed: int, first_number: int = 1, fingers: int = 10
) -> tuple[Voter, ...]:
    """``count`` voters with list numbers from ``first_number`` and ``fingers`` templates each."""
    rng = np.random.default_rng(seed)
    templates = synthetic_templates(count * 10, rng)
    voters: list[Voter] = []
    for i in range(count):
        number = first_number + i
        base = 10 * i
        voters.append(
            Voter(
                list_number=number,
                name_ky=f"Сүйүнбаев Өмүрбек Ңурланович {number}",
                name_ru=f"Суйунбаев Омурбек Нурланович {number}",
                document=f"ID{seed % 1000:03d}{number:07d}",
                fingers=tuple(Finger(f + 1, templates[base + f]) for f in range(fingers)),
            )
        )
    return tuple(voters)
