"""Small shared primitives: box means via integral images, block grids, labelling."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from agent.jit import njit


def box_mean(img: NDArray[np.float32], radius: int) -> NDArray[np.float32]:
    """Mean over a (2r+1)^2 window around every pixel (edges replicated)."""
    k = 2 * radius + 1
    pad = np.pad(img.astype(np.float64), radius, mode="edge")
    c = np.zeros((pad.shape[0] + 1, pad.shape[1] + 1), np.float64)
    np.cumsum(np.cumsum(pad, axis=0), axis=1, out=c[1:, 1:])
    s = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return (s / (k * k)).astype(np.float32)


def block_grid(h: int, w: int, block: int) -> tuple[int, int]:
    """Number of block rows and columns covering an h x w image."""
    return (h + block - 1) // block, (w + block - 1) // block


def block_window_sum(img: NDArray[np.float32], block: int, window: int) -> NDArray[np.float32]:
    """Sum of ``img`` over a ``window`` square centred on every block's centre."""
    h, w = img.shape
    bh, bw = block_grid(h, w, block)
    half = window // 2
    pad = np.pad(img.astype(np.float64), ((half, half + block), (half, half + block)))
    c = np.zeros((pad.shape[0] + 1, pad.shape[1] + 1), np.float64)
    np.cumsum(np.cumsum(pad, axis=0), axis=1, out=c[1:, 1:])
    # Block (i, j) covers rows i*B .. i*B+B-1; its centre window starts at
    # i*B + B/2 - half in image coordinates, i.e. i*B + B/2 in padded ones.
    ys = np.arange(bh) * block + block // 2
    xs = np.arange(bw) * block + block // 2
    y0 = ys[:, None] - window // 2 + half
    x0 = xs[None, :] - window // 2 + half
    s = c[y0 + window, x0 + window] - c[y0, x0 + window] - c[y0 + window, x0] + c[y0, x0]
    return s.astype(np.float32)


@njit
def label_components(
    binary: NDArray[np.bool_], labels: NDArray[np.int32], stack: NDArray[np.int32], eight: bool
) -> NDArray[np.int64]:
    """Label connected components of ``binary`` in place; return their sizes.

    ``labels`` receives 1..n (0 = not set) and ``stack`` is scratch of size
    >= h*w*2. Component k has size ``sizes[k]`` (``sizes[0]`` unused).
    """
    h, w = binary.shape
    labels[:, :] = 0
    sizes = np.zeros(h * w + 1, np.int64)
    n = 0
    for sy in range(h):
        for sx in range(w):
            if not binary[sy, sx] or labels[sy, sx] != 0:
                continue
            n += 1
            labels[sy, sx] = n
            top = 0
            stack[0] = sy
            stack[1] = sx
            top = 1
            count = 0
            while top > 0:
                top -= 1
                y = stack[2 * top]
                x = stack[2 * top + 1]
                count += 1
                for dy in range(-1, 2):
                    for dx in range(-1, 2):
                        if dy == 0 and dx == 0:
                            continue
                        if not eight and dy != 0 and dx != 0:
                            continue
                        ny = y + dy
                        nx = x + dx
                        if 0 <= ny < h and 0 <= nx < w and binary[ny, nx] and labels[ny, nx] == 0:
                            labels[ny, nx] = n
                            stack[2 * top] = ny
                            stack[2 * top + 1] = nx
                            top += 1
            sizes[n] = count
    return sizes[: n + 1]


def remove_small(binary: NDArray[np.bool_], min_size: int, eight: bool) -> NDArray[np.bool_]:
    """Copy of ``binary`` without components smaller than ``min_size`` pixels."""
    labels = np.empty(binary.shape, np.int32)
    stack = np.empty(binary.size * 2 + 2, np.int32)
    sizes = label_components(binary, labels, stack, eight)
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]
