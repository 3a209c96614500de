"""Mutations of binary records, for fuzzing the codecs that read them.

Shared by the fuzz benchmark (``python -m benchmarks fuzz``, 1,000,000
mutations) and the fast fuzz slice in the codec tests, so both throw the same
kinds of damage at ``load_template``: truncations, bit flips, random bytes,
length fields lying, huge counts, inserted and deleted runs, garbage behind a
valid magic. The defaults are the minutiae-template layouts; another format
names its own length and count offsets and magic (:func:`mutate_peer_hello`
for the station peer protocol's HELLO frame).
"""

from __future__ import annotations

import random

# Offsets of length/count fields worth lying about (2005/ANSI and 2011 layouts).
_LENGTH_FIELDS = (8, 10, 12, 14, 15, 22, 27, 28)
# One-byte counts set to 255 (views, minutiae, blocks).
_COUNT_FIELDS = (22, 27, 28, 26, 19)

def mutate(rng: random.Random, data: bytes, *,
           length_fields: tuple[int, ...] = _LENGTH_FIELDS,
           count_fields: tuple[int, ...] = _COUNT_FIELDS,
           magic: bytes = b"FMR\x00") -> bytes:
    """One random structural or bit-level mutation of ``data``.

    ``length_fields`` are offsets where a 16- or 32-bit length may lie,
    ``count_fields`` offsets of one-byte counts set to 255, ``magic`` what the
    garbage case starts with.
    """
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
        at = rng.choice(length_fields)
        width = rng.choice((2, 4))
        if at + width <= len(b):
            value = rng.choice((0, 1, len(b) - 1, len(b) + 1, 2 ** (8 * width) - 1,
                                rng.randrange(2 ** (8 * width))))
            b[at : at + width] = value.to_bytes(width, "big")
        return bytes(b)
    if kind == 4 and len(b) > max(count_fields):  # huge counts (views, minutiae, blocks)
        b[rng.choice(count_fields)] = 255
        return bytes(b)
    if kind == 5:  # insertion
        i = rng.randrange(len(b) + 1)
        return bytes(b[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + b[i:])
    if kind == 6 and b:  # deletion
        i = rng.randrange(len(b))
        return bytes(b[:i] + b[i + rng.randint(1, 16) :])
    # random garbage with a valid magic
    return magic + bytes(rng.randrange(256) for _ in range(rng.randrange(64)))


def mutate_peer_hello(rng: random.Random, data: bytes) -> bytes:
    """:func:`mutate` for a peer HELLO frame of station "st-1" from "kiosk-1"
    (agent/peers/wire.py): lies in the body length and the two str8 lengths;
    as "counts" the protocol version and frame type bytes too."""
    return mutate(rng, data, length_fields=(4, 8, 13), count_fields=(2, 3, 8, 13), magic=b"KP")
