"""Thinning of the binary ridges to one-pixel-wide, 8-connected skeletons.

Guo-Hall's two-subiteration algorithm (keeps 2-pixel diagonal lines, unlike
Zhang-Suen), followed by a pass that removes the redundant corner pixels of
staircases so that every interior skeleton pixel has exactly two neighbours.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from agent.runtime.jit import njit


@njit
def _guo_hall(img: NDArray[np.uint8], marker: NDArray[np.uint8]) -> None:
    h, w = img.shape
    changed = True
    while changed:
        changed = False
        for it in range(2):
            marker[:, :] = 0
            for y in range(1, h - 1):
                for x in range(1, w - 1):
                    if img[y, x] == 0:
                        continue
                    p2 = img[y - 1, x]
                    p3 = img[y - 1, x + 1]
                    p4 = img[y, x + 1]
                    p5 = img[y + 1, x + 1]
                    p6 = img[y + 1, x]
                    p7 = img[y + 1, x - 1]
                    p8 = img[y, x - 1]
                    p9 = img[y - 1, x - 1]
                    c = (
                        ((p2 == 0) and (p3 != 0 or p4 != 0))
                        + ((p4 == 0) and (p5 != 0 or p6 != 0))
                        + ((p6 == 0) and (p7 != 0 or p8 != 0))
                        + ((p8 == 0) and (p9 != 0 or p2 != 0))
                    )
                    n1 = (
                        (p9 != 0 or p2 != 0)
                        + (p3 != 0 or p4 != 0)
                        + (p5 != 0 or p6 != 0)
                        + (p7 != 0 or p8 != 0)
                    )
                    n2 = (
                        (p2 != 0 or p3 != 0)
                        + (p4 != 0 or p5 != 0)
                        + (p6 != 0 or p7 != 0)
                        + (p8 != 0 or p9 != 0)
                    )
                    n = min(n1, n2)
                    if it == 0:
                        m = (p6 != 0 or p7 != 0 or p9 == 0) and (p8 != 0)
                    else:
                        m = (p2 != 0 or p3 != 0 or p5 == 0) and (p4 != 0)
                    if c == 1 and 2 <= n <= 3 and not m:
                        marker[y, x] = 1
            for y in range(1, h - 1):
                for x in range(1, w - 1):
                    if marker[y, x] != 0:
                        img[y, x] = 0
                        changed = True


@njit
def _remove_staircase(img: NDArray[np.uint8]) -> None:
    # A pixel is redundant when two of its 4-neighbours meeting at a corner
    # are set (they already touch diagonally) and deleting it keeps the
    # 8-connectivity of its neighbourhood (Yokoi connectivity number 1).
    h, w = img.shape
    for y in range(1, h - 1):
        for x in range(1, w - 1):
            if img[y, x] == 0:
                continue
            n = img[y - 1, x] != 0
            e = img[y, x + 1] != 0
            s = img[y + 1, x] != 0
            wv = img[y, x - 1] != 0
            if not ((n and e) or (e and s) or (s and wv) or (wv and n)):
                continue
            ring = (
                img[y, x + 1] != 0,
                img[y - 1, x + 1] != 0,
                img[y - 1, x] != 0,
                img[y - 1, x - 1] != 0,
                img[y, x - 1] != 0,
                img[y + 1, x - 1] != 0,
                img[y + 1, x] != 0,
                img[y + 1, x + 1] != 0,
            )
            c8 = 0
            for k in range(0, 8, 2):
                a = 1 - ring[k]
                b = 1 - ring[(k + 1) % 8]
                c = 1 - ring[(k + 2) % 8]
                c8 += a - a * b * c
            if c8 == 1:
                img[y, x] = 0


def thin(binary: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """One-pixel-wide skeleton of ``binary`` (the image border is left empty)."""
    img = np.zeros(binary.shape, np.uint8)
    img[1:-1, 1:-1] = binary[1:-1, 1:-1]
    marker = np.zeros_like(img)
    _guo_hall(img, marker)
    _remove_staircase(img)
    return img.astype(np.bool_)
