"""Mutations of minutiae-template records, for fuzzing the template codecs.

Shared by the fuzz benchmark (``python -m benchmarks fuzz``, 1,000,000
mutations) and the fast fuzz slice in the codec tests, so both throw the same
kinds of damage at ``load_template``: truncations, bit flips, random bytes,
length fields lying, huge counts, inserted and deleted runs, garbage behind a
valid magic.
"""

from __future__ import annotations

import random

# Offsets of length/count fields worth lying about (2005/ANSI and 2011 layouts).
_LENGTH_FIELDS = (8, 10, 12, 14, 15, 22, 27, 28)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One random structural or bit-level mutation of ``data``."""
    b = bytearray(data)
    kind = rng.randrange(8)
    if kind == 0 and b:  # truncation
        return bytes(b[: rng.randrange(len(b))])
    if kind == 1 and b:  # bit flips
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == 2 and b:  # random bytes
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == 3:  # length lie in a 16- or 32-bit field
        at = rng.choice(_LENGTH_FIELDS)
        width = rng.choice((2, 4))
        if at + width <= len(b):
            value = rng.choice((0, 1, len(b) - 1, len(b) + 1, 2 ** (8 * width) - 1,
                                rng.randrange(2 ** (8 * width))))
            b[at : at + width] = value.to_bytes(width, "big")
        return bytes(b)
    if kind == 4 and len(b) > 28:  # huge counts (views, minutiae, blocks)
        b[rng.choice((22, 27, 28, 26, 19))] = 255
        return bytes(b)
    if kind == 5:  # insertion
        i = rng.randrange(len(b) + 1)
        return bytes(b[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + b[i:])
    if kind == 6 and b:  # deletion
        i = rng.randrange(len(b))
        return bytes(b[:i] + b[i + rng.randint(1, 16) :])
    # random garbage with a valid magic
    return b"FMR\x00" + bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
