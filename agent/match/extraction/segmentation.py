"""Foreground segmentation: which blocks show finger, which show background.

A block is foreground when its grey-level spread is high (ridges against
valleys) and its gradients agree on one direction (ridges, not smudge or
sensor noise). The block mask is then cleaned: small islands dropped, holes
filled, the largest region kept and its rim eroded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from agent.match.extraction import parameters as prm
from agent.match.extraction.filters import block_window_sum, label_components
from agent.match.extraction.orientation import BlockTensors, gaussian_blocks


@dataclass(frozen=True)
class SegmentationMask:
    """Foreground per block and per pixel, plus the block spread it was cut from."""

    blocks: NDArray[np.bool_]
    pixels: NDArray[np.bool_]
    spread: NDArray[np.float32]
    block: int

    @property
    def area_px(self) -> int:
        """Foreground pixels."""
        return int(self.pixels.sum())


def block_spread(image: NDArray[np.float32]) -> NDArray[np.float32]:
    """Grey-level standard deviation over SEG_WINDOW around every block centre."""
    n = float(prm.SEG_WINDOW * prm.SEG_WINDOW)
    s1 = block_window_sum(image, prm.BLOCK, prm.SEG_WINDOW) / n
    s2 = block_window_sum(image * image, prm.BLOCK, prm.SEG_WINDOW) / n
    out: NDArray[np.float32] = np.sqrt(np.maximum(s2 - s1 * s1, 0.0)).astype(np.float32)
    return out


def _shift_or(m: NDArray[np.bool_]) -> NDArray[np.bool_]:
    p = np.pad(m, 1)
    h, w = m.shape
    out = np.zeros_like(m)
    for dy in range(3):
        for dx in range(3):
            out |= p[dy : dy + h, dx : dx + w]
    return out


def _dilate(m: NDArray[np.bool_]) -> NDArray[np.bool_]:
    return _shift_or(m)


def _erode(m: NDArray[np.bool_]) -> NDArray[np.bool_]:
    return ~_shift_or(~m)


def _largest_component_filled(m: NDArray[np.bool_]) -> NDArray[np.bool_]:
    labels = np.empty(m.shape, np.int32)
    stack = np.empty(m.size * 2 + 2, np.int32)
    sizes = label_components(m, labels, stack, True)
    if len(sizes) <= 1:
        return np.zeros_like(m)
    keep = labels == int(np.argmax(sizes[1:]) + 1)
    # Fill holes: background components that do not touch the image border.
    bg = ~keep
    sizes_bg = label_components(bg, labels, stack, False)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    hole = np.ones(len(sizes_bg), np.bool_)
    hole[border] = False
    hole[0] = False
    filled: NDArray[np.bool_] = keep | hole[labels]
    return filled


def segment(image: NDArray[np.float32], tensors: BlockTensors) -> SegmentationMask:
    """Cut the foreground from the 500 dpi image and its block tensors."""
    h, w = image.shape
    spread = block_spread(image)
    ref = float(np.percentile(spread, 90))
    threshold = max(prm.SEG_MIN_STD, prm.SEG_REL_STD * ref)
    # Coherence is smoothed a little: single ridge-less blocks inside a finger
    # (a crease, a core) should not punch holes the fill cannot repair.
    a = gaussian_blocks(tensors.a, 1.0)
    b = gaussian_blocks(tensors.b, 1.0)
    e = gaussian_blocks(tensors.e, 1.0)
    coherence = np.sqrt(a * a + b * b) / np.maximum(e, 1e-6)
    blocks = (spread >= threshold) & (coherence >= prm.SEG_MIN_COHERENCE)
    # Opening removes isolated noisy blocks; closing bridges gaps in the print.
    blocks = _dilate(_erode(blocks))
    blocks = _erode(_dilate(blocks))
    blocks = _largest_component_filled(blocks)
    for _ in range(prm.SEG_BORDER_BLOCKS):
        blocks = _erode(blocks)
    pixels = np.repeat(np.repeat(blocks, prm.BLOCK, axis=0), prm.BLOCK, axis=1)[:h, :w]
    return SegmentationMask(
        blocks=blocks, pixels=np.ascontiguousarray(pixels), spread=spread, block=prm.BLOCK
    )
