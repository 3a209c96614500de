"""A printer-independent description of a slip or report.

The station application composes a :class:`Document` (what to print); the
ESC/POS encoder decides *how* (KZ-1048 text where the printer profile has it,
raster otherwise). Keeping the layout as data lets the simulator, the tests and
the reprint path all reason about the same slip.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Align(Enum):
    """Horizontal alignment of a text line."""

    LEFT = "left"
    CENTER = "center"
    RIGHT = "right"


@dataclass(frozen=True)
class Text:
    """One line of text (Kyrgyz and Russian letters allowed), wrapped by the encoder."""

    text: str
    align: Align = Align.LEFT
    bold: bool = False
    large: bool = False


@dataclass(frozen=True)
class Rule:
    """A horizontal separator line."""


@dataclass(frozen=True)
class QRCode:
    """A QR code carrying ``data`` (ASCII)."""

    data: str
    module_size: int = 6


@dataclass(frozen=True)
class Feed:
    """Blank lines."""

    lines: int = 1


Block = Text | Rule | QRCode | Feed


@dataclass(frozen=True)
class Document:
    """A whole slip: blocks printed top to bottom, then a cut.

    ``kind`` (e.g. ``"slip"``, ``"zero-report"``) and ``serial`` identify the
    document; ``duplicate`` marks a reprint, which the encoder prints as a
    DUPLICATE banner so that no two originals of one slip can exist.
    """

    kind: str
    serial: str
    blocks: tuple[Block, ...]
    duplicate: bool = False

    def plain_text(self) -> str:
        """The text content, one line per block (for logs-free comparisons in tests)."""
        lines: list[str] = []
        for b in self.blocks:
            if isinstance(b, Text):
                lines.append(b.text)
            elif isinstance(b, Rule):
                lines.append("-" * 32)
            elif isinstance(b, QRCode):
                lines.append(f"[QR {b.data}]")
            else:
                lines.extend([""] * b.lines)
        return "\n".join(lines)
