"""Small shared primitives: box means via integral images, block grids, labelling."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from agent.runtime.jit import njit


@njit
def _box_sum_rows(src: NDArray[np.float32], radius: int, out: NDArray[np.float64]) -> None:
    # Running sum along each row, edges replicated.
    h, w = src.shape
    for y in range(h):
        acc = 0.0
        for k in range(-radius, radius + 1):
            acc += src[y, min(max(k, 0), w - 1)]
        out[y, 0] = acc
        for x in range(1, w):
            acc += src[y, min(x + radius, w - 1)] - src[y, max(x - radius - 1, 0)]
            out[y, x] = acc


@njit
def _box_mean_2d(
    img: NDArray[np.float32], radius: int, mean: NDArray[np.float32], sq: NDArray[np.float32]
) -> None:
    h, w = img.shape
    rows = np.empty((h, w), np.float64)
    rows2 = np.empty((h, w), np.float64)
    img2 = img * img
    _box_sum_rows(img, radius, rows)
    _box_sum_rows(img2, radius, rows2)
    norm = 1.0 / ((2 * radius + 1) * (2 * radius + 1))
    for x in range(w):
        acc = 0.0
        acc2 = 0.0
        for k in range(-radius, radius + 1):
            yy = min(max(k, 0), h - 1)
            acc += rows[yy, x]
            acc2 += rows2[yy, x]
        mean[0, x] = acc * norm
        sq[0, x] = acc2 * norm
        for y in range(1, h):
            a = min(y + radius, h - 1)
            b = max(y - radius - 1, 0)
            acc += rows[a, x] - rows[b, x]
            acc2 += rows2[a, x] - rows2[b, x]
            mean[y, x] = acc * norm
            sq[y, x] = acc2 * norm


def box_moments(img: NDArray[np.float32], radius: int) -> tuple[NDArray[np.float32],
                                                                NDArray[np.float32]]:
    """Local mean of ``img`` and of ``img**2`` over (2r+1)^2 windows (edges replicated)."""
    mean = np.empty(img.shape, np.float32)
    sq = np.empty(img.shape, np.float32)
    _box_mean_2d(np.ascontiguousarray(img, dtype=np.float32), radius, mean, sq)
    return mean, sq


def block_grid(h: int, w: int, block: int) -> tuple[int, int]:
    """Number of block rows and columns covering an h x w image."""
    return (h + block - 1) // block, (w + block - 1) // block


@njit
def _block_window_sum(
    img: NDArray[np.float32], block: int, window: int, out: NDArray[np.float32]
) -> None:
    h, w = img.shape
    bh, bw = out.shape
    for by in range(bh):
        y0 = max(by * block + block // 2 - window // 2, 0)
        y1 = min(by * block + block // 2 - window // 2 + window, h)
        for bx in range(bw):
            x0 = max(bx * block + block // 2 - window // 2, 0)
            x1 = min(bx * block + block // 2 - window // 2 + window, w)
            acc = 0.0
            for y in range(y0, y1):
                for x in range(x0, x1):
                    acc += img[y, x]
            out[by, bx] = acc


def block_window_sum(img: NDArray[np.float32], block: int, window: int) -> NDArray[np.float32]:
    """Sum of ``img`` over a ``window`` square centred on every block's centre.

    Pixels outside the image count as 0.
    """
    h, w = img.shape
    out = np.empty(block_grid(h, w, block), np.float32)
    _block_window_sum(np.ascontiguousarray(img, dtype=np.float32), block, window, out)
    return out


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
